"""Every knob of a training run, in one typed place, saved as ``RUN/config.json`` beside each checkpoint.

Defaults are the configuration the README's figures come from; each PRD part has a switch so the ablation is a
list of overrides (see ``training/ablate.py``). ``prototypes=0`` is plain RD4AD on the same teacher and budget.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from model_store.tiling import TilingPolicy


@dataclass
class TrainConfig:
    # data
    data: list[str] = field(default_factory=list)
    categories: list[str] | None = None
    image_size: int = 256
    max_tiles: int = 4
    """Aspect-kept tiles per image, at most, for the categories in ``tile_categories`` (``model_store/tiling.py``):
    an image is scaled to a short side of ``image_size`` and cut into ``ceil(aspect − 0.15)`` overlapping squares
    along its long side, in training, calibration, evaluation and the service alike; other images are squashed into
    one square, as every image was before (runs saved before it load with 1)."""
    tile_categories: list[str] | None = None
    """Categories cut into tiles; None: decided by ``fit`` from the training images and written out — a category
    is tiled when its photos share one frame (aspect ratios within 5 %, ``tiling.fixed_frame``), squashed when the
    frame varies from image to image. On ``../shared/data``: kolektor and tire tiled, magnetic_tile squashed, wood
    square (one tile either way). Tiling every category (``--tile-categories kolektor,magnetic_tile,tire,wood``),
    magnetic tiles fell from 0.954 / 0.786 to 0.932 / 0.742 image / pixel AUROC while kolektor rose from 0.836 /
    0.888 to 0.928 / 0.950 and tire from 0.744 / 0.988 to 0.827 / 0.992 (``training evaluate`` of that run and of
    ``prd/5``'s, which squashed every image)."""
    holdout_fraction: float = 0.1
    """Share of train/good kept out of training for calibration when a category has no validation/good."""
    # teacher
    teacher: str = "efficientnet_lite0"
    """With the patch memory, Lite0 (taps 4-10-13, α = 4) against Lite2 (taps 4-13-18, α = 2), 10 epochs each:
    mean image / pixel AUROC / AUPRO 0.860 / 0.903 / 0.732 against 0.878 / 0.887 / 0.689 (``training evaluate``),
    ahead of the reference detector on 6 of 8 category figures against 4 of 8, and 1.0–1.3× the images/s. Lite0's
    features make the better memory (pixel AUROC of the memory alone 0.903 vs 0.886); Lite2's student map is the
    better one alone (0.822 vs 0.805 image AUROC). ``wide_resnet50_2`` is the paper's teacher."""
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
    # student decoder
    decoder_width: int = 128
    # loss and scoring
    loss: str = "hard"
    """``pixel``: mean over positions of 1 − cos; ``hard``: the same with easy positions' gradient scaled down."""
    hard_mining_quantile: float = 0.9
    magnitude_weight: float = 0.0
    """w of the magnitude term: distance = 1 − cos + w·mean_c (t_c − s_c)²/var_c, in the loss and the map (0 = off)."""
    score: str = "max"
    """Image score from the smoothed map: ``max`` (RD4AD), ``max_minus_mean`` (the peak above the map's own mean) or
    ``topk_mean``. On the student's map alone ``max_minus_mean`` was +0.01 image AUROC (Lite2, defective teacher);
    with the patch memory fused in, ``max`` is +0.008 (0.868 vs 0.860, ``research/memory_probe.py``); on the Lite0
    default, ``max`` 0.860, ``max_minus_mean`` 0.851, ``topk_mean`` 0.860 (``research/fusion_probe.py``)."""
    score_topk: float = 0.01
    map_sigma: float = 4.0
    # teacher-space normal prototypes (training/memory.py)
    memory_entries: int = 4096
    """K patches of normal teacher features kept by greedy coreset, per memory (per category, below); their nearest
    distance joins the map (0 = off). One shared memory on the fixed Lite2 teacher (``research/memory_probe.py``,
    α = 2): 4096 → 0.863 / 0.881 mean image / pixel AUROC, 16384 → 0.868 / 0.889; a random subsample of 4096 only
    0.817 / 0.876. Per category on Lite0 (``research/category_memory.py``, α = 4): 4096 each → 0.869 / 0.899,
    16384 each → 0.865 / 0.905 for four times the scoring cost."""
    memory_per_category: bool = True
    """One memory per category, each image measured against that of the category the graph recognises; False: one
    memory shared by all. On the Lite0 run of ``prd/4`` (``research/category_memory.py``, α = 4): 4 × 4096 per
    category 0.869 / 0.899 against one shared 16 384 (``prd/4``'s) 0.860 / 0.903, a quarter of the distance
    computations per image (``memory.py`` says why and what a misrecognised image does)."""
    memory_weight: float = 4.0
    """α of the fused map rd / rd_scale + α · memory / memory_scale (both scales: means over held-out normals).
    Lite0 (``research/fusion_probe.py`` on the trained Lite0 run): α = 1, 2, 3, 4, 6 gave 0.853 / 0.892,
    0.860 / 0.899, 0.860 / 0.902, 0.860 / 0.903, 0.856 / 0.904 (magnetic-tile pixel AUROC 0.750 → 0.806 as α
    grows). Lite2: α = 1, 2, 4 gave 0.857 / 0.884, 0.868 / 0.889, 0.867 / 0.892; z-scored, product and max
    fusions did no better. Per-category memories of 4096 (``research/category_memory.py``): α = 2, 4, 6 gave
    0.861 / 0.895, 0.869 / 0.899, 0.869 / 0.900."""
    # optimisation
    lr: float = 0.005
    betas: tuple[float, float] = (0.5, 0.999)
    weight_decay: float = 0.0
    batch_size: int = 16
    epochs: int = 10
    """~700 steps of 16 on the four shared categories: 8 and 25 epochs gave the same AUROC (±0.006) and 4× longer
    changed it by < 0.005 in the design sweep, so the budget goes to a stronger teacher instead."""
    max_minutes: float | None = None
    seed: int = 0
    device: str = "auto"
    workers: int = 2

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def tiling(self) -> TilingPolicy:
        """The run's tiling; ``tile_categories`` must be resolved (``engine.with_resolved_tiling``)."""
        if self.tile_categories is None:
            raise ValueError("tile_categories is not resolved yet (fit decides it from the training images)")
        return TilingPolicy(self.max_tiles, frozenset(self.tile_categories))

    @classmethod
    def from_dict(cls, raw: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in raw.items() if k in known}
        values.setdefault("category_centroids", 1)  # runs saved before several centroids per category had one
        values.setdefault("memory_entries", 0)  # runs saved before the patch memory had none
        values.setdefault("memory_per_category", False)  # nor, before it was split by category, one per category
        values.setdefault("max_tiles", 1)  # runs saved before tiling squashed every image into one square
        values.setdefault("tile_categories", [])
        if values.get("teacher") == "efficientnet_lite0" and values.get("teacher_taps") is None:
            values["teacher_taps"] = [3, 9, 13]  # Lite0's default before it moved; fit now writes its taps out
        if "betas" in values:
            values["betas"] = tuple(values["betas"])
        return cls(**values)

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: Path) -> TrainConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))

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
            "decoder_width",
            "loss",
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
        )
        return {k: getattr(self, k) for k in keys}
