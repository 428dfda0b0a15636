"""training.data: MVTec-layout discovery over several roots, loading through the shared resize rule, and bad data
reported as DataError naming the path."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("tqdm")  # the training extra; absent from the torch-free service environment

from model_store.planner import ScoringRule  # noqa: E402
from model_store.preprocess import load_model_input  # noqa: E402
from training import data  # noqa: E402
from training.data import DataError, ImageCache, discover, load_image, load_images, load_mask  # noqa: E402
from training.synthetic import make_synthetic_dataset  # noqa: E402

pytestmark = pytest.mark.torch  # the training half: runs where the training extras are installed

SIZE = 32


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    """Two categories: texture_a (RGB, square), texture_b (grayscale, tall), with a validation split."""
    return make_synthetic_dataset(
        tmp_path / "data", n_train=3, n_test_good=2, n_test_defect=2, size=SIZE, n_validation=1
    )


def test_discover_indexes_categories_splits_labels_and_masks(root: Path) -> None:
    index = discover([root])
    assert index.categories == ["texture_a", "texture_b"]
    assert [len(index.train), len(index.validation), len(index.test)] == [6, 2, 8]
    assert {s.split for s in index.train} == {"train"} and {s.split for s in index.validation} == {"validation"}
    normal = [s for s in index.test if s.label == 0]
    defects = [s for s in index.test if s.label == 1]
    assert len(normal) == 4 and all(s.defect_type == "good" and s.mask_path is None for s in normal)
    assert {s.defect_type for s in defects} == {"scratch", "spot"}
    for sample in defects:
        assert sample.mask_path == root / sample.category / "ground_truth" / sample.defect_type / (
            f"{sample.path.stem}_mask.png"
        )


def test_summary_counts_each_category_and_split(root: Path) -> None:
    summary = discover(root).summary()
    assert summary["categories"]["texture_b"] == {
        "root": str(root / "texture_b"),
        "train": 3,
        "validation": 1,
        "test_good": 2,
        "test_defect": 2,
        "defect_types": {"scratch": 1, "spot": 1},
    }
    assert summary["totals"] == {"train": 6, "validation": 2, "test_good": 4, "test_defect": 4}


def test_discover_merges_roots_and_accepts_a_category_folder_as_root(tmp_path: Path) -> None:
    first = make_synthetic_dataset(tmp_path / "one", categories=("alpha",), n_train=2, n_test_good=1, n_test_defect=1)
    second = make_synthetic_dataset(tmp_path / "two", categories=("beta",), n_train=2, n_test_good=1, n_test_defect=1)
    assert discover([second, first]).categories == ["alpha", "beta"]
    assert discover([first / "alpha"]).categories == ["alpha"]


def test_discover_keeps_only_the_chosen_categories(root: Path) -> None:
    index = discover([root], categories=["texture_b"])
    assert index.categories == ["texture_b"]
    assert {s.category for s in [*index.train, *index.validation, *index.test]} == {"texture_b"}


def test_discover_rejects_an_unknown_category_listing_the_known_ones(root: Path) -> None:
    with pytest.raises(DataError, match=r"unknown categories \['bottle'\].*texture_a.*texture_b"):
        discover([root], categories=["bottle", "texture_a"])


def test_discover_rejects_a_missing_root(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=f"{tmp_path / 'nowhere'}: data root does not exist"):
        discover([tmp_path / "nowhere"])


def test_discover_rejects_a_root_without_categories(tmp_path: Path) -> None:
    (tmp_path / "notes").mkdir()
    with pytest.raises(DataError, match="no categories found"):
        discover([tmp_path])


def test_discover_rejects_a_category_without_training_images(root: Path) -> None:
    for image in (root / "texture_a" / "train" / "good").iterdir():
        image.unlink()
    with pytest.raises(DataError, match=r"texture_a/train/good: category 'texture_a' has no training images"):
        discover([root])


def test_discover_rejects_a_defect_image_without_mask(root: Path) -> None:
    (root / "texture_b" / "ground_truth" / "spot" / "001_mask.png").unlink()
    with pytest.raises(DataError, match=r"without a mask: \S*texture_b/test/spot/001\.png"):
        discover([root])


def test_discover_rejects_one_category_in_two_roots(root: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    shutil.copytree(root / "texture_a", other / "texture_a")
    with pytest.raises(DataError, match=f"'texture_a' is in two roots: {root / 'texture_a'} and {other / 'texture_a'}"):
        discover([root, other])


def test_discover_ignores_hidden_and_non_image_files_and_reads_any_extension_case(root: Path) -> None:
    train = root / "texture_a" / "train" / "good"
    (train / ".hidden.png").write_bytes(b"junk")
    (train / "notes.txt").write_text("not an image")
    shutil.copy(train / "000.png", train / "extra.PNG")
    index = discover([root], categories=["texture_a"])
    assert sorted(s.path.name for s in index.train) == ["000.png", "001.png", "002.png", "extra.PNG"]


def test_load_image_rejects_an_unreadable_file_naming_it(tmp_path: Path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n this is not a PNG")
    with pytest.raises(DataError, match=f"{broken}: unreadable image"):
        load_image(broken, SIZE)
    with pytest.raises(DataError, match=f"{broken}: unreadable image"):
        load_images([broken], SIZE, progress=False)


def test_load_tiles_cuts_tall_images_into_aspect_kept_tiles(root: Path, tmp_path: Path) -> None:
    samples = discover([root]).train  # texture_a: 3 squares, texture_b: 3 images 1.5× taller than wide
    tiled = ScoringRule.tiled(SIZE, 4, ["texture_a", "texture_b"])
    tiles = data.load_tiles(samples, tiled, progress=False)
    assert [layout.count for layout in tiles.layouts] == [1, 1, 1, 2, 2, 2]
    assert tiles.images.shape == (9, SIZE, SIZE, 3)
    assert tiles.owners.tolist() == [0, 1, 2, 3, 3, 4, 4, 5, 5]
    assert tiles.tiles_of(4) == slice(5, 7)
    only_a = data.load_tiles(samples, ScoringRule.tiled(SIZE, 4, ["texture_a"]), progress=False)
    assert [layout.count for layout in only_a.layouts] == [1] * 6  # texture_b is not a tiled category
    one = data.load_tiles(samples, ScoringRule.squash(SIZE), progress=False)  # one squashed square each
    np.testing.assert_array_equal(one.images, load_images(samples, SIZE, progress=False))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    with pytest.raises(DataError, match=f"{broken}: unreadable image"):
        data.load_tiles([dataclasses.replace(samples[3], path=broken)], tiled, progress=False)


def test_load_image_rejects_a_truncated_png(root: Path, tmp_path: Path) -> None:
    whole = (root / "texture_a" / "train" / "good" / "000.png").read_bytes()
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataError, match=f"{truncated}: unreadable image"):
        load_image(truncated, SIZE)


def test_load_image_is_the_shared_model_input_rule(root: Path) -> None:
    path = root / "texture_b" / "train" / "good" / "000.png"  # grayscale and not square: decoded and squashed
    expected, _, _ = load_model_input(path.read_bytes(), SIZE)
    np.testing.assert_array_equal(load_image(path, SIZE), expected)


def test_grayscale_and_rgba_images_become_rgb(tmp_path: Path) -> None:
    gray = np.full((10, 14), 77, np.uint8)
    cv2.imwrite(str(tmp_path / "gray.png"), gray)
    bgra = np.zeros((10, 14, 4), np.uint8)
    bgra[..., 0], bgra[..., 2], bgra[..., 3] = 200, 10, 128  # blue 200, red 10, half transparent
    cv2.imwrite(str(tmp_path / "rgba.png"), bgra)
    from_gray, from_rgba = load_image(tmp_path / "gray.png", 8), load_image(tmp_path / "rgba.png", 8)
    assert from_gray.shape == from_rgba.shape == (8, 8, 3) and from_gray.dtype == np.uint8
    assert (from_gray == 77).all()
    assert (from_rgba[..., 0] == 10).all() and (from_rgba[..., 2] == 200).all()


def test_load_mask_is_zero_for_normal_and_binary_inside_the_defect(root: Path) -> None:
    index = discover([root])
    normal = next(s for s in index.test if s.label == 0)
    defect = next(s for s in index.test if s.label == 1)
    assert load_mask(normal, SIZE).shape == (SIZE, SIZE) and not load_mask(normal, SIZE).any()
    mask = load_mask(defect, SIZE)
    assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 1}


def test_load_mask_rejects_a_mask_of_another_size_naming_both_files(root: Path) -> None:
    defect = next(s for s in discover([root]).test if s.label == 1)
    cv2.imwrite(str(defect.mask_path), np.zeros((5, 7), np.uint8))
    with pytest.raises(DataError, match=f"{defect.mask_path}: mask is 7x5 but its image {defect.path} is"):
        load_mask(defect, SIZE)


def test_load_mask_accepts_masks_stored_as_zero_and_one(root: Path) -> None:
    defect = next(s for s in discover([root]).test if s.label == 1)
    stored = cv2.imread(str(defect.mask_path), cv2.IMREAD_GRAYSCALE)
    cv2.imwrite(str(defect.mask_path), (stored > 127).astype(np.uint8))
    assert load_mask(defect, SIZE).sum() > 0


def test_load_images_stacks_files_in_order(root: Path) -> None:
    index = discover([root])
    stacked = load_images(index.train, SIZE, progress=False)
    assert stacked.shape == (6, SIZE, SIZE, 3) and stacked.dtype == np.uint8
    for row, sample in zip(stacked, index.train, strict=True):
        np.testing.assert_array_equal(row, load_image(sample.path, SIZE))


def test_image_cache_decodes_each_file_once(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    decoded: list[Path] = []
    original = data.load_image
    monkeypatch.setattr(data, "load_image", lambda path, size: decoded.append(path) or original(path, size))
    samples = discover([root]).train
    cache = ImageCache(SIZE)
    first = cache.load(samples, progress=False)
    again = cache.load(samples[::-1], progress=False)
    assert len(decoded) == len(samples) == len(cache)
    np.testing.assert_array_equal(again, first[::-1])
