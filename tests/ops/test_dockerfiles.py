"""The Dockerfiles, checked without a Docker engine: what they copy exists and carries no bundle, what they run is what
the tests run, the service images stay torch-free and run as a non-root user."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from typing import Any

import pytest

from service.config import Settings
from tests.ops.support import (
    COMPOSE_FILE,
    DOCKER,
    HEALTHCHECK_SCRIPT,
    MODEL_REPOSITORY,
    REPO,
    SERVICE_COMMAND,
    TRAINING_COMMAND,
    dockerfile_instructions,
    dockerignored,
    exec_form,
    load_yaml,
    locked_versions,
    pyproject,
)

SERVICE_IMAGES = {"Dockerfile.cpu": "serve", "Dockerfile.gpu": "gpu"}
"""Each service image and its extra, whose lock (requirements/<extra>.txt) it installs."""
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


def _copy_sources(name: str) -> list[str]:
    """Every source path or glob a COPY/ADD of the Dockerfile names (flags and destinations dropped)."""
    sources = []
    for instruction, arguments in _instructions(name):
        if instruction in ("COPY", "ADD"):
            sources += [part for part in shlex.split(arguments) if not part.startswith("--")][:-1]
    return sources


def _files_named_by(source: str) -> Iterator[str]:
    """Repository files a COPY source would take if .dockerignore let everything through (globs and folders)."""
    for match in REPO.glob(source.rstrip("/")):
        for path in [match] if match.is_file() else sorted(match.rglob("*")):
            if path.is_file():
                yield path.relative_to(REPO).as_posix()


@pytest.mark.parametrize("name", ALL_IMAGES)
def test_every_copied_path_exists_in_the_build_context(name: str) -> None:
    sources = _copy_sources(name)
    assert sources
    for source in sources:
        matches = [path.relative_to(REPO).as_posix() for path in REPO.glob(source.rstrip("/"))]
        assert matches, f"{name}: COPY source {source} does not exist"
        for match in matches:
            assert not dockerignored(match), f"{name}: COPY source {match} is excluded by .dockerignore"


@pytest.mark.parametrize("name", ALL_IMAGES)
def test_images_copy_no_bundle(name: str) -> None:
    for source in _copy_sources(name):
        if source.startswith("model_store"):
            assert source.endswith(".py"), f"{name}: COPY {source}: only model_store's Python files belong in an image"
        for path in _files_named_by(source):
            assert not path.startswith(MODEL_REPOSITORY), f"{name}: COPY {source} takes {path} from the repository"
            assert not path.endswith(".onnx"), f"{name}: COPY {source} takes the model {path}"


def test_images_copy_every_module_of_the_model_store_package() -> None:
    package = {path.relative_to(REPO).as_posix() for path in (REPO / "model_store").glob("*.py")}
    assert "model_store/__init__.py" in package
    for name in ALL_IMAGES:
        copied = {path for source in _copy_sources(name) for path in _files_named_by(source)}
        assert package <= copied, f"{name} misses {sorted(package - copied)}"


def test_dockerignore_keeps_the_context_small_but_complete() -> None:
    excluded = (
        ".git",
        ".venv",
        ".venv-serve",
        ".venv-ci-serve",
        "runs",
        "runs/demo/checkpoint.pt",
        "tests",
        "tests/ops",
        "docs",
        "docker/prometheus",
        "service/__pycache__",
        "model_store/__pycache__/bundle.cpython-311.pyc",
        ".pytest_cache",
        ".ruff_cache",
        ".mypy_cache",
        MODEL_REPOSITORY,
        f"{MODEL_REPOSITORY}/prd/config.pbtxt",
        f"{MODEL_REPOSITORY}/prd/7/model.onnx",
        "model_store/prd/1/model.onnx",
        "model.onnx",
    )
    for path in excluded:
        assert dockerignored(path), path
    kept = ("service", "training", "pyproject.toml", "README.md", "docker/healthcheck.py", "requirements/serve.txt")
    for path in (*kept, *(p.relative_to(REPO).as_posix() for p in (REPO / "model_store").glob("*.py"))):
        assert not dockerignored(path), path


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
    assert installs == [a for a in installs if "--require-hashes" in a and "--no-deps" in a], installs
    locks = re.findall(r"-r (requirements/[\w-]+\.txt)", " ".join(installs))
    assert locks == [f"requirements/{SERVICE_IMAGES[name]}.txt"], f"{name} installs {locks}"
    pinned = set(locked_versions(REPO / locks[0]))
    packages = {_package(r) for r in _extra_requirements(SERVICE_IMAGES[name])}
    packages |= {_package(r) for r in pyproject()["project"]["dependencies"]}
    assert packages <= pinned, f"{locks[0]} misses {sorted(packages - pinned)}: run make lock"
    assert not {p for p in pinned if "torch" in p}, f"{locks[0]} pulls torch"
    assert not ({"onnxruntime", "onnxruntime-gpu"} <= pinned), "two onnxruntime builds in one image"
    copied = " ".join(a for i, a in _instructions(name) if i == "COPY")
    assert "training" not in copied, "the service image must not carry the training half"


def test_gpu_image_needs_only_the_host_driver_cuda_comes_as_locked_wheels() -> None:
    """onnxruntime-gpu 1.31 is a CUDA 13 build; its CUDA runtime, cuDNN 9 and math libraries are pip wheels."""
    assert _last("Dockerfile.gpu", "FROM") == "python:3.11-slim"
    pinned = locked_versions(REPO / "requirements" / "gpu.txt")
    assert pinned["onnxruntime-gpu"] == "1.31.1"
    for wheel in ("nvidia-cuda-runtime", "nvidia-cudnn-cu13", "nvidia-cublas", "nvidia-cufft", "nvidia-curand"):
        assert wheel in pinned, f"requirements/gpu.txt misses {wheel}"
    assert pinned["nvidia-cudnn-cu13"].startswith("9."), pinned["nvidia-cudnn-cu13"]
    assert "onnxruntime" not in pinned


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


def _compose_scorers() -> list[dict[str, Any]]:
    services = load_yaml(COMPOSE_FILE)["services"].values()
    return [service for service in services if "PRD_MODEL_STORE" in service.get("environment", {})]


@pytest.mark.parametrize("name", SERVICE_IMAGES)
def test_service_images_read_the_model_store_from_a_mount_outside_the_code(name: str) -> None:
    env = " ".join(a for i, a in _instructions(name) if i == "ENV")
    store = re.search(r"\bPRD_MODEL_STORE=(\S+)", env)
    assert store, f"{name} does not set PRD_MODEL_STORE"
    compose_stores = {service["environment"]["PRD_MODEL_STORE"] for service in _compose_scorers()}
    assert compose_stores == {store.group(1)}, (
        f"{name}: PRD_MODEL_STORE={store.group(1)}, compose mounts {compose_stores}"
    )
    workdir = _last(name, "WORKDIR")
    assert not store.group(1).startswith(workdir), "the store must not sit inside the image's code"


@pytest.mark.parametrize("name", SERVICE_IMAGES)
def test_service_images_set_only_settings_the_service_reads(name: str) -> None:
    known = {f"PRD_{field.upper()}" for field in Settings.model_fields}
    env = " ".join(a for i, a in _instructions(name) if i == "ENV")
    names = set(re.findall(r"\b(PRD_\w+)=", env))
    assert names and names <= known, sorted(names - known)
    assert "PRD_HOST=0.0.0.0" in env, "inside a container the service must listen beyond loopback"
