"""Faults from outside (#16): shutdown past the drain time, clients that leave or crawl, start-up and reload
failures, and the smaller refusals. Models are held with the harness gate; nothing asserts on time."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from starlette.types import Message

from model_store.bundle import MANIFEST_FILE, Bundle
from service.__main__ import BACKSTOP_S, DrainingServer, build_config
from service.app import create_app
from service.config import Settings
from service.runtime import OnnxModel, open_model
from service.state import ServiceState
from tests.fixtures.images import png, uniform
from tests.fixtures.tiny_bundle import make_tiny_bundle
from tests.service.harness import Gate, gated_loader, run, serving, settings_for, until

BOUNDARY = "prd-test-boundary"
HEAD = [(b"content-type", f"multipart/form-data; boundary={BOUNDARY}".encode()), (b"host", b"prd.test")]
PARTIAL_BODY = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'.encode()


async def _call(app: Any, messages: list[Message], then: str) -> list[Message]:
    """``POST /score`` straight into the ASGI app: ``messages`` then a disconnect (``then="leave"``) or silence."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/score",
        "raw_path": b"/score",
        "query_string": b"",
        "root_path": "",
        "headers": HEAD,
        "client": ("127.0.0.1", 40000),
        "server": ("prd.test", 80),
    }
    pending = list(messages)
    sent: list[Message] = []

    async def receive() -> Message:
        if pending:
            return pending.pop(0)
        if then == "leave":
            return {"type": "http.disconnect"}
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def _status_and_body(sent: list[Message]) -> tuple[int, dict[str, Any]]:
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], json.loads(body)


def test_in_flight_requests_past_the_drain_time_get_503_problem_json_not_500(store: Path) -> None:
    gate = Gate()

    async def scenario() -> None:
        async with serving(settings_for(store), loader=gated_loader(gate)) as h:
            held, queued = await h.hold_one_and_queue(gate, ("a.png", png(uniform(32))), 2)
            h.state.begin_drain(expire_after_s=0)
            answers = await asyncio.gather(held, *queued)
            gate.open()
            for answer in answers:
                assert answer.status_code == 503 and answer.headers["content-type"] == "application/problem+json"
                assert answer.json()["type"] == "urn:prd:problem:shutting-down"
            assert h.metric("prd_http_requests_total", route="/score", method="POST", status_class="5xx") == 3
            assert h.metric("prd_rejected_requests_total", reason="shutting_down") == 3

    run(scenario())


def test_uvicorn_config_keeps_a_fractional_drain_and_limits_connections(store: Path) -> None:
    settings = settings_for(store, drain_timeout_s=0.5)
    config = build_config(settings, create_app(settings, registry=CollectorRegistry()))
    assert config.timeout_graceful_shutdown == 0.5 + BACKSTOP_S
    assert config.limit_concurrency == 512
    assert config.http.__name__.startswith("HeaderDeadline")  # type: ignore[union-attr]


def test_a_client_leaving_mid_upload_is_counted_as_closed_not_as_a_server_error(
    store: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        async with serving(settings_for(store)) as h:
            sent = await _call(h.app, [{"type": "http.request", "body": PARTIAL_BODY, "more_body": True}], "leave")
            status, body = _status_and_body(sent)
            assert status == 499 and body["type"] == "urn:prd:problem:client-disconnected"
            assert h.metric("prd_http_requests_total", route="/score", method="POST", status_class="5xx") == 0
            assert h.metric("prd_rejected_requests_total", reason="client_closed") == 1

    with caplog.at_level(logging.WARNING):
        run(scenario())
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR or record.exc_info]


def test_a_body_slower_than_the_body_timeout_is_408(store: Path) -> None:
    async def scenario() -> None:
        async with serving(settings_for(store, body_timeout_s=0.2)) as h:
            sent = await _call(h.app, [{"type": "http.request", "body": PARTIAL_BODY, "more_body": True}], "stall")
            status, body = _status_and_body(sent)
            assert status == 408 and "did not arrive within 0.2 s" in body["detail"]
            assert h.metric("prd_rejected_requests_total", reason="body_timeout") == 1

    run(scenario())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def _live(settings: Settings) -> AsyncIterator[tuple[DrainingServer, ServiceState]]:
    """The real uvicorn server (our protocol, our drain) in this event loop, on a free loopback port."""
    app = create_app(settings, registry=CollectorRegistry())
    server = DrainingServer(build_config(settings, app), app.state.prd)
    task = asyncio.ensure_future(server.serve())
    await until(lambda: server.started or task.done(), "server started")
    try:
        yield server, app.state.prd
    finally:
        server.should_exit = True
        await task


async def _exchange(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 20)
    writer.close()
    return answer


def test_a_connection_that_does_not_finish_its_headers_is_closed(store: Path) -> None:
    async def scenario() -> None:
        settings = settings_for(store, port=_free_port(), header_timeout_s=0.2, log_level="warning")
        async with _live(settings) as (server, _):
            port = settings.port
            assert await _exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n") == b""  # never sends the blank line
            answer = await _exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert answer.startswith(b"HTTP/1.1 200")

    run(scenario())


