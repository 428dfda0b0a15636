"""A small HTTP/1.1 load generator (stdlib asyncio): N keep-alive connections posting the same multipart request.

Deliberately minimal so the client costs little CPU next to the server it measures (httpx costs ~10× more per
request); it only speaks what uvicorn answers (Content-Length or chunked bodies).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LoadCell:
    concurrency: int
    requests: int
    errors: int
    seconds: float
    images_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float


def multipart_request(host: str, port: int, files: list[tuple[str, bytes]]) -> bytes:
    """The raw bytes of ``POST /score`` with ``files`` as repeated ``files`` fields."""
    boundary = "prd-bench-boundary-7d3f"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
        f"Content-Type: application/octet-stream\r\n\r\n".encode()
        + data
        + b"\r\n"
        for name, data in files
    ]
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    head = (
        f"POST /score HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: application/json\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one response; return (status, server wants to close)."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    status = int(head[0].split()[1])
    headers = {
        key.strip().lower(): value.strip() for key, _, value in (line.partition(":") for line in head[1:] if line)
    }
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return status, headers.get("connection", "").lower() == "close"


async def _worker(
    host: str, port: int, request: bytes, stop_at: float, budget: list[int], latencies: list[float], errors: list[int]
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < stop_at and budget[0] > 0:
            budget[0] -= 1
            start = time.perf_counter()
            writer.write(request)
            await writer.drain()
            status, close = await _read_response(reader)
            latencies.append(time.perf_counter() - start)
            if status != 200:
                errors.append(status)
            if close:
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
    finally:
        writer.close()


async def run_load(
    host: str, port: int, request: bytes, images_per_request: int, concurrency: int, seconds: float, max_requests: int
) -> LoadCell:
    """Keep ``concurrency`` requests in flight for ``seconds`` (or ``max_requests`` in all); latency per request."""
    latencies: list[float] = []
    errors: list[int] = []
    budget = [max_requests]
    start = time.perf_counter()
    stop_at = start + seconds
    await asyncio.gather(
        *(_worker(host, port, request, stop_at, budget, latencies, errors) for _ in range(concurrency))
    )
    elapsed = time.perf_counter() - start
    ok = len(latencies) - len(errors)
    p50, p95, p99 = (float(np.percentile(latencies, q) * 1000.0) if latencies else float("nan") for q in (50, 95, 99))
    return LoadCell(concurrency, len(latencies), len(errors), elapsed, ok * images_per_request / elapsed, p50, p95, p99)
