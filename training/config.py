"""Every knob of a training run, in one typed place, saved as ``RUN/config.json`` beside each checkpoint.

Defaults are the configuration the README's figures come from; each PRD part has a switch so the ablation is a
list of overrides (see ``training/ablate.py``). ``prototypes=0`` is plain RD4AD on the same teacher and budget.
A knob's default lives here only: the parts it reaches (``AnomalyMap``, ``distillation_loss``) take it without
one of their own.

Every value is checked when a config is built (``__post_init__``), whether it came from the CLI, a ``config.json``
or Python: its type against the annotation, choice-valued knobs against their ``Literal`` (the CLI's ``choices``
come from the same ``Literal``), numbers against ``RANGES``. A ``--loss hrad`` is refused with the knob, the value
and the allowed values before any image is decoded or teacher feature cached, not minutes later.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from functools import cache
from pathlib import Path
from typing import Literal, get_type_hints

from model_store.planner import FEATHER_MERGE, GridSpec, ScoringRule
from training.checks import ConfigError, Rule, above, at_least, conforms, describe, fraction

LossMode = Literal["pixel", "hard"]
ImageScoreRule = Literal["max", "max_minus_mean", "topk_mean"]
Device = Literal["auto", "cpu", "cuda"]
GridMode = Literal["off", "auto"]
FilterSite = Literal["embedding", "teacher"]
LossTarget = Literal["point", "global", "group"]
TeacherName = Literal["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "resnet18", "wide_resnet50_2"]
"""The names ``backbones.TEACHERS`` registers (a test keeps the two equal; this module stays free of torch)."""


RANGES: dict[str, Rule] = {
    "image_size": at_least(32),  # the teachers' coarsest stride
    "max_tiles": at_least(1),
    "grid_scales": at_least(1),  # each category's scale
    "grid_max_tiles": at_least(1),
    "holdout_fraction": fraction(closed_low=True),
    "teacher_smoothing": at_least(0),
    "embed_dim": at_least(1),
    "embed_stride": at_least(1),
    "category_centroids": at_least(1),
    "prototypes": at_least(0),
    "recall_topk": at_least(0),
    "recall_temperature": above(0),
    "bottleneck_dropout": fraction(closed_low=True),
    "coherence_weight": at_least(0),
    "decoder_width": at_least(1),
    "hard_mining_quantile": fraction(),
    "magnitude_weight": at_least(0),
    "score_topk": fraction(closed_high=True),
    "map_sigma": above(0),
    "memory_entries": at_least(0),
    "memory_weight": at_least(0),
    "lr": above(0),
    "betas": fraction(closed_low=True),  # each of the two
    "weight_decay": at_least(0),
    "batch_size": at_least(1),
    "epochs": at_least(1),
    "max_minutes": at_least(0),
    "seed": at_least(0),  # numpy's seed is unsigned
    "workers": at_least(0),
}
"""Range of each numeric knob (None, where a knob allows it, is not checked against its range)."""


@dataclass(frozen=True)
class TrainConfig:
    """Frozen: checked once when built, a config cannot be changed into one that was never checked."""

    # data
    data: list[str] = field(default_factory=list)
    categories: list[str] | None = None
    image_size: int = 256
    max_tiles: int = 4
    """Aspect-kept tiles per image, at most, for the categories in ``tile_categories``: the run's scoring rule
    (``scoring``, ``model_store/planner.py``), the same in training, calibration, evaluation and the service; other
    images are squashed into one square (runs saved before tiles load with 1)."""
    tile_categories: list[str] | None = None
    """Categories cut into tiles; None: decided by ``fit`` from the training images and written out — a category
    is tiled when its photos share one frame (``tiling.fixed_frame``), where squashing only throws resolution away
    along the long side; where the frame varies from image to image, tiles would show one surface at different
    scales and hurt (docs/ablations.md, the tiles table)."""
    grid: GridMode = "off"
    """``auto``: ``fit`` cuts each tiled category whose photos are at least twice the image size on their short
    side into a 2-D grid at their native resolution (``grid/1``, ``tiling.native_scale``: the largest whole scale
    k with k × image size within every photo's short side and at most ``grid_max_tiles`` tiles). Off by default:
    the shared categories are photographed at about 256 px, where it changes nothing; what it costs and gains is
    in docs/resolution.md."""
    grid_scales: dict[str, float] | None = None
    """Per-category grid scale k (canvas short side = k × image size), overriding ``grid``'s choice for the
    categories named (each must be tiled; 1 is the strip). ``fit`` writes the scales in force here (None before)."""
    grid_max_tiles: int = 4
    """Tiles per image at most for a grid category: bounds ``grid auto``'s choice and every grid's cost."""
    holdout_fraction: float = 0.1
    """Share of train/good kept out of training for calibration when a category has no validation/good."""
    added_categories: list[str] = field(default_factory=list)
    """Categories added after training by ``python -m training add-category`` (their centroids and memories built
    from their good images; the student never saw them); export records them in the manifest."""
    # teacher
    teacher: TeacherName = "efficientnet_lite0"
    """Lite0 by default: with the patch memory its features make the better map than Lite2's, at a lower cost
    (docs/changelog.md, prd/4); ``wide_resnet50_2`` is the paper's teacher, from a weights file the user supplies."""
    teacher_weights: str | None = None
    teacher_taps: list[int] | None = None
    """EfficientNet-Lite block indices to tap (fine → coarse); None: the teacher's defaults
    (``backbones.LITE_DEFAULT_TAPS``, 1/8, 1/16, 1/32). ResNets always tap layer1..layer3."""
    teacher_smoothing: int = 0
    # one-class bottleneck
    embed_dim: int = 256
    embed_stride: int | None = None
    """Stride of the embedding the prototypes filter; default: the teacher's coarsest tapped stride."""
    category_centroids: int = 16
    """k-means centroids per category for the graph's category recognition (``training/recognition.py``)."""
    # MNP: multi-class normal prototypes
    prototypes: int = 256
    """K, shared by all categories; 0 switches MNP off (plain RD4AD)."""
    # SPR: sparse prototype recall
    recall_topk: int = 4
    """Each embedding vector is rebuilt from its k most similar prototypes; 0 = dense recall over all K."""
    recall_temperature: float = 0.05
    coherence_weight: float = 0.1
    """λ of the coherence term pulling recalled prototypes and embeddings together."""
    reseed_dead: bool = True
    """Move prototypes that nobody recalled in an epoch onto embeddings that are served worst."""
    filter_at: FilterSite = "embedding"
    """Where the MNP bank filters: ``embedding``, the bottleneck's output; ``teacher``, the teacher's taps fused onto
    the embedding grid before the bottleneck (the prototypes are then teacher features, and each tap is rebuilt from
    them at its own resolution, ``training/placement.py``)."""
    bottleneck_dropout: float = 0.0
    """Dinomaly's noisy bottleneck: this share of the embedding's values dropped in training only (identity in eval
    and in the exported graph), so the student learns to restore normal features, not to copy its input. 0 = off."""
    # student decoder
    decoder_width: int = 128
    # loss and scoring
    loss: LossMode = "hard"
    """``pixel``: mean over positions of 1 − cos; ``hard``: the same with easy positions' gradient scaled down."""
    loss_target: LossTarget = "point"
    """What the loss compares (training only; the map is always per scale and position): ``point``, each scale's
    position; ``global``, each scale's whole map of an image as one vector (RD4AD's official code, Dinomaly's loose
    loss); ``group``, every scale at once (coarse ones brought to the finest grid, channels joined: Dinomaly's loose
    grouping, so the student may trade error between scales)."""
    hard_mining_quantile: float = 0.9
    magnitude_weight: float = 0.0
    """w of the magnitude term: distance = 1 − cos + w·mean_c (t_c − s_c)²/var_c, in the loss and the map (0 = off)."""
    score: ImageScoreRule = "max"
    """Image score from the smoothed map: ``max`` (RD4AD), ``max_minus_mean`` (the peak above the map's own mean) or
    ``topk_mean``. With the patch memory fused in, ``max`` is as good as either other rule and the simplest to read
    (docs/research/README.md, the fusion probe)."""
    score_topk: float = 0.01
    map_sigma: float = 4.0
    # teacher-space normal prototypes (training/memory.py)
    memory_entries: int = 4096
    """K patches of normal teacher features kept by greedy coreset, per memory (per category, below); their nearest
    distance joins the map (0 = off). A greedy coreset keeps the rare normal patches a random subsample drops; four
    times as many entries cost four times the distance computations for no clear gain (docs/changelog.md, prd/5)."""
    memory_per_category: bool = True
    """One memory per category, each image measured against that of the category the graph recognises; False: one
    memory shared by all. Per category is as accurate for a quarter of the distance computations per image, and a
    category can be added later without touching the others (``training/onboard.py``; ``memory.py`` says what a
    misrecognised image does)."""
    memory_weight: float = 4.0
    """α of the fused map rd / rd_scale + α · memory / memory_scale (both scales: means over held-out normals).
    The two maps are complementary (the student's is the better on kolektor, the memory on magnetic tiles and
    tire); any α from 4 to 8 is level, so 4 stays (docs/research/README.md, the fusion weight)."""
    # optimisation
    lr: float = 0.005
    betas: tuple[float, float] = (0.5, 0.999)
    weight_decay: float = 0.0
    batch_size: int = 16
    epochs: int = 10
    """~700 steps of 16 on the four shared categories; longer training did not change AUROC beyond the spread
    between seeds, so the time goes to the teacher and the memory instead."""
    max_minutes: float | None = None
    seed: int = 0
    device: Device = "auto"
    workers: int = 2

    def __post_init__(self) -> None:
        """Refuse a wrong type or out-of-range value here, so no caller can start work on a config that would fail."""
        hints = field_types()
        for f in fields(self):
            value = getattr(self, f.name)
            if not conforms(value, hints[f.name]):
                raise ConfigError(f.name, value, f"expected {describe(hints[f.name])}")
            check, rule = RANGES.get(f.name, (None, ""))
            if check is not None and not all(check(v) for v in _numbers(value)):
                raise ConfigError(f.name, value, rule)
        if self.magnitude_weight > 0 and self.loss_target != "point":
            rule = "the magnitude term is per position: it needs loss_target='point' (or magnitude_weight=0)"
            raise ConfigError("loss_target", self.loss_target, rule)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def scoring(self) -> ScoringRule:
        """The run's scoring rule (``model_store.planner``): its tiling, recognition without a floor; export writes
        it into the manifest, with the crossfading merge (``FEATHER_MERGE``). ``tile_categories`` must be resolved
        (``engine.with_resolved_tiling``)."""
        if self.tile_categories is None:
            raise ValueError("tile_categories is not resolved yet (fit decides it from the training images)")
        if self.grid_scales is None and self.grid != "off":
            raise ValueError("grid_scales is not resolved yet (fit decides them from the training images)")
        grid = {name: GridSpec(scale=k, max_tiles=self.grid_max_tiles) for name, k in (self.grid_scales or {}).items()}
        return ScoringRule.tiled(self.image_size, self.max_tiles, self.tile_categories, merge=FEATHER_MERGE, grid=grid)

    @classmethod
    def from_dict(cls, raw: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in raw.items() if k in known}
        values.setdefault("category_centroids", 1)  # runs saved before several centroids per category had one
        values.setdefault("memory_entries", 0)  # runs saved before the patch memory had none
        values.setdefault("memory_per_category", False)  # nor, before it was split by category, one per category
        values.setdefault("max_tiles", 1)  # runs saved before tiling squashed every image into one square
        values.setdefault("tile_categories", [])
        values.setdefault("grid_scales", {})  # nor, before the grid, any grid
        if values.get("teacher") == "efficientnet_lite0" and values.get("teacher_taps") is None:
            values["teacher_taps"] = [3, 9, 13]  # Lite0's default before it moved; fit now writes its taps out
        if isinstance(values.get("betas"), list):
            values["betas"] = tuple(values["betas"])  # JSON has no tuples
        return cls(**values)

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: Path) -> TrainConfig:
        """The config saved at ``path``; a bad value is refused naming the file as well as the knob."""
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc.name}", exc.value, exc.rule) from exc

    @property
    def prd_settings(self) -> dict:
        """The PRD-specific part, for manifests and reports."""
        keys = (
            "embed_dim",
            "embed_stride",
            "prototypes",
            "recall_topk",
            "recall_temperature",
            "coherence_weight",
            "reseed_dead",
            "filter_at",
            "bottleneck_dropout",
            "decoder_width",
            "loss",
            "loss_target",
            "magnitude_weight",
            "score",
            "score_topk",
            "map_sigma",
            "memory_entries",
            "memory_per_category",
            "memory_weight",
            "image_size",
            "max_tiles",
            "tile_categories",
            "grid",
            "grid_scales",
            "grid_max_tiles",
        )
        return {k: getattr(self, k) for k in keys}


def _numbers(value: object) -> tuple:
    """The numbers of a knob's value a range applies to: each of a tuple's or a dict's values, else the value
    itself (None: none)."""
    if value is None:
        return ()
    if isinstance(value, dict):
        return tuple(value.values())
    return value if isinstance(value, tuple) else (value,)


@cache
def field_types() -> dict[str, object]:
    """``TrainConfig``'s annotations, evaluated once (strings under ``from __future__ import annotations``): the
    checks above and the CLI's parsers and ``choices`` read the same types."""
    return get_type_hints(TrainConfig)
