"""Settings from the environment, provider choice, and a cheap, configuration-free ``service.app`` import."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from model_store.bundle import load_bundle
from model_store.session import CPU, CUDA
from service.config import Settings
from service.runtime import InferencePlan, choose_providers, inference_plan, open_model, usable_cores
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


@pytest.mark.parametrize(
    ("values", "available", "cores", "plan"),
    [
        ({}, [CPU], 2, InferencePlan(workers=2, threads=1, batch=8, alone_threads=2)),  # CPU: two half-width workers
        ({}, [CPU], 16, InferencePlan(workers=2, threads=8, batch=8, alone_threads=16)),
        ({}, [CPU], 1, InferencePlan(workers=1, threads=0, batch=16)),
        ({}, [CUDA, CPU], 16, InferencePlan(workers=1, threads=0, batch=16)),  # a GPU: one at a time
        ({"providers": CPU}, [CUDA, CPU], 4, InferencePlan(workers=2, threads=2, batch=8, alone_threads=4)),
        ({"inference_workers": 1}, [CPU], 2, InferencePlan(workers=1, threads=0, batch=16)),
        ({"inference_workers": 3, "intra_op_threads": 2}, [CPU], 2, InferencePlan(3, 2, batch=5, alone_threads=6)),
        ({"inference_workers": 4, "max_batch_size": 2}, [CPU], 8, InferencePlan(4, 2, batch=1, alone_threads=8)),
        ({"inference_workers": 2}, [CUDA, CPU], 8, InferencePlan(workers=2, threads=0, batch=8)),
    ],
)
def test_inference_plan_resolves_workers_threads_and_each_workers_batch(
    values: dict[str, object], available: list[str], cores: int, plan: InferencePlan
) -> None:
    settings = Settings(**{"providers": f"{CUDA},{CPU}", "max_batch_size": 16, **values})
    assert inference_plan(settings, available, cores) == plan


@pytest.mark.parametrize(("cpu_max", "cap"), [("150000 100000\n", 2), ("50000 100000\n", 1), ("max 100000\n", None)])
def test_usable_cores_follow_a_cgroup_cpu_quota(tmp_path: Path, cpu_max: str, cap: int | None) -> None:
    (tmp_path / "cpu.max").write_text(cpu_max)
    unlimited = usable_cores(tmp_path / "missing")
    assert usable_cores(tmp_path / "cpu.max") == (unlimited if cap is None else min(cap, unlimited))


def test_each_worker_runs_on_a_session_of_its_own_at_the_same_time(tmp_path: Path) -> None:
    make_tiny_bundle(tmp_path)
    settings = settings_for(tmp_path, inference_workers=2, max_batch_size=4)
    model = open_model(load_bundle(tmp_path, "tiny"), settings)
    assert len(model.sessions) == 2 and model.plan == InferencePlan(workers=2, threads=1, batch=2, alone_threads=2)
    assert model.alone_session is not None and model.alone_session not in model.sessions
    model.warm_up(1)
    both_inside = threading.Barrier(2, timeout=20)  # passes only if two runs are in progress at once
    used: list[int] = []
    for session in model.sessions:
        run = session.run

        def held(batch: np.ndarray, run=run, session=session):  # type: ignore[no-untyped-def]
            used.append(id(session))
            both_inside.wait()
            return run(batch)

        session.run = held  # type: ignore[method-assign]
    batch = np.zeros((2, 32, 32, 3), dtype=np.uint8)
    results: list[object] = []
    threads = [threading.Thread(target=lambda: results.append(model.predict(batch))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(results) == 2 and sorted(used) == sorted(id(session) for session in model.sessions)
    used.clear()
    [alone] = model.predict(batch[:1], alone=True)  # on the lone-input session: no worker session touched
    assert used == [] and alone.score.shape == (1,)
