"""docker-compose.yml for real (Debian's docker-compose v1): the CPU scorer and Prometheus come up, Prometheus
scrapes the scorer (target up, ``prd_model_ready`` 1) and has loaded the alert rules of docker/prometheus/rules.

Without registry access Prometheus is Debian's package on the air-gapped base (PRD_PROMETHEUS_IMAGE); Grafana's
image cannot be had here, so it is not started (its provisioning is checked statically in test_monitoring_config)."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.ops.containers import (
    CPU_IMAGE,
    PROMETHEUS_IMAGE,
    build,
    ensure_base_images,
    require_engine,
    skip_or_fail,
)
from tests.ops.live import instant_query, wait_for
from tests.ops.support import COMPOSE_FILE, REPO, RULE_FILES, SCRAPE_JOB, free_port, load_yaml, run

pytestmark = [pytest.mark.slow, pytest.mark.container]

SERVICES = ("scorer-cpu", "prometheus")


@pytest.fixture(scope="module")
def stack() -> Iterator[str]:
    """``docker-compose --profile cpu up -d scorer-cpu prometheus`` as a project of its own; yields Prometheus' URL."""
    require_engine()
    if shutil.which("docker-compose") is None:
        skip_or_fail("docker-compose is not installed (Debian: apt-get install docker-compose)")
    ensure_base_images("python", "prometheus")
    build("Dockerfile.cpu", CPU_IMAGE)  # always from this tree: an image left by an earlier run may hold older code
    prometheus_port = free_port()
    env = {
        **os.environ,
        "PRD_PROMETHEUS_IMAGE": os.environ.get("PRD_PROMETHEUS_IMAGE", PROMETHEUS_IMAGE),
        "PRD_PROMETHEUS_PORT": str(prometheus_port),
        "PRD_PUBLISH_PORT": f"127.0.0.1:{free_port()}",
    }
    compose = ["docker-compose", "-f", str(COMPOSE_FILE), "-p", f"prdtest{os.getpid()}", "--profile", "cpu"]
    try:
        up = run([*compose, "up", "-d", "--no-build", *SERVICES], timeout=300, env=env, cwd=REPO)
        assert up.returncode == 0, up.stderr[-3000:]
        yield f"http://127.0.0.1:{prometheus_port}"
    finally:
        logs = run([*compose, "logs", "--no-color", "--tail", "30"], timeout=60, env=env, cwd=REPO)
        print(logs.stdout[-5000:])
        run([*compose, "down", "-v", "--timeout", "30"], timeout=180, env=env, cwd=REPO)


def _scorer_target_up(prometheus: str) -> bool:
    targets = httpx.get(f"{prometheus}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
    return any(t["labels"]["job"] == SCRAPE_JOB and t["health"] == "up" for t in targets)


def test_prometheus_scrapes_the_scorer_and_sees_the_model_ready(stack: str) -> None:
    wait_for(lambda: httpx.get(f"{stack}/-/ready", timeout=5).status_code == 200, 120, "Prometheus /-/ready")
    wait_for(lambda: _scorer_target_up(stack), 180, f"the {SCRAPE_JOB} target to be up")
    deadline = time.monotonic() + 60
    values: list[str] = []
    while time.monotonic() < deadline:
        result = instant_query(stack, f'prd_model_ready{{job="{SCRAPE_JOB}"}}')["result"]
        values = [series["value"][1] for series in result]
        if values == ["1"]:
            break
        time.sleep(1)
    assert values == ["1"], values


def test_prometheus_loads_the_alert_rules(stack: str) -> None:
    wait_for(lambda: httpx.get(f"{stack}/-/ready", timeout=5).status_code == 200, 120, "Prometheus /-/ready")
    groups = httpx.get(f"{stack}/api/v1/rules", timeout=10).json()["data"]["groups"]
    loaded = {(group["name"], rule["name"]) for group in groups for rule in group["rules"]}
    expected = {
        (group["name"], rule.get("alert") or rule.get("record"))
        for path in RULE_FILES
        for group in load_yaml(path)["groups"]
        for rule in group["rules"]
    }
    assert expected and expected <= loaded, sorted(expected - loaded)
    assert any(rule["type"] == "alerting" for group in groups for rule in group["rules"])
