"""The review page at ``/``: served from the package, open without a key, and made of this origin's files only."""

from __future__ import annotations

import re
from pathlib import Path

from tests.service.harness import run, serving, settings_for

EXTERNAL_URL = re.compile(r"(?:https?:)?//[\w.-]+", re.IGNORECASE)
"""An absolute or protocol-relative URL (a CDN, a web font); the page may only use relative ones."""


def test_review_page_is_served_with_its_assets_and_no_external_urls(store: Path) -> None:
    async def scenario() -> None:
        async with serving(settings_for(store, api_keys="k1")) as h:
            page = await h.client.get("/")  # open: the key is typed into the page, not needed to load it
            assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
            assert "default-src 'self'" in page.headers["content-security-policy"]
            references = re.findall(r'(?:src|href)="([^"]+)"', page.text)
            assert {"review/review.js", "review/review.css", "docs", "metrics"} <= set(references)
            texts = {"/": page.text}
            for reference in ("review/review.js", "review/review.css"):
                response = await h.client.get(f"/{reference}")
                assert response.status_code == 200, reference
                texts[reference] = response.text
            for name, text in texts.items():
                assert not EXTERNAL_URL.findall(text), f"{name} refers to {EXTERNAL_URL.findall(text)}"
            assert 'fetch("score?overlay=true"' in texts["review/review.js"]
            assert "X-API-Key" in texts["review/review.js"] and "sessionStorage" in texts["review/review.js"]

    run(scenario())


def test_review_page_leaves_the_other_routes_alone(store: Path) -> None:
    async def scenario() -> None:
        async with serving(settings_for(store, api_keys="k1")) as h:
            assert (await h.client.get("/healthz")).json() == {"status": "alive"}
            assert (await h.client.get("/docs")).status_code == 200
            assert "/" not in (await h.client.get("/openapi.json")).json()["paths"]
            assert (await h.client.get("/models")).status_code == 401
            missing = await h.client.get("/review/secrets.txt")
            assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
            assert (await h.client.get("/review/review.html")).status_code == 404

    run(scenario())
