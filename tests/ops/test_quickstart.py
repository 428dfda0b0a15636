"""README's first command, `make serve`, run as written: fresh virtual environment, default bundle, real service.

What this covers: the Makefile target itself (venv creation, the locked install of requirements/serve.txt with
hashes, then the project without dependencies, the default-bundle check,
`python -m service`) in a new venv under a temporary folder, then a score request (JSON and PNG heatmap) against
the default bundle committed in model_store/repository/. What it changes from README: the venv folder (so the test never
touches the developer's .venv), PRD_HOST=127.0.0.1 and a free PRD_PORT instead of 0.0.0.0:8000. It needs the
package registry (or its local mirror) for the install. `make test`, README's second command, is what `.ci/run`
runs, from a clean clone.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

from tests.ops.live import background, log_tail, wait_for
from tests.ops.support import REPO, SERVICE_COMMAND, free_port, run

README_SERVE_TIMEOUT_S = 420.0


def _clean_env(**extra: str) -> dict[str, str]:
    """This environment without the caller's PRD_* settings, venv or make state."""
    dropped = ("VIRTUAL_ENV", "MAKEFLAGS", "MAKELEVEL", "MFLAGS")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRD_") and k not in dropped}
    env.update(extra)
    return env


def _part_png() -> bytes:
    """A 300×400 grey part with a texture, as a camera would send it."""
    rng = np.random.default_rng(0)
    image = (128 + rng.normal(0, 8, (300, 400, 3))).clip(0, 255).astype(np.uint8)
    ok, encoded = cv2.imencode(".png", image)
    assert ok
    return encoded.tobytes()


def test_make_serve_installs_the_service_without_torch_checks_the_bundle_then_runs_the_service() -> None:
    assert shutil.which("make"), "make is required (Debian: apt-get install make)"
    result = run(["make", "-n", "serve", "VENV=/fresh/venv"], cwd=REPO, env=_clean_env())
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].endswith("-m venv /fresh/venv")
    assert "/fresh/venv/bin/python -m pip install --no-deps --require-hashes -r requirements/serve.txt" in lines
    assert "/fresh/venv/bin/python -m pip install --no-deps -e ." in lines
    assert "/fresh/venv/bin/python docker/check_bundle.py" in lines
    assert lines[-1] == f"exec /fresh/venv/bin/python -m {SERVICE_COMMAND[-1]}"
    assert "torch" not in result.stdout


@pytest.mark.slow
def test_make_serve_on_a_fresh_venv_scores_with_the_default_bundle(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    port = free_port()
    log = tmp_path / "make-serve.log"
    url = f"http://127.0.0.1:{port}"
    env = _clean_env(PRD_HOST="127.0.0.1", PRD_PORT=str(port))
    with background(["make", "serve", f"VENV={venv}"], log, env) as process:

        def ready() -> bool:
            assert process.poll() is None, f"make serve exited with {process.returncode}:\n{log_tail(log)}"
            return httpx.get(f"{url}/readyz", timeout=2).status_code == 200

        wait_for(ready, README_SERVE_TIMEOUT_S, "`make serve` to install and serve the default bundle", log)
        assert run([str(venv / "bin" / "python"), "-c", "import torch"]).returncode != 0, "make serve installed torch"
        files = {"file": ("part.png", _part_png(), "image/png")}
        scored = httpx.post(f"{url}/score", files=files, timeout=60)
        assert scored.status_code == 200, scored.text
        result = scored.json()["results"][0]
        assert {"score", "normalized_score", "threshold", "is_anomalous", "category"} <= set(result)
        heatmap = httpx.post(f"{url}/score", files=files, headers={"Accept": "image/png"}, timeout=60)
        assert heatmap.status_code == 200
        assert heatmap.content.startswith(b"\x89PNG\r\n\x1a\n")
