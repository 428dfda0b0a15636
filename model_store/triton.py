"""``<store>/<name>/config.pbtxt``: the same store folder as a Triton model repository (ONNX Runtime backend).

Triton reads ``<repo>/<model>/config.pbtxt`` beside integer version folders holding ``model.onnx``, which is
exactly our bundle layout; the ``manifest.json`` next to each graph is ignored by Triton. The config describes the
latest version (``version_policy: latest 1``), so it is rewritten from that version's manifest after every export.

Triton cannot run here, so ``check_config`` is the guard: it parses the text with protobuf's own text-format parser
against a hand-written subset of Triton's ``inference.ModelConfig`` schema (same field names, numbers and enums as
``model_config.proto``; an unknown field or a wrong type is a parse error), then checks the values against the
manifest. protobuf is imported lazily: the service never needs this module, and protobuf ships with onnx and
onnxruntime wherever exports happen.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from model_store.batching import BatchPolicy
from model_store.bundle import MANIFEST_FILE, read_manifest, resolve_version
from model_store.manifest import Manifest

CONFIG_FILE = "config.pbtxt"
PLATFORM = "onnxruntime_onnx"


class TritonConfigError(ValueError):
    """A config.pbtxt that Triton would refuse or that disagrees with the bundle; the message names the file."""


def render_config(manifest: Manifest, batching: BatchPolicy | None = None) -> str:
    """Triton config for a manifest. Dims exclude the batch dimension (``max_batch_size > 0`` adds it).

    ``batching`` (default: the service's defaults, ``model_store/batching.py``) gives ``max_batch_size`` and the
    dynamic batcher's queue delay, the service's batch size and batch window.

    ``score`` is (N,) in the graph; Triton needs non-empty dims, so it is declared ``[1]`` with an empty reshape,
    the documented way to describe a batch-only tensor.
    """
    batching = batching or BatchPolicy()
    size, channels = manifest.input.height, manifest.input.channels
    outputs = manifest.outputs
    return "\n".join(
        [
            f'name: "{manifest.name}"',
            f'platform: "{PLATFORM}"',
            f"max_batch_size: {batching.max_batch_size}",
            "version_policy: { latest: { num_versions: 1 } }",
            "input [",
            f'  {{ name: "{manifest.input.name}" data_type: TYPE_UINT8 format: FORMAT_NHWC '
            f"dims: [ {size}, {manifest.input.width}, {channels} ] }}",
            "]",
            "output [",
            f'  {{ name: "{outputs.score}" data_type: TYPE_FP32 dims: [ 1 ] reshape: {{ shape: [ ] }} }},',
            f'  {{ name: "{outputs.anomaly_map}" data_type: TYPE_FP32 dims: [ 1, {size}, {manifest.input.width} ] }},',
            f'  {{ name: "{outputs.category_similarity}" data_type: TYPE_FP32 dims: [ {len(manifest.categories)} ] }}',
            "]",
            f"dynamic_batching {{ max_queue_delay_microseconds: {batching.queue_delay_us} }}",
            "instance_group [ { count: 1 kind: KIND_AUTO } ]",
            "",
        ]
    )


def write_config(store: Path, name: str, batching: BatchPolicy | None = None) -> Path:
    """(Re)write ``<store>/<name>/config.pbtxt`` for the latest version, checked, replacing the old one atomically.

    ``batching`` defaults to ``BatchPolicy.from_env()``: the ``PRD_MAX_BATCH_SIZE`` / ``PRD_BATCH_WINDOW_MS`` the
    service reads, so an export run with the service's environment writes the service's batching.
    """
    directory = resolve_version(Path(store), name, "latest")
    manifest = read_manifest(directory / MANIFEST_FILE)
    path = Path(store) / name / CONFIG_FILE
    text = render_config(manifest, batching or BatchPolicy.from_env())
    check_config(text, manifest, where=path)
    temporary = path.with_name(f".{CONFIG_FILE}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)
    return path


def check_config(text: str, manifest: Manifest, where: Path | str = CONFIG_FILE) -> Any:
    """Parse ``text`` as an ``inference.ModelConfig`` and check it serves ``manifest``; return the parsed message."""
    from google.protobuf import text_format

    config = _model_config_class()()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        raise TritonConfigError(f"{where}: not a valid Triton ModelConfig: {exc}") from exc
    size, width = manifest.input.height, manifest.input.width
    expected_outputs = {
        manifest.outputs.score: ([1], []),
        manifest.outputs.anomaly_map: ([1, size, width], None),
        manifest.outputs.category_similarity: ([len(manifest.categories)], None),
    }
    problems = []
    if config.name != manifest.name:
        problems.append(f"name {config.name!r} != manifest name {manifest.name!r} (Triton needs the folder name)")
    if config.platform != PLATFORM:
        problems.append(f"platform {config.platform!r} != {PLATFORM!r}")
    if config.max_batch_size < 1:
        problems.append(f"max_batch_size {config.max_batch_size} must be >= 1 (the graph has a dynamic batch axis)")
    type_name = {number: name for name, number in _DATA_TYPES.items()}
    inputs = [(i.name, type_name.get(i.data_type), list(i.dims)) for i in config.input]
    if inputs != [(manifest.input.name, "TYPE_UINT8", [size, width, manifest.input.channels])]:
        problems.append(f"input {inputs} != one TYPE_UINT8 input {manifest.input.name!r} dims [{size}, {width}, 3]")
    outputs = {o.name: o for o in config.output}
    if set(outputs) != set(expected_outputs) or len(config.output) != len(expected_outputs):
        problems.append(f"outputs {[o.name for o in config.output]} != {list(expected_outputs)}")
    for name, (dims, reshape) in expected_outputs.items():
        output = outputs.get(name)
        if output is None:
            continue
        if output.data_type != _DATA_TYPES["TYPE_FP32"] or list(output.dims) != dims:
            got = f"{type_name.get(output.data_type)} dims {list(output.dims)}"
            problems.append(f"output {name!r}: want TYPE_FP32 dims {dims}, got {got}")
        if reshape is not None and (not output.HasField("reshape") or list(output.reshape.shape) != reshape):
            problems.append(f"output {name!r}: needs reshape {{ shape: {reshape} }} (the graph's tensor is batch-only)")
    if config.WhichOneof("scheduling_choice") != "dynamic_batching":
        problems.append("dynamic_batching is missing")
    if not config.instance_group or any(group.count < 1 for group in config.instance_group):
        problems.append("instance_group needs at least one group with count >= 1")
    if problems:
        raise TritonConfigError(f"{where}: " + "; ".join(problems))
    return config


_DATA_TYPES = {
    name: number
    for number, name in enumerate(
        "TYPE_INVALID TYPE_BOOL TYPE_UINT8 TYPE_UINT16 TYPE_UINT32 TYPE_UINT64 TYPE_INT8 TYPE_INT16 TYPE_INT32 "
        "TYPE_INT64 TYPE_FP16 TYPE_FP32 TYPE_FP64 TYPE_STRING TYPE_BF16".split()
    )
}
_MESSAGES: dict[str, list[tuple[str, int, str, bool]]] = {
    # message: [(field, number, type — scalar name or .inference.Message / enum, repeated)], from model_config.proto.
    "ModelTensorReshape": [("shape", 1, "int64", True)],
    "ModelInput": [
        ("name", 1, "string", False),
        ("data_type", 2, ".inference.DataType", False),
        ("format", 3, ".inference.ModelInput.Format", False),
        ("dims", 4, "int64", True),
        ("reshape", 5, ".inference.ModelTensorReshape", False),
    ],
    "ModelOutput": [
        ("name", 1, "string", False),
        ("data_type", 2, ".inference.DataType", False),
        ("dims", 3, "int64", True),
        ("label_filename", 4, "string", False),
        ("reshape", 5, ".inference.ModelTensorReshape", False),
    ],
    "ModelVersionPolicy": [("latest", 1, ".inference.ModelVersionPolicy.Latest", False)],
    "ModelDynamicBatching": [
        ("preferred_batch_size", 1, "int32", True),
        ("max_queue_delay_microseconds", 2, "uint64", False),
        ("preserve_ordering", 3, "bool", False),
    ],
    "ModelInstanceGroup": [
        ("name", 1, "string", False),
        ("count", 2, "int32", False),
        ("gpus", 3, "int32", True),
        ("kind", 4, ".inference.ModelInstanceGroup.Kind", False),
    ],
    "ModelConfig": [
        ("name", 1, "string", False),
        ("platform", 2, "string", False),
        ("version_policy", 3, ".inference.ModelVersionPolicy", False),
        ("max_batch_size", 4, "int32", False),
        ("input", 5, ".inference.ModelInput", True),
        ("output", 6, ".inference.ModelOutput", True),
        ("instance_group", 7, ".inference.ModelInstanceGroup", True),
        ("default_model_filename", 8, "string", False),
        ("dynamic_batching", 11, ".inference.ModelDynamicBatching", False),
        ("backend", 17, "string", False),
    ],
}
_NESTED_ENUMS = {
    "ModelInput": ("Format", ["FORMAT_NONE", "FORMAT_NHWC", "FORMAT_NCHW"]),
    "ModelInstanceGroup": ("Kind", ["KIND_AUTO", "KIND_GPU", "KIND_CPU", "KIND_MODEL"]),
}
_CLASS_CACHE: list[type] = []


def _model_config_class() -> type:
    """Build (once) the ModelConfig message class from the schema above, in a private descriptor pool."""
    if _CLASS_CACHE:
        return _CLASS_CACHE[0]
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    field = descriptor_pb2.FieldDescriptorProto
    scalars = {"string": field.TYPE_STRING, "int32": field.TYPE_INT32, "int64": field.TYPE_INT64}
    scalars |= {"uint32": field.TYPE_UINT32, "uint64": field.TYPE_UINT64, "bool": field.TYPE_BOOL}
    enums = {".inference.DataType", *(f".inference.{m}.{e}" for m, (e, _) in _NESTED_ENUMS.items())}
    proto = descriptor_pb2.FileDescriptorProto(
        name="prd_triton_model_config.proto", package="inference", syntax="proto3"
    )
    proto.enum_type.add(name="DataType").value.extend(
        descriptor_pb2.EnumValueDescriptorProto(name=n, number=v) for n, v in _DATA_TYPES.items()
    )
    for message_name, fields in _MESSAGES.items():
        message = proto.message_type.add(name=message_name)
        if message_name in _NESTED_ENUMS:
            enum_name, values = _NESTED_ENUMS[message_name]
            message.enum_type.add(name=enum_name).value.extend(
                descriptor_pb2.EnumValueDescriptorProto(name=v, number=i) for i, v in enumerate(values)
            )
        if message_name == "ModelVersionPolicy":
            latest = message.nested_type.add(name="Latest")
            latest.field.add(name="num_versions", number=1, type=field.TYPE_UINT32, label=field.LABEL_OPTIONAL)
        for name, number, kind, repeated in fields:
            entry = message.field.add(name=name, number=number)
            entry.label = field.LABEL_REPEATED if repeated else field.LABEL_OPTIONAL
            if kind in scalars:
                entry.type = scalars[kind]
            else:
                entry.type = field.TYPE_ENUM if kind in enums else field.TYPE_MESSAGE
                entry.type_name = kind
        if message_name == "ModelConfig":  # dynamic_batching sits in Triton's scheduling_choice oneof
            message.oneof_decl.add(name="scheduling_choice")
            next(f for f in message.field if f.name == "dynamic_batching").oneof_index = 0
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    _CLASS_CACHE.append(message_factory.GetMessageClass(pool.FindMessageTypeByName("inference.ModelConfig")))
    return _CLASS_CACHE[0]
