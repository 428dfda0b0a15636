"""training.synthetic: a real MVTec layout, visibly different categories, exact masks, deterministic by seed."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("tqdm")  # training.data, used to read the layout back, needs the training extra

from training.data import discover  # noqa: E402
from training.synthetic import make_synthetic_dataset  # noqa: E402

pytestmark = pytest.mark.torch  # the training half: runs where the training extras are installed

THREE = ("stripes", "blobs", "grid")


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def test_same_seed_writes_identical_files_and_another_seed_does_not(tmp_path: Path) -> None:
    first = _files(make_synthetic_dataset(tmp_path / "a", n_train=2, n_test_good=1, n_test_defect=2, seed=3))
    again = _files(make_synthetic_dataset(tmp_path / "b", n_train=2, n_test_good=1, n_test_defect=2, seed=3))
    other = _files(make_synthetic_dataset(tmp_path / "c", n_train=2, n_test_good=1, n_test_defect=2, seed=4))
    assert first == again
    assert first.keys() == other.keys() and first != other


def test_layout_is_mvtec_with_the_requested_counts(tmp_path: Path) -> None:
    root = make_synthetic_dataset(tmp_path, THREE, n_train=3, n_test_good=2, n_test_defect=3, n_validation=1)
    summary = discover([root]).summary()
    for name in THREE:
        counts = summary["categories"][name]
        assert (counts["train"], counts["validation"], counts["test_good"], counts["test_defect"]) == (3, 1, 2, 3)
        assert counts["defect_types"] == {"scratch": 2, "spot": 1}


def test_categories_differ_in_colour_mode_and_shape(tmp_path: Path) -> None:
    root = make_synthetic_dataset(tmp_path, THREE, n_train=1, n_test_good=0, n_test_defect=0, size=64)
    shapes = {name: cv2.imread(str(root / name / "train/good/000.png"), cv2.IMREAD_UNCHANGED).shape for name in THREE}
    assert shapes == {"stripes": (64, 64, 3), "blobs": (96, 64), "grid": (64, 80, 4)}


def test_defects_stand_out_exactly_inside_their_masks(tmp_path: Path) -> None:
    root = make_synthetic_dataset(tmp_path, THREE, n_train=1, n_test_good=0, n_test_defect=4, size=64)
    for sample in discover([root]).test:
        image = cv2.imread(str(sample.path), cv2.IMREAD_GRAYSCALE).astype(np.float32)
        mask = cv2.imread(str(sample.mask_path), cv2.IMREAD_GRAYSCALE) > 127
        assert 0 < mask.mean() < 0.2, sample.path
        inside, outside = image[mask], image[~mask]
        # defects are near-black (< 26) or near-white (> 234); textures stay far from both ends
        assert np.abs(inside - np.median(outside)).mean() > 60, sample.path


def test_small_defects_cover_the_asked_share_of_a_large_image(tmp_path: Path) -> None:
    root = make_synthetic_dataset(
        tmp_path, THREE, n_train=1, n_test_good=0, n_test_defect=4, size=512, defect_area=(0.001, 0.01)
    )
    shares = [
        (cv2.imread(str(mask), cv2.IMREAD_GRAYSCALE) > 0).mean() for mask in sorted(root.glob("*/ground_truth/*/*.png"))
    ]
    assert len(shares) == 12
    assert all(0.0004 <= share <= 0.012 for share in shares), shares  # scratches capped at half the short side
    assert max(shares) > 0.002  # spots reach into the range, not only its floor
    assert cv2.imread(str(root / "stripes" / "train" / "good" / "000.png")).shape[:2] == (512, 512)


def test_a_bad_defect_area_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="defect_area must be fractions"):
        make_synthetic_dataset(tmp_path, defect_area=(0.01, 0.001))


def test_faint_defects_move_only_part_of_the_way_and_only_inside_their_masks(tmp_path: Path) -> None:
    area = (0.002, 0.004)
    full = make_synthetic_dataset(
        tmp_path / "full", n_train=1, n_test_good=0, n_test_defect=2, size=256, defect_area=area
    )
    faint = make_synthetic_dataset(
        tmp_path / "faint", n_train=1, n_test_good=0, n_test_defect=2, size=256, defect_area=area, defect_contrast=0.3
    )
    for image in sorted(full.glob("*/test/*/*.png")):
        strong = cv2.imread(str(image)).astype(float)
        weak = cv2.imread(str(faint / image.relative_to(full))).astype(float)
        mask = cv2.imread(str(image.parents[2] / "ground_truth" / image.parent.name / f"{image.stem}_mask.png"), 0) > 0
        assert np.array_equal(strong[~mask], weak[~mask])  # the same texture around it
        assert 0 < np.abs(weak[mask] - strong[mask]).mean()  # inside: short of the full defect colour
    with pytest.raises(ValueError, match="defect_contrast must lie in"):
        make_synthetic_dataset(tmp_path / "bad", defect_area=area, defect_contrast=0.0)
