"""``python -m service`` as a real process on loopback: SIGHUP reloads, SIGTERM answers in-flight requests and exits."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fixtures.images import png
from tests.fixtures.tiny_bundle import make_tiny_bundle, square_image

REPO = Path(__file__).resolve().parents[2]
PATIENCE_S = 60.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _poll(condition, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + PATIENCE_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {PATIENCE_S} s")
        time.sleep(0.05)


def _ready_version(base: str) -> int | None:
    try:
        response = httpx.get(f"{base}/readyz", timeout=2)
    except httpx.TransportError:
        return None
    return response.json()["model"]["version"] if response.status_code == 200 else None


@pytest.fixture
def server(store: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = _free_port()
    env = {
        **os.environ,
        "PRD_MODEL_STORE": str(store),
        "PRD_MODEL_NAME": "tiny",
        "PRD_HOST": "127.0.0.1",
        "PRD_PORT": str(port),
        "PRD_PROVIDERS": "CPUExecutionProvider",
        "PRD_INTRA_OP_THREADS": "1",
        "PRD_MAX_BATCH_SIZE": "8",
        "PRD_BATCH_WINDOW_MS": "1500",
        "PRD_LOG_LEVEL": "warning",
    }
    process = subprocess.Popen([sys.executable, "-m", "service"], cwd=REPO, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        _poll(lambda: _ready_version(base) is not None or process.poll() is not None, "server ready")
        assert process.poll() is None, "server exited during startup"
        yield process, base
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


@pytest.mark.slow
def test_sighup_reloads_the_newest_version(server: tuple[subprocess.Popen[bytes], str], store: Path) -> None:
    process, base = server
    assert _ready_version(base) == 1
    make_tiny_bundle(store, version=2)
    process.send_signal(signal.SIGHUP)
    _poll(lambda: _ready_version(base) == 2, "version 2 in service")


@pytest.mark.slow
def test_sigterm_answers_requests_in_flight_then_exits(server: tuple[subprocess.Popen[bytes], str]) -> None:
    """A is half uploaded, B waits in the queue for A (1.5 s batch window): SIGTERM, then both are answered."""
    process, base = server
    port = int(base.rsplit(":", 1)[1])
    data = png(square_image(32, 8))
    boundary = "b0undary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'.encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    head = (
        f"POST /score HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {len(body)}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n"
    ).encode()
    answers: list[httpx.Response] = []
    with socket.create_connection(("127.0.0.1", port), timeout=PATIENCE_S) as upload_a:
        upload_a.sendall(head + body[:40])
        files = {"file": ("b.png", data, "image/png")}
        b = threading.Thread(
            target=lambda: answers.append(httpx.post(f"{base}/score", files=files, timeout=PATIENCE_S))
        )
        b.start()
        _poll(lambda: "prd_queue_depth 1.0" in httpx.get(f"{base}/metrics", timeout=2).text, "B queued, waiting for A")
        process.send_signal(signal.SIGTERM)
        upload_a.sendall(body[40:])
        reply_a = b""
        while b"\r\n\r\n" not in reply_a:
            reply_a += upload_a.recv(65536)
        b.join(PATIENCE_S)
    assert reply_a.startswith(b"HTTP/1.1 200")
    assert answers and answers[0].status_code == 200
    assert answers[0].json()["results"][0]["score"] == pytest.approx(0.9375, abs=1e-5)
    # uvicorn re-raises the captured SIGTERM after its graceful shutdown, so the exit status reports the signal
    assert process.wait(PATIENCE_S) in (0, -signal.SIGTERM)


@pytest.mark.slow
def test_benchmark_client_and_raw_timer_measure_a_real_server(store: Path, tmp_path: Path) -> None:
    import asyncio

    from model_store.bundle import load_bundle
    from service.bench.__main__ import part_png
    from service.bench.load import multipart_request, run_load
    from service.bench.raw import measure_raw
    from service.bench.server import HOST, service_process
    from service.runtime import open_model
    from tests.service.harness import settings_for

    model = open_model(load_bundle(store, "tiny"), settings_for(store))
    raw = measure_raw(model, [1, 4], seconds=0.05)
    assert [cell.batch_size for cell in raw] == [1, 4] and all(cell.images_per_s > 0 for cell in raw)
    env = {"PRD_MODEL_STORE": str(store), "PRD_MODEL_NAME": "tiny", "PRD_PROVIDERS": "CPUExecutionProvider"}
    with service_process(env, tmp_path / "server.log") as port:
        request = multipart_request(HOST, port, [("a.png", part_png(32)), ("b.png", part_png(32))])
        cell = asyncio.run(run_load(HOST, port, request, 2, concurrency=2, seconds=30.0, max_requests=10))
    assert (cell.requests, cell.errors) == (10, 0)
    assert cell.images_per_s > 0 and cell.p50_ms <= cell.p95_ms <= cell.p99_ms
