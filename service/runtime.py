"""ONNX Runtime: the only module that imports it. Opens a bundle's graph, picks providers, runs batches.

Provider choice: the requested list (``PRD_PROVIDERS``, CUDA then CPU by default) filtered to what this
onnxruntime build has; CPU is always appended as the last resort. ONNX Runtime itself drops a provider that fails
to initialise (no driver, no GPU) — ``session.get_providers()[0]`` is therefore what really runs and is what we
report. With CUDA the batch is copied to the GPU once as an ``OrtValue`` and outputs are bound to the GPU through
I/O binding, then copied back in one step (``copy_outputs_to_cpu``); on CPU a plain ``session.run`` is already
zero-copy.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from model_store.bundle import Bundle, BundleError, verify_graph_io
from model_store.manifest import Manifest
from service.config import Settings

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
logger = logging.getLogger("service.runtime")


@dataclass(frozen=True)
class BatchOutputs:
    """Graph outputs of one run, float32: score (N,), anomaly_map (N,S,S), category_similarity (N,C)."""

    score: np.ndarray
    anomaly_map: np.ndarray
    category_similarity: np.ndarray


@dataclass(frozen=True)
class Prediction:
    """The graph's answer for one image."""

    score: float
    anomaly_map: np.ndarray
    category_similarity: np.ndarray


def choose_providers(requested: tuple[str, ...], available: list[str]) -> list[str]:
    """Requested providers this build has, in order, CPU last; unknown names are logged, not fatal."""
    chosen = [name for name in requested if name in available and name != CPU]
    missing = [name for name in requested if name not in available]
    if missing:
        logger.warning("execution providers %s not in this onnxruntime build (has %s)", missing, available)
    return [*chosen, CPU]


class OnnxModel:
    """A bundle opened in an ONNX Runtime session; ``predict`` is called from one inference thread at a time."""

    def __init__(self, bundle: Bundle, session: ort.InferenceSession, requested: list[str], device_id: int) -> None:
        self.bundle = bundle
        self.session = session
        self.requested_providers = requested
        self.providers: list[str] = session.get_providers()
        self.provider = self.providers[0]
        self.device_id = device_id
        outputs = bundle.manifest.outputs
        self._output_names = [outputs.score, outputs.anomaly_map, outputs.category_similarity]

    @property
    def manifest(self) -> Manifest:
        return self.bundle.manifest

    @property
    def input_size(self) -> int:
        return self.manifest.input.height

    def infer(self, batch: np.ndarray) -> BatchOutputs:
        """One ONNX Runtime run on a uint8 (N,S,S,3) batch."""
        if self.provider == CUDA:
            arrays = self._run_cuda(batch)
        else:
            arrays = self.session.run(self._output_names, {self.manifest.input.name: batch})
        score, anomaly_map, similarity = (np.asarray(a, dtype=np.float32) for a in arrays)
        return BatchOutputs(score.reshape(-1), anomaly_map.reshape(len(batch), *anomaly_map.shape[-2:]), similarity)

    def _run_cuda(self, batch: np.ndarray) -> list[np.ndarray]:
        binding = self.session.io_binding()
        on_gpu = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(batch), "cuda", self.device_id)
        binding.bind_ortvalue_input(self.manifest.input.name, on_gpu)
        for name in self._output_names:
            binding.bind_output(name, "cuda", self.device_id)
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()

    def predict(self, batch: np.ndarray) -> list[Prediction]:
        out = self.infer(batch)
        return [
            Prediction(float(out.score[i]), out.anomaly_map[i], out.category_similarity[i]) for i in range(len(batch))
        ]

    def warm_up(self, runs: int, max_batch_size: int) -> None:
        """Run zeros at batch 1 and at the largest batch (allocates arenas), checking output shapes on the way."""
        size = self.input_size
        for batch_size in sorted({1, max_batch_size}):
            for _ in range(max(1, runs)):
                out = self.infer(np.zeros((batch_size, size, size, 3), dtype=np.uint8))
                self._check_shapes(out, batch_size)

    def _check_shapes(self, out: BatchOutputs, n: int) -> None:
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


def session_options(settings: Settings) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = settings.intra_op_threads
    options.inter_op_num_threads = settings.inter_op_threads
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if settings.intra_op_spinning else "0")
    return options


def _provider_config(names: list[str], device_id: int) -> list[str | tuple[str, dict[str, str]]]:
    return [(name, {"device_id": str(device_id)}) if name == CUDA else name for name in names]


def open_model(bundle: Bundle, settings: Settings) -> OnnxModel:
    """Open the bundle's graph with the best available provider; any failure is a ``BundleError`` naming the file."""
    requested = choose_providers(settings.provider_names, ort.get_available_providers())
    path = str(bundle.onnx_path)
    attempts = [requested] if requested == [CPU] else [requested, [CPU]]
    errors: list[str] = []
    for providers in attempts:
        try:
            session = ort.InferenceSession(
                path,
                sess_options=session_options(settings),
                providers=_provider_config(providers, settings.cuda_device_id),
            )
            break
        except Exception as exc:  # onnxruntime raises its own untyped pybind errors
            errors.append(f"{providers}: {exc}")
            logger.warning("cannot open %s with %s: %s", path, providers, exc)
    else:
        message = f"{path}: ONNX Runtime cannot load the graph ({'; '.join(errors)})"
        raise BundleError(message)
    verify_graph_io(
        bundle,
        [arg.name for arg in session.get_inputs()],
        [arg.type for arg in session.get_inputs()],
        [arg.name for arg in session.get_outputs()],
    )
    model = OnnxModel(bundle, session, requested, settings.cuda_device_id)
    if model.provider != requested[0]:
        logger.warning("%s runs on %s (requested %s)", path, model.provider, requested)
    return model
