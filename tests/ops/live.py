"""Real processes for the end-to-end ops tests: the scorer (`python -m service`) and a Prometheus scraping it.

Everything listens on 127.0.0.1 only, every wait is bounded, and every process started here is stopped (SIGTERM,
then SIGKILL) when its context exits, also when the test fails.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import yaml

from deploy.replicas import stop_process
from tests.ops.support import REPO, RULE_FILES, SCRAPE_JOB, SERVICE_COMMAND, free_port


def log_tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def wait_for(check: Callable[[], bool], timeout: float, what: str, log: Path | None = None) -> None:
    """Poll ``check`` every 0.2 s until it is true; fail after ``timeout`` seconds naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError, OSError):
            if check():
                return
        time.sleep(0.2)
    detail = f"\n--- {log.name} ---\n{log_tail(log)}" if log else ""
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")


@contextlib.contextmanager
def background(
    command: Sequence[str], log: Path, env: Mapping[str, str] | None = None, cwd: Path = REPO
) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``command`` in its own process group with output to ``log``; always stop it on exit."""
    with open(log, "wb") as output:
        process = subprocess.Popen(
            list(command),
            cwd=cwd,
            env=dict(env or os.environ),
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            yield process
        finally:
            stop_process(process, grace=15.0)


def service_env(store: Path, port: int, **settings: str) -> dict[str, str]:
    """The environment of a scorer on 127.0.0.1:``port`` serving ``store`` (extra PRD_* settings as keywords)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PRD_")}
    env.update({"PRD_MODEL_STORE": str(store), "PRD_HOST": "127.0.0.1", "PRD_PORT": str(port)})
    env.update({f"PRD_{key.upper()}": value for key, value in settings.items()})
    return env


@contextlib.contextmanager
def running_service(env: Mapping[str, str], log: Path, ready_timeout: float = 90) -> Iterator[str]:
    """Run SERVICE_COMMAND (with this interpreter) until the block ends; yield its base URL once /readyz is 200."""
    url = f"http://127.0.0.1:{env['PRD_PORT']}"
    with background([sys.executable, *SERVICE_COMMAND[1:]], log, env) as process:

        def ready() -> bool:
            assert process.poll() is None, f"service exited with {process.returncode}:\n{log_tail(log)}"
            return httpx.get(f"{url}/readyz", timeout=2).status_code == 200

        wait_for(ready, ready_timeout, "the service's /readyz", log)
        yield url


def prometheus_config(target: str, scrape_interval: str = "1s") -> dict[str, Any]:
    """A config like docker/prometheus/prometheus.yml (same job name and rules) scraping ``target`` fast."""
    return {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "rule_files": [str(path) for path in RULE_FILES],
        "scrape_configs": [
            {"job_name": SCRAPE_JOB, "metrics_path": "/metrics", "static_configs": [{"targets": [target]}]}
        ],
    }


@contextlib.contextmanager
def running_prometheus(binary: str, target: str, workdir: Path) -> Iterator[str]:
    """Run a real Prometheus on a free loopback port scraping ``target``; yield its base URL once ready."""
    port = free_port()
    config = workdir / "prometheus.yml"
    config.write_text(yaml.safe_dump(prometheus_config(target)))
    command = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--storage.tsdb.retention.time=1h",
        "--log.level=warn",
    ]
    log = workdir / "prometheus.log"
    url = f"http://127.0.0.1:{port}"
    with background(command, log) as process:

        def ready() -> bool:
            assert process.poll() is None, f"prometheus exited with {process.returncode}:\n{log_tail(log)}"
            return httpx.get(f"{url}/-/ready", timeout=2).status_code == 200

        wait_for(ready, 30, "Prometheus /-/ready", log)
        yield url


def instant_query(prometheus: str, expr: str) -> dict[str, Any]:
    """``/api/v1/query``'s ``data`` for ``expr``; an invalid expression fails with Prometheus' own error."""
    response = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10)
    body = response.json()
    assert response.status_code == 200 and body["status"] == "success", f"{expr}\n→ {body.get('error', body)}"
    return body["data"]


def finite_values(data: Mapping[str, Any]) -> list[float]:
    """The finite sample values of a query result (vector, matrix or scalar)."""
    if data["resultType"] == "scalar":
        raw = [data["result"][1]]
    elif data["resultType"] == "matrix":
        raw = [value for series in data["result"] for _, value in series["values"]]
    else:
        raw = [series["value"][1] for series in data["result"]]
    values = [float(value) for value in raw]
    return [value for value in values if value == value and abs(value) != float("inf")]
