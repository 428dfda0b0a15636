"""Service settings: every knob an operator turns, read from ``PRD_*`` environment variables when the app is built.

Nothing reads the environment at import time: ``create_app(Settings(...))`` in tests, ``Settings()`` (environment)
in ``python -m service`` and the lazily built ``service.app:app``. Lists (providers, API keys) are comma-separated
strings so ``PRD_PROVIDERS=CPUExecutionProvider`` works as typed on a shell or in a compose file.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_PROVIDERS = "CUDAExecutionProvider,CPUExecutionProvider"


def _default_decode_threads() -> int:
    return max(1, min(4, os.cpu_count() or 1))


class Settings(BaseSettings):
    """Validated service configuration (environment prefix ``PRD_``, e.g. ``PRD_MAX_BATCH_SIZE=32``)."""

    model_config = SettingsConfigDict(env_prefix="PRD_", extra="ignore", frozen=True, protected_namespaces=())

    model_store: Path = Field(Path("model_store"), description="Store folder holding <name>/<version>/ bundles.")
    model_name: str = Field("prd", min_length=1, description="Model (folder) name in the store.")
    model_version: str = Field("latest", description="Integer version or 'latest' (highest present).")
    host: str = "0.0.0.0"
    port: int = Field(8000, ge=0, le=65535)
    log_level: str = Field("info", pattern=r"^(critical|error|warning|info|debug)$")
    access_log: bool = True

    max_batch_size: int = Field(16, ge=1, le=1024, description="Images per ONNX Runtime run, at most.")
    batch_window_ms: float = Field(5.0, ge=0, le=10_000, description="Longest wait of the oldest image for company.")
    queue_limit: int = Field(256, ge=1, description="Images waiting for inference before 503 + Retry-After.")
    drain_timeout_s: float = Field(30.0, gt=0, description="On shutdown, time allowed to answer queued images.")

    max_upload_bytes: int = Field(64 * 1024 * 1024, ge=1, description="Request body limit (all files together).")
    max_files: int = Field(16, ge=1, description="Images per request.")
    max_pixels: int = Field(50_000_000, ge=1, description="Pixels per image, checked from the header (bombs).")
    decode_threads: int = Field(default_factory=_default_decode_threads, ge=1)

    providers: str = Field(DEFAULT_PROVIDERS, description="ONNX Runtime execution providers, in preference order.")
    cuda_device_id: int = Field(0, ge=0)
    intra_op_threads: int = Field(0, ge=0, description="0 lets ONNX Runtime choose (one per physical core).")
    inter_op_threads: int = Field(0, ge=0)
    intra_op_spinning: bool = Field(
        False,
        description="Let ONNX Runtime threads spin between runs (burns CPU the HTTP layer needs; off by default).",
    )
    warmup_runs: int = Field(2, ge=0, description="Runs at batch 1 and at max batch before the model is ready.")

    api_keys: SecretStr = Field(SecretStr(""), description="Comma-separated keys for X-API-Key; empty: no auth.")
    recognition_min_similarity: float | None = Field(
        None, description="Below this best category similarity an image gets the global calibration."
    )
    limit_concurrency: int | None = Field(None, ge=1, description="uvicorn: connections before it answers 503.")

    @field_validator("model_version")
    @classmethod
    def _version(cls, value: str) -> str:
        value = value.strip()
        if value != "latest" and not (value.isdigit() and int(value) >= 1):
            message = f"model_version must be 'latest' or a positive integer, got {value!r}"
            raise ValueError(message)
        return value

    @field_validator("providers")
    @classmethod
    def _providers(cls, value: str) -> str:
        names = [name.strip() for name in value.split(",") if name.strip()]
        if not names:
            raise ValueError("providers must name at least one ONNX Runtime execution provider")
        return ",".join(names)

    @model_validator(mode="after")
    def _limits_fit(self) -> Settings:
        if self.queue_limit < self.max_files:
            message = (
                f"queue_limit ({self.queue_limit}) must be at least max_files ({self.max_files}), "
                "or a request with the most files allowed could never be queued"
            )
            raise ValueError(message)
        return self

    @property
    def provider_names(self) -> tuple[str, ...]:
        """Requested execution providers, most preferred first."""
        return tuple(self.providers.split(","))

    @property
    def api_key_set(self) -> frozenset[str]:
        """Accepted API keys; empty means requests need none."""
        return frozenset(key.strip() for key in self.api_keys.get_secret_value().split(",") if key.strip())

    @property
    def batch_window_s(self) -> float:
        return self.batch_window_ms / 1000.0
