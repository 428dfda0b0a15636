"""The review page at ``/``: plain HTML, JS and CSS shipped in the package (``service/static``), no build step and
no external assets. The page itself needs no API key; it sends the one typed into it (kept in the tab's
``sessionStorage``) as ``X-API-Key`` to ``/models`` and ``/score``, like any other client.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from fastapi import APIRouter, Response
from starlette.exceptions import HTTPException

ASSETS = {
    "review.html": "text/html; charset=utf-8",
    "review.js": "text/javascript; charset=utf-8",
    "review.css": "text/css; charset=utf-8",
}
"""The files the page is made of, with their media types; nothing else under ``static/`` is served."""

SECURITY_HEADERS = {
    # Everything from this origin; images may be data: URLs (the heatmaps). A stray external URL fails loudly.
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}

router = APIRouter(tags=["review"], include_in_schema=False)


@cache
def asset(name: str) -> bytes:
    """The packaged file ``name`` (one of ``ASSETS``), read once."""
    return resources.files("service").joinpath("static", name).read_bytes()


def _serve(name: str) -> Response:
    return Response(asset(name), media_type=ASSETS[name], headers=SECURITY_HEADERS)


@router.get("/")
async def review_page() -> Response:
    return _serve("review.html")


@router.get("/review/{name}")
async def review_asset(name: str) -> Response:
    if name not in ASSETS or name.endswith(".html"):
        raise HTTPException(404, "no such file of the review page (it has review.js and review.css)")
    return _serve(name)
