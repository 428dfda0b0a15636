"""The Dockerfiles, checked without a Docker engine: what they copy exists, what they run is what the tests run,
the service images stay torch-free and run as a non-root user."""

from __future__ import annotations

import re
import shlex

import pytest

from service.config import Settings
from tests.ops.support import (
    DOCKER,
    HEALTHCHECK_SCRIPT,
    REPO,
    SERVICE_COMMAND,
    TRAINING_COMMAND,
    dockerfile_instructions,
    dockerignored,
    exec_form,
    pyproject,
)

SERVICE_IMAGES = {"Dockerfile.cpu": "serve", "Dockerfile.gpu": "gpu"}
ALL_IMAGES = (*SERVICE_IMAGES, "Dockerfile.train")


def _instructions(name: str) -> list[tuple[str, str]]:
    return dockerfile_instructions(DOCKER / name)


def _last(name: str, keyword: str) -> str:
    values = [arguments for instruction, arguments in _instructions(name) if instruction == keyword]
    assert values, f"{name} has no {keyword}"
    return values[-1]


def _extra_requirements(extra: str, seen: frozenset[str] = frozenset()) -> list[str]:
    """Requirements of an optional-dependencies group, self-references (``prd-inspect[api]``) expanded."""
    project = pyproject()["project"]
    requirements = []
    for requirement in project["optional-dependencies"][extra]:
        nested = re.fullmatch(rf"{re.escape(project['name'])}\[([\w,]+)\]", requirement)
        if nested:
            for name in nested.group(1).split(","):
                if name not in seen:
                    requirements += _extra_requirements(name, seen | {extra})
        else:
            requirements.append(requirement)
    return requirements


def _package(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower()


@pytest.mark.parametrize("name", ALL_IMAGES)
def test_every_copied_path_exists_in_the_build_context(name: str) -> None:
    copies = [arguments for instruction, arguments in _instructions(name) if instruction in ("COPY", "ADD")]
    assert copies
    for arguments in copies:
        parts = [part for part in shlex.split(arguments) if not part.startswith("--")]
        for source in parts[:-1]:
            assert (REPO / source).exists(), f"{name}: COPY source {source} does not exist"
            assert not dockerignored(source), f"{name}: COPY source {source} is excluded by .dockerignore"


def test_dockerignore_keeps_the_context_small_but_complete() -> None:
    for excluded in (".git", ".venv", ".venv-serve", "runs", "tests/ops", "docker/prometheus", "service/__pycache__"):
        assert dockerignored(excluded), excluded
    for kept in ("service", "model_store", "training", "pyproject.toml", "README.md", "docker/healthcheck.py"):
        assert not dockerignored(kept), kept


@pytest.mark.parametrize("name", SERVICE_IMAGES)
def test_service_images_run_the_command_the_tests_run(name: str) -> None:
    assert exec_form(_last(name, "CMD")) == list(SERVICE_COMMAND)
    assert not [i for i, _ in _instructions(name) if i == "ENTRYPOINT"]
    assert (REPO / "service" / "__main__.py").is_file()


def test_training_image_runs_the_training_cli() -> None:
    assert exec_form(_last("Dockerfile.train", "ENTRYPOINT")) == list(TRAINING_COMMAND)
    assert (REPO / "training" / "__main__.py").is_file()


@pytest.mark.parametrize("name", SERVICE_IMAGES)
def test_service_images_never_install_torch(name: str) -> None:
    instructions = " ".join(f"{i} {a}" for i, a in _instructions(name))  # comments dropped
    assert "torch" not in instructions.lower()
    installs = [a for i, a in _instructions(name) if i == "RUN" and "pip install" in a]
    extras = re.findall(r"\.\[([\w,]+)\]", " ".join(installs))
    assert extras == [SERVICE_IMAGES[name]], f"{name} installs extras {extras}"
    packages = {_package(r) for r in _extra_requirements(SERVICE_IMAGES[name])}
    packages |= {_package(r) for r in pyproject()["project"]["dependencies"]}
    assert not {p for p in packages if "torch" in p}, f"extra [{SERVICE_IMAGES[name]}] pulls torch: {packages}"
    assert not ({"onnxruntime", "onnxruntime-gpu"} <= packages), "two onnxruntime builds in one image"
    copied = " ".join(a for i, a in _instructions(name) if i == "COPY")
    assert "training" not in copied, "the service image must not carry the training half"


def test_gpu_image_is_cuda_12_with_cudnn_and_onnxruntime_gpu() -> None:
    instructions = _instructions("Dockerfile.gpu")
    args = dict(arguments.split("=", 1) for instruction, arguments in instructions if instruction == "ARG")
    base = args["CUDA_IMAGE"]
    assert _last("Dockerfile.gpu", "FROM") == "${CUDA_IMAGE}"
    assert re.fullmatch(r"nvidia/cuda:12\.\d+\.\d+-cudnn-runtime-ubuntu\d+\.\d+", base), base
    assert "onnxruntime-gpu" in {_package(r) for r in _extra_requirements("gpu")}


def test_cpu_image_is_slim_python() -> None:
    assert _last("Dockerfile.cpu", "FROM") == "python:3.11-slim"


@pytest.mark.parametrize("name", ALL_IMAGES)
def test_images_run_as_a_non_root_user(name: str) -> None:
    instructions = _instructions(name)
    users = [index for index, (instruction, _) in enumerate(instructions) if instruction == "USER"]
    assert users, f"{name} has no USER"
    assert instructions[users[-1]][1] not in ("root", "0")
    assert all(instruction != "RUN" for instruction, _ in instructions[users[-1] :]), "RUN after USER"


@pytest.mark.parametrize("name", SERVICE_IMAGES)
def test_service_images_probe_healthz_with_the_repository_script(name: str) -> None:
    healthcheck = _last(name, "HEALTHCHECK")
    assert "--interval=" in healthcheck and "--timeout=" in healthcheck
    command = exec_form(healthcheck.split(" CMD ", 1)[1])
    assert command == ["python", f"/app/docker/{HEALTHCHECK_SCRIPT.name}"]
    copies = [a for i, a in _instructions(name) if i == "COPY"]
    assert f"docker/{HEALTHCHECK_SCRIPT.name} docker/{HEALTHCHECK_SCRIPT.name}" in copies
    assert _last(name, "WORKDIR") == "/app"
    assert '"/healthz"' in HEALTHCHECK_SCRIPT.read_text()


@pytest.mark.parametrize("name", SERVICE_IMAGES)
def test_service_images_set_only_settings_the_service_reads(name: str) -> None:
    known = {f"PRD_{field.upper()}" for field in Settings.model_fields}
    env = " ".join(a for i, a in _instructions(name) if i == "ENV")
    names = set(re.findall(r"\b(PRD_\w+)=", env))
    assert names and names <= known, sorted(names - known)
    assert "PRD_HOST=0.0.0.0" in env, "inside a container the service must listen beyond loopback"
