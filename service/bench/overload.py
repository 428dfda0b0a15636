"""Overload and memory from outside, as a busy line would see them: ``python -m service.bench.overload``.

For each tree (``--before`` another checkout, then this one), in one run so the ratios survive a shared machine:
start ``python -m service`` from that tree, measure one camera posting one part at a time (closed loop, 1 in
flight: images/s and p50), its capacity (closed loop, 8 requests in flight: batches filled, yet under the default
wait deadline, so nothing is refused; measured again after the offering, and this tree's capacity is the mean of
the two, since a shared machine's speed drifts between measurements), then offer ``--factor`` × the first tree's
capacity open loop (a new connection per request, sent on schedule whatever the answers) for ``--seconds``, and
print: offered, accepted (200), answered (any status), refused (503) with their latency, accepted p50/p99, goodput
and its share of capacity, the server's peak RSS, and the CPU seconds the server and this client used meanwhile (on
one machine the client's share is not the server's). Goodput is images answered 200 per second in the steady state:
answers finished between ``--warmup`` seconds after the offering began and its end, over that time. The first
seconds are left out because an answer needs a full batch's first pass and then its tiles' pass before it comes
back: a server busy from the first second still answers nothing for that long (the pipeline fills). Goodput over the
whole window (answers finished within it, per second of it) is printed beside it.
``--memory`` then sends, to a fresh server of each tree, one 7000² 16-bit RGBA PNG, the largest request the
defaults allow (16-bit RGBA, ``--memory-pixels`` in all) and 16 × 7000² 8-bit PNGs, and prints status, seconds and
peak RSS growth.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np

from service.bench.load import LoadCell, _read_response, multipart_request, run_load
from service.bench.server import HOST, service_process

REPO = Path(__file__).resolve().parents[2]


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system, all threads) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


@contextmanager
def _server(tree: Path, env: dict[str, str], log: Path) -> Iterator[tuple[int, int]]:
    """``python -m service`` from ``tree``; yields (port, pid)."""
    pids: list[int] = []
    with service_process({**env, "PYTHONPATH": str(tree)}, log, cwd=tree, pids=pids) as port:
        yield port, pids[0]


async def _one(port: int, request: bytes) -> tuple[int, float, float]:
    """(status, seconds to the answer, when it was sent on the ``perf_counter`` clock)."""
    start = time.perf_counter()
    try:
        reader, writer = await asyncio.open_connection(HOST, port)
        writer.write(request)
        await writer.drain()
        status, _ = await asyncio.wait_for(_read_response(reader), 300)
        writer.close()
    except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError):
        status = 0
    return status, time.perf_counter() - start, start


Answer = tuple[int, float, float]


def _closed_loop(port: int, request: bytes, in_flight: int, seconds: float) -> LoadCell:
    """``in_flight`` keep-alive connections posting ``request`` back to back for ``seconds``."""
    return asyncio.run(run_load(HOST, port, request, 1, in_flight, seconds, 100_000))


async def _open_loop(port: int, request: bytes, rate: float, seconds: float) -> tuple[list[Answer], float]:
    """Send on schedule; the answers with their latency and send time relative to the start, and the run's end."""
    start = time.perf_counter()
    tasks = []
    for i in range(int(rate * seconds)):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(_one(port, request)))
    answers = await asyncio.gather(*tasks)
    return [(status, latency, sent - start) for status, latency, sent in answers], time.perf_counter() - start


def _pct(values: list[float], q: float) -> str:
    return f"{np.percentile(values, q) * 1000:.0f} ms" if values else "-"


def goodput(answers: list[Answer], start: float, end: float) -> float:
    """Images answered 200 per second: answers finished between ``start`` and ``end`` seconds after the offering
    began, over ``end - start``."""
    return sum(1 for s, t, sent in answers if s == 200 and start <= sent + t <= end) / (end - start)


def _overload_line(
    name: str, answers: list[Answer], seconds: float, warmup: float, capacity: float, basis: float, rss: float
) -> str:
    ok = [t for s, t, _ in answers if s == 200]
    refused = [t for s, t, _ in answers if s == 503]
    other = sorted({s for s, _, _ in answers if s not in (200, 503)})
    steady, whole = goodput(answers, warmup, seconds), goodput(answers, 0.0, seconds)
    return (
        f"{name}: offered {len(answers)}, accepted {len(ok)}, answered {sum(1 for s, _, _ in answers if s)}, "
        f"refused {len(refused)} (p50 {_pct(refused, 50)}, p99 {_pct(refused, 99)}, "
        f"over 1 s {sum(t > 1 for t in refused)}), other statuses {other or '-'}; "
        f"accepted p50 {_pct(ok, 50)}, p99 {_pct(ok, 99)}; goodput after {warmup:g} s {steady:.1f} "
        f"images/s = {100 * steady / basis:.0f} % of the capacity the load is based on ({basis:.1f}), "
        f"{100 * steady / capacity:.0f} % of this tree's ({capacity:.1f}); over the whole {seconds:g} s "
        f"{whole:.1f} images/s ({100 * whole / basis:.0f} %); peak RSS {rss:.0f} MB"
    )


