"""Typed service errors and their one mapping to HTTP: ``application/problem+json`` (RFC 9457) with a human reason.

Code raises the error where the problem is found (``raise UnknownCategory(detail)``); the handlers installed by
``install_error_handlers`` turn it into a response and count refusals in ``prd_rejected_requests_total``. Framework
errors (query validation, 404, 405) and unexpected exceptions get the same body shape, so a line integrator parses
one format. Bad input is always a 4xx; only faults of the service itself are 5xx.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.metrics import ServiceMetrics

PROBLEM_JSON = "application/problem+json"
logger = logging.getLogger("service.errors")


class ServiceError(Exception):
    """Base of every error the service answers on purpose; subclasses fix status, title and refusal reason."""

    status: ClassVar[int] = 500
    title: ClassVar[str] = "Internal error"
    slug: ClassVar[str] = "internal"
    reject_reason: ClassVar[str | None] = None

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra


class Unauthorized(ServiceError):
    status, title, slug, reject_reason = 401, "Missing or wrong API key", "unauthorized", "unauthorized"


class NotAcceptable(ServiceError):
    status, title, slug = 406, "Cannot answer in the requested media type", "not-acceptable"


class UploadTooLarge(ServiceError):
    status, title, slug, reject_reason = 413, "Upload too large", "too-large", "too_large"


class TooManyFiles(ServiceError):
    status, title, slug, reject_reason = 413, "Too many files", "too-many-files", "too_many_files"


class TooManyPixels(ServiceError):
    """The request's files hold more pixels together than one request may (read from their headers)."""

    status, title, slug, reject_reason = 413, "Too many pixels", "too-many-pixels", "too_many_pixels"


class RequestTimeout(ServiceError):
    """The body did not arrive within ``PRD_BODY_TIMEOUT_S`` (a stalled or deliberately slow client)."""

    status, title, slug, reject_reason = 408, "Request body too slow", "request-timeout", "body_timeout"


class UnsupportedMediaType(ServiceError):
    status, title, slug = 415, "Expected multipart/form-data", "unsupported-media-type"


class BadForm(ServiceError):
    """The form is readable but does not say what to score (wrong or missing field, conflicting values)."""

    status, title, slug = 422, "Form fields not understood", "bad-form"


class UnknownCategory(ServiceError):
    status, title, slug = 422, "Unknown category", "unknown-category"


class BadImages(ServiceError):
    """One or more files are not usable images; ``errors`` lists every one, ``results`` scores the others."""

    status, title, slug = 422, "Some files are not usable images", "bad-images"


class ClientDisconnected(ServiceError):
    """The client went away before its images were scored (nginx's 499: nobody reads this answer)."""

    status, title, slug, reject_reason = 499, "Client closed request", "client-disconnected", "client_closed"


class ModelUnavailable(ServiceError):
    """A bundle in the store cannot be served (reload); the model in service, if any, stays."""

    status, title, slug = 409, "Model bundle cannot be served", "model-unavailable"


class NotReady(ServiceError):
    status, title, slug, reject_reason = 503, "Model not ready", "not-ready", "not_ready"


class ShuttingDown(ServiceError):
    status, title, slug, reject_reason = 503, "Service is shutting down", "shutting-down", "shutting_down"


class QueueFull(ServiceError):
    status, title, slug, reject_reason = 503, "Inference queue full", "queue-full", "queue_full"


class InferenceFailed(ServiceError):
    status, title, slug = 500, "Inference failed", "inference-failed"


def problem_response(
    status: int,
    title: str,
    detail: str,
    *,
    slug: str,
    instance: str,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body = {"type": f"urn:prd:problem:{slug}", "title": title, "status": status, "detail": detail, "instance": instance}
    body.update(extra)
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)


def install_error_handlers(app: FastAPI, metrics: ServiceMetrics) -> None:
    """Map every error to problem+json; count refusals by reason."""

    async def service_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ServiceError)
        if exc.reject_reason:
            metrics.record_rejected(exc.reject_reason)
        if exc.status >= 500 and not exc.reject_reason:  # refusals (503 at capacity, draining) are counted, not logged
            logger.error("%s %s: %s", request.method, request.url.path, exc.detail)
        return problem_response(
            exc.status,
            exc.title,
            exc.detail,
            slug=exc.slug,
            instance=request.url.path,
            headers=exc.headers,
            **exc.extra,
        )

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = [
            {"field": ".".join(str(part) for part in err.get("loc", ())), "reason": str(err.get("msg", ""))}
            for err in exc.errors()
        ]
        detail = "; ".join(f"{e['field']}: {e['reason']}" for e in errors) or "request not valid"
        return problem_response(
            422, "Invalid request", detail, slug="invalid-request", instance=request.url.path, errors=errors
        )

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        title = {404: "Not found", 405: "Method not allowed"}.get(exc.status_code, "HTTP error")
        return problem_response(
            exc.status_code,
            title,
            str(exc.detail),
            slug=f"http-{exc.status_code}",
            instance=request.url.path,
            headers=dict(exc.headers or {}),
        )

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        detail = f"unexpected {exc.__class__.__name__}; the service log has the traceback"
        return problem_response(500, "Internal error", detail, slug="internal", instance=request.url.path)

    app.add_exception_handler(ServiceError, service_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)
