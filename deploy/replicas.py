"""Scorer replicas behind HAProxy on one machine: the config, a rolling update by readiness, and a 1-vs-N benchmark.

    python deploy/replicas.py config [--replicas 3] [--port 8000]      print an haproxy.cfg for local scorers
    python deploy/replicas.py bench [--replicas 1,3] [--requests 240] [--concurrency 6] [--store DIR --name prd]

Each replica is ``python -m service`` (the images' command) on its own loopback port; Debian's HAProxy balances
``/score`` over them and health-checks ``/readyz``, so a replica that is loading, reloading or shutting down gets
no traffic. ``Replicas.restart`` is one step of a rolling update: drain the replica through HAProxy's runtime API
(no new requests; in-flight ones finish), stop it (SIGTERM: it answers what it queued), start it with its new
settings, wait for its ``/readyz``, and put it back. ``tests/ops/test_replicas.py`` runs a rolling update under
load; docs/scaling.md has the figures. Everything listens on 127.0.0.1; every wait is bounded.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from service.bench.server import free_port

REPO = Path(__file__).resolve().parents[1]
BACKEND = "scorers"
SERVICE_COMMAND = (sys.executable, "-m", "service")


def haproxy_config(port: int, backends: Sequence[int], stats_socket: Path | None = None, check_ms: int = 500) -> str:
    """An haproxy.cfg: ``127.0.0.1:port`` → the scorers on ``backends`` (loopback ports), checked on ``/readyz``.

    Least-connections balancing (a scorer's cost is per image, requests differ in size); a replica is out after two
    failed checks and back after two good ones. A request is retried once on another replica only when its
    connection failed or the replica closed it without answering (e.g. an idle connection it had just closed);
    HAProxy's stats count those retries (``wretr``, ``wredis``).
    """
    admin = f"    stats socket {stats_socket} mode 600 level admin\n" if stats_socket else ""
    servers = "".join(f"    server s{index} 127.0.0.1:{backend} check\n" for index, backend in enumerate(backends))
    return f"""global
    maxconn 1024
{admin}
defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout http-request 30s
    retries 1
    option redispatch 1
    retry-on conn-failure empty-response

frontend scoring
    bind 127.0.0.1:{port}
    default_backend {BACKEND}

backend {BACKEND}
    balance leastconn
    option httpchk
    http-check send meth GET uri /readyz
    http-check expect status 200
    default-server inter {check_ms}ms fall 2 rise 2
{servers}"""


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError, OSError):
            if check():
                return
        time.sleep(0.1)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def _start(command: Sequence[str], log: Path, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    with open(log, "ab") as output:
        return subprocess.Popen(
            list(command), cwd=REPO, env=dict(env), stdout=output, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip


def stop_process(process: subprocess.Popen[bytes], grace: float = 30.0) -> None:
    """SIGTERM the process group and wait; SIGKILL after ``grace`` seconds."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@dataclass
class Replicas:
    """N scorers and one HAProxy in front of them, all on loopback; a context manager that stops them all."""

    store: Path
    count: int
    workdir: Path
    settings: dict[str, str] = field(default_factory=dict)
    haproxy: str = "haproxy"
    ports: list[int] = field(init=False)
    port: int = field(init=False)
    processes: list[subprocess.Popen[bytes] | None] = field(init=False)
    balancer: subprocess.Popen[bytes] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.ports = [free_port() for _ in range(self.count)]
        self.port = free_port()
        self.processes = [None] * self.count
        self.workdir.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def replica_url(self, index: int) -> str:
        return f"http://127.0.0.1:{self.ports[index]}"

    def env(self, index: int, **settings: str) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("PRD_")}
        env |= {"PRD_MODEL_STORE": str(self.store), "PRD_HOST": "127.0.0.1", "PRD_PORT": str(self.ports[index])}
        env |= {"PRD_ACCESS_LOG": "false", **self.settings}
        return env | {f"PRD_{key.upper()}": value for key, value in settings.items()}

    def start_replica(self, index: int, **settings: str) -> None:
        """Start replica ``index`` (extra PRD_* settings as keywords) and wait until its own /readyz is 200."""
        process = _start(SERVICE_COMMAND, self.workdir / f"scorer{index}.log", self.env(index, **settings))
        self.processes[index] = process

        def ready() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"scorer {index} exited with {process.returncode} (see scorer{index}.log)")
            return httpx.get(f"{self.replica_url(index)}/readyz", timeout=2).status_code == 200

        wait_for(ready, 120, f"scorer {index}'s /readyz")

    def runtime(self, command: str) -> str:
        """One command on HAProxy's runtime API (the admin stats socket)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(self.workdir / "haproxy.sock"))
            sock.sendall(command.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def stats(self) -> dict[str, dict[str, str]]:
        """``show stat`` of the backend's servers and the backend itself, by server name (``BACKEND`` for it)."""
        lines = self.runtime("show stat").splitlines()
        header = lines[0].lstrip("# ").split(",")
        rows = [dict(zip(header, line.split(","), strict=False)) for line in lines[1:] if line]
        return {row["svname"]: row for row in rows if row.get("pxname") == BACKEND}

    def wait_up(self, index: int, timeout: float = 30) -> None:
        wait_for(lambda: self.stats()[f"s{index}"]["status"] == "UP", timeout, f"HAProxy to see scorer {index} UP")

    def start(self, **settings: str) -> Replicas:
        for index in range(self.count):
            self.start_replica(index, **settings)
        config = self.workdir / "haproxy.cfg"
        config.write_text(haproxy_config(self.port, self.ports, self.workdir / "haproxy.sock"))
        self.balancer = _start([self.haproxy, "-f", str(config), "-db"], self.workdir / "haproxy.log", os.environ)
        wait_for(lambda: (self.workdir / "haproxy.sock").exists(), 10, "HAProxy's runtime socket")
        for index in range(self.count):
            self.wait_up(index)
        return self

    def drain(self, index: int, timeout: float = 60) -> None:
        """No new requests to replica ``index``; return once those in flight are answered."""
        self.runtime(f"set server {BACKEND}/s{index} state drain")

        def idle() -> bool:
            row = self.stats()[f"s{index}"]
            return row["status"].startswith("DRAIN") and row["scur"] == "0" and row["qcur"] in ("0", "")

        wait_for(idle, timeout, f"scorer {index} to finish its requests")

    def restart(self, index: int, **settings: str) -> None:
        """One step of a rolling update: drain, stop, start with ``settings``, wait until ready, take traffic."""
        self.drain(index)
        stop_process(self.processes[index])
        self.start_replica(index, **settings)
        self.runtime(f"set server {BACKEND}/s{index} state ready")
        self.wait_up(index)

    def reload(self, index: int, version: str) -> dict:
        """Hot reload: ``POST /models/reload`` on replica ``index`` itself, while it keeps taking traffic."""
        response = httpx.post(f"{self.replica_url(index)}/models/reload", params={"version": version}, timeout=120)
        response.raise_for_status()
        return response.json()

    def stop(self) -> None:
        if self.balancer is not None:
            stop_process(self.balancer, grace=5)
        for process in self.processes:
            if process is not None:
                stop_process(process)

    def __enter__(self) -> Replicas:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class Load:
    """``concurrency`` threads posting images to ``url``/score until stopped, ``limit`` requests or ``seconds``.

    ``check(index, response)`` returns a label for each answer ("ok" or what was wrong); a request that raised is
    counted under its exception's name. Bounded in count and time whatever happens to the replicas.
    """

    url: str
    images: Sequence[bytes]
    check: Callable[[int, httpx.Response], str]
    concurrency: int = 4
    limit: int = 2000
    seconds: float = 180.0
    outcomes: Counter[str] = field(default_factory=Counter)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _sent: int = 0

    def _next(self) -> int | None:
        with self._lock:
            if self._stop.is_set() or self._sent >= self.limit:
                return None
            self._sent += 1
            return self._sent - 1

    def _worker(self, deadline: float) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as client:
            while time.monotonic() < deadline and (number := self._next()) is not None:
                index = number % len(self.images)
                try:
                    files = [("file", (f"part{index}.png", self.images[index], "image/png"))]
                    label = self.check(index, client.post("/score", files=files))
                except httpx.HTTPError as exc:
                    label = type(exc).__name__
                with self._lock:
                    self.outcomes[label] += 1

    def _launch(self) -> list[threading.Thread]:
        deadline = time.monotonic() + self.seconds
        threads = [threading.Thread(target=self._worker, args=(deadline,)) for _ in range(self.concurrency)]
        for thread in threads:
            thread.start()
        return threads

    @contextlib.contextmanager
    def running(self) -> Iterator[Load]:
        """Load in the background for the block; stopped (in-flight requests answered) when it ends."""
        threads = self._launch()
        try:
            yield self
        finally:
            self._stop.set()
            for thread in threads:
                thread.join(timeout=self.seconds + 60)

    def run(self) -> float:
        """Send ``limit`` requests (or stop at ``seconds``); the seconds it took."""
        started = time.monotonic()
        for thread in self._launch():
            thread.join(timeout=self.seconds + 60)
        return time.monotonic() - started


