"""Service settings: every knob an operator turns, read from ``PRD_*`` environment variables when the app is built.

Nothing reads the environment at import time: ``create_app(Settings(...))`` in tests, ``Settings()`` (environment)
in ``python -m service`` and the lazily built ``service.app:app``. Lists (providers, API keys) are comma-separated
strings so ``PRD_PROVIDERS=CPUExecutionProvider`` works as typed on a shell or in a compose file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from model_store.batching import BATCH_WINDOW_MS, MAX_BATCH_SIZE
from model_store.bundle import DEFAULT_STORE
from service.text import shown

DEFAULT_PROVIDERS = "CUDAExecutionProvider,CPUExecutionProvider"
ENV_PREFIX = "PRD_"


def _default_decode_threads() -> int:
    return max(1, min(4, os.cpu_count() or 1))


class Settings(BaseSettings):
    """Validated service configuration (environment prefix ``PRD_``, e.g. ``PRD_MAX_BATCH_SIZE=32``)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True, protected_namespaces=())

    model_store: Path = Field(DEFAULT_STORE, description="Model repository holding <name>/<version>/ bundles.")
    model_name: str = Field("prd", min_length=1, description="Model (folder) name in the store.")
    model_version: str = Field("latest", description="Integer version or 'latest' (highest present).")
    host: str = "0.0.0.0"
    port: int = Field(8000, ge=0, le=65535)
    log_level: str = Field("info", pattern=r"^(critical|error|warning|info|debug)$")
    access_log: bool = True

    max_batch_size: int = Field(
        MAX_BATCH_SIZE,
        ge=1,
        le=1024,
        description="Graph inputs in inference at once; each of several inference workers takes its share per run.",
    )
    batch_window_ms: float = Field(
        BATCH_WINDOW_MS, ge=0, le=10_000, description="Longest wait of the oldest image for company."
    )
    queue_limit: int = Field(
        256, ge=1, description="Graph inputs queued or reserved by admitted requests before 503 + Retry-After."
    )
    max_queue_wait_ms: float = Field(
        2000.0,
        ge=0,
        description="Refuse (503 + Retry-After) a request whose inputs would wait longer than this for inference, "
        "estimated at admission from the recent time per input; 0: only queue_limit bounds the wait.",
    )
    drain_timeout_s: float = Field(30.0, gt=0, description="On shutdown, time allowed to answer queued images.")

    max_upload_bytes: int = Field(64 * 1024 * 1024, ge=1, description="Request body limit (all files together).")
    max_files: int = Field(16, ge=1, description="Images per request.")
    max_pixels: int = Field(50_000_000, ge=1, description="Pixels per image, checked from the header (bombs).")
    max_request_pixels: int = Field(
        100_000_000, ge=1, description="Pixels per request (all its files), from the headers: over it, 413."
    )
    decode_pixel_budget: int = Field(
        200_000_000, ge=1, description="Pixels of all requests being decoded at once, process-wide: over it, 503."
    )
    decode_threads: int = Field(default_factory=_default_decode_threads, ge=1)

    providers: str = Field(DEFAULT_PROVIDERS, description="ONNX Runtime execution providers, in preference order.")
    cuda_device_id: int = Field(0, ge=0)
    inference_workers: int = Field(
        0,
        ge=0,
        description="ONNX Runtime runs at once, each on a session of its own; 0: two on CPU (each with half the "
        "cores: a thread the HTTP layer preempts stalls only its own run), one on a GPU.",
    )
    intra_op_threads: int = Field(
        0,
        ge=0,
        description="Threads per inference worker; 0: the cores shared out between several CPU workers, else "
        "ONNX Runtime's choice (one per physical core).",
    )
    inter_op_threads: int = Field(0, ge=0)
    intra_op_spinning: bool = Field(
        False,
        description="Let ONNX Runtime threads spin between runs (burns CPU the HTTP layer needs; off by default).",
    )
    warmup_runs: int = Field(2, ge=0, description="Runs at batch 1 and at max batch before the model is ready.")

    api_keys: SecretStr = Field(SecretStr(""), description="Comma-separated keys for X-API-Key; empty: no auth.")
    recognition_min_similarity: float | None = Field(
        None,
        description="Replaces the bundle's recognition floor (scoring.routing.min_similarity): below this best "
        "category similarity an image gets the global calibration and no tiles. Unset: the bundle's own.",
    )
    limit_concurrency: int | None = Field(512, ge=1, description="uvicorn: connections before it answers 503.")
    header_timeout_s: float = Field(10.0, gt=0, description="A connection must send a request's headers within it.")
    body_timeout_s: float = Field(60.0, gt=0, description="A request's whole body must arrive within it (408).")

    @field_validator("model_version")
    @classmethod
    def _version(cls, value: str) -> str:
        value = value.strip()
        if value != "latest" and not (value.isdigit() and int(value) >= 1):
            message = "model_version must be 'latest' or a positive integer"
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
        if self.max_request_pixels > self.decode_pixel_budget:
            message = (
                f"max_request_pixels ({self.max_request_pixels}) must be at most decode_pixel_budget "
                f"({self.decode_pixel_budget}), or the largest request allowed could never be decoded"
            )
            raise ValueError(message)
        return self

    @property
    def max_queue_wait_s(self) -> float | None:
        return self.max_queue_wait_ms / 1000.0 if self.max_queue_wait_ms > 0 else None

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


_ACCEPTS = {
    "int_parsing": "not a valid integer",
    "float_parsing": "not a valid number",
    "bool_parsing": "not a valid boolean (true/false, 1/0, yes/no, on/off)",
    "greater_than": "must be greater than {gt}",
    "greater_than_equal": "must be at least {ge}",
    "less_than": "must be less than {lt}",
    "less_than_equal": "must be at most {le}",
    "string_too_short": "must not be empty",
}


def settings_error_lines(exc: ValidationError) -> list[str]:
    """One line per problem, naming the ``PRD_*`` variable, what it accepts and what it got (cut when long):
    what ``python -m service`` prints instead of pydantic's traceback."""
    return [_error_line(error) for error in exc.errors(include_url=False)]


def _error_line(error: Any) -> str:
    ctx = error.get("ctx") or {}
    if not error["loc"]:  # a rule across several settings: its message names them
        return _env_names(str(ctx.get("error", error["msg"])))
    name = ENV_PREFIX + str(error["loc"][0]).upper()
    if error["type"] == "value_error":
        reason = _env_names(str(ctx["error"])).removeprefix(f"{name} ")
    elif error["type"] == "string_pattern_mismatch":
        options = re.fullmatch(r"\^\(([\w|]+)\)\$", ctx.get("pattern", ""))
        reason = f"must be one of {', '.join(options.group(1).split('|'))}" if options else error["msg"]
    else:
        reason = _ACCEPTS.get(error["type"], error["msg"]).format(**ctx)
    return f"{name}: {reason} (got {shown(error['input'])})"


def _env_names(message: str) -> str:
    """Field names in a validator's message written as the variables an operator sets."""
    pattern = r"\b(" + "|".join(sorted(Settings.model_fields, key=len, reverse=True)) + r")\b"
    return re.sub(pattern, lambda match: ENV_PREFIX + match.group(1).upper(), message)
