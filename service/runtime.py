"""The bundle in service: its graph opened with the configured providers (``model_store.session``, the wrapper
training runs too) and its scoring rule's planner, with the operator's similarity floor when one is set.

Provider choice: the requested list (``PRD_PROVIDERS``, CUDA then CPU by default) filtered to what this
onnxruntime build has; CPU is always appended as the last resort, and a session that fails to open with the
requested list is opened again on CPU alone. ``provider`` is what really runs and is what we report.
"""

from __future__ import annotations

import logging

import numpy as np

from model_store.bundle import Bundle, BundleError, verify_graph_io
from model_store.manifest import Manifest
from model_store.outputs import GraphOutputs
from model_store.planner import Planner
from model_store.session import CPU, GraphSession, available_providers, session_options
from service.config import Settings

logger = logging.getLogger("service.runtime")


def choose_providers(requested: tuple[str, ...], available: list[str]) -> list[str]:
    """Requested providers this build has, in order, CPU last; unknown names are logged, not fatal."""
    chosen = [name for name in requested if name in available and name != CPU]
    missing = [name for name in requested if name not in available]
    if missing:
        logger.warning("execution providers %s not in this onnxruntime build (has %s)", missing, available)
    return [*chosen, CPU]


class OnnxModel:
    """A bundle opened for serving; ``predict`` is called from one inference thread at a time."""

    def __init__(self, bundle: Bundle, session: GraphSession, requested: list[str], planner: Planner) -> None:
        self.bundle = bundle
        self.session = session
        self.requested_providers = requested
        self.providers = session.providers
        self.provider = session.provider
        self.planner = planner
        """The bundle's scoring rule (``PRD_RECOGNITION_MIN_SIMILARITY`` replaces its floor when set)."""

    @property
    def manifest(self) -> Manifest:
        return self.bundle.manifest

    @property
    def input_size(self) -> int:
        return self.manifest.input.height

    def infer(self, batch: np.ndarray) -> GraphOutputs:
        """One ONNX Runtime run on a uint8 (N,S,S,3) batch."""
        return self.session.run(batch)

    def predict(self, batch: np.ndarray) -> list[GraphOutputs]:
        """One run, handed back per input (the batcher answers each request its own rows)."""
        return self.infer(batch).rows()

    def warm_up(self, runs: int, max_batch_size: int) -> None:
        """Run zeros at batch 1 and at the largest batch (allocates arenas), checking output shapes on the way."""
        size = self.input_size
        for batch_size in sorted({1, max_batch_size}):
            for _ in range(max(1, runs)):
                out = self.infer(np.zeros((batch_size, size, size, 3), dtype=np.uint8))
                self._check_shapes(out, batch_size)

    def _check_shapes(self, out: GraphOutputs, n: int) -> None:
        size, n_categories = self.input_size, len(self.manifest.categories)
        expected = {"score": (n,), "anomaly_map": (n, size, size), "category_similarity": (n, n_categories)}
        actual = {
            "score": out.score.shape,
            "anomaly_map": out.anomaly_map.shape,
            "category_similarity": out.category_similarity.shape,
        }
        wrong = {name: shape for name, shape in actual.items() if tuple(shape) != expected[name]}
        if wrong:
            message = (
                f"{self.bundle.onnx_path}: outputs {wrong} do not match the manifest (expected {expected}; "
                f"input {size}x{size}, {n_categories} categories)"
            )
            raise BundleError(message)


def open_model(bundle: Bundle, settings: Settings) -> OnnxModel:
    """Open the bundle's graph with the best available provider; any failure is a ``BundleError`` naming the file."""
    requested = choose_providers(settings.provider_names, available_providers())
    attempts = [requested] if requested == [CPU] else [requested, [CPU]]
    options = (settings.intra_op_threads, settings.inter_op_threads, settings.intra_op_spinning)
    errors: list[str] = []
    for providers in attempts:
        try:
            session = GraphSession(
                bundle.onnx_path, providers, session_options(*options), settings.cuda_device_id, bundle.manifest.outputs
            )
            break
        except BundleError as exc:
            errors.append(f"{providers}: {exc}")
            logger.warning("cannot open %s with %s: %s", bundle.onnx_path, providers, exc)
    else:
        raise BundleError(f"{bundle.onnx_path}: ONNX Runtime cannot load the graph ({'; '.join(errors)})")
    verify_graph_io(bundle, session.input_names, session.input_types, session.output_names)
    planner = bundle.manifest.planner(settings.recognition_min_similarity)
    model = OnnxModel(bundle, session, requested, planner)
    if model.provider != requested[0]:
        logger.warning("%s runs on %s (requested %s)", bundle.onnx_path, model.provider, requested)
    return model