def _bench(args: argparse.Namespace) -> None:
    """Throughput through HAProxy with 1 and N replicas on the same cores, each replica given cores / N threads."""
    from service.bench.__main__ import part_png  # the service benchmark's image: a smooth part with a scratch

    haproxy = shutil.which("haproxy") or sys.exit("haproxy is not installed (Debian: apt-get install haproxy)")
    images = [part_png(256)]
    cores = os.cpu_count() or 1
    print(f"{cores} cores; {args.requests} requests of one 256 px PNG, {args.concurrency} clients (same process)")

    def measure(url: str) -> str:
        def check(_: int, response: httpx.Response) -> str:
            return "ok" if response.status_code == 200 else str(response.status_code)

        Load(url, images, check, args.concurrency, args.concurrency * 4).run()  # warm-up: connections, batches
        load = Load(url, images, check, args.concurrency, args.requests, 600.0)
        seconds = load.run()
        answered = load.outcomes["ok"]
        others = dict(load.outcomes - Counter(ok=answered))
        return f"{answered / seconds:6.1f} images/s ({answered} answered in {seconds:.1f} s; failed: {others or 0})"

    for count in args.replicas:
        threads = args.threads or max(1, cores // count)
        settings = {"PRD_MODEL_NAME": args.name, "PRD_INFERENCE_WORKERS": "1", "PRD_INTRA_OP_THREADS": str(threads)}
        with Replicas(args.store, count, args.workdir / f"{count}", settings, haproxy).start() as replicas:
            if count == 1:
                print(f"1 scorer, direct (no HAProxy), {threads} ORT threads: {measure(replicas.replica_url(0))}")
            print(f"{count} scorer(s) behind HAProxy, {threads} ORT thread(s) each: {measure(replicas.url)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python deploy/replicas.py", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    config = sub.add_parser("config", help="print an haproxy.cfg for scorers on consecutive ports")
    config.add_argument("--replicas", type=int, default=3)
    config.add_argument("--port", type=int, default=8000, help="HAProxy's port; scorers on the next ones")
    bench = sub.add_parser("bench", help="throughput with 1 and N replicas behind HAProxy")
    bench.add_argument("--replicas", type=lambda t: [int(x) for x in t.split(",")], default=[1, 3])
    bench.add_argument("--requests", type=int, default=240)
    bench.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads per replica (default: cores / N)")
    bench.add_argument("--concurrency", type=int, default=6)
    bench.add_argument("--store", type=Path, default=REPO / "model_store" / "repository")
    bench.add_argument("--name", default="prd")
    bench.add_argument("--workdir", type=Path, default=REPO / "runs" / "replicas_bench")
    args = parser.parse_args(argv)
    if args.command == "config":
        print(haproxy_config(args.port, [args.port + 1 + i for i in range(args.replicas)]), end="")
    else:
        _bench(args)


if __name__ == "__main__":
    main()
