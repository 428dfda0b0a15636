"""``python -m training ablate``: PRD against plain RD and against itself with one part switched off, one table.

Every variant is the same ``TrainConfig`` with a few overrides, trained with the same budget (epochs or
``--max-minutes``), seed and data, and evaluated on the same test split. Output: ``ablation.json``,
``ablation.md`` (mean and per-category image/pixel AUROC and AUPRO) and ``ablation.png``; each variant's run
folder and report stay under ``OUT/<variant>/`` for a closer look.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

from matplotlib.figure import Figure

from training.config import TrainConfig

log = logging.getLogger(__name__)

NO_MEMORY = {"memory_entries": 0}
VARIANTS: dict[str, tuple[str, dict]] = {
    "prd": ("PRD: MNP prototypes + sparse recall + coherence + re-seeding + patch memory (defaults)", {}),
    "prd_no_memory": ("PRD's student map alone: no teacher-space patch memory (memory_entries=0)", NO_MEMORY),
    "rd": ("plain RD4AD: no prototype filter, no patch memory (--no-prototypes)", {"prototypes": 0, **NO_MEMORY}),
    "rd_memory": ("RD4AD + the patch memory, no MNP filter (prototypes=0)", {"prototypes": 0}),
    "prd_shared_memory": (
        "one patch memory shared by all categories, of 16 384 entries (memory_per_category=false)",
        {"memory_per_category": False, "memory_entries": 16384},
    ),
    "prd_one_square": (
        "every image squashed into one square, no category tiled (max_tiles=1)",
        {"max_tiles": 1, "tile_categories": [], "grid": "off", "grid_scales": {}},
    ),
    "prd_dense_recall": ("no SPR: every position recalls all K prototypes (recall_topk=0)", {"recall_topk": 0}),
    "prd_no_coherence": ("no coherence term (coherence_weight=0)", {"coherence_weight": 0.0}),
    "prd_no_reseed": ("dead prototypes are not re-seeded", {"reseed_dead": False}),
    "prd_pixel_loss": ("plain per-position cosine loss instead of hard mining (loss=pixel)", {"loss": "pixel"}),
    # the choices the paper leaves open (docs/prototypes.md); run them with --memory-entries 0 to see the student's map
    "prd_k64": ("64 prototypes instead of 256 (prototypes=64)", {"prototypes": 64}),
    "prd_k1024": ("1024 prototypes instead of 256 (prototypes=1024)", {"prototypes": 1024}),
    "prd_top1": ("each position recalls its nearest prototype only (recall_topk=1)", {"recall_topk": 1}),
    "prd_top16": ("each position recalls 16 prototypes (recall_topk=16)", {"recall_topk": 16}),
    "prd_filter_teacher": (
        "the bank filters the teacher's fused taps, before the bottleneck (filter_at=teacher)",
        {"filter_at": "teacher"},
    ),
    "prd_noise": ("Dinomaly's noisy bottleneck: dropout 0.2 on the embedding in training", {"bottleneck_dropout": 0.2}),
    "prd_global_loss": (
        "each scale's map compared as one vector per image (loss_target=global)",
        {"loss_target": "global"},
    ),
    "prd_group_loss": ("all scales compared at once per position (loss_target=group)", {"loss_target": "group"}),
}
METRICS = ("image_auroc", "pixel_auroc", "aupro")


def run_ablation(base: TrainConfig, out_dir: Path, variants: list[str] | None = None, galleries: bool = True) -> dict:
    from model_store.planner import ScoringRule
    from training.data import discover
    from training.engine import Prepared, fit, prepare, resolve_device, with_resolved_tiling
    from training.model import PRDModel
    from training.report import evaluate_run

    names = variants or list(VARIANTS)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise ValueError(f"--variants: unknown {unknown}; known: {', '.join(VARIANTS)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}
    device = resolve_device(base.device)
    index = discover([Path(p) for p in base.data], base.categories)
    teacher_only = PRDModel(base, index.categories).to(device)
    caches: dict[ScoringRule, Prepared] = {}  # one teacher-feature cache per tiling, shared by its variants
    for name in names:
        description, overrides = VARIANTS[name]
        log.info("ablation variant %s: %s", name, description)
        run_dir = out_dir / name
        config = with_resolved_tiling(dataclasses.replace(base, **overrides), index)
        if config.scoring not in caches:
            caches[config.scoring] = prepare(config, teacher_only, index, device)
        fit(config, run_dir, prepared=caches[config.scoring])
        metrics = evaluate_run(run_dir, report_dir=run_dir / "eval", galleries=galleries)
        results[name] = {
            "description": description,
            "overrides": overrides,
            "mean": metrics["mean"],
            "categories": metrics["categories"],
        }
        _write(results, base, out_dir)  # after every variant, so a long ablation can be read while it runs
    return results


def _write(results: dict, base: TrainConfig, out_dir: Path) -> None:
    budget = f"{base.epochs} epochs" + (f", at most {base.max_minutes} min" if base.max_minutes else "")
    (out_dir / "ablation.json").write_text(
        json.dumps({"budget": budget, "base": base.to_dict(), "variants": results}, indent=2, default=str)
    )
    categories = sorted({c for r in results.values() for c in r["categories"]})
    header = "| variant | image AUROC | pixel AUROC | AUPRO | " + " | ".join(f"{c} img/pix" for c in categories) + " |"
    lines = [
        f"# Ablation ({budget} each, seed {base.seed}, same data)",
        "",
        header,
        "|" + "---|" * (4 + len(categories)),
    ]
    for name, r in results.items():
        cells = [_fmt(r["mean"].get(m)) for m in METRICS]
        per = [
            f"{_fmt(r['categories'][c]['image_auroc'])}/{_fmt(r['categories'][c]['pixel_auroc'])}"
            if c in r["categories"]
            else "–"
            for c in categories
        ]
        lines.append(f"| {name} | " + " | ".join(cells + per) + " |")
    lines += ["", *(f"- **{name}**: {r['description']}" for name, r in results.items())]
    (out_dir / "ablation.md").write_text("\n".join(lines) + "\n")
    _plot(results, out_dir / "ablation.png")


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _plot(results: dict, path: Path) -> None:
    figure = Figure(figsize=(1.6 + 1.4 * len(results), 3.6))
    axes = figure.subplots()
    width = 0.8 / len(METRICS)
    for k, metric in enumerate(METRICS):
        values = [r["mean"].get(metric) or 0.0 for r in results.values()]
        axes.bar([i + k * width for i in range(len(results))], values, width, label=metric.replace("_", " "))
    axes.set_xticks([i + width for i in range(len(results))], list(results), rotation=20, ha="right")
    axes.set_ylim(0.5, 1.08)
    axes.set_ylabel("mean over categories")
    axes.legend(loc="upper center", ncol=len(METRICS), fontsize=8)
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
