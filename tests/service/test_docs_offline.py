"""/docs and /redoc on a factory network without internet: every script, style sheet and icon the pages name is
answered by the app itself, with the network blocked while the pages and their assets are fetched."""

from __future__ import annotations

import asyncio
import re
import socket
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry

from service.app import create_app
from service.routes.docs import DOCS_ASSETS_URL
from tests.service.harness import settings_for

ASSET_TYPES = {".js": "javascript", ".css": "text/css", ".png": "image/png"}


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a connection fails, as on an air-gapped line PC."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network blocked by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _linked_urls(html: str) -> list[str]:
    return re.findall(r"""(?:src|href)\s*=\s*['"]([^'"]+)['"]""", html) + re.findall(
        r"""url:\s*['"]([^'"]+)['"]""", html
    )


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_every_asset_from_the_app_with_the_network_blocked(
    page: str, store: Path, no_network: None
) -> None:
    async def fetch() -> None:
        app = create_app(settings_for(store), registry=CollectorRegistry())
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://prd") as client:
            response = await client.get(page)
            assert response.status_code == 200
            html = response.text
            assert "cdn" not in html.lower() and "fonts.googleapis" not in html
            urls = _linked_urls(html)
            assets = [url for url in urls if url.startswith(DOCS_ASSETS_URL)]
            assert assets, f"{page} names no asset of the app: {urls}"
            assert not [url for url in urls if re.match(r"(https?:)?//", url)], f"{page} links outside: {urls}"
            for url in assets:
                asset = await client.get(url)
                assert asset.status_code == 200, url
                assert len(asset.content) > 1000, url
                kind = ASSET_TYPES[Path(url).suffix]
                assert kind in asset.headers["content-type"], (url, asset.headers["content-type"])
            assert (await client.get(app.openapi_url or "")).status_code == 200

    asyncio.run(fetch())
