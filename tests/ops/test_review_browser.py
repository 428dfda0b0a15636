"""The review page in a real browser (Debian's headless chromium): the service from the shipped bundle with API
keys on, a real photograph picked in the page, the verdict read from what the page shows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fixtures.real_data import SHIPPED_STORE, require_real_data
from tests.ops.browser import headless_chromium, score_on_review_page
from tests.ops.live import running_service, service_env
from tests.ops.support import free_port, require_binary

pytestmark = pytest.mark.slow
KEY = "review-test-key"
LATER_FIELDS = {
    "index": 0,
    "filename": "a.png",
    "category": "wood",
    "category_source": "recognised",
    "score": 1.0,
    "normalized_score": 0.2,
    "threshold": 2.0,
    "is_anomalous": False,
    "width": 8,
    "height": 8,
    "tiles": 1,
    "category_similarity": {"tire": 0.4, "wood": 0.91},
    "false_alarm_probability": 0.015,
    "unknown_part": False,
}
"""A result with the fields a later bundle may add; the page shows each when present and needs none of them."""


def test_review_page_scores_a_real_image_with_api_keys_on(tmp_path: Path) -> None:
    chromium = require_binary("chromium", "Debian: apt-get install chromium; .ci/run installs it")
    data = require_real_data()
    images = [data / "wood/test/defect/100000007.jpg", data / "wood/test/good/100.jpg"]
    env = service_env(SHIPPED_STORE, free_port(), api_keys=KEY, providers="CPUExecutionProvider", warmup_runs="1")
    with running_service(env, tmp_path / "service.log") as url, headless_chromium(chromium, tmp_path) as page:
        assert score_on_review_page(page, url, images, api_key=KEY) == ["ANOMALOUS", "NORMAL"]
        first = page.evaluate("document.querySelector('.result').innerText")
        assert "100000007.jpg" in first and "wood (recognised)" in first and "vs threshold" in first, first
        assert page.evaluate("document.querySelectorAll('.result .legend .bar').length") == 2
        assert page.evaluate("sessionStorage.getItem('prd-api-key')") == KEY
        later = page.evaluate(f"renderResult({json.dumps(LATER_FIELDS)}).textContent")  # shown once results carry them
        assert "category matchwood 0.910, tire 0.400" in later and "false-alarm probability1.50 %" in later, later
        assert "unknown partno" in later, later
        unexpected = [error for error in page.errors() if "status of 401" not in error]  # /models before the key
        assert unexpected == [], unexpected
