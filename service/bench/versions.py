"""Raw ONNX Runtime throughput of several versions of one model, measured in turns in one process.

    python -m service.bench.versions --store model_store --name prd --versions 2,3 [--batch-sizes 1,4] [--seconds 5]

Each round measures every version once per batch size (same random uint8 batches, same session options as the
service); the figures are the best round of each, and the ratio to the first version is printed, so a change of
model (a bigger teacher, a patch memory) is priced on the machine at hand rather than read from absolute times.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from model_store.bundle import DEFAULT_STORE, load_bundle
from service.bench.raw import measure_raw
from service.config import Settings
from service.runtime import open_model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=DEFAULT_STORE)
    parser.add_argument("--name", default="prd")
    parser.add_argument("--versions", required=True, help="comma-separated versions; ratios are to the first")
    parser.add_argument("--batch-sizes", default="1,4")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    versions = [v.strip() for v in args.versions.split(",") if v.strip()]
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    models = {}
    for version in versions:
        bundle = load_bundle(args.store, args.name, version)
        settings = Settings(model_store=args.store, model_name=args.name, model_version=version, inference_workers=1)
        models[version] = open_model(bundle, settings)
    best: dict[tuple[str, int], float] = {}
    for _ in range(args.rounds):
        for version, model in models.items():
            for cell in measure_raw(model, batch_sizes, args.seconds):
                key = (version, cell.batch_size)
                best[key] = max(best.get(key, 0.0), cell.images_per_s)
    provider = next(iter(models.values())).provider
    print(f"{args.name}: raw ONNX Runtime images/s on {provider}, best of {args.rounds} rounds of {args.seconds:g} s")
    for batch_size in batch_sizes:
        base = best[(versions[0], batch_size)]
        cells = [
            f"v{v} {best[(v, batch_size)]:.1f} ({best[(v, batch_size)] / base:.2f}× v{versions[0]})" for v in versions
        ]
        print(f"  batch {batch_size:3d}: " + "  ".join(cells))


if __name__ == "__main__":
    main()
