"""Runs ``python -m service`` as a subprocess on 127.0.0.1 for the benchmark, and stops it with SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _ready(port: int) -> dict[str, object] | None:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}/readyz", timeout=2) as response:
            return json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None


@contextmanager
def service_process(
    env_overrides: dict[str, str],
    log_path: Path,
    start_timeout_s: float = 180.0,
    cwd: Path | None = None,
    pids: list[int] | None = None,
) -> Iterator[int]:
    """Start the service with ``PRD_*`` overrides on a free loopback port; yield the port once ``/readyz`` is 200.

    ``cwd``: the checkout to run (another tree's ``service`` for before/after runs); ``pids`` receives the pid.
    """
    port = free_port()
    env = {**os.environ, **env_overrides, "PRD_HOST": HOST, "PRD_PORT": str(port), "PRD_ACCESS_LOG": "false"}
    env.setdefault("PRD_LOG_LEVEL", "warning")
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "service"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=cwd
        )
        if pids is not None:
            pids.append(process.pid)
        try:
            deadline = time.monotonic() + start_timeout_s
            while _ready(port) is None:
                if process.poll() is not None or time.monotonic() > deadline:
                    message = f"service did not become ready (exit code {process.poll()}); see {log_path}"
                    raise RuntimeError(message)
                time.sleep(0.2)
            yield port
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(60)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(10)
