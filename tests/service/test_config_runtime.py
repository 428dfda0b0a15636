"""Settings from the environment, provider choice, and a cheap, configuration-free ``service.app`` import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from model_store.bundle import load_bundle
from model_store.session import CPU, CUDA
from service.config import Settings
from service.runtime import choose_providers, open_model
from tests.fixtures.tiny_bundle import make_tiny_bundle
from tests.service.harness import settings_for

REPO = Path(__file__).resolve().parents[2]


def test_settings_read_prd_environment_with_comma_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRD_MODEL_STORE", "/models")
    monkeypatch.setenv("PRD_MODEL_VERSION", "3")
    monkeypatch.setenv("PRD_MAX_BATCH_SIZE", "32")
    monkeypatch.setenv("PRD_BATCH_WINDOW_MS", "7.5")
    monkeypatch.setenv("PRD_PROVIDERS", " CPUExecutionProvider ")
    monkeypatch.setenv("PRD_API_KEYS", "a, b,")
    settings = Settings()
    assert settings.model_store == Path("/models") and settings.model_version == "3"
    assert settings.max_batch_size == 32 and settings.batch_window_s == pytest.approx(0.0075)
    assert settings.provider_names == (CPU,)
    assert settings.api_key_set == {"a", "b"}
    assert "a, b" not in repr(settings)  # keys never printed
    assert settings.port == 8000 and Settings().model_version == "3"


@pytest.mark.parametrize(
    "field",
    [{"model_version": "newest"}, {"max_batch_size": 0}, {"providers": " , "}, {"queue_limit": 4, "max_files": 8}],
)
def test_settings_refuse_invalid_values(field: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Settings(**field)


def test_provider_choice_keeps_order_drops_missing_and_ends_with_cpu() -> None:
    assert choose_providers((CUDA, CPU), [CPU]) == [CPU]
    assert choose_providers((CUDA, CPU), [CUDA, CPU]) == [CUDA, CPU]
    assert choose_providers(("TensorrtExecutionProvider",), ["TensorrtExecutionProvider", CUDA, CPU]) == [
        "TensorrtExecutionProvider",
        CPU,
    ]


def test_requesting_cuda_without_it_runs_on_cpu_and_says_so(tmp_path: Path) -> None:
    make_tiny_bundle(tmp_path)
    model = open_model(load_bundle(tmp_path, "tiny"), settings_for(tmp_path, providers=f"{CUDA},{CPU}"))
    assert model.provider == CPU and model.providers == [CPU]
    [prediction] = model.predict(np.zeros((1, 32, 32, 3), dtype=np.uint8))
    assert prediction.score.tolist() == [0.0] and prediction.anomaly_map.shape == (1, 32, 32)


def test_importing_the_app_module_needs_no_model_and_reads_no_configuration() -> None:
    code = (
        "import os, sys; os.environ['PRD_MAX_BATCH_SIZE'] = 'not a number'; import service.app; "
        "assert 'app' not in vars(service.app); assert 'torch' not in sys.modules; print('ok')"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "ok", done.stderr
