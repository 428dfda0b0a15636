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

``--pq M,…`` adds the int8 graph (the float one too, without ``--cut-int8-only``) with each bank's entries replaced
by their product-quantisation reconstruction: the D dimensions split into M subspaces, 256 centroids per subspace
per bank (k-means, seeded), each entry the concatenation of its nearest centroids, and the entry norms recomputed.
The nearest distance to those entries is what an asymmetric-distance (ADC) search over the codes computes, so the
graph's accuracy is the accuracy PQ costs; its speed is not PQ's (the graph still multiplies the full entries).
``--skip-speed`` leaves out the timing and the profile.
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

import cv2
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
PQ_CENTROIDS = 256  # one byte per code


def _memory_banks(graph: onnx.GraphProto) -> list[str]:
    """Names of the initializers the memory gathers per bank: entries (banks, K, D) and their norms (banks, K)."""
    weights = {t.name: t for t in graph.initializer}
    banks = [n.input[0] for n in graph.node if n.name.startswith(MEMORY) and n.op_type == "Gather"]
    return [name for name in banks if name in weights and len(weights[name].dims) >= 2]


def cut_memory(path: Path, entries: int, out: Path) -> Path:
    """The graph at ``path`` with every memory bank cut to its first ``entries`` rows, written to ``out``."""
    model = onnx.load(str(path))
    graph = model.graph
    weights = {t.name: t for t in graph.initializer}
    banks = _memory_banks(graph)
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


def pq_reconstruct(entries: np.ndarray, subspaces: int, seed: int = 0) -> np.ndarray:
    """(K, D) entries → each replaced by the concatenation of its nearest of 256 k-means centroids per subspace."""
    rows, dim = entries.shape
    if dim % subspaces:
        raise SystemExit(f"--pq {subspaces}: does not divide the memory's {dim} dimensions")
    width = dim // subspaces
    out = np.empty_like(entries, dtype=np.float32)
    cv2.setRNGSeed(seed)
    for s in range(subspaces):
        part = np.ascontiguousarray(entries[:, s * width : (s + 1) * width], dtype=np.float32)
        distinct = np.unique(part, axis=0)
        if len(distinct) <= PQ_CENTROIDS:  # a codebook of the rows themselves is exact
            centroids = distinct
        else:
            criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 50, 1e-6)
            _, _, centroids = cv2.kmeans(part, PQ_CENTROIDS, None, criteria, 1, cv2.KMEANS_PP_CENTERS)
        squared = (part**2).sum(1, keepdims=True) - 2 * part @ centroids.T + (centroids**2).sum(1)
        out[:, s * width : (s + 1) * width] = centroids[squared.argmin(axis=1)]
    return out


def pq_memory(path: Path, subspaces: int, out: Path, seed: int = 0) -> Path:
    """The graph at ``path`` with every bank's entries PQ-reconstructed (``subspaces`` codes each), norms to match."""
    model = onnx.load(str(path))
    weights = {t.name: t for t in model.graph.initializer}
    names = _memory_banks(model.graph)
    entries = [name for name in names if len(weights[name].dims) == 3]
    norms = [name for name in names if len(weights[name].dims) == 2]
    if len(entries) != 1 or len(norms) != 1:
        raise SystemExit(f"{path}: expected one entries and one norms initializer under {MEMORY}, got {names}")
    banks = numpy_helper.to_array(weights[entries[0]])
    rebuilt = np.stack([pq_reconstruct(bank, subspaces, seed) for bank in banks]).astype(banks.dtype)
    error = float(((rebuilt - banks) ** 2).sum() / (banks**2).sum())
    print(f"{out.name}: PQ {subspaces} × {PQ_CENTROIDS}, relative squared reconstruction error {error:.4f}", flush=True)
    weights[entries[0]].CopyFrom(numpy_helper.from_array(rebuilt, entries[0]))
    weights[norms[0]].CopyFrom(numpy_helper.from_array((rebuilt**2).sum(axis=2).astype(banks.dtype), norms[0]))
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
    parser.add_argument("--pq", default="", help="comma-separated PQ subspace counts M to quantise the memory to")
    parser.add_argument("--pq-seed", type=int, default=0, help="k-means seed for --pq (default: 0)")
    parser.add_argument("--cut-int8-only", action="store_true", help="cut (or --pq) only the int8 graph's memory")
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads (default: 2)")
    parser.add_argument("--rounds", type=int, default=7, help="alternating timing rounds (default: 7)")
    parser.add_argument("--skip-accuracy", action="store_true", help="speed and profile only")
    parser.add_argument("--skip-speed", action="store_true", help="accuracy only")
    parser.add_argument("--out", type=Path, default=Path("runs/int8_probe"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    manifests = {"fp32": read_manifest(args.float_bundle / "manifest.json")}
    manifests["int8"] = read_manifest(args.int8_bundle / "manifest.json")
    paths = {"fp32": args.float_bundle / "model.onnx", "int8": args.int8_bundle / "model.onnx"}
    for k in [int(x) for x in args.entries.split(",") if x]:
        for kind in ("int8",) if args.cut_int8_only else ("fp32", "int8"):
            paths[f"{kind}, memory {k}"] = cut_memory(paths[kind], k, args.out / f"{kind}_memory{k}.onnx")
    for m in [int(x) for x in args.pq.split(",") if x]:
        for kind in ("int8",) if args.cut_int8_only else ("fp32", "int8"):
            paths[f"{kind}, PQ {m}"] = pq_memory(paths[kind], m, args.out / f"{kind}_pq{m}.onnx", args.pq_seed)
    index = discover([args.data], manifests["fp32"].categories)
    files = [s.path for c in index.categories for s in index.samples("test", c)[:4]]
    batch = OnnxScorer(paths["fp32"]).load_files(files[:16])
    results: dict[str, dict] = {name: {"file": str(p), "size_bytes": p.stat().st_size} for name, p in paths.items()}
    if not args.skip_speed:
        for name, speed in rates(paths, batch, args.threads, args.rounds).items():
            results[name]["images_per_s"] = speed
        for name, path in paths.items():
            shares = {f"batch_{n}": memory_share(path, batch[:n], args.threads) for n in (1, 16)}
            results[name]["memory_share"] = shares
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
    base = results["fp32"].get("images_per_s")
    for name, r in results.items():
        ratios = share = "—"
        if base:
            b1, b16 = r["images_per_s"]["batch_1"], r["images_per_s"]["batch_16"]
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
