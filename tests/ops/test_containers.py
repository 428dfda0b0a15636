"""The CPU scorer image for real: built, run as in production (store mounted read-only, read-only root filesystem),
healthy by its own HEALTHCHECK, answering exactly what the host service answers on the same bundle, and stopping
cleanly on SIGTERM. Needs a Docker engine (tests/ops/containers.py: skipped locally without one, failed under CI)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.config import Settings
from tests.fixtures.real_data import SHIPPED_STORE, require_real_data
from tests.ops.containers import (
    CPU_IMAGE,
    GPU_IMAGE,
    build,
    docker,
    ensure_base_images,
    image_exists,
    inspect,
    published_port,
    require_engine,
    running_container,
    wait_until_healthy,
)
from tests.ops.live import running_service, service_env
from tests.ops.support import free_port, run

pytestmark = [pytest.mark.slow, pytest.mark.container]

MAX_CPU_IMAGE_BYTES = 450 * 1000**2
README_EXAMPLES = ("wood/test/defect/100000007.jpg", "kolektor/test/crack/kos10_Part3.png")
"""README's curl examples: a square photo and a tall kolektor part (scored as tiles)."""
RUN_OPTIONS = ("--read-only", "--tmpfs", "/tmp", "-v", f"{SHIPPED_STORE}:/models:ro", "-p", "127.0.0.1::8000")
"""What docker-compose.yml gives the scorer: the repository read-only at /models, a read-only root filesystem."""


@pytest.fixture(scope="module")
def cpu_image() -> str:
    require_engine()
    ensure_base_images("python")
    build("Dockerfile.cpu", CPU_IMAGE)
    return CPU_IMAGE


@pytest.fixture(scope="module")
def scorer(cpu_image: str) -> Iterator[str]:
    with running_container(f"prd-test-scorer-{time.time_ns()}", cpu_image, RUN_OPTIONS) as name:
        wait_until_healthy(name)
        yield name


def _url(name: str) -> str:
    return f"http://127.0.0.1:{published_port(name)}"


def _score(url: str, image: Path) -> dict[str, Any]:
    with image.open("rb") as handle:
        response = httpx.post(f"{url}/score", files={"file": (image.name, handle)}, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


def _in_image(image: str, script: str) -> str:
    return docker("run", "--rm", "--entrypoint", "sh", image, "-c", script, timeout=300)


def test_cpu_image_is_small_torch_free_compiler_free_and_holds_no_bundle(cpu_image: str) -> None:
    size = inspect(cpu_image)["Size"]
    assert size <= MAX_CPU_IMAGE_BYTES, f"{cpu_image} is {size / 1000**2:.0f} MB"
    found = _in_image(
        cpu_image,
        'python -c \'import importlib.util as u; print("torch" if u.find_spec("torch") else "")\';'
        " for c in gcc cc c++ g++ clang; do command -v $c; done;"
        " find / -xdev \\( -name '*.onnx' -o -name manifest.json \\) -print 2>/dev/null; true",
    )
    assert not found.strip(), f"{cpu_image} carries: {found}"


def test_scorer_runs_non_root_on_a_read_only_root_filesystem_with_the_store_read_only(scorer: str) -> None:
    details = inspect(scorer)
    assert details["HostConfig"]["ReadonlyRootfs"] is True
    assert details["Config"]["User"] not in ("", "root", "0")
    assert docker("exec", scorer, "id", "-u").strip() != "0"
    mounts = {mount["Destination"]: mount for mount in details["Mounts"]}
    assert mounts["/models"]["RW"] is False
    for path in ("/app/written", "/models/written"):
        attempt = run(["docker", "exec", scorer, "touch", path], timeout=30)
        assert attempt.returncode != 0 and "Read-only file system" in attempt.stderr, (path, attempt.stderr)


def test_scorer_answers_readme_examples_exactly_as_the_host_service(scorer: str, tmp_path: Path) -> None:
    data = require_real_data()
    container = {name: _score(_url(scorer), data / name) for name in README_EXAMPLES}
    with running_service(service_env(SHIPPED_STORE, free_port()), tmp_path / "host.log") as host_url:
        host = {name: _score(host_url, data / name) for name in README_EXAMPLES}
    assert container == host
    assert container["kolektor/test/crack/kos10_Part3.png"]["results"][0]["tiles"] > 1


def test_scorer_serves_metrics_and_offline_docs(scorer: str) -> None:
    url = _url(scorer)
    metrics = httpx.get(f"{url}/metrics", timeout=10)
    assert metrics.status_code == 200
    assert "prd_model_ready 1.0" in metrics.text
    docs = httpx.get(f"{url}/docs", timeout=10)
    assert docs.status_code == 200 and "cdn" not in docs.text.lower()
    assert httpx.get(f"{url}/docs-assets/swagger-ui-bundle.js", timeout=10).status_code == 200


def test_scorer_stops_cleanly_on_sigterm_within_the_drain_timeout(cpu_image: str) -> None:
    drain = Settings.model_fields["drain_timeout_s"].default
    with running_container(f"prd-test-stop-{time.time_ns()}", cpu_image, RUN_OPTIONS) as name:
        wait_until_healthy(name)
        started = time.monotonic()
        docker("kill", "--signal", "TERM", name)
        while inspect(name)["State"]["Running"]:
            assert time.monotonic() - started < drain, f"still running {drain:.0f}s after SIGTERM"
            time.sleep(0.2)
        state = inspect(name)["State"]
        logs = run(["docker", "logs", name], timeout=30)
    assert state["ExitCode"] == 0, state
    assert "Application shutdown complete" in logs.stdout + logs.stderr


def test_gpu_image_when_built_is_torch_free_and_finds_every_cuda_library() -> None:
    """`make image-gpu` (not built by CI: 2.9 GB of CUDA wheels; it cannot run without a GPU). Only the driver's
    libcuda.so.1 may be missing: the NVIDIA Container Toolkit mounts it from the host."""
    require_engine()
    if not image_exists(GPU_IMAGE):
        pytest.skip(f"{GPU_IMAGE} is not built (make image-gpu)")
    found = _in_image(
        GPU_IMAGE,
        "python -c 'import importlib.util as u, onnxruntime as o; providers = o.get_available_providers();"
        ' print(bool(u.find_spec("torch")), o.__version__, "CUDAExecutionProvider" in providers)\';'
        " for c in gcc cc c++ g++ clang; do command -v $c; done;"
        " ldconfig -p | grep -o -E 'lib(cudart|cublas|cublasLt|cudnn|curand|cufft)\\.so\\.[0-9]+ ' | sort -u",
    )
    lines = found.split()
    assert lines[:3] == ["False", "1.31.1", "True"], found
    libraries = {name.split(".so")[0] for name in lines[3:]}
    assert libraries == {"libcudart", "libcublas", "libcublasLt", "libcudnn", "libcurand", "libcufft"}, found
