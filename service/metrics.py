"""Every Prometheus metric of the service, in one place (names and labels are the contract in model_store/CONTRACT.md).

The registry is injected so tests and the benchmark can build several apps in one process, each with a fresh
``CollectorRegistry``. Label values are bounded: route templates, status classes, categories of the manifest,
fixed reason and kind lists — never file names, scores or raw paths.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REJECT_REASONS = (
    "queue_full",
    "too_large",
    "too_many_files",
    "too_many_pixels",
    "unauthorized",
    "shutting_down",
    "not_ready",
    "body_timeout",
    "client_closed",
)
DECODE_KINDS = ("empty", "not_an_image", "corrupt", "too_many_pixels", "unsupported_mode", "bad_size")
UNMATCHED_ROUTE = "unmatched"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_FAST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_NORMALIZED_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)

__all__ = ["CONTENT_TYPE_LATEST", "HttpMetricsMiddleware", "ServiceMetrics", "exposition"]


class ServiceMetrics:
    """The service's metric objects, registered in one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.http_requests = Counter(
            "prd_http_requests_total", "HTTP requests answered.", ["route", "method", "status_class"], registry=registry
        )
        self.http_duration = Histogram(
            "prd_http_request_duration_seconds",
            "Time from request start to the last response byte.",
            ["route", "method"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.images_scored = Counter(
            "prd_images_scored_total",
            "Images scored, by category and verdict.",
            ["category", "verdict"],
            registry=registry,
        )
        self.normalized_score = Histogram(
            "prd_anomaly_score_normalized",
            "Normalised anomaly score (0.5 = the category threshold).",
            ["category"],
            buckets=_NORMALIZED_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            "prd_batch_size",
            "Graph inputs (images or their tiles) per inference run.",
            buckets=_BATCH_BUCKETS,
            registry=registry,
        )
        self.queue_depth = Gauge("prd_queue_depth", "Images waiting for inference.", registry=registry)
        self.queue_wait = Histogram(
            "prd_queue_wait_seconds", "Time an image waited for its batch.", buckets=_FAST_BUCKETS, registry=registry
        )
        self.inference = Histogram(
            "prd_inference_seconds", "ONNX Runtime time per batch run.", buckets=_FAST_BUCKETS, registry=registry
        )
        self.rejected = Counter(
            "prd_rejected_requests_total", "Requests refused before scoring, by reason.", ["reason"], registry=registry
        )
        self.decode_errors = Counter(
            "prd_decode_errors_total",
            "Uploaded files that are not usable images, by kind.",
            ["kind"],
            registry=registry,
        )
        self.model_info = Info("prd_model", "The model being served.", registry=registry)
        self.model_ready = Gauge("prd_model_ready", "1 when a model is loaded and warm.", registry=registry)
        _touch(self.rejected, REJECT_REASONS)
        _touch(self.decode_errors, DECODE_KINDS)

    def record_scored(self, category: str, normalized: float, anomalous: bool) -> None:
        verdict = "anomalous" if anomalous else "normal"
        self.images_scored.labels(category=category, verdict=verdict).inc()
        self.normalized_score.labels(category=category).observe(normalized)

    def record_decode_error(self, kind: str) -> None:
        self.decode_errors.labels(kind=kind if kind in DECODE_KINDS else "corrupt").inc()

    def record_rejected(self, reason: str) -> None:
        self.rejected.labels(reason=reason).inc()

    def set_model(self, name: str, version: int, provider: str) -> None:
        self.model_info.info({"name": name, "version": str(version), "provider": provider})
        self.model_ready.set(1)


def _touch(counter: Counter, labels: Iterable[str]) -> None:
    """Create every known label value at 0 so dashboards and alerts see the series before the first event."""
    for label in labels:
        counter.labels(label)


def exposition(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)


def status_class(status: int) -> str:
    return f"{status // 100}xx"


class HttpMetricsMiddleware:
    """Pure ASGI middleware counting requests by route template (not raw path: bounded labels) and status class.

    Pure ASGI rather than ``BaseHTTPMiddleware`` so the request's ``receive`` reaches the route untouched (the
    score route listens on it for client disconnects).
    """

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_and_watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_watch)
        finally:
            route = getattr(scope.get("route"), "path", None) or UNMATCHED_ROUTE
            method = scope.get("method", "GET") if scope.get("method") in _METHODS else "OTHER"
            self.metrics.http_requests.labels(route=route, method=method, status_class=status_class(status)).inc()
            self.metrics.http_duration.labels(route=route, method=method).observe(time.perf_counter() - start)
