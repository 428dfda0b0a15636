"""What the graph answers, as numpy: one run's batch (``GraphOutputs``) and one image's merged answer
(``ImageOutputs``). The same two types serve training (calibration, evaluation, parity) and the service.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

CategorySource = Literal["given", "recognised", "unknown"]


@dataclass(frozen=True)
class GraphOutputs:
    """Outputs of one graph run over N inputs (images or tiles), float32.

    ``score`` (N,), ``anomaly_map`` (N, S, S) (the graph's channel axis dropped), ``category_similarity`` (N, C).
    """

    score: np.ndarray
    anomaly_map: np.ndarray
    category_similarity: np.ndarray

    @classmethod
    def from_arrays(cls, score: np.ndarray, anomaly_map: np.ndarray, similarity: np.ndarray) -> GraphOutputs:
        """The graph's raw arrays (map (N, 1, S, S) or (N, S, S)) → float32 outputs."""
        score = np.asarray(score, np.float32).reshape(-1)
        anomaly_map = np.asarray(anomaly_map, np.float32)
        anomaly_map = anomaly_map.reshape(len(score), *anomaly_map.shape[-2:])
        return cls(score, anomaly_map, np.asarray(similarity, np.float32).reshape(len(score), -1))

    def __len__(self) -> int:
        return len(self.score)

    def rows(self) -> list[GraphOutputs]:
        """One ``GraphOutputs`` of length 1 per input (views, no copies): what a batcher hands back per input."""
        return [self[i : i + 1] for i in range(len(self))]

    def __getitem__(self, part: slice) -> GraphOutputs:
        return GraphOutputs(self.score[part], self.anomaly_map[part], self.category_similarity[part])

    @classmethod
    def concat(cls, parts: Sequence[GraphOutputs]) -> GraphOutputs:
        if len(parts) == 1:
            return parts[0]
        return cls(
            np.concatenate([p.score for p in parts]),
            np.concatenate([p.anomaly_map for p in parts]),
            np.concatenate([p.category_similarity for p in parts]),
        )


@dataclass(frozen=True)
class ImageOutputs:
    """One image's answer after the scoring rule (``model_store.planner``): its inputs' outputs merged, routed."""

    score: float
    anomaly_map: np.ndarray
    """On the image's aspect-kept canvas (``tile_size`` × ``tile_size`` when it was squashed)."""
    category_similarity: np.ndarray
    category: str | None
    """The category whose calibration decides: given, else recognised (above the floor), else None (global)."""
    category_source: CategorySource
    tiles: int = 1
    """Graph inputs the image was finally scored as."""
