"""Every bad input is a 4xx application/problem+json naming the file and the reason; never a 500."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.images import five_sample_tiff, png, truncated_png, uniform
from tests.fixtures.tiny_bundle import square_image
from tests.service.harness import run, serving, settings_for

PROBLEM = "application/problem+json"


def _problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["status"] == status and body["detail"]
    return body


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"", "empty"),
        (b"%PDF-1.4 this is not an image", "not_an_image"),
        (truncated_png(), "corrupt"),
        (png(uniform(40)), "too_many_pixels"),
        (five_sample_tiff(), "unsupported_mode"),
    ],
    ids=["zero-bytes", "not-an-image", "truncated", "over-pixel-limit", "unsupported-mode"],
)
def test_bad_file_is_422_naming_file_and_kind(store: Path, data: bytes, kind: str) -> None:
    async def scenario() -> None:
        async with serving(settings_for(store, max_pixels=1200)) as h:
            body = _problem(await h.score(("cam1.bin", data), field="file"), 422)
            assert body["errors"] == [
                {"index": 0, "filename": "cam1.bin", "kind": kind, "detail": body["errors"][0]["detail"]}
            ]
            assert "cam1.bin" in body["detail"] and kind in body["detail"]
            assert body["results"] == []
            assert h.metric("prd_decode_errors_total", kind=kind) == 1

    run(scenario())


def test_one_bad_file_among_good_ones_lists_it_and_still_scores_the_others(store: Path) -> None:
    async def scenario() -> None:
        async with serving(settings_for(store)) as h:
            files = [
                ("good0.png", png(square_image(32, 8))),
                ("bad.png", truncated_png()),
                ("good2.png", png(uniform(32))),
            ]
            body = _problem(await h.score(*files), 422)
            assert [(e["index"], e["filename"], e["kind"]) for e in body["errors"]] == [(1, "bad.png", "corrupt")]
            assert [(r["index"], r["filename"]) for r in body["results"]] == [(0, "good0.png"), (2, "good2.png")]
            assert body["results"][0]["score"] == pytest.approx(0.9375, abs=1e-5)
            assert body["model"] == {"name": "tiny", "version": 1}

    run(scenario())


def test_wrong_field_name_is_422_naming_the_field(store: Path) -> None:
    async def scenario() -> None:
        async with serving(settings_for(store)) as h:
            body = _problem(await h.score(("a.png", png(uniform(32))), field="image"), 422)
            assert "'image'" in body["detail"] and "'file'" in body["detail"]
            assert body["fields"] == ["image"]

    run(scenario())


def test_text_in_file_field_is_422_with_curl_hint(store: Path) -> None:
    async def scenario() -> None:
        async with serving(settings_for(store)) as h:
            boundary = "b0undary"
            form = f'--{boundary}\r\nContent-Disposition: form-data; name="file"\r\n\r\npart.png\r\n--{boundary}--\r\n'
            headers = {"content-type": f"multipart/form-data; boundary={boundary}"}
            body = _problem(await h.client.post("/score", content=form.encode(), headers=headers), 422)
            assert "@" in body["detail"]

    run(scenario())


def test_request_without_multipart_is_415(store: Path) -> None:
    async def scenario() -> None:
        async with serving(settings_for(store)) as h:
            response = await h.client.post("/score", content=png(uniform(32)), headers={"content-type": "image/png"})
            assert "multipart/form-data" in _problem(response, 415)["detail"]

    run(scenario())


def test_too_many_files_is_413_and_counted(store: Path) -> None:
    async def scenario() -> None:
        async with serving(settings_for(store, max_files=2)) as h:
            files = [(f"{i}.png", png(uniform(32))) for i in range(3)]
            assert "limit of 2" in _problem(await h.score(*files), 413)["detail"]
            many = [(f"{i}.png", png(uniform(32))) for i in range(6)]
            _problem(await h.score(*many), 413)
            assert h.metric("prd_rejected_requests_total", reason="too_many_files") == 2
            assert h.metric("prd_batch_size_count") == 0

    run(scenario())


def test_upload_over_byte_limit_is_413_with_or_without_content_length(store: Path) -> None:
    big = png(square_image(256, 64))
    boundary = "prdboundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\n'
            f"Content-Type: image/png\r\n\r\n"
        ).encode()
        + big
        + f"\r\n--{boundary}--\r\n".encode()
    )

    async def chunks():  # no Content-Length: the limit must hold while the body streams in
        for start in range(0, len(body), 256):
            yield body[start : start + 256]

    async def scenario() -> None:
        async with serving(settings_for(store, max_upload_bytes=len(big) // 2)) as h:
            _problem(await h.score(("big.png", big), field="file"), 413)
            headers = {"content-type": f"multipart/form-data; boundary={boundary}"}
            response = await h.client.post("/score", content=chunks(), headers=headers)
            assert "content-length" not in response.request.headers
            _problem(response, 413)
            assert h.metric("prd_rejected_requests_total", reason="too_large") == 2

    run(scenario())


def test_unknown_category_is_422_listing_known_ones(store: Path) -> None:
    async def scenario() -> None:
        async with serving(settings_for(store)) as h:
            response = await h.score(("a.png", png(uniform(32))), params={"category": "gamma"})
            body = _problem(response, 422)
            assert "'gamma'" in body["detail"] and body["known"] == ["alpha", "beta"]

    run(scenario())


def test_conflicting_categories_are_422(store: Path) -> None:
    async def scenario() -> None:
        async with serving(settings_for(store)) as h:
            files = [("file", ("a.png", png(uniform(32)), "image/png"))]
            response = await h.client.post(
                "/score", files=files, data={"category": "beta"}, params={"category": "alpha"}
            )
            _problem(response, 422)

    run(scenario())


def test_invalid_query_parameter_is_problem_json(store: Path) -> None:
    async def scenario() -> None:
        async with serving(settings_for(store)) as h:
            body = _problem(await h.score(("a.png", png(uniform(32))), params={"heatmap": "maybe"}), 422)
            assert body["errors"][0]["field"] == "query.heatmap"

    run(scenario())


def test_api_key_guards_scoring_but_not_probes(store: Path) -> None:
    async def scenario() -> None:
        async with serving(settings_for(store, api_keys="k1,k2")) as h:
            image = ("a.png", png(uniform(32)))
            assert "missing" in _problem(await h.score(image), 401)["detail"]
            _problem(await h.score(image, headers={"X-API-Key": "nope"}), 401)
            assert (await h.score(image, headers={"X-API-Key": "k2"})).status_code == 200
            assert (await h.client.get("/models")).status_code == 401
            for path in ("/healthz", "/readyz", "/metrics"):
                assert (await h.client.get(path)).status_code == 200
            assert h.metric("prd_rejected_requests_total", reason="unauthorized") == 3

    run(scenario())


def test_unknown_route_is_problem_json(store: Path) -> None:
    async def scenario() -> None:
        async with serving(settings_for(store), ready=False) as h:
            _problem(await h.client.get("/nope"), 404)
            assert h.metric("prd_http_requests_total", route="unmatched", method="GET", status_class="4xx") == 1

    run(scenario())
