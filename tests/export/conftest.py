"""Shared fixtures for export tests: one small generated dataset, a stand-in model fitted to it, one fp32 bundle.

Session-scoped so the suite exports only a handful of times; tests that damage a bundle copy it first.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from training.data import DatasetIndex, discover, load_images
from training.synthetic import make_synthetic_dataset

CATEGORIES = ("stripes", "blobs", "grid")


@pytest.fixture(scope="session")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> DatasetIndex:
    """Three generated categories; only ``stripes`` keeps a validation/good folder, the others use the holdout."""
    root = make_synthetic_dataset(
        tmp_path_factory.mktemp("data"), CATEGORIES, n_train=10, n_test_good=3, n_test_defect=3, size=64, n_validation=4
    )
    for category in CATEGORIES[1:]:
        shutil.rmtree(root / category / "validation")
    return discover(root)


@pytest.fixture(scope="session")
def model(dataset: DatasetIndex):
    """The stand-in PRD model (torch; the fixture skips where torch is not installed)."""
    pytest.importorskip("torch")
    from standin_prd import StandInPRD

    standin = StandInPRD(dataset.categories, input_size=48)
    by_category = {c: load_images(dataset.samples("train", c), 48, progress=False) for c in dataset.categories}
    standin.fit_centroids(by_category)
    return standin


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory, model, dataset: DatasetIndex) -> Path:
    """A store holding ``prd/1`` (fp32), exported once for the tests that only read it."""
    from training.export import export_model

    store = tmp_path_factory.mktemp("store")
    export_model(model, store, dataset, name="prd", metrics={"mean": {"image_auroc": 0.5}})
    return store


@pytest.fixture
def store_copy(store: Path, tmp_path: Path) -> Path:
    """A private copy of the shared store, for tests that modify it."""
    target = tmp_path / "store"
    shutil.copytree(store, target)
    return target
