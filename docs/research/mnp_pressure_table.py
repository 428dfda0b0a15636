"""Tables of the multi-class pressure study (``docs/research/mnp_pressure.sh``): student share, open choices.

    python docs/research/mnp_pressure_table.py STUDY_DIR > docs/research/results/mnp_pressure.md

Reads every ``STUDY_DIR/<phase>/ablation.json`` (phases ``all_s<seed>``: four real + generated categories;
``four_s<seed>``: the four real alone; ``again_s<seed>``: more seeds of chosen variants on all) and writes markdown:
per variant and seed the means over the real four, the generated ones and all; the spread between equal runs
(max − min over seeds of one variant); the student's share (``prd_no_memory`` − ``rd``) per category, four alone
against with the generated categories; each open choice against ``prd_no_memory`` of the same seed and against
the seed mean.
"""

from __future__ import annotations

import argparse
import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

METRICS = ("image_auroc", "pixel_auroc", "aupro")
REAL = ("kolektor", "magnetic_tile", "tire", "wood")


def load(study: Path) -> dict[tuple[str, str, int], dict]:
    """(data, variant, seed) → {category: metrics}; data is ``all`` or ``four``."""
    runs = {}
    for path in sorted(study.glob("*/ablation.json")):
        phase = path.parent.name
        data = "four" if phase.startswith("four") else "all"
        seed = int(phase.rsplit("_s", 1)[1].split(":")[0])
        for variant, result in json.loads(path.read_text())["variants"].items():
            runs[(data, variant, seed)] = result["categories"]
    return runs


def defect_type_auroc(study: Path) -> dict[tuple[str, int], dict[str, float]]:
    """(variant, seed) → {defect type: image AUROC of that type against the good images of the same generated
    category, averaged over the generated categories}, from each run's ``eval/scores.csv`` (phases on all data)."""
    from sklearn.metrics import roc_auc_score

    out: dict[tuple[str, int], dict[str, float]] = {}
    for path in sorted(study.glob("*/*/eval/scores.csv")):
        phase, variant = path.parts[-4], path.parts[-3]
        if phase.startswith("four"):
            continue
        rows = list(csv.DictReader(path.open()))
        per_type: dict[str, list[float]] = defaultdict(list)
        for category in sorted({r["category"] for r in rows if r["category"] not in REAL}):
            mine = [r for r in rows if r["category"] == category]
            good = [float(r["score"]) for r in mine if r["label"] == "0"]
            for kind in sorted({r["defect_type"] for r in mine if r["label"] == "1"}):
                bad = [float(r["score"]) for r in mine if r["defect_type"] == kind]
                per_type[kind].append(roc_auc_score([0] * len(good) + [1] * len(bad), good + bad))
        out[(variant, int(phase.rsplit("_s", 1)[1]))] = {k: float(np.mean(v)) for k, v in per_type.items()}
    return out


def mean(categories: dict, names: list[str], metric: str) -> float:
    return float(np.mean([categories[c][metric] for c in names if c in categories]))


def groups(categories: dict) -> dict[str, list[str]]:
    real = [c for c in REAL if c in categories]
    generated = sorted(c for c in categories if c not in REAL)
    return {"real": real, "generated": generated, "all": real + generated}


def fmt(values: list[float], sign: str = "") -> str:
    return " / ".join(f"{v:{sign}.3f}" for v in values)


