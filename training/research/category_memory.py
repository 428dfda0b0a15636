"""Probe: one patch memory per category, each image measured against its own category's (research, CPU).

    python -m training.research.category_memory runs/demo [--entries 4096,16384] [--alphas 2,4,6]

``prd/4``'s memory is one bank shared by every category. A defect in one product can look like a normal patch of
another, and a shared bank then calls it normal. This builds the memory as the model does
(``memory.build_category_memories``: ``build_memory`` on each category's training images alone, ``--entries`` per
category) and measures each test image against its own category's (its true category; the graph's recognition names
all 940 test images correctly, README). It prints mean and per-category image / pixel AUROC for the run's own memory
and for the per-category memories, alone and as ``rd + α · memory`` with the run's student map. Nothing is
retrained. Run on ``runs/lite0_mem`` (``prd/4``'s run) it chose today's default, one memory of 4 096 per category
(output: ``research/results/category_memory_cpu.txt``; 18 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from training import data
from training.anomaly_map import GaussianBlur
from training.engine import held_out_samples, training_samples
from training.memory import PatchMemory, build_category_memories
from training.model import load_run
from training.research.map_breakdown import component_maps
from training.research.memory_probe import TestTruth, memory_maps, teacher_maps


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run", type=Path, help="trained run with a patch memory")
    parser.add_argument("--entries", default="4096,16384", help="entries per category, one memory set each")
    parser.add_argument("--alphas", default="2,4,6")
    parser.add_argument("--data", default="../shared/data")
    args = parser.parse_args()
    started = time.monotonic()
    index = data.discover([Path(args.data)])
    run = load_run(args.run)
    if run.anomaly_map.memory is None:
        raise SystemExit(f"{args.run}: trained without a patch memory; nothing to compare against")
    size = run.input_size
    train_samples = training_samples(run.config, index)
    held_samples = held_out_samples(run.config, index)
    train = data.load_images(train_samples, size, progress=False)
    held = data.load_images(held_samples, size, progress=False)
    test = data.load_images(index.test, size, progress=False)
    rd_test, shared_test = component_maps(run, test)
    print(f"run's maps: {time.monotonic() - started:.0f} s", flush=True)
    truth = TestTruth.of(index, size)
    print(truth.line("the run's memory", shared_test, "max"), flush=True)
    for alpha in (float(a) for a in args.alphas.split(",")):
        print(truth.line(f"rd + {alpha:g}·the run's", rd_test + alpha * shared_test, "max"), flush=True)

    blur = GaussianBlur(run.config.map_sigma)
    categories = index.categories

    def category_ids(samples: list[data.Sample]) -> torch.Tensor:
        return torch.tensor([categories.index(s.category) for s in samples])

    train_features, train_ids = teacher_maps(run, train), category_ids(train_samples)
    held_features, held_ids = teacher_maps(run, held), category_ids(held_samples)
    test_features, test_ids = teacher_maps(run, test), category_ids(index.test)
    for entries in (int(e) for e in args.entries.split(",")):
        banks = build_category_memories(train_features, train_ids, len(categories), entries)
        memory = PatchMemory(entries, banks.shape[2], banks=len(categories))
        memory.set_entries(banks)
        held_maps = memory_maps(memory, held_features, size, blur, held_ids)
        test_maps = memory_maps(memory, test_features, size, blur, test_ids) / held_maps.mean()
        print(f"{entries} entries per category: {time.monotonic() - started:.0f} s", flush=True)
        print(truth.line(f"per-category memory {entries}", test_maps, "max"), flush=True)
        for alpha in (float(a) for a in args.alphas.split(",")):
            print(truth.line(f"rd + {alpha:g}·per-category {entries}", rd_test + alpha * test_maps, "max"), flush=True)


if __name__ == "__main__":
    main()
