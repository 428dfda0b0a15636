"""Probe: which teacher and taps make the best patch memory, mixed into a trained run's student map (research, CPU).

    python -m training.research.memory_taps runs/demo --teacher efficientnet_lite0 --taps 4,10,13 [--entries 16384]

Builds the memory exactly as the model does (``memory.build_memory``: greedy coreset of the first two tapped maps'
patch descriptors over the run's training images), from the teacher and taps given, which need not be the run's;
scales it by its mean over the run's held-out normals, as ``engine.calibrate_map_scales`` does; and prints mean and
per-category image / pixel AUROC for the memory alone and for ``rd + α · memory`` with the run's student map (over
its own held-out mean). This is how Lite0's stage-end taps were chosen for the default memory (README, "Measured
figures"). About 6–7 minutes on 2 cores for 16 384 entries. ``--size N`` builds and scores the memory at N px (the
student map, at the run's own size, is upsampled to N to be mixed; σ scaled by N / the run's size).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import torch.nn.functional as F

from training import data
from training.anomaly_map import GaussianBlur
from training.engine import held_out_samples, training_samples
from training.memory import PatchMemory, build_memory, patch_descriptors
from training.model import PRDModel, load_run
from training.research.map_breakdown import component_maps
from training.research.memory_probe import TestTruth, memory_maps, teacher_maps


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run", type=Path, help="trained run whose student map the memory is mixed into")
    parser.add_argument("--teacher", required=True, help="teacher the memory describes")
    parser.add_argument("--taps", required=True, help="three block indices; the memory uses the first two")
    parser.add_argument("--entries", type=int, default=16384)
    parser.add_argument("--alphas", default="1,2,4")
    parser.add_argument("--size", type=int, default=None, help="memory's input size (default: the run's)")
    parser.add_argument("--data", default="../shared/data")
    args = parser.parse_args()
    started = time.monotonic()
    index = data.discover([Path(args.data)])
    run = load_run(args.run)
    taps = [int(t) for t in args.taps.split(",")]
    describing = replace(run.config, teacher=args.teacher, teacher_taps=taps, memory_entries=0)
    describer = PRDModel(describing, index.categories)
    run_size, size = run.input_size, args.size or run.input_size
    held = data.load_images(held_out_samples(run.config, index), run_size, progress=False)
    test = data.load_images(index.test, run_size, progress=False)
    rd_held = component_maps(run, held, with_memory=False)[0]
    rd_test = component_maps(run, test, with_memory=False)[0] / rd_held.mean()
    if size != run_size:  # the student map brought to the memory's grid (bilinear) to be mixed there
        rd_test = F.interpolate(rd_test[:, None], size=(size, size), mode="bilinear", align_corners=False)[:, 0]
        held = data.load_images(held_out_samples(run.config, index), size, progress=False)
        test = data.load_images(index.test, size, progress=False)
    train = data.load_images(training_samples(run.config, index), size, progress=False)
    print(f"student maps: {time.monotonic() - started:.0f} s", flush=True)
    train_features = teacher_maps(describer, train)
    bank = build_memory(train_features, args.entries)
    memory = PatchMemory(args.entries, patch_descriptors([f[:1].float() for f in train_features]).shape[1])
    memory.set_entries(bank)
    blur = GaussianBlur(run.config.map_sigma * size / run_size)  # the same smoothing in image terms
    memory_held = memory_maps(memory, teacher_maps(describer, held), size, blur)
    memory_test = memory_maps(memory, teacher_maps(describer, test), size, blur) / memory_held.mean()
    print(
        f"memory {args.teacher} taps {taps[:2]}, {args.entries} entries, {size} px: {time.monotonic() - started:.0f} s"
    )
    truth = TestTruth.of(index, size)
    print(truth.line("memory", memory_test, "max"), flush=True)
    for alpha in (float(a) for a in args.alphas.split(",")):
        print(truth.line(f"rd + {alpha:g}·memory", rd_test + alpha * memory_test, "max"), flush=True)


if __name__ == "__main__":
    main()
