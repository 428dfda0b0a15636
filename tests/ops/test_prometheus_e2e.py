"""End to end: the real scorer scores images, a real Prometheus scrapes it, and every query of the dashboard and
the rules returns data.

The scorer is `python -m service` (the images' CMD) on a tiny real ONNX bundle; Prometheus is Debian's binary
with the repository's rule files. Two waves of traffic (normal and anomalous images of two categories, a file that
is not an image, a request with too many files) leave counters that moved between scrapes, so rates and quantiles
have values. Dashboard queries run with Grafana's variables substituted (`$category` = All). An alert expression
is quiet on a healthy system, so it must be accepted as written and return data in its ``bool`` form.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import httpx
import numpy as np
import pytest

from tests.fixtures.tiny_bundle import make_tiny_bundle
from tests.ops.live import (
    finite_values,
    instant_query,
    running_prometheus,
    running_service,
    service_env,
    wait_for,
)
from tests.ops.support import (
    HEALTHCHECK_SCRIPT,
    SCRAPE_JOB,
    Query,
    dashboard_queries,
    free_port,
    require_binary,
    rule_queries,
    substitute_variables,
    with_bool_comparisons,
)

pytestmark = pytest.mark.prometheus

CATEGORIES = ("tire", "wood")
MAX_FILES = 4
IMAGES_PER_WAVE = 4
QUERY_DEADLINE_S = 30.0


@dataclass(frozen=True)
class Stack:
    service: str
    port: int
    prometheus: str


def _png(rgb: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return encoded.tobytes()


def _part(channel: int, anomalous: bool) -> bytes:
    """A 64×64 part of one colour (the tiny model recognises category by colour); a white patch is the defect."""
    image = np.zeros((64, 64, 3), dtype=np.uint8)
    image[..., channel] = 180
    if anomalous:
        image[:16, :16] = 255
    return _png(image)


def _score_wave(service: str) -> None:
    """Score 4 images (normal + anomalous, both categories, given and recognised) and make two bad requests."""
    with httpx.Client(base_url=service, timeout=30) as client:
        given = [("files", (f"tire-{i}.png", _part(0, bool(i)), "image/png")) for i in range(2)]
        response = client.post("/score", files=given, data={"category": CATEGORIES[0]})
        assert response.status_code == 200, response.text
        verdicts = [result["is_anomalous"] for result in response.json()["results"]]
        assert verdicts == [False, True]
        recognised = [("files", (f"wood-{i}.png", _part(1, bool(i)), "image/png")) for i in range(2)]
        response = client.post("/score", files=recognised)
        assert response.status_code == 200, response.text
        assert {result["category"] for result in response.json()["results"]} == {CATEGORIES[1]}
        bad = client.post("/score", files=[("file", ("notes.png", b"this is not an image", "image/png"))])
        assert 400 <= bad.status_code < 500, bad.text
        assert bad.headers["content-type"].startswith("application/problem+json")
        too_many = [("files", (f"{i}.png", _part(0, False), "image/png")) for i in range(MAX_FILES + 1)]
        assert 400 <= client.post("/score", files=too_many).status_code < 500


def _scored_total(prometheus: str) -> float:
    values = finite_values(instant_query(prometheus, "sum(prd_images_scored_total)"))
    return values[0] if values else -1.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    prometheus_binary = require_binary("prometheus")
    workdir = tmp_path_factory.mktemp("ops-e2e")
    make_tiny_bundle(workdir / "store", name="prd", categories=CATEGORIES)
    port = free_port()
    env = service_env(workdir / "store", port, model_name="prd", max_files=str(MAX_FILES), batch_window_ms="20")
    with running_service(env, workdir / "service.log") as service:
        with running_prometheus(prometheus_binary, f"127.0.0.1:{port}", workdir) as prometheus:
            _score_wave(service)  # creates the labelled series...
            wait_for(lambda: _scored_total(prometheus) == IMAGES_PER_WAVE, 30, "a scrape of the first wave")
            _score_wave(service)  # ...which this wave moves, so rates and quantiles are defined
            wait_for(lambda: _scored_total(prometheus) == 2 * IMAGES_PER_WAVE, 30, "a scrape of the second wave")
            yield Stack(service=service, port=port, prometheus=prometheus)


def _poll_finite(prometheus: str, expr: str) -> list[float]:
    """Finite values of ``expr``, retried until QUERY_DEADLINE_S (recording rules need an evaluation first)."""
    deadline = time.monotonic() + QUERY_DEADLINE_S
    while True:
        values = finite_values(instant_query(prometheus, expr))
        if values or time.monotonic() > deadline:
            return values
        time.sleep(0.5)


def test_prometheus_scrapes_the_running_scorer(stack: Stack) -> None:
    targets = httpx.get(f"{stack.prometheus}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
    scorer = [target for target in targets if target["labels"]["job"] == SCRAPE_JOB]
    assert [target["health"] for target in scorer] == ["up"]


@pytest.mark.parametrize("query", dashboard_queries(), ids=lambda query: query.source)
def test_dashboard_query_returns_data(stack: Stack, query: Query) -> None:
    expr = substitute_variables(query.expr)
    assert _poll_finite(stack.prometheus, expr), f"{query.source}: no data for\n{expr}"


@pytest.mark.parametrize("query", rule_queries(), ids=lambda query: query.source)
def test_rule_expression_returns_data(stack: Stack, query: Query) -> None:
    instant_query(stack.prometheus, query.expr)  # accepted as written
    expr = with_bool_comparisons(query.expr) if query.kind == "alert" else query.expr
    assert _poll_finite(stack.prometheus, expr), f"{query.source}: no data for\n{expr}"


def test_rules_load_and_evaluate_without_errors(stack: Stack) -> None:
    expected = {query.name for query in rule_queries()}

    def evaluated() -> bool:
        groups = httpx.get(f"{stack.prometheus}/api/v1/rules", timeout=10).json()["data"]["groups"]
        loaded = [rule for group in groups for rule in group["rules"]]
        return {rule["name"] for rule in loaded} == expected and all(rule["health"] == "ok" for rule in loaded)

    wait_for(evaluated, QUERY_DEADLINE_S, "every rule loaded and evaluated with health ok")


def test_category_variable_lists_the_scored_categories(stack: Stack) -> None:
    response = httpx.get(
        f"{stack.prometheus}/api/v1/label/category/values",
        params={"match[]": "prd_images_scored_total"},
        timeout=10,
    )
    assert set(response.json()["data"]) == set(CATEGORIES)


def test_container_healthcheck_passes_on_the_live_service_and_fails_without_one(stack: Stack) -> None:
    probe = [sys.executable, str(HEALTHCHECK_SCRIPT)]
    live = subprocess.run(probe, env={**os.environ, "PRD_PORT": str(stack.port)}, timeout=30, check=False)
    assert live.returncode == 0
    dead = subprocess.run(probe, env={**os.environ, "PRD_PORT": str(free_port())}, timeout=30, check=False)
    assert dead.returncode == 1
