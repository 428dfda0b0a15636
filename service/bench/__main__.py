"""``python -m service.bench --store STORE --name NAME [--version V]``: measure, side by side, on one bundle:

1. raw ONNX Runtime throughput over batch sizes (in this process, preprocessed uint8 batches);
2. the service (``python -m service`` subprocess, batching on) at each concurrency: images/s, p50/p95/p99;
3. the same service with max batch 1 and no window (one request, one inference run);

then the ratios service/raw (saturation) and service/unbatched. Loopback traffic only; each cell is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np

from model_store.bundle import load_bundle
from service.bench.load import LoadCell, multipart_request, run_load
from service.bench.raw import RawCell, measure_raw
from service.bench.server import HOST, service_process
from service.config import Settings
from service.runtime import open_model


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m service.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--version", default="latest")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured time per cell (default 5)")
    parser.add_argument("--max-requests", type=int, default=5000, help="requests per service cell, at most")
    parser.add_argument("--batch-sizes", type=_ints, default=[1, 2, 4, 8, 16, 32], help="raw ORT batch sizes")
    parser.add_argument("--concurrency", type=_ints, default=[1, 8, 32], help="service client concurrencies")
    parser.add_argument("--max-batch-size", type=int, default=None, help="service max batch (default: best raw)")
    parser.add_argument("--batch-window-ms", type=float, default=5.0)
    parser.add_argument(
        "--providers", default="CPUExecutionProvider", help="e.g. CUDAExecutionProvider,CPUExecutionProvider"
    )
    parser.add_argument("--intra-op-threads", type=int, default=0)
    parser.add_argument("--inference-workers", type=int, default=0, help="the service's (default 0: its own choice)")
    parser.add_argument("--image-size", type=int, default=None, help="uploaded PNG side (default: model input size)")
    parser.add_argument("--raw-only", action="store_true", help="only the raw ONNX Runtime table (e.g. GPU sweeps)")
    parser.add_argument("--json", type=Path, default=None, help="also write all numbers to this file")
    return parser.parse_args(argv)


def part_png(size: int) -> bytes:
    """A smooth synthetic part with a small scratch: compresses like a photo of a part, not like noise."""
    y, x = np.mgrid[0:size, 0:size]
    base = (96 + 64 * np.sin(x / max(1, size) * 3.0) * np.cos(y / max(1, size) * 2.0)).astype(np.uint8)
    image = np.dstack([base, base, base])
    cv2.line(image, (size // 4, size // 3), (size // 2, size // 2), (230, 230, 230), max(1, size // 64))
    return cv2.imencode(".png", image)[1].tobytes()


def _service_cells(args: argparse.Namespace, env: dict[str, str], request: bytes, log: Path) -> list[LoadCell]:
    async def measure(port: int) -> list[LoadCell]:
        peak = max(args.concurrency)
        await run_load(HOST, port, _with_port(request, port), 1, peak, 1.0, 2 * peak)  # warm connections and caches
        return [
            await run_load(HOST, port, _with_port(request, port), 1, c, args.seconds, args.max_requests)
            for c in args.concurrency
        ]

    with service_process(env, log) as port:
        return asyncio.run(measure(port))


def _with_port(request: bytes, port: int) -> bytes:
    return request.replace(b"Host: 127.0.0.1:0\r\n", f"Host: 127.0.0.1:{port}\r\n".encode(), 1)


def _print_raw(cells: list[RawCell]) -> None:
    print("  batch   runs   images/s   ms/batch")
    for c in cells:
        print(f"  {c.batch_size:5d} {c.runs:6d} {c.images_per_s:10.1f} {c.ms_per_batch:10.3f}")


def _print_load(cells: list[LoadCell]) -> None:
    print("  concurrency  requests  errors   images/s   p50 ms   p95 ms   p99 ms")
    for c in cells:
        print(
            f"  {c.concurrency:11d} {c.requests:9d} {c.errors:7d} {c.images_per_s:10.1f} "
            f"{c.p50_ms:8.2f} {c.p95_ms:8.2f} {c.p99_ms:8.2f}"
        )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    bundle = load_bundle(args.store, args.name, args.version)
    settings = Settings(
        model_store=args.store,
        model_name=args.name,
        model_version=str(bundle.manifest.version),
        providers=args.providers,
        inference_workers=1,  # raw: one run at a time, on every thread ONNX Runtime is given
        intra_op_threads=args.intra_op_threads,
    )
    model = open_model(bundle, settings)
    m = model.manifest
    side = model.input_size
    print(
        f"PRD Inspect benchmark: {m.name} v{m.version} ({m.onnx.precision}, input {side}x{side}, "
        f"{len(m.categories)} categories) on {model.provider}, {os.cpu_count()} CPUs"
    )
    print(f"\nRaw ONNX Runtime, in process, uint8 batches ready ({args.seconds:g} s per batch size):")
    raw = measure_raw(model, args.batch_sizes, args.seconds)
    _print_raw(raw)
    best = max(raw, key=lambda c: c.images_per_s)
    print(f"  best: batch {best.batch_size}, {best.images_per_s:.1f} images/s")
    del model
    results: dict[str, object] = {"bundle": f"{m.name}/{m.version}", "raw": [asdict(c) for c in raw]}
    if not args.raw_only:
        results.update(_compare_service(args, best))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def _compare_service(args: argparse.Namespace, best: RawCell) -> dict[str, object]:
    size = args.image_size or load_bundle(args.store, args.name, args.version).manifest.input.height
    request = multipart_request(HOST, 0, [("part.png", part_png(size))])
    max_batch = args.max_batch_size or best.batch_size
    env = {
        "PRD_MODEL_STORE": str(args.store),
        "PRD_MODEL_NAME": args.name,
        "PRD_MODEL_VERSION": str(args.version),
        "PRD_PROVIDERS": args.providers,
        "PRD_INTRA_OP_THREADS": str(args.intra_op_threads),
        "PRD_INFERENCE_WORKERS": str(args.inference_workers),
        "PRD_QUEUE_LIMIT": str(max(256, 4 * max(args.concurrency))),
    }
    log = Path(tempfile.gettempdir()) / "prd-bench-service.log"
    batched_env = {**env, "PRD_MAX_BATCH_SIZE": str(max_batch), "PRD_BATCH_WINDOW_MS": str(args.batch_window_ms)}
    print(
        f"\nService over HTTP on {HOST} (max batch {max_batch}, window {args.batch_window_ms:g} ms), "
        f"one {size}x{size} PNG per request, {args.seconds:g} s per concurrency (server log: {log}):"
    )
    batched = _service_cells(args, batched_env, request, log)
    _print_load(batched)
    print("\nUnbatched service (max batch 1, window 0 ms: one request, one inference run):")
    unbatched = _service_cells(args, {**env, "PRD_MAX_BATCH_SIZE": "1", "PRD_BATCH_WINDOW_MS": "0"}, request, log)
    _print_load(unbatched)
    top = max(batched, key=lambda c: c.images_per_s)
    top_unbatched = max(unbatched, key=lambda c: c.images_per_s)
    to_raw = top.images_per_s / best.images_per_s
    to_unbatched = top.images_per_s / top_unbatched.images_per_s if top_unbatched.images_per_s else float("inf")
    print("\nRatios (best of each):")
    print(
        f"  service / raw ONNX Runtime: {to_raw:.3f}  ({top.images_per_s:.1f} images/s at concurrency "
        f"{top.concurrency} vs {best.images_per_s:.1f} at batch {best.batch_size}; target >= 0.9)"
    )
    print(
        f"  service / unbatched service: {to_unbatched:.2f}  ({top_unbatched.images_per_s:.1f} images/s at "
        f"concurrency {top_unbatched.concurrency}; target >= 3)"
    )
    print(
        "  note: client, server and ONNX Runtime share this machine's CPUs; HTTP, multipart and PNG decoding are "
        "in the service numbers, not in the raw ones."
    )
    return {
        "service": [asdict(c) for c in batched],
        "unbatched": [asdict(c) for c in unbatched],
        "ratio_service_to_raw": to_raw,
        "ratio_service_to_unbatched": to_unbatched,
        "service_max_batch": max_batch,
        "image_size": size,
    }


if __name__ == "__main__":
    main()
