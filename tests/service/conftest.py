from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.tiny_bundle import make_tiny_bundle


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A store with tiny v1: categories alpha (threshold 0.25) and beta (threshold 0.5)."""
    make_tiny_bundle(tmp_path / "store", thresholds={"beta": 0.5})
    return tmp_path / "store"
