"""Three scorers behind Debian's HAProxy, checked on /readyz: a rolling update under load loses no request.

Real processes on loopback (``deploy/replicas.py``): three ``python -m service`` on a tiny real bundle whose
store holds version 1 and an identical version 2, and HAProxy in front. While four clients post images through
HAProxy, scorer 0 is restarted on version 2 (drained by HAProxy's runtime API, stopped, started, back once ready),
scorer 1 hot-reloads version 2 in place (``POST /models/reload``) and scorer 2 is restarted like scorer 0. Every
answer must be a 200 whose results equal a single scorer's answer for that image; none may fail. The load is
bounded in count and time; nothing is timed.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import cv2
import httpx
import pytest

from deploy.replicas import Load, Replicas, haproxy_config
from tests.fixtures.tiny_bundle import make_tiny_bundle, square_image
from tests.ops.support import require_binary, run

REPLICAS = 3
CLIENTS = 4
HAPROXY_INSTALL = "Debian: apt-get install haproxy; .ci/run installs it"


def same_results(got: list[dict], want: list[dict]) -> bool:
    """Equal answers: every field exact, floats to float32 rounding (ONNX Runtime sums a map in another order
    depending on the batch an image shares, on one scorer as on several: measured up to ~1e-6 relative)."""
    if len(got) != len(want) or any(a.keys() != b.keys() for a, b in zip(got, want, strict=True)):
        return False
    for a, b in zip(got, want, strict=True):
        for key, value in a.items():
            if isinstance(value, float) and not isinstance(value, bool):
                if not math.isclose(value, b[key], rel_tol=1e-5, abs_tol=1e-6):
                    return False
            elif value != b[key]:
                return False
    return True


def _images() -> list[bytes]:
    shapes = [(4, (255, 255, 255)), (8, (255, 255, 255)), (12, (255, 0, 0)), (20, (0, 255, 0)), (0, (0, 0, 0))]
    return [cv2.imencode(".png", square_image(32, square, color))[1].tobytes() for square, color in shapes]


@pytest.mark.slow
def test_rolling_update_behind_haproxy_loses_no_request(tmp_path: Path) -> None:
    haproxy = require_binary("haproxy", HAPROXY_INSTALL)
    store = tmp_path / "store"
    for version in (1, 2):  # the same graph twice: every version must answer as the other does
        make_tiny_bundle(store, "prd", version=version)
    images = _images()
    settings = {"PRD_MODEL_NAME": "prd", "PRD_INTRA_OP_THREADS": "1", "PRD_DECODE_THREADS": "1"}
    with Replicas(store, REPLICAS, tmp_path / "run", settings, haproxy) as replicas:
        replicas.start(model_version="1")
        single = [
            httpx.post(f"{replicas.replica_url(0)}/score", files=[("file", (f"part{i}.png", image, "image/png"))])
            for i, image in enumerate(images)
        ]
        assert all(r.status_code == 200 for r in single)
        expected = [r.json()["results"] for r in single]
        assert all(abs(r["score"] - r["threshold"]) > 1e-3 for [r] in expected)  # no verdict hangs on a last bit
        versions: Counter[int] = Counter()

        def check(index: int, response: httpx.Response) -> str:
            if response.status_code != 200:
                return f"HTTP {response.status_code}"
            body = response.json()
            versions[body["model"]["version"]] += 1
            return "ok" if same_results(body["results"], expected[index]) else "different answer"

        load = Load(replicas.url, images, check, concurrency=CLIENTS, limit=3000, seconds=240)
        with load.running():
            replicas.restart(0, model_version="latest")
            assert replicas.reload(1, "2")["changed"] is True
            replicas.restart(2, model_version="latest")
            before = sum(load.outcomes.values())
            httpx.get(f"{replicas.url}/readyz", timeout=5)  # traffic keeps flowing after the update
        answered = dict(load.outcomes)
        retries = {k: sum(int(row[k] or 0) for row in replicas.stats().values()) for k in ("wretr", "wredis")}
        served = [httpx.get(f"{replicas.replica_url(i)}/readyz").json()["model"]["version"] for i in range(REPLICAS)]
    print(f"rolling update: {answered} answers, versions {dict(versions)}, HAProxy retries {retries}")
    assert answered.get("ok", 0) >= before > 0 and set(answered) == {"ok"}, answered
    assert served == [2, 2, 2] and versions[1] > 0 and versions[2] > 0


def test_haproxy_config_checks_readiness_and_passes_haproxy_check(tmp_path: Path) -> None:
    config = haproxy_config(8000, [8001, 8002], tmp_path / "haproxy.sock")
    assert "http-check send meth GET uri /readyz" in config and "bind 127.0.0.1:8000" in config
    assert config.count("server s") == 2
    haproxy = require_binary("haproxy", HAPROXY_INSTALL)
    path = tmp_path / "haproxy.cfg"
    path.write_text(config)

    result = run([haproxy, "-c", "-f", str(path)])
    assert result.returncode == 0, result.stdout + result.stderr
