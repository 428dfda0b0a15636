"""A bundle graph in an ONNX Runtime session: the one wrapper training (calibration, evaluation, parity) and the
service both run, and the only module that imports onnxruntime.

Provider choice is the caller's (the service: ``PRD_PROVIDERS``; training: CPU). ONNX Runtime itself drops a
provider that fails to initialise (no driver, no GPU), so ``provider`` (``session.get_providers()[0]``) is what
really runs. With CUDA the batch is copied to the GPU once as an ``OrtValue`` and the outputs are bound there
through I/O binding, then copied back in one step; on CPU a plain ``session.run`` is already zero-copy.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from model_store.bundle import BundleError
from model_store.manifest import OutputSpec
from model_store.outputs import GraphOutputs

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


def available_providers() -> list[str]:
    return list(ort.get_available_providers())


def session_options(intra_op_threads: int = 0, inter_op_threads: int = 0, spinning: bool = False) -> ort.SessionOptions:
    """Sequential execution, all graph optimisations, quiet logs (fp16 graphs on CPU warn per up-cast op)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = inter_op_threads
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return options


class GraphSession:
    """An opened graph: ``run`` takes a uint8 (N, S, S, 3) batch and returns its ``GraphOutputs``."""

    def __init__(
        self,
        path: Path,
        providers: Sequence[str] = (CPU,),
        options: ort.SessionOptions | None = None,
        device_id: int = 0,
        outputs: OutputSpec | None = None,
    ) -> None:
        """Opens ``path``; a file ONNX Runtime cannot load is a ``BundleError`` naming it."""
        self.path = Path(path)
        config = [(name, {"device_id": str(device_id)}) if name == CUDA else name for name in providers]
        try:
            self.session = ort.InferenceSession(str(path), sess_options=options or session_options(), providers=config)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own untyped pybind errors
            message = f"{path}: ONNX Runtime cannot load the graph (corrupt or truncated file?): {exc}"
            raise BundleError(message) from exc
        self.device_id = device_id
        self.providers: list[str] = self.session.get_providers()
        self.provider = self.providers[0]
        self.input_names = [arg.name for arg in self.session.get_inputs()]
        self.input_types = [arg.type for arg in self.session.get_inputs()]
        self.output_names = [arg.name for arg in self.session.get_outputs()]
        outputs = outputs or OutputSpec()
        self._outputs = [outputs.score, outputs.anomaly_map, outputs.category_similarity]

    @property
    def input_size(self) -> int:
        """The graph input's side S, from its declared shape (N, S, S, 3)."""
        return int(self.session.get_inputs()[0].shape[1])

    def run(self, batch: np.ndarray) -> GraphOutputs:
        """One ONNX Runtime run on a uint8 (N, S, S, 3) batch."""
        batch = np.ascontiguousarray(batch, dtype=np.uint8)
        if self.provider == CUDA:
            binding = self.session.io_binding()
            on_gpu = ort.OrtValue.ortvalue_from_numpy(batch, "cuda", self.device_id)
            binding.bind_ortvalue_input(self.input_names[0], on_gpu)
            for name in self._outputs:
                binding.bind_output(name, "cuda", self.device_id)
            self.session.run_with_iobinding(binding)
            arrays = binding.copy_outputs_to_cpu()
        else:
            arrays = self.session.run(self._outputs, {self.input_names[0]: batch})
        return GraphOutputs.from_arrays(*arrays)
