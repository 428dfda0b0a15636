"""OpenAPI text for the routes: the multipart body, both answer forms (JSON and PNG), and every problem answer.

The score route parses its form itself (see ``service.uploads``), so its request body is described here by hand.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

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
    413: _problem("Upload over the byte limit, or more files than allowed."),
    415: _problem("The body is not multipart/form-data."),
    422: _problem(
        "A file is not a usable image (all listed in `errors`; good files in `results`), a form field is "
        "wrong or missing, or the category is unknown."
    ),
    503: _problem("Queue full (with Retry-After), model not ready, or shutting down."),
}

MANAGEMENT_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: _problem("API keys are configured and X-API-Key is missing or wrong."),
    409: _problem("The bundle in the store cannot be served; the model in service stays."),
    503: _problem("No model loaded yet."),
}


def problem_json_openapi(app: FastAPI) -> dict[str, Any]:
    """The app's OpenAPI schema with error answers under ``application/problem+json`` (what is really sent)."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            for status, response in operation.get("responses", {}).items():
                content = response.get("content", {})
                ref = content.get("application/json", {}).get("schema", {}).get("$ref", "")
                if status[:1] in ("4", "5") and ref.endswith("/Problem"):
                    content[PROBLEM_JSON] = content.pop("application/json")
    app.openapi_schema = schema
    return schema
