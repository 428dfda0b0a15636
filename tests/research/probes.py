"""The research probes live in docs/research/, outside the installed packages; tests load them by path."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]
RESEARCH = REPO / "docs" / "research"
HELPERS = {"probe_maps"}  # imported by the probes, not run
PROBES = sorted(path.stem for path in RESEARCH.glob("*.py") if path.stem not in HELPERS)


def load_probe(name: str) -> ModuleType:
    """Import ``docs/research/<name>.py`` as ``python docs/research/<name>.py`` would: its folder on the path, so
    the probes' sibling imports (``probe_maps``) resolve."""
    if str(RESEARCH) not in sys.path:
        sys.path.insert(0, str(RESEARCH))
    spec = importlib.util.spec_from_file_location(f"research_{name}", RESEARCH / f"{name}.py")
    assert spec is not None and spec.loader is not None, f"no probe {name} in {RESEARCH}"
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
