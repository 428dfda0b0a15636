"""Every knob of a training run, in one typed place, saved as ``RUN/config.json`` beside each checkpoint.

Defaults are the configuration the README's figures come from; each PRD part has a switch so the ablation is a
list of overrides (see ``training/ablate.py``). ``prototypes=0`` is plain RD4AD on the same teacher and budget.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path


@dataclass
class TrainConfig:
    # data
    data: list[str] = field(default_factory=list)
    categories: list[str] | None = None
    image_size: int = 256
    holdout_fraction: float = 0.1
    """Share of train/good kept out of training for calibration when a category has no validation/good."""
    # teacher
    teacher: str = "efficientnet_lite2"
    """Lite2 over Lite0: +0.04 image and +0.02 pixel AUROC at the same 8 epochs (training/README.md) for about 2× the
    teacher's compute; ``efficientnet_lite0`` is the fast choice, ``wide_resnet50_2`` the paper's."""
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
    with the patch memory fused in, ``max`` is +0.008 (0.868 vs 0.860, ``research/memory_probe.py``)."""
    score_topk: float = 0.01
    map_sigma: float = 4.0
    # teacher-space normal prototypes (training/memory.py)
    memory_entries: int = 16384
    """K patches of normal teacher features kept by greedy coreset; their nearest distance joins the map (0 = off).
    On the fixed Lite2 teacher (``research/memory_probe.py``, α = 2): 4096 → 0.863 / 0.881 mean image / pixel
    AUROC, 16384 → 0.868 / 0.889; a random subsample of 4096 only 0.817 / 0.876."""
    memory_weight: float = 2.0
    """α of the fused map rd / rd_scale + α · memory / memory_scale (both scales: means over held-out normals).
    α = 1, 2, 4 gave 0.857 / 0.884, 0.868 / 0.889, 0.867 / 0.892; z-scored, product and max fusions did no better."""
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

    @classmethod
    def from_dict(cls, raw: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in raw.items() if k in known}
        values.setdefault("category_centroids", 1)  # runs saved before several centroids per category had one
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
            "memory_weight",
            "image_size",
        )
        return {k: getattr(self, k) for k in keys}
