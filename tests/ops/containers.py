"""A Docker engine for the container tests: the CLI, the images they build and the containers they start.

Locally the tests skip with the reason when no engine answers; under CI (``CI`` set) that fails the run, since
`.ci/run` installs and starts dockerd itself. Without registry access the base image is built from a Debian mirror
(docker/base/build.sh), as docs/containers.md describes; every container started here is removed afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from tests.ops.support import DOCKER, REPO, run

BASE_IMAGE = "python:3.11-slim"
CPU_IMAGE = "prd-inspect/scorer:cpu"
GPU_IMAGE = "prd-inspect/scorer:gpu"
PROMETHEUS_IMAGE = "prd-inspect/prometheus:debian"
BUILD_TIMEOUT = 1800.0
"""A cold CPU image build on CI's 2 cores: lock install (~400 MB of wheels) and layers; far less when cached."""


def skip_or_fail(message: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{message}; CI must run this check")
    pytest.skip(message)


def docker(*args: str, timeout: float = 120, check: bool = True) -> str:
    """Run the docker CLI; its stdout, or a test failure carrying stderr when ``check`` and it fails."""
    result = run(["docker", *args], timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result.stdout


def require_engine() -> None:
    if shutil.which("docker") is None:
        skip_or_fail("no docker CLI (Debian: apt-get install docker.io; .ci/run installs it)")
    result = run(["docker", "info", "--format", "{{.ServerVersion}}"], timeout=30)
    if result.returncode != 0:
        skip_or_fail(f"no Docker engine answers ({result.stderr.strip()[-300:]}); .ci/run starts dockerd")


def image_exists(image: str) -> bool:
    return run(["docker", "image", "inspect", image], timeout=30).returncode == 0


def ensure_base_images(*which: str) -> None:
    """The air-gapped bases (``python``, ``prometheus``) by docker/base/build.sh, unless already there."""
    images = {"python": BASE_IMAGE, "prometheus": PROMETHEUS_IMAGE}
    for kind in which:
        if image_exists(images[kind]):
            continue
        if os.geteuid() != 0 or shutil.which("debootstrap") is None:
            skip_or_fail(f"{images[kind]} is missing and docker/base/build.sh needs root and debootstrap")
        result = run(["bash", str(DOCKER / "base" / "build.sh"), kind], timeout=BUILD_TIMEOUT, cwd=REPO)
        assert result.returncode == 0, f"docker/base/build.sh {kind} failed:\n{result.stderr[-3000:]}"


def build(dockerfile: str, tag: str) -> None:
    docker("build", "-q", "-f", f"docker/{dockerfile}", "-t", tag, str(REPO), timeout=BUILD_TIMEOUT)


def inspect(name: str) -> dict[str, Any]:
    return json.loads(docker("inspect", name))[0]


def wait_until_healthy(name: str, timeout: float = 180) -> None:
    """Poll the HEALTHCHECK's verdict; fail with the container's log when it is unhealthy or exits."""
    deadline = time.monotonic() + timeout
    state: dict[str, Any] = {}
    while time.monotonic() < deadline:
        state = inspect(name)["State"]
        health = state.get("Health", {}).get("Status")
        if health == "healthy":
            return
        if health == "unhealthy" or not state["Running"]:
            break
        time.sleep(1)
    logs = run(["docker", "logs", "--tail", "40", name], timeout=30)
    raise AssertionError(f"{name} not healthy ({state.get('Status')}, {state.get('Health')}):\n{logs.stderr}")


@contextlib.contextmanager
def running_container(name: str, image: str, options: Sequence[str] = ()) -> Iterator[str]:
    """``docker run -d`` under ``name``; the container is removed on exit, also when the test fails."""
    run(["docker", "rm", "-f", name], timeout=60)
    docker("run", "-d", "--name", name, *options, image)
    try:
        yield name
    finally:
        run(["docker", "rm", "-f", name], timeout=60)


def published_port(name: str, container_port: int = 8000) -> int:
    return int(docker("port", name, str(container_port)).split()[0].rsplit(":", 1)[1])