def main(study: Path) -> None:
    runs = load(study)
    by_variant: dict[tuple[str, str], dict[int, dict]] = defaultdict(dict)
    for (data, variant, seed), categories in runs.items():
        by_variant[(data, variant)][seed] = categories
    print("# Multi-class pressure: the student's share and the open choices\n")
    print(f"Raw: `{study}/*/ablation.json`; means of image AUROC / pixel AUROC / AUPRO.\n")
    print("## Every run\n")
    print("| data | variant | seed | real four | generated | all |")
    print("|---|---|---|---|---|---|")
    for (data, variant), seeds in sorted(by_variant.items()):
        for seed, categories in sorted(seeds.items()):
            cells = [
                fmt([mean(categories, names, m) for m in METRICS]) if names else "–"
                for names in groups(categories).values()
            ]
            print(f"| {data} | {variant} | {seed} | " + " | ".join(cells) + " |")
    print("\n## Spread between equal runs (max − min over seeds, mean over all categories of the data)\n")
    print(
        "| data | variant | seeds | mean | spread (all) | spread (real four) | spread (generated) | widest category |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for (data, variant), seeds in sorted(by_variant.items()):
        if len(seeds) < 2:
            continue
        cells = []
        for group in ("all", "real", "generated"):
            values = np.array(
                [[mean(c, groups(c)[group], m) for m in METRICS] for c in seeds.values() if groups(c)[group]]
            )
            cells.append(fmt(np.ptp(values, axis=0)) if len(values) else "–")
        values = np.array([[mean(c, groups(c)["all"], m) for m in METRICS] for c in seeds.values()])
        names = groups(next(iter(seeds.values())))["all"]
        widest = [max(np.ptp([c[n][m] for c in seeds.values()]) for n in names) for m in METRICS]
        cells.append(fmt(widest))
        print(f"| {data} | {variant} | {sorted(seeds)} | {fmt(values.mean(0))} | " + " | ".join(cells) + " |")
    print("\n## The student's share: prd_no_memory − rd per category (seed means), image / pixel AUROC\n")
    print("| category | four alone | with the generated |")
    print("|---|---|---|")
    shares = {}
    for data in ("four", "all"):
        prd, rd = by_variant.get((data, "prd_no_memory"), {}), by_variant.get((data, "rd"), {})
        seeds = sorted(set(prd) & set(rd))
        if not seeds:
            continue
        names = sorted(prd[seeds[0]], key=lambda c: (c not in REAL, c))
        shares[data] = {
            c: [float(np.mean([prd[s][c][m] - rd[s][c][m] for s in seeds])) for m in METRICS[:2]] for c in names
        }
        shares[data]["mean (real four)"] = [float(np.mean([shares[data][c][i] for c in REAL])) for i in range(2)]
        if data == "all":
            gen = [c for c in names if c not in REAL]
            shares[data]["mean (generated)"] = [float(np.mean([shares[data][c][i] for c in gen])) for i in range(2)]
            shares[data]["mean (all)"] = [float(np.mean([shares[data][c][i] for c in names])) for i in range(2)]
    rows = list(dict.fromkeys([*shares.get("all", {}), *shares.get("four", {})]))
    for c in rows:
        cells = [fmt(shares[d][c], "+") if c in shares.get(d, {}) else "–" for d in ("four", "all")]
        print(f"| {c} | " + " | ".join(cells) + " |")
    by_type = defect_type_auroc(study)
    kinds = sorted({k for v in by_type.values() for k in v})
    print("\n## Image AUROC by defect type, generated categories (each type against its category's good images)\n")
    print("| variant | seed | " + " | ".join(kinds) + " |")
    print("|---" * (len(kinds) + 2) + "|")
    for (variant, seed), values in sorted(by_type.items()):
        print(f"| {variant} | {seed} | " + " | ".join(f"{values.get(k, float('nan')):.3f}" for k in kinds) + " |")
    print("\n## Open choices against the current filter (all categories; mean over categories)\n")
    base = by_variant.get(("all", "prd_no_memory"), {})
    if not base:
        return
    base_mean = np.array([[mean(c, groups(c)["all"], m) for m in METRICS] for c in base.values()]).mean(0)
    print(f"prd_no_memory over seeds {sorted(base)}: {fmt(base_mean)}\n")
    print(
        "| variant | seed | mean | − prd_no_memory, same seed | − seed mean | − seed mean, real four "
        "| − seed mean, generated |"
    )
    print("|---|---|---|---|---|---|---|")

    def group_means(categories: dict, group: str) -> np.ndarray:
        return np.array([mean(categories, groups(categories)[group], m) for m in METRICS])

    base_groups = {g: np.mean([group_means(c, g) for c in base.values()], axis=0) for g in ("real", "generated")}
    for (data, variant), seeds in sorted(by_variant.items()):
        if data != "all" or variant in ("rd", "prd_no_memory"):
            continue
        for seed, categories in sorted(seeds.items()):
            values = group_means(categories, "all")
            same = fmt(values - group_means(base[seed], "all"), "+") if seed in base else "–"
            by_group = [fmt(group_means(categories, g) - base_groups[g], "+") for g in ("real", "generated")]
            cells = [fmt(values), same, fmt(values - base_mean, "+"), *by_group]
            print(f"| {variant} | {seed} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="tables of docs/research/mnp_pressure.sh's study, as markdown")
    parser.add_argument("study", type=Path, help="the OUT folder the study wrote (one subfolder per phase)")
    main(parser.parse_args().study)
