"""A float bundle against its int8 version (``python -m training quantize``), side by side in one run.

    python docs/research/int8_probe.py --data ../shared/data --float model_store/repository/prd/7 \\
        --int8 STORE/prd-int8/1 --entries 1024,2048 --out runs/int8_probe

For each graph (and, with ``--entries``, each graph with its patch memories cut to their first K entries), in one
process: image / pixel AUROC and AUPRO per category as the service scores (``training.evaluate``: tiles, routing,
the bundle's own rule); images/s at batch 1 and 16 on ``--threads`` intra-op threads, the graphs alternated round by
round on the same real inputs so a shared machine's drift hits all alike; and ONNX Runtime's per-node profile: the
share of kernel time spent in the patch memory (``/anomaly_map/memory/``).

Cutting a memory to its first K rows is a K-entry coreset because the greedy k-center selection
(``training.memory.greedy_coreset``) stores entries in the order it picks them; the graph keeps its 1 024-entry
chunks, and the running minimum ends after the last chunk that still has entries.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root, for `training`

from model_store.bundle import read_manifest  # noqa: E402
from model_store.session import GraphSession, session_options  # noqa: E402
from training.data import discover  # noqa: E402
from training.evaluate import evaluate_scorer  # noqa: E402
from training.memory import CHUNK_ENTRIES  # noqa: E402
from training.onnx_graph import OnnxScorer  # noqa: E402

MEMORY = "/anomaly_map/memory/"


def cut_memory(path: Path, entries: int, out: Path) -> Path:
    """The graph at ``path`` with every memory bank cut to its first ``entries`` rows, written to ``out``."""
    model = onnx.load(str(path))
    graph = model.graph
    weights = {t.name: t for t in graph.initializer}
    banks = [n.input[0] for n in graph.node if n.name.startswith(MEMORY) and n.op_type == "Gather"]
    banks = [name for name in banks if name in weights and len(weights[name].dims) >= 2]
    if not banks:
        raise SystemExit(f"{path}: no memory bank initializers under {MEMORY}")
    for name in banks:
        array = numpy_helper.to_array(weights[name])
        if entries > array.shape[1]:
            raise SystemExit(f"{path}: memory has {array.shape[1]} entries per bank, cannot keep {entries}")
        weights[name].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(array[:, :entries]), name))
    chunks = math.ceil(entries / CHUNK_ENTRIES)
    last = [n for n in graph.node if n.name.startswith(MEMORY) and n.op_type == "Min"]
    final = f"{MEMORY}ReduceMin" if chunks == 1 else f"{MEMORY}Min" + ("" if chunks == 2 else f"_{chunks - 2}")
    kept = next(n for n in graph.node if n.name == final).output[0]
    for node in graph.node:  # whatever read the full running minimum reads the cut one
        for i, name in enumerate(node.input):
            if last and name == last[-1].output[0]:
                node.input[i] = kept
    _prune(graph)
    onnx.save(model, str(out))
    return out


def _prune(graph: onnx.GraphProto) -> None:
    """Drop nodes (and initializers) no graph output depends on."""
    needed = {o.name for o in graph.output}
    keep = []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(node.input)
    del graph.node[:]
    graph.node.extend(reversed(keep))
    unused = [t for t in graph.initializer if t.name not in needed]
    for tensor in unused:
        graph.initializer.remove(tensor)


def rates(paths: dict[str, Path], batch: np.ndarray, threads: int, rounds: int) -> dict[str, dict[str, float]]:
    """Median images/s per graph at batch 1 and at the batch's size, graphs alternated round by round."""
    sessions = {k: GraphSession(p, options=session_options(threads, 1)) for k, p in paths.items()}
    for session in sessions.values():
        session.run(batch[:1]), session.run(batch)
    timings: dict[str, dict[int, list[float]]] = {k: {1: [], len(batch): []} for k in paths}
    for _ in range(rounds):
        for name, session in sessions.items():
            for size, repeats in ((1, 8), (len(batch), 1)):
                started = time.perf_counter()
                for _ in range(repeats):
                    session.run(batch[:size])
                timings[name][size].append(size * repeats / (time.perf_counter() - started))
    return {k: {f"batch_{s}": float(np.median(v)) for s, v in t.items()} for k, t in timings.items()}