def test_a_slow_upload_during_shutdown_is_answered_503_at_the_drain_time(store: Path) -> None:
    async def scenario() -> None:
        settings = settings_for(store, port=_free_port(), drain_timeout_s=0.3, log_level="warning")
        async with _live(settings) as (server, state):
            await until(lambda: state.manager.current is not None, "model loaded")
            head = (
                f"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
                f"Content-Length: 100000\r\n\r\n"
            ).encode()
            reader, writer = await asyncio.open_connection("127.0.0.1", settings.port)
            writer.write(head + PARTIAL_BODY)  # and never the rest
            await writer.drain()
            await until(lambda: state.batcher is not None and state.batcher._on_way == 1, "request announced")
            state.begin_drain(expire_after_s=settings.drain_timeout_s)  # what SIGTERM does (DrainingServer)
            server.should_exit = True
            answer = await asyncio.wait_for(reader.read(), 20)
            writer.close()
            assert answer.startswith(b"HTTP/1.1 503") and b"application/problem+json" in answer
            assert b"urn:prd:problem:shutting-down" in answer

    run(scenario())


class _FailingWarmUp:
    def __init__(self, inner: OnnxModel, error: Exception) -> None:
        self._inner, self._error = inner, error

    def warm_up(self, *args: Any) -> None:
        raise self._error

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _failing_loader(error: Exception, versions: set[int]) -> Any:
    def load(bundle: Bundle, settings: Settings) -> OnnxModel:
        model = open_model(bundle, settings)
        return _FailingWarmUp(model, error) if bundle.manifest.version in versions else model  # type: ignore[return-value]

    return load


@pytest.mark.parametrize("error", [RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION"), OSError(5, "EIO")])
def test_a_failing_first_load_leaves_the_service_not_ready_with_the_reason(store: Path, error: Exception) -> None:
    async def scenario() -> None:
        async with serving(settings_for(store), loader=_failing_loader(error, {1}), ready=False) as h:
            await until(lambda: "no model could be loaded" in h.state.manager.not_ready_reason, "load failed")
            ready = await h.client.get("/readyz")
            assert ready.status_code == 503 and type(error).__name__ in ready.json()["reason"]

    run(scenario())


@pytest.mark.parametrize("error", [RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION"), OSError(5, "EIO")])
def test_a_reload_that_fails_is_409_and_the_old_version_keeps_serving(store: Path, error: Exception) -> None:
    async def scenario() -> None:
        async with serving(settings_for(store), loader=_failing_loader(error, {2})) as h:
            make_tiny_bundle(store, version=2)
            response = await h.client.post("/models/reload")
            assert response.status_code == 409 and response.headers["content-type"] == "application/problem+json"
            assert (
                type(error).__name__ in response.json()["detail"]
                and "still serving tiny v1" in response.json()["detail"]
            )
            assert (await h.client.get("/readyz")).json()["model"]["version"] == 1
            assert (await h.score(("a.png", png(uniform(32))))).status_code == 200

    run(scenario())


def test_a_version_folder_whose_manifest_names_another_version_is_refused_without_absolute_paths(
    tmp_path: Path,
) -> None:
    directory = make_tiny_bundle(tmp_path, version=8)
    manifest = json.loads((directory / MANIFEST_FILE).read_text())
    (directory / MANIFEST_FILE).write_text(json.dumps({**manifest, "version": 6}))

    async def scenario() -> None:
        async with serving(settings_for(tmp_path), ready=False) as h:
            await until(lambda: "no model could be loaded" in h.state.manager.not_ready_reason, "load refused")
            reason = (await h.client.get("/readyz")).json()["reason"]
            assert "folder is version 8 but its manifest says version 6" in reason
            assert "tiny/8" in reason and str(tmp_path) not in reason

    run(scenario())


def test_an_oversized_text_part_names_the_field_and_what_to_send(store: Path) -> None:
    async def scenario() -> None:
        async with serving(settings_for(store)) as h:
            response = await h.client.post("/score", files=[("file", (None, "x" * 70_000))])  # text: no filename
            assert response.status_code == 422 and response.json()["fields"] == ["file"]
            assert "form field 'file' is text over 64 KB" in response.json()["detail"]
            assert "curl -F file=@part.png" in response.json()["detail"]

    run(scenario())


@pytest.mark.parametrize("keys", ["", "k1"])
def test_openapi_declares_the_api_key_only_when_keys_are_set_and_a_file_field_as_required(
    store: Path, keys: str
) -> None:
    async def scenario() -> None:
        async with serving(settings_for(store, api_keys=keys), ready=False) as h:
            spec = (await h.client.get("/openapi.json")).json()
            score = spec["paths"]["/score"]["post"]
            schemes = spec.get("components", {}).get("securitySchemes", {})
            declared = "X-API-Key" in json.dumps(schemes) and "security" in score
            assert declared == bool(keys) and ("401" in score["responses"]) == bool(keys)
            schema = score["requestBody"]["content"]["multipart/form-data"]["schema"]
            assert schema["anyOf"] == [{"required": ["file"]}, {"required": ["files"]}]

    run(scenario())
