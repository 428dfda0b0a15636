"""Finding and verifying a bundle in a store folder: version resolution, manifest schema, checksum, graph I/O.

Every failure is a ``BundleError`` whose message names the file and the field, so an operator who copied the
wrong folder or an old export knows what to fix without reading code.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from model_store.manifest import Manifest

MANIFEST_FILE = "manifest.json"

DEFAULT_STORE = Path("model_store/repository")
"""Where the bundles live in a clone: a Triton model repository (``<name>/config.pbtxt``, ``<name>/<version>/``)
holding nothing else. Relative to the working directory, as every command in README is run from the clone's root."""


class BundleError(RuntimeError):
    """A bundle that cannot be served; the message names the file and what is wrong."""


@dataclass(frozen=True)
class Bundle:
    directory: Path
    manifest: Manifest

    @property
    def onnx_path(self) -> Path:
        return self.directory / self.manifest.onnx.file


def list_versions(store: Path, name: str) -> list[int]:
    """Integer version folders of a model, ascending."""
    model_dir = Path(store) / name
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def resolve_version(store: Path, name: str, version: str | int = "latest") -> Path:
    """Folder of ``name``/``version``; ``latest`` is the highest integer version present."""
    versions = list_versions(store, name)
    if not versions:
        message = f"no versions of model '{name}' in store {Path(store) / name} (expected <version>/manifest.json)"
        raise BundleError(message)
    if str(version) == "latest":
        return Path(store) / name / str(versions[-1])
    if not str(version).isdigit() or int(version) not in versions:
        message = f"model '{name}' has no version {version!r} in {Path(store) / name}; available: {versions}"
        raise BundleError(message)
    return Path(store) / name / str(int(version))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(path: Path) -> Manifest:
    """Parse and validate a manifest.json, naming the file and the offending field on failure."""
    try:
        raw = json.loads(Path(path).read_text())
    except FileNotFoundError as exc:
        raise BundleError(f"{path}: manifest not found") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path}: not valid JSON ({exc})") from exc
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}" for err in exc.errors()
        )
        raise BundleError(f"{path}: invalid manifest: {problems}") from exc


def load_bundle(store: Path, name: str, version: str | int = "latest", verify_checksum: bool = True) -> Bundle:
    """Resolve, read and verify a bundle (manifest schema and model.onnx sha256)."""
    directory = resolve_version(Path(store), name, version)
    manifest = read_manifest(directory / MANIFEST_FILE)
    bundle = Bundle(directory=directory, manifest=manifest)
    if not bundle.onnx_path.is_file():
        message = f"{bundle.onnx_path}: graph file named by onnx.file in {directory / MANIFEST_FILE} is missing"
        raise BundleError(message)
    if verify_checksum:
        actual = sha256_file(bundle.onnx_path)
        if actual != manifest.onnx.sha256:
            message = (
                f"{bundle.onnx_path}: sha256 {actual} does not match onnx.sha256 {manifest.onnx.sha256} "
                f"in {directory / MANIFEST_FILE} (file replaced or corrupted)"
            )
            raise BundleError(message)
    return bundle


def verify_graph_io(
    bundle: Bundle, input_names: Sequence[str], input_types: Sequence[str], output_names: Sequence[str]
) -> None:
    """Check a loaded graph's inputs/outputs (names and input element type) against the manifest."""
    manifest, where = bundle.manifest, bundle.onnx_path
    if list(input_names) != [manifest.input.name]:
        raise BundleError(f"{where}: graph inputs {list(input_names)} != manifest input.name {manifest.input.name!r}")
    if input_types and "uint8" not in input_types[0]:
        raise BundleError(f"{where}: graph input type {input_types[0]} != manifest input.dtype 'uint8'")
    expected = [manifest.outputs.score, manifest.outputs.anomaly_map, manifest.outputs.category_similarity]
    missing = [name for name in expected if name not in output_names]
    if missing:
        message = f"{where}: graph has no outputs {missing} named in manifest.outputs (has {list(output_names)})"
        raise BundleError(message)
