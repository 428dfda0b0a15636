"""The scoring pipeline as an ONNX graph: torch → ONNX (fp32 or fp16), and running that graph on ONNX Runtime.

Owned here so export, calibration and the parity check all run *the file that ships*: thresholds are computed by
the same graph, on the same bytes → pixels path (``model_store.preprocess``), as the service will use.

- Export uses the TorchScript-based exporter (``dynamo=False``; the dynamo one needs onnxscript), opset 17, a
  dynamic batch axis, input ``image`` and the ``ScoreOutput`` field names as outputs. Output shapes are then
  written into the graph exactly ((N,), (N,1,S,S), (N,C)), because the tracer's guesses are loose and Triton and
  the service read them; ``onnx.checker`` with ``full_check`` re-infers shapes and must agree.
- fp16 uses ONNX Runtime's own converter (``onnxruntime.transformers.float16``, shipped in the onnxruntime
  wheel): weights and compute become float16, the uint8 input and the float32 outputs stay (``keep_io_types``),
  and so do the patch memory's nodes (``FP32_SCOPES``).
  Its output is not always topologically sorted (nodes it leaves in float32, e.g. TopK, get casts placed after
  their consumers), so the graph is re-sorted before the checker sees it.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from model_store.manifest import OutputSpec
from model_store.outputs import GraphOutputs, ImageOutputs
from model_store.planner import Planner, ScoringRule
from model_store.preprocess import decode_rgb8, load_model_input
from model_store.session import GraphSession, session_options
from training.calibrate import FileScores

OPSET = 17
INPUT_NAME = "image"
OUTPUT_NAMES: tuple[str, ...] = tuple(OutputSpec().model_dump().values())
"""("score", "anomaly_map", "category_similarity"): the manifest's defaults, which are ScoreOutput's field names."""


class GraphError(RuntimeError):
    """The model cannot be exported, or the exported graph is malformed; names the file when there is one."""


def export_onnx(model: nn.Module, path: Path, fp16: bool = False) -> None:
    """Trace ``model`` (uint8 NHWC → ScoreOutput) into ``path`` and check it."""
    size, n_categories = int(model.input_size), len(model.categories)
    dummy = torch.zeros(2, size, size, 3, dtype=torch.uint8)  # batch 2, so tracing cannot specialise on N = 1
    model.eval()
    with torch.no_grad():
        sample = model(dummy)
    fields = getattr(type(sample), "_fields", None)
    if fields != OUTPUT_NAMES:
        raise GraphError(f"model output must be a NamedTuple with fields {OUTPUT_NAMES}, got {fields or type(sample)}")
    expected = {"score": (2,), "anomaly_map": (2, 1, size, size), "category_similarity": (2, n_categories)}
    for name, value in zip(OUTPUT_NAMES, sample, strict=True):
        if tuple(value.shape) != expected[name] or value.dtype != torch.float32:
            raise GraphError(
                f"model output {name}: {tuple(value.shape)} {value.dtype}, expected {expected[name]} float32"
            )
    with warnings.catch_warnings():  # the legacy exporter is deprecated; the dynamo one needs onnxscript
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message="Constant folding", category=UserWarning)  # exporter internals
        torch.onnx.export(
            model,
            (dummy,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes={name: {0: "batch"} for name in (INPUT_NAME, *OUTPUT_NAMES)},
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    proto = onnx.load(str(path))
    _set_io_shapes(proto, size, n_categories)
    if fp16:
        proto = to_fp16(proto)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise GraphError(f"{path}: exported graph fails onnx.checker: {exc}") from exc
    onnx.save(proto, str(path))


def _set_io_shapes(proto: onnx.ModelProto, size: int, n_categories: int) -> None:
    """Declare exact shapes with a symbolic batch: image (N,S,S,3), score (N,), map (N,1,S,S), similarity (N,C)."""
    shapes = {
        INPUT_NAME: ["batch", size, size, 3],
        "score": ["batch"],
        "anomaly_map": ["batch", 1, size, size],
        "category_similarity": ["batch", n_categories],
    }
    for value in [*proto.graph.input, *proto.graph.output]:
        dims = value.type.tensor_type.shape.dim
        del dims[:]
        for extent in shapes[value.name]:
            dim = dims.add()
            if isinstance(extent, str):
                dim.dim_param = extent
            else:
                dim.dim_value = extent


FP32_SCOPES = ("/anomaly_map/memory/",)
"""Nodes kept in float32 by ``to_fp16``: the patch memory's ‖q‖² − 2 q·b + ‖b‖² cancels large terms, which float16
cannot resolve (its distances would lose their low digits)."""


def to_fp16(proto: onnx.ModelProto) -> onnx.ModelProto:
    """float16 weights and compute, uint8 input and float32 outputs kept (and ``FP32_SCOPES`` nodes)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    kept = [n.name for n in proto.graph.node if any(scope in n.name for scope in FP32_SCOPES)]
    half = convert_float_to_float16(proto, keep_io_types=True, node_block_list=kept or None)
    _toposort(half.graph)
    kinds = [v.type.tensor_type.elem_type for v in [*half.graph.input, *half.graph.output]]
    if kinds != [onnx.TensorProto.UINT8] + [onnx.TensorProto.FLOAT] * len(OUTPUT_NAMES):
        raise GraphError(f"fp16 conversion changed the graph's I/O types to {kinds}")
    return half