def memory_share(path: Path, batch: np.ndarray, threads: int) -> float:
    """Share of ONNX Runtime's kernel time (4 runs, profiled) spent in nodes of the patch memory."""
    options = session_options(threads, 1)
    options.enable_profiling = True
    options.profile_file_prefix = os.path.join(tempfile.gettempdir(), f"int8_probe_{os.getpid()}")
    session = GraphSession(path, options=options)
    for _ in range(4):
        session.run(batch)
    trace = session.session.end_profiling()
    events = json.loads(Path(trace).read_text())
    Path(trace).unlink()
    spent: Counter[bool] = Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            spent[event["name"].startswith(MEMORY)] += event["dur"]
    return spent[True] / max(1, sum(spent.values()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--float", dest="float_bundle", type=Path, required=True, help="the float bundle folder")
    parser.add_argument("--int8", dest="int8_bundle", type=Path, required=True, help="its int8 bundle folder")
    parser.add_argument("--entries", default="", help="comma-separated memory sizes K to cut both graphs to")
    parser.add_argument("--cut-int8-only", action="store_true", help="cut only the int8 graph's memory")
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads (default: 2)")
    parser.add_argument("--rounds", type=int, default=7, help="alternating timing rounds (default: 7)")
    parser.add_argument("--skip-accuracy", action="store_true", help="speed and profile only")
    parser.add_argument("--out", type=Path, default=Path("runs/int8_probe"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    manifests = {"fp32": read_manifest(args.float_bundle / "manifest.json")}
    manifests["int8"] = read_manifest(args.int8_bundle / "manifest.json")
    paths = {"fp32": args.float_bundle / "model.onnx", "int8": args.int8_bundle / "model.onnx"}
    for k in [int(x) for x in args.entries.split(",") if x]:
        for kind in ("int8",) if args.cut_int8_only else ("fp32", "int8"):
            paths[f"{kind}, memory {k}"] = cut_memory(paths[kind], k, args.out / f"{kind}_memory{k}.onnx")
    index = discover([args.data], manifests["fp32"].categories)
    files = [s.path for c in index.categories for s in index.samples("test", c)[:4]]
    batch = OnnxScorer(paths["fp32"]).load_files(files[:16])
    results: dict[str, dict] = {name: {"file": str(p), "size_bytes": p.stat().st_size} for name, p in paths.items()}
    for name, speed in rates(paths, batch, args.threads, args.rounds).items():
        results[name]["images_per_s"] = speed
    for name, path in paths.items():
        results[name]["memory_share"] = {f"batch_{n}": memory_share(path, batch[:n], args.threads) for n in (1, 16)}
        print(name, json.dumps(results[name]), flush=True)
    if not args.skip_accuracy:
        for name, path in paths.items():
            manifest = manifests[name.split(",")[0]]
            from training.evaluate import score_fn_from_onnx

            metrics = evaluate_scorer(
                score_fn_from_onnx(path),
                index,
                manifest.input.height,
                args.out / name.replace(", ", "_").replace(" ", ""),
                model_categories=manifest.categories,
                scoring=manifest.scoring,
            )
            keys = ("image_auroc", "pixel_auroc", "aupro")
            results[name]["metrics"] = {
                c: {k: metrics["categories"][c][k] for k in keys} for c in metrics["categories"]
            } | {"mean": {k: metrics["mean"][k] for k in keys}}
            print(name, json.dumps(results[name]["metrics"]), flush=True)
    (args.out / "int8_probe.json").write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))


def table(results: dict[str, dict]) -> str:
    """One markdown row per graph: mean and per-category image / pixel AUROC, AUPRO, images/s, memory share."""
    rows = [
        "| graph | mean image / pixel AUROC / AUPRO | per category image / pixel AUROC | images/s batch 1 / 16 "
        "(× fp32) | memory share batch 1 / 16 | size |",
        "|---|---|---|---|---|---|",
    ]
    base = results["fp32"]["images_per_s"]
    for name, r in results.items():
        speed = r["images_per_s"]
        b1, b16 = speed["batch_1"], speed["batch_16"]
        ratios = f"{b1:.1f} / {b16:.1f} ({b1 / base['batch_1']:.2f}× / {b16 / base['batch_16']:.2f}×)"
        share = f"{100 * r['memory_share']['batch_1']:.0f} % / {100 * r['memory_share']['batch_16']:.0f} %"
        m = r.get("metrics")
        mean = "—" if not m else " / ".join(f"{m['mean'][k]:.3f}" for k in ("image_auroc", "pixel_auroc", "aupro"))
        cats = (
            "—"
            if not m
            else ", ".join(f"{c} {v['image_auroc']:.3f} / {v['pixel_auroc']:.3f}" for c, v in m.items() if c != "mean")
        )
        rows.append(f"| {name} | {mean} | {cats} | {ratios} | {share} | {r['size_bytes'] / 1e6:.1f} MB |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
