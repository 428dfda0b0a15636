"""Benchmark: the patch memory's nearest-distance graph on ONNX Runtime (CPU), whole vs chunked (research).

    python docs/research/memory_chunk_bench.py [--entries 16384] [--seconds 3]

Exports the memory's distance alone (random entries, 168-d descriptors, 32×32 positions) with the full
(positions × entries) product and with 4 096- and 1 024-entry chunks (a running minimum), and prints images/s at
batch 1, 4 and 16 for each, side by side in one run. Why ``memory.CHUNK_ENTRIES`` is 1 024.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root, for `training`

from training.memory import PatchMemory  # noqa: E402

DIM, POSITIONS = 168, 1024


class NearestDistances(nn.Module):
    """``PatchMemory.nearest_distances`` alone, as its own graph: descriptors in, distances out."""

    def __init__(self, entries: torch.Tensor, chunk: int) -> None:
        super().__init__()
        self.memory = PatchMemory(len(entries), entries.shape[1], chunk_entries=chunk)
        self.memory.set_entries(entries)

    def forward(self, query: torch.Tensor) -> torch.Tensor:
        return self.memory.nearest_distances(query)


def main() -> None:
    import onnxruntime as ort

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=16384)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    entries = torch.randn(args.entries, DIM, generator=torch.Generator().manual_seed(0))
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        for chunk in (args.entries, 4096, 1024):
            path = Path(folder) / f"memory_{chunk}.onnx"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    NearestDistances(entries, chunk),
                    (torch.randn(2, POSITIONS, DIM),),
                    str(path),
                    input_names=["query"],
                    output_names=["nearest"],
                    dynamic_axes={"query": {0: "batch"}, "nearest": {0: "batch"}},
                    opset_version=17,
                    dynamo=False,
                )
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            cells = []
            for batch in (1, 4, 16):
                query = rng.standard_normal((batch, POSITIONS, DIM)).astype(np.float32)
                session.run(None, {"query": query})
                runs, start = 0, time.perf_counter()
                while runs == 0 or time.perf_counter() - start < args.seconds:
                    session.run(None, {"query": query})
                    runs += 1
                cells.append(f"batch {batch}: {runs * batch / (time.perf_counter() - start):.1f}")
            print(f"{args.entries} entries, chunks of {chunk:5d}: images/s " + ", ".join(cells), flush=True)


if __name__ == "__main__":
    main()
