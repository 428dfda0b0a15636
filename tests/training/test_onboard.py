"""``python -m training add-category``: a trained run learns a new category from its good images; the categories
it knew keep their scores bit for bit; the new version exports and records what was added."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from model_store.bundle import load_bundle  # noqa: E402
from tests.training.test_engine_cli import TINY  # noqa: E402
from training.cli import main  # noqa: E402
from training.data import discover, load_images  # noqa: E402
from training.model import load_run  # noqa: E402
from training.synthetic import make_synthetic_dataset  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.slow]

MEMORY = ["--memory-entries", "32"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three categories, each its own texture; the run is trained on the first two."""
    root = tmp_path_factory.mktemp("data")
    return make_synthetic_dataset(root, ("alpha", "beta", "gamma"), n_train=12, n_test_good=3, n_test_defect=3, size=64)


@pytest.fixture(scope="module")
def trained(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("run")
    args = ["fit", "--data", str(dataset), "--out", str(run), "--epochs", "1", "--categories", "alpha,beta"]
    assert main([*args, *TINY, *MEMORY]) == 0
    return run


def _scores(run: Path, paths: list[Path]) -> tuple[torch.Tensor, torch.Tensor]:
    model = load_run(run)
    with torch.no_grad():
        out = model(torch.from_numpy(load_images(paths, model.input_size, progress=False)))
    return out.score, out.category_similarity


def test_known_categories_keep_their_scores_bit_for_bit(dataset: Path, trained: Path, tmp_path: Path) -> None:
    grown = tmp_path / "grown"
    assert main(["add-category", str(trained), "--data", str(dataset), "--category", "gamma", "--out", str(grown)]) == 0
    index = discover([dataset])
    known = [s.path for s in index.test if s.category in ("alpha", "beta")]
    before, before_similarity = _scores(trained, known)
    after, after_similarity = _scores(grown, known)
    assert torch.equal(after_similarity[:, :2], before_similarity)  # the old columns, unchanged
    assert (after_similarity.argmax(dim=1) == before_similarity.argmax(dim=1)).all()  # still recognised as before
    assert torch.equal(after, before)
    new = [s.path for s in index.test if s.category == "gamma"]
    _, new_similarity = _scores(grown, new)
    assert (new_similarity.argmax(dim=1) == 2).all()  # the added category is recognised as itself
    model = load_run(grown)
    assert model.categories == ["alpha", "beta", "gamma"] and model.config.added_categories == ["gamma"]
    assert json.loads((grown / "onboarding.json").read_text())["added"] == ["gamma"]
    store = tmp_path / "store"
    assert main(["export", str(grown), "--store", str(store)]) == 0
    manifest = load_bundle(store, "prd").manifest
    assert manifest.categories == ["alpha", "beta", "gamma"] and manifest.added_categories == ["gamma"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--category", "alpha"], "--category alpha: the model already has it"),
        (["--category", "gamma", "--category", "gamma"], "--category gamma: named twice"),
        (["--category", "omega"], "omega"),
    ],
    ids=["known", "twice", "absent"],
)
def test_refusals_are_one_line_naming_the_problem(
    dataset: Path, trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    with pytest.raises(SystemExit, match=message):
        main(["add-category", str(trained), "--data", str(dataset), *extra, "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out" / "checkpoint.pt").exists()


def test_a_category_with_too_few_good_images_is_refused_saying_how_many(trained: Path, tmp_path: Path) -> None:
    few = make_synthetic_dataset(tmp_path / "few", ("delta",), n_train=4, n_test_good=1, n_test_defect=1, size=64)
    with pytest.raises(SystemExit, match=r"--category delta: 4 good images under train/good, at least 10 needed"):
        main(["add-category", str(trained), "--data", str(few), "--category", "delta", "--out", str(tmp_path / "o")])


def test_a_run_with_a_shared_memory_is_refused(dataset: Path, tmp_path: Path) -> None:
    run = tmp_path / "shared"
    args = ["fit", "--data", str(dataset), "--out", str(run), "--epochs", "1", "--categories", "alpha,beta"]
    assert main([*args, *TINY, *MEMORY, "--memory-per-category", "false"]) == 0
    with pytest.raises(SystemExit, match="shared by all categories"):
        main(["add-category", str(run), "--data", str(dataset), "--category", "gamma", "--out", str(tmp_path / "o")])
