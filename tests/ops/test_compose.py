"""docker-compose.yml, checked without a Docker engine: structure, mounts (the model repository, never baked into an
image), healthchecks, GPU reservation, schema."""

from __future__ import annotations

import importlib.util
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from service.config import Settings
from tests.ops.support import (
    COMPOSE_FILE,
    DOCKER,
    HEALTHCHECK_SCRIPT,
    MODEL_REPOSITORY,
    REPO,
    SCRAPE_JOB,
    dockerfile_instructions,
    exec_form,
    load_yaml,
    require_binary,
    run,
)

SCORERS = {"scorer": "docker/Dockerfile.gpu", "scorer-cpu": "docker/Dockerfile.cpu"}
LONG_RUNNING = ("scorer", "scorer-cpu", "prometheus", "grafana")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE_FILE)


def _bind_mounts(service: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(source, target, mode) of the short-syntax volumes whose source is a host path."""
    mounts = []
    for entry in service.get("volumes", []):
        source, target, *rest = entry.split(":")
        if source.startswith((".", "/", "$")):
            mounts.append((source, target, rest[0] if rest else "rw"))
    return mounts


def test_compose_defines_scorer_variants_prometheus_grafana(compose: dict[str, Any]) -> None:
    assert set(LONG_RUNNING) <= set(compose["services"])
    assert compose["services"]["scorer"]["profiles"] == ["gpu"]
    assert compose["services"]["scorer-cpu"]["profiles"] == ["cpu"]
    assert "profiles" not in compose["services"]["prometheus"]
    assert "profiles" not in compose["services"]["grafana"]


def test_gpu_scorer_reserves_an_nvidia_gpu_and_cpu_scorer_does_not(compose: dict[str, Any]) -> None:
    devices = compose["services"]["scorer"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices)
    assert "deploy" not in compose["services"]["scorer-cpu"]


def test_scorers_build_their_dockerfiles_and_answer_to_the_scraped_name(compose: dict[str, Any]) -> None:
    scrape = load_yaml(DOCKER / "prometheus" / "prometheus.yml")
    job = next(job for job in scrape["scrape_configs"] if job["job_name"] == SCRAPE_JOB)
    target_host = job["static_configs"][0]["targets"][0].split(":")[0]
    for name, dockerfile in SCORERS.items():
        service = compose["services"][name]
        assert service["build"]["dockerfile"] == dockerfile
        assert (REPO / service["build"]["context"] / dockerfile).is_file()
        assert target_host in service["networks"]["default"]["aliases"]
        assert "command" not in service and "entrypoint" not in service, "the image's CMD must stay the command"


def test_every_scorer_mounts_the_model_repository_read_only_where_prd_model_store_points(
    compose: dict[str, Any],
) -> None:
    scorers = {
        name for name, service in compose["services"].items() if "PRD_MODEL_STORE" in service.get("environment", {})
    }
    assert scorers == set(SCORERS)
    for name in scorers:
        service = compose["services"][name]
        store = service["environment"]["PRD_MODEL_STORE"]
        mounts = [mount for mount in _bind_mounts(service) if mount[1] == store]
        assert mounts == [(f"./{MODEL_REPOSITORY}", store, "ro")], f"{name}: {store} is mounted as {mounts}"


def test_no_service_mounts_code_over_the_images_code(compose: dict[str, Any]) -> None:
    """The code comes from the image; into /app only data folders are mounted (runs, the model repository)."""
    data_folders = ("./runs", f"./{MODEL_REPOSITORY}")
    for name, service in compose["services"].items():
        for source, target, _mode in _bind_mounts(service):
            if target == "/app" or target.startswith("/app/"):
                assert source in data_folders, f"{name} mounts {source} at {target}, over the image's code"


def test_train_mounts_the_repository_read_write_at_its_working_tree_path(compose: dict[str, Any]) -> None:
    mounts = _bind_mounts(compose["services"]["train"])
    assert (f"./{MODEL_REPOSITORY}", f"/app/{MODEL_REPOSITORY}", "rw") in mounts, "export writes bundles there"
    assert ("./runs", "/app/runs", "rw") in mounts
    train_workdir = [a for i, a in dockerfile_instructions(DOCKER / "Dockerfile.train") if i == "WORKDIR"][-1]
    assert train_workdir == "/app", "relative paths (--store model_store/repository) must resolve to the mounts"


STALE_STORE_PATH = re.compile(
    r"model_store/(?=[\w<])(?!repository\b|CONTRACT\.md)|\./model_store:|--store model_store\s|/app/model_store\b(?!/)"
)
"""Store paths from before the model repository: model_store/<name>/..., the whole folder mounted, /app/model_store."""


def test_docker_files_and_compose_name_the_model_repository_not_the_old_store() -> None:
    files = [COMPOSE_FILE, REPO / ".dockerignore", *(path for path in sorted(DOCKER.rglob("*")) if path.is_file())]
    for path in files:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            assert not STALE_STORE_PATH.search(line), (
                f"{path.relative_to(REPO)}:{number} names an old store path: {line}"
            )


def test_check_bundle_defaults_to_the_services_model_store() -> None:
    spec = importlib.util.spec_from_file_location("check_bundle", DOCKER / "check_bundle.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.DEFAULT_STORE == MODEL_REPOSITORY
    assert Path(module.DEFAULT_STORE) == Settings.model_fields["model_store"].default


def test_every_bind_mount_source_exists(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for source, _target, _mode in _bind_mounts(service):
            if source.startswith("$") or source in ("./runs",):
                continue  # user-chosen data folder; runs/ is created by training
            assert (REPO / source).exists(), f"{name}: bind mount source {source} missing"


def test_named_volumes_are_declared_and_used(compose: dict[str, Any]) -> None:
    declared = set(compose["volumes"])
    used = {
        entry.split(":")[0]
        for service in compose["services"].values()
        for entry in service.get("volumes", [])
        if not entry.startswith((".", "/", "$"))
    }
    assert {"prometheus-data", "grafana-data"} <= declared
    assert used == declared


def test_prometheus_and_grafana_get_their_config_from_docker_folder(compose: dict[str, Any]) -> None:
    prometheus = _bind_mounts(compose["services"]["prometheus"])
    assert ("./docker/prometheus", "/etc/prometheus", "ro") in prometheus
    command = compose["services"]["prometheus"]["command"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in command
    grafana = _bind_mounts(compose["services"]["grafana"])
    assert ("./docker/grafana/provisioning", "/etc/grafana/provisioning", "ro") in grafana
    provider = load_yaml(DOCKER / "grafana" / "provisioning" / "dashboards" / "prd-inspect.yml")
    dashboards_path = provider["providers"][0]["options"]["path"]
    assert ("./docker/grafana/dashboards", dashboards_path, "ro") in grafana


def test_long_running_services_have_healthchecks(compose: dict[str, Any]) -> None:
    for name in LONG_RUNNING:
        check = compose["services"][name]["healthcheck"]
        assert check["test"][0] == "CMD" and len(check["test"]) > 1, name
        assert {"interval", "timeout", "retries"} <= set(check), name


def test_scorer_healthcheck_is_the_images_healthcheck(compose: dict[str, Any]) -> None:
    for name, dockerfile in SCORERS.items():
        instructions = dict(dockerfile_instructions(REPO / dockerfile))
        image_check = exec_form(instructions["HEALTHCHECK"].split(" CMD ", 1)[1])
        assert compose["services"][name]["healthcheck"]["test"][1:] == image_check
        assert image_check[-1] == f"/app/docker/{HEALTHCHECK_SCRIPT.name}"


def test_scorer_environment_names_are_service_settings(compose: dict[str, Any]) -> None:
    known = {f"PRD_{field.upper()}" for field in Settings.model_fields}
    for name in SCORERS:
        unknown = set(compose["services"][name]["environment"]) - known
        assert not unknown, f"{name} sets variables the service does not read: {sorted(unknown)}"


def _compose_command() -> list[str]:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker") and run(["docker", "compose", "version"]).returncode == 0:
        return ["docker", "compose"]
    return [require_binary("docker-compose")]


def test_compose_file_passes_compose_schema_validation(tmp_path: Path) -> None:
    command = _compose_command()
    result = run([*command, "--project-directory", str(REPO), "-f", str(COMPOSE_FILE), "config", "-q"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for profile in ("gpu", "cpu"):
        result = run([*command, "-f", str(COMPOSE_FILE), "--profile", profile, "config", "--services"], cwd=REPO)
        assert result.returncode == 0, result.stderr
        assert {"prometheus", "grafana"} <= set(result.stdout.split())