def _png16_rgba(side: int) -> bytes:
    """A flat 16-bit RGBA PNG: a few hundred KB on the wire, 8 bytes per pixel once decoded."""
    return cv2.imencode(".png", np.full((side, side, 4), 40000, np.uint16))[1].tobytes()


def _memory(trees: list[tuple[str, Path]], env: dict[str, str], log: Path, pixels: int) -> None:
    side = int((pixels / 2) ** 0.5)
    cases = {
        "1 x 7000^2 16-bit RGBA (49 MP)": [("a.png", _png16_rgba(7000))],
        f"2 x {side}^2 16-bit RGBA ({2 * side * side / 1e6:.0f} MP, the largest allowed)": [
            ("a.png", _png16_rgba(side))
        ]
        * 2,
        "16 x 7000^2 8-bit RGB (784 MP)": [
            ("b.png", cv2.imencode(".png", np.full((7000, 7000, 3), 90, np.uint8))[1].tobytes())
        ]
        * 16,
    }
    for label, files in cases.items():
        request = multipart_request(HOST, 0, files)
        for name, tree in trees:
            with _server(tree, env, log) as (port, pid):
                before = _rss_mb(pid, "VmRSS")
                status, seconds, _ = asyncio.run(_one(port, request))
                growth = _rss_mb(pid, "VmHWM") - before
                print(
                    f"memory {name}: {label}, {len(request) / 1e6:.1f} MB sent: {status} in {seconds:.1f} s, "
                    f"peak RSS +{growth:.0f} MB",
                    flush=True,
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=REPO / "model_store" / "repository")
    parser.add_argument("--name", default="prd")
    parser.add_argument("--image", type=Path, required=True, help="the one image every request sends")
    parser.add_argument("--before", type=Path, help="another checkout to measure first (e.g. the previous commit)")
    parser.add_argument("--factor", type=float, default=4.0, help="offered load, times the first tree's capacity")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of the offering left out of goodput")
    parser.add_argument("--capacity-seconds", type=float, default=8.0)
    parser.add_argument("--memory", action="store_true", help="also the largest-request memory check")
    parser.add_argument("--memory-pixels", type=int, default=100_000_000)
    parser.add_argument("--log", type=Path, default=Path("overload-bench.log"))
    args = parser.parse_args()
    if not 0 <= args.warmup < args.seconds:
        parser.error(f"--warmup ({args.warmup:g}) must be at least 0 and less than --seconds ({args.seconds:g})")
    env = {
        "PRD_MODEL_STORE": str(args.store.resolve()),
        "PRD_MODEL_NAME": args.name,
        "PRD_PROVIDERS": "CPUExecutionProvider",
        "PRD_LOG_LEVEL": "error",
    }
    trees = ([("before", args.before.resolve())] if args.before else []) + [("after", REPO)]
    request = multipart_request(HOST, 0, [(args.image.name, args.image.read_bytes())])
    basis = 0.0
    for name, tree in trees:
        with _server(tree, env, args.log.resolve()) as (port, pid):
            lone = _closed_loop(port, request, 1, args.capacity_seconds)
            print(
                f"{name}: one in flight {lone.images_per_s:.1f} images/s, p50 {lone.p50_ms:.0f} ms, "
                f"p99 {lone.p99_ms:.0f} ms ({lone.errors} not 200)",
                flush=True,
            )
            cell = _closed_loop(port, request, 8, args.capacity_seconds)
            capacity = cell.images_per_s
            basis = basis or capacity
            rate = args.factor * basis
            print(
                f"{name}: capacity {capacity:.1f} images/s (closed loop, 8 in flight, {cell.errors} not 200); "
                f"offering {rate:.1f}/s for {args.seconds:g} s",
                flush=True,
            )
            cpu = (_cpu_s(pid), _cpu_s(os.getpid()))
            answers, elapsed = asyncio.run(_open_loop(port, request, rate, args.seconds))
            server_cpu, client_cpu = _cpu_s(pid) - cpu[0], _cpu_s(os.getpid()) - cpu[1]
            rss = _rss_mb(pid, "VmHWM")
            again = _closed_loop(port, request, 8, args.capacity_seconds).images_per_s
            capacity = (capacity + again) / 2
            print(f"{name}: capacity again after the offering {again:.1f} images/s; mean {capacity:.1f}", flush=True)
            print(_overload_line(name, answers, args.seconds, args.warmup, capacity, basis, rss), flush=True)
            print(
                f"{name}: CPU while offering ({elapsed:.0f} s, answers included): server {server_cpu:.0f} s, "
                f"this client {client_cpu:.0f} s ({100 * client_cpu / (elapsed * (os.cpu_count() or 1)):.0f} % of "
                f"the machine's {os.cpu_count()} cores)",
                flush=True,
            )
    if args.memory:
        _memory(trees, env, args.log.resolve(), args.memory_pixels)


if __name__ == "__main__":
    sys.exit(main())
