"""Admission on the whole request (#16): decided once from the headers, second pass included; refusals are 503 +
Retry-After before anything is decoded; pixel budgets per request and process-wide; full-size copies re-decoded.

The model is held with the harness gate and answers are counted; nothing asserts on time.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from service import imaging
from tests.fixtures.images import png, png_claiming, uniform
from tests.fixtures.tiny_bundle import make_tiny_bundle
from tests.service.harness import Gate, gated_loader, run, serving, settings_for, until

RED = (255, 0, 0)


def _tall_red() -> bytes:
    """96 × 32, recognised as ``alpha`` (red), which is tiled: one squashed pass, then three tiles."""
    tall = np.zeros((96, 32, 3), dtype=np.uint8)
    tall[40:48, 0:8] = RED
    return png(tall)


def test_admission_reserves_the_second_pass_so_an_admitted_request_is_finished(tmp_path: Path) -> None:
    make_tiny_bundle(tmp_path, max_tiles=4, tiled_categories=["alpha"])
    gate = Gate()

    async def scenario() -> None:
        settings = settings_for(tmp_path, queue_limit=4, max_files=2, max_queue_wait_ms=0)
        async with serving(settings, loader=gated_loader(gate)) as h:
            held, _ = await h.hold_one_and_queue(gate, ("a.png", png(uniform(32))), 0)
            tall = asyncio.ensure_future(h.score(("tall.png", _tall_red())))
            # its squashed image is queued and its three tiles reserved: 4 of 4, before any tile exists
            await until(lambda: h.state.batcher.depth == 1 and h.state.batcher.load == 4, "tall request admitted")
            refused = await h.score(("b.png", png(uniform(32))))
            assert refused.status_code == 503 and refused.headers["content-type"] == "application/problem+json"
            assert int(refused.headers["Retry-After"]) >= 1 and "needs about 2" in refused.json()["detail"]
            gate.open()
            answered = await tall
            assert answered.status_code == 200 and answered.json()["results"][0]["tiles"] == 3
            assert (await held).status_code == 200
            assert h.metric("prd_rejected_requests_total", reason="queue_full") == 1
            assert h.state.batcher.load == 0  # every reservation given back

    run(scenario())


def test_a_request_whose_inputs_would_wait_past_the_deadline_is_refused_at_once(tmp_path: Path) -> None:
    make_tiny_bundle(tmp_path)
    gate = Gate()

    async def scenario() -> None:
        async with serving(settings_for(tmp_path, max_queue_wait_ms=2500), loader=gated_loader(gate)) as h:
            h.state.batcher._seconds_per_image = 1.0  # as if measured: one second per graph input
            held, queued = await h.hold_one_and_queue(gate, ("a.png", png(uniform(32))), 1)
            refused = await h.score(("b.png", png(uniform(32))))  # 1 running, 1 queued + its own: 3 s > 2.5 s
            assert refused.status_code == 503 and "would wait about 3.0 s" in refused.json()["detail"]
            assert refused.headers["Retry-After"] == "2"  # the 2 s of work ahead
            gate.open()
            assert [r.status_code for r in await asyncio.gather(held, *queued)] == [200, 200]
            h.state.batcher._seconds_per_image = 1.0
            assert (await h.score(("c.png", png(uniform(32))))).status_code == 200  # nothing ahead: 1 s fits

    run(scenario())


def test_a_request_over_the_pixel_budget_is_413_from_its_headers(tmp_path: Path) -> None:
    make_tiny_bundle(tmp_path)

    async def scenario() -> None:
        settings = settings_for(tmp_path, max_pixels=40_000_000, max_request_pixels=60_000_000)
        async with serving(settings) as h:
            bombs = [(f"{i}.png", png_claiming(5000, 5000)) for i in range(3)]  # 25 MP each by header, 3 × 70 B
            response = await h.score(*bombs)
            assert response.status_code == 413 and response.json()["type"] == "urn:prd:problem:too-many-pixels"
            assert "75000000 pixels" in response.json()["detail"] and "limit of 60000000" in response.json()["detail"]
            assert h.metric("prd_rejected_requests_total", reason="too_many_pixels") == 1
            assert h.metric("prd_decode_errors_total", kind="corrupt") == 0  # nothing was decoded

    run(scenario())


def test_the_process_wide_decode_budget_refuses_while_full_and_frees_when_done(tmp_path: Path) -> None:
    make_tiny_bundle(tmp_path)
    gate = Gate()

    async def scenario() -> None:
        settings = settings_for(tmp_path, max_request_pixels=1024, decode_pixel_budget=1500)
        async with serving(settings, loader=gated_loader(gate)) as h:
            held, _ = await h.hold_one_and_queue(gate, ("a.png", png(uniform(32))), 0)  # 1024 pixels in use
            refused = await h.score(("b.png", png(uniform(32))))
            assert refused.status_code == 503 and "being decoded (limit 1500)" in refused.json()["detail"]
            gate.open()
            assert (await held).status_code == 200
            assert (await h.score(("c.png", png(uniform(32))))).status_code == 200

    run(scenario())


def test_images_beyond_the_kept_full_size_budget_are_decoded_again_with_the_same_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_tiny_bundle(tmp_path, max_tiles=4, tiled_categories=["alpha"])

    async def scenario() -> list[dict[str, object]]:
        async with serving(settings_for(tmp_path)) as h:
            response = await h.score(("t1.png", _tall_red()), ("t2.png", _tall_red()))
            assert response.status_code == 200
            return response.json()["results"]

    kept = run(scenario())
    monkeypatch.setattr(imaging, "KEEP_FULL_PIXELS", 0)
    decoded_again = run(scenario())
    assert decoded_again == kept and [r["tiles"] for r in kept] == [3, 3]


def test_when_already_full_a_request_is_refused_before_its_body_is_read(tmp_path: Path) -> None:
    make_tiny_bundle(tmp_path)
    gate = Gate()

    async def scenario() -> None:
        settings = settings_for(tmp_path, queue_limit=2, max_files=1, max_queue_wait_ms=0)
        async with serving(settings, loader=gated_loader(gate)) as h:
            held, queued = await h.hold_one_and_queue(gate, ("a.png", png(uniform(32))), 2)
            sent: list[dict[str, object]] = []

            async def never_sends_its_body() -> dict[str, object]:
                await asyncio.Event().wait()
                raise AssertionError("unreachable")

            async def send(message: dict[str, object]) -> None:
                sent.append(message)

            scope = {
                "type": "http",
                "method": "POST",
                "path": "/score",
                "raw_path": b"/score",
                "query_string": b"",
                "headers": [(b"content-type", b"multipart/form-data; boundary=x"), (b"host", b"prd.test")],
                "client": ("127.0.0.1", 40000),
                "server": ("prd.test", 80),
                "scheme": "http",
                "root_path": "",
                "http_version": "1.1",
                "asgi": {"version": "3.0"},
            }
            await h.app(scope, never_sends_its_body, send)  # returns only because nothing waits for the body
            assert sent[0]["status"] == 503 and (b"retry-after", b"1") in sent[0]["headers"]
            gate.open()
            assert [r.status_code for r in await asyncio.gather(held, *queued)] == [200, 200, 200]

    run(scenario())


def test_a_zero_wait_deadline_means_only_the_queue_limit_bounds_the_wait(tmp_path: Path) -> None:
    assert settings_for(tmp_path, max_queue_wait_ms=0).max_queue_wait_s is None
    assert settings_for(tmp_path).max_queue_wait_s == 2.0
