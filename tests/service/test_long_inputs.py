"""Settings errors are one line naming the variable; long client strings are cut in problem details and logs."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from service.__main__ import CutLongArguments
from service.config import Settings, settings_error_lines
from service.text import SHOWN_CHARS, shown
from tests.fixtures.images import png, uniform
from tests.service.harness import run, serving, settings_for

REPO = Path(__file__).resolve().parents[2]
LONG = "x" * 60_000


def test_shown_cuts_long_text_with_ellipsis_and_length() -> None:
    assert shown("bottle") == "'bottle'"
    assert shown(LONG) == f"'{'x' * SHOWN_CHARS}…' (60000 characters)"


def test_bad_port_exits_2_with_one_line_naming_the_variable() -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PRD_")}
    env["PRD_PORT"] = "abc"
    done = subprocess.run(
        [sys.executable, "-m", "service"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert done.stderr.strip() == "PRD_PORT: not a valid integer (got 'abc')"


@pytest.mark.parametrize(
    ("env", "line"),
    [
        ({"PRD_PORT": "70000"}, "PRD_PORT: must be at most 65535 (got '70000')"),
        ({"PRD_LOG_LEVEL": "loud"}, "PRD_LOG_LEVEL: must be one of critical, error, warning, info, debug (got 'loud')"),
        (
            {"PRD_ACCESS_LOG": "maybe"},
            "PRD_ACCESS_LOG: not a valid boolean (true/false, 1/0, yes/no, on/off) (got 'maybe')",
        ),
        ({"PRD_MODEL_VERSION": "0"}, "PRD_MODEL_VERSION: must be 'latest' or a positive integer (got '0')"),
        ({"PRD_QUEUE_LIMIT": "2"}, "PRD_QUEUE_LIMIT (2) must be at least PRD_MAX_FILES (16), or a request"),
        ({"PRD_BATCH_WINDOW_MS": LONG}, f"PRD_BATCH_WINDOW_MS: not a valid number (got {shown(LONG)})"),
    ],
)
def test_settings_errors_name_the_variable_and_what_it_accepts(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], line: str
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValidationError) as caught:
        Settings()
    lines = settings_error_lines(caught.value)
    assert len(lines) == 1 and lines[0].startswith(line), lines


def test_long_category_is_cut_in_the_problem_detail(store: Path) -> None:
    async def scenario() -> None:
        async with serving(settings_for(store)) as h:
            files = [("file", ("a.png", png(uniform(32)), "image/png"))]
            for response in (
                await h.client.post("/score", files=files, data={"category": LONG}),
                await h.client.post("/score", files=files, params={"category": LONG}),
                await h.client.post("/score", files=files, data={"category": LONG}, params={"category": "alpha"}),
            ):
                assert response.status_code == 422, response.text
                detail = response.json()["detail"]
                assert shown(LONG) in detail and len(detail) < 400, detail

    run(scenario())


def test_long_filename_is_cut_in_the_problem_detail(store: Path) -> None:
    async def scenario() -> None:
        async with serving(settings_for(store)) as h:
            response = await h.score((LONG[:5000] + ".png", b"not an image"), field="file")
            assert response.status_code == 422, response.text
            assert len(response.json()["detail"]) < 400, response.json()["detail"]

    run(scenario())


def test_access_log_cuts_a_long_path() -> None:
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("1.2.3.4:5", "POST", LONG, "1.1", 422),
        None,
    )
    assert CutLongArguments().filter(record)
    message = record.getMessage()
    assert len(message) < 400 and "(60000 characters)" in message and "422" in message
