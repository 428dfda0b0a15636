"""Say which bundle ``make serve`` will serve, or why it cannot: exit 1 with the loader's message naming the file.

Reads the same ``PRD_MODEL_STORE`` / ``PRD_MODEL_NAME`` / ``PRD_MODEL_VERSION`` the service reads (defaults:
``model_store/repository``, ``prd``, ``latest``) and verifies the bundle the way the service will (schema and checksum).
"""

from __future__ import annotations

import os
import sys

from model_store.bundle import BundleError, load_bundle

DEFAULT_STORE = "model_store/repository"
"""The service's default ``PRD_MODEL_STORE`` (the model repository in the working tree); tests/ops pins the two."""


def main() -> int:
    store = os.environ.get("PRD_MODEL_STORE", DEFAULT_STORE)
    name = os.environ.get("PRD_MODEL_NAME", "prd")
    version = os.environ.get("PRD_MODEL_VERSION", "latest")
    try:
        bundle = load_bundle(store, name, version)
    except BundleError as exc:
        print(f"no servable bundle: {exc}", file=sys.stderr)
        print("train and export one (make train export), or point PRD_MODEL_STORE at a store", file=sys.stderr)
        return 1
    manifest = bundle.manifest
    categories = ", ".join(manifest.categories)
    print(f"bundle {bundle.directory}: {manifest.name} v{manifest.version}, categories {categories}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