def _toposort(graph: onnx.GraphProto) -> None:
    """Reorder nodes so each comes after the producers of its inputs (Kahn's algorithm, stable)."""
    available = {v.name for v in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(i in available for i in n.input)]
        if not ready:
            names = [n.name for n in pending[:5]]
            raise GraphError(f"graph has nodes whose inputs are never produced (cycle or dangling edge): {names}")
        for node in ready:
            available.update(node.output)
        ordered += ready
        ready_ids = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in ready_ids]
    del graph.node[:]
    graph.node.extend(ordered)


class OnnxScorer:
    """A bundle graph on ONNX Runtime (CPU, ``model_store.session``), fed exactly as the service feeds it."""

    def __init__(self, path: Path, planner: Planner | None = None) -> None:
        self.session = GraphSession(Path(path), options=session_options())
        self.path = Path(path)
        self.planner = planner or Planner(ScoringRule.squash(self.session.input_size), ())
        """The bundle's scoring rule (``model_store.planner``); default: every image squashed, no category."""
        self.input_size = self.session.input_size
        self.input_names = self.session.input_names
        self.input_types = self.session.input_types
        self.output_names = self.session.output_names

    def run(self, images: np.ndarray) -> GraphOutputs:
        """uint8 (N,S,S,3) → the graph's outputs."""
        return self.session.run(images)

    def load_files(self, paths: Sequence[Path]) -> np.ndarray:
        """The service's path from file bytes to one squashed model input each: ``preprocess.load_model_input``."""
        if not paths:
            return np.empty((0, self.input_size, self.input_size, 3), np.uint8)
        return np.stack([load_model_input(Path(p).read_bytes(), self.input_size)[0] for p in paths])

    def score_tiled(self, paths: Sequence[Path]) -> list[ImageOutputs]:
        """Each file as the service scores it without a given category (``Planner.score``)."""
        return self.planner.score(self.run, [decode_rgb8(Path(p).read_bytes()) for p in paths])

    def score_files(self, paths: Sequence[Path], batch_size: int = 8, progress: str | None = None) -> FileScores:
        """Per-file score, map median and map maximum, and category similarities (tiles merged), batch by batch."""
        parts: list[dict[str, Any]] = []
        batches = range(0, len(paths), batch_size)
        if progress:
            from tqdm import tqdm

            batches = tqdm(batches, desc=progress, unit="batch", total=len(batches))
        for start in batches:
            merged = self.score_tiled(paths[start : start + batch_size])
            parts.append(
                {
                    "score": np.array([m.score for m in merged]),
                    "map_median": np.array([np.median(m.anomaly_map) for m in merged]),
                    "map_max": np.array([m.anomaly_map.max() for m in merged]),
                    "similarity": np.stack([m.category_similarity for m in merged]),
                }
            )
        if not parts:
            raise GraphError(f"{self.path}: no files to score")
        return FileScores(**{key: np.concatenate([p[key] for p in parts]) for key in parts[0]})
