"""The API documentation: OpenAPI text for the routes (the multipart body, both answer forms, every problem answer)
and the /docs (Swagger UI) and /redoc pages, whose JavaScript, CSS and icon the app serves itself.

The score route parses its form itself (see ``service.uploads``), so its request body is described here by hand.
A factory network has no internet: FastAPI's default pages load Swagger UI and ReDoc from a CDN (and ReDoc's fonts
from Google), so here they come from the ``fastapi-offline`` package's copies under ``DOCS_ASSETS_URL``.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from service.errors import PROBLEM_JSON
from service.schemas import Problem

SCORE_DESCRIPTION = """
Send images as `multipart/form-data`: one in field `file`, or several in repeated `files` fields (PNG, JPEG, BMP,
TIFF, WebP; gray, RGB, RGBA; 8 or 16 bit). Each image is decoded, resized to the model's input by the bundle's rule
and scored together with images of other requests (micro-batching). Images of the categories the bundle tiles
(`GET /models`, `input.tiled_categories`) keep their aspect ratio: they are cut into overlapping tiles along their
long side and answered with the highest tile's score and one heatmap stitched back at the image's own size.

**Category**: `category` (form field or query) applies to every image of the request and must be one of the model's
categories (see `GET /models`); without it, each image's category is recognised (closest category centroid) on the
squashed image, whose tiles then follow when that category is tiled — naming the category saves that first pass.

**Answers**
- JSON (default): `{"model": {...}, "results": [...]}`, one result per image in upload order. With `?heatmap=true`
  each result carries `heatmap_png` (base64 PNG at the image's own size, colour scale calibrated per category);
  with `?overlay=true` the heatmap is drawn over the photo.
- `Accept: image/png` with exactly one image: the heatmap PNG itself (overlay with `?overlay=true`), the verdict in
  `X-PRD-*` headers — `curl -F file=@part.png -H 'Accept: image/png' host:8000/score -o heat.png`.

**One bad file among several**: the request is answered **422** (`application/problem+json`) whenever any file is
not a usable image, so a client that only checks the status code never takes a part as inspected when one of its
views was not. The body lists **every** bad file in `errors` (index, filename, kind, reason) and still carries the
verdicts of the good files in `results`, so nothing that could be scored is lost.

Limits (413): total upload bytes, files per request; pixels per image (a 422 `too_many_pixels` entry, checked from
the header before decoding). When the inference queue is full the answer is 503 with `Retry-After`, at once.
"""

_BINARY = {"type": "string", "format": "binary"}

SCORE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "file": {**_BINARY, "description": "One image."},
                        "files": {
                            "type": "array",
                            "items": _BINARY,
                            "description": "Several images (repeat the field).",
                        },
                        "category": {"type": "string", "description": "Category of every image (optional)."},
                    },
                    "anyOf": [{"required": ["file"]}, {"required": ["files"]}],
                }
            }
        },
    }
}

_PNG_HEADERS = {
    name: {"description": text, "schema": {"type": "string"}}
    for name, text in {
        "X-PRD-Score": "Raw anomaly score.",
        "X-PRD-Normalized-Score": "0..1, 0.5 at the threshold.",
        "X-PRD-Threshold": "Threshold of the category.",
        "X-PRD-Anomalous": "true or false.",
        "X-PRD-Category": "Category used (URL-encoded).",
        "X-PRD-Category-Source": "given, recognised or unknown.",
        "X-PRD-Model": "name/version.",
        "X-PRD-Image-Size": "WIDTHxHEIGHT of the upload (and of the PNG).",
    }.items()
}


def _problem(description: str) -> dict[str, Any]:
    return {"model": Problem, "description": description}


SCORE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Verdicts as JSON, or with `Accept: image/png` (one image) the heatmap PNG.",
        "content": {"image/png": {"schema": _BINARY}},
        "headers": _PNG_HEADERS,
    },
    401: _problem("API keys are configured and X-API-Key is missing or wrong."),
    406: _problem("`Accept: image/png` with more than one file."),
    408: _problem("The body did not arrive within the body timeout."),
    413: _problem("Upload over the byte limit, more files or pixels than allowed, or more tiles than the queue holds."),
    415: _problem("The body is not multipart/form-data."),
    422: _problem(
        "A file is not a usable image (all listed in `errors`; good files in `results`), a form field is "
        "wrong or missing, or the category is unknown."
    ),
    503: _problem("At capacity (with Retry-After, answered before any decoding), model not ready, or shutting down."),
}

MANAGEMENT_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: _problem("API keys are configured and X-API-Key is missing or wrong."),
    409: _problem("The bundle in the store cannot be served; the model in service stays."),
    503: _problem("No model loaded yet."),
}


def problem_json_openapi(app: FastAPI, api_keys: bool = True) -> dict[str, Any]:
    """The app's OpenAPI schema with error answers under ``application/problem+json`` (what is really sent); without
    configured keys (``api_keys`` false) it declares no ``X-API-Key`` scheme and no 401, as none is asked for."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    if not api_keys:
        schema.get("components", {}).pop("securitySchemes", None)
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            if not api_keys:
                operation.pop("security", None)
                operation.get("responses", {}).pop("401", None)
            for status, response in operation.get("responses", {}).items():
                content = response.get("content", {})
                ref = content.get("application/json", {}).get("schema", {}).get("$ref", "")
                if status[:1] in ("4", "5") and ref.endswith("/Problem"):
                    content[PROBLEM_JSON] = content.pop("application/json")
    app.openapi_schema = schema
    return schema


DOCS_ASSETS_URL = "/docs-assets"
"""Where the app serves Swagger UI's and ReDoc's files (swagger-ui-bundle.js, swagger-ui.css, redoc.standalone.js)."""
DOCS_ASSETS_PACKAGE = "fastapi_offline"


def install_docs(app: FastAPI, docs_url: str = "/docs", redoc_url: str = "/redoc") -> None:
    """Serve /docs and /redoc with every asset from the app itself; the app must be built with both URLs ``None``."""
    assets = resources.files(DOCS_ASSETS_PACKAGE) / "static"
    app.mount(DOCS_ASSETS_URL, StaticFiles(directory=str(assets)), name="docs-assets")
    oauth2_redirect_url = f"{docs_url}/oauth2-redirect"

    @app.get(docs_url, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=f"{root}{oauth2_redirect_url}",
            swagger_js_url=f"{root}{DOCS_ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_ASSETS_URL}/favicon.png",
        )

    @app.get(oauth2_redirect_url, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get(redoc_url, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{DOCS_ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{DOCS_ASSETS_URL}/favicon.png",
            with_google_fonts=False,
        )
