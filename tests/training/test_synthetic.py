"""training.synthetic: a real MVTec layout, visibly different categories, exact masks, deterministic by seed."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("tqdm")  # training.data, used to read the layout back, needs the training extra

from training.data import discover  # noqa: E402
from training.synthetic import DEFECT_TYPES, SUBTLE_DEFECTS, make_synthetic_dataset  # noqa: E402
from training.textures import subtle_defect  # noqa: E402

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


PRESSURE = ("weave", "brushed", "dots", "cells", "rings", "plaid")


def _pressure(root: Path, n_defect: int = 5, seed: int = 0) -> Path:
    names = [f"gen_{style}" for style in PRESSURE]
    defects = DEFECT_TYPES + SUBTLE_DEFECTS
    return make_synthetic_dataset(
        root,
        names,
        n_train=2,
        n_test_good=1,
        n_test_defect=n_defect,
        size=64,
        seed=seed,
        styles=PRESSURE,
        defect_types=defects,
    )


def test_pressure_styles_make_distinct_square_rgb_categories_deterministically(tmp_path: Path) -> None:
    root = _pressure(tmp_path / "a")
    assert _files(root) == _files(_pressure(tmp_path / "b"))
    means = []
    for style in PRESSURE:
        image = cv2.imread(str(root / f"gen_{style}" / "train/good/000.png"), cv2.IMREAD_UNCHANGED)
        assert image.shape == (64, 64, 3)
        means.append(image.reshape(-1, 3).mean(axis=0))
    closest = min(np.abs(a - b).sum() for i, a in enumerate(means) for b in means[i + 1 :])
    assert closest > 5  # every look has its own palette
    counts = discover([root]).summary()["categories"]["gen_weave"]["defect_types"]
    assert counts == {"scratch": 1, "spot": 1, "stain": 1, "warp": 1, "foreign": 1}


def test_subtle_defects_stay_inside_the_textures_range_unlike_black_or_white_paint(tmp_path: Path) -> None:
    root = _pressure(tmp_path, n_defect=5)
    seen = set()
    for sample in discover([root]).test:
        if sample.label == 0 or sample.path.parent.name not in SUBTLE_DEFECTS:
            continue
        seen.add(sample.path.parent.name)
        image = cv2.imread(str(sample.path), cv2.IMREAD_GRAYSCALE).astype(np.float32)
        mask = cv2.imread(str(sample.mask_path), cv2.IMREAD_GRAYSCALE) > 127
        assert 0 < mask.mean() < 0.2, sample.path
        low, high = np.percentile(image[mask], [5, 95])  # scratches and spots paint < 26 or > 234
        assert 26 < low and high < 234, sample.path
    assert seen == set(SUBTLE_DEFECTS)


def test_a_stain_shifts_the_texture_by_tens_of_grey_levels_where_its_mask_is() -> None:
    rng = np.random.default_rng(0)
    clean = np.full((64, 64, 3), 120, np.uint8)
    stained, mask = subtle_defect(rng, clean, "stain")
    change = np.abs(stained.astype(np.float32) - clean).mean(axis=2)
    assert mask.any() and 10 <= change[mask > 0].mean() <= 35
    assert change[mask == 0].mean() < change[mask > 0].mean() / 3


def test_unknown_style_or_defect_is_refused_naming_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="weave"):
        make_synthetic_dataset(tmp_path, ["x"], styles=["velvet"], n_train=1, n_test_good=0, n_test_defect=0)
    with pytest.raises(ValueError, match="stain"):
        make_synthetic_dataset(tmp_path, ["x"], defect_types=["dent"], n_train=1, n_test_good=0, n_test_defect=1)
    with pytest.raises(ValueError, match="one per category"):
        make_synthetic_dataset(tmp_path, ["x", "y"], styles=["weave"], n_train=1)


def test_synth_cli_writes_one_gen_category_per_style(tmp_path: Path) -> None:
    from training.cli import main

    args = ["synth", str(tmp_path), "--styles", "dots,rings", "--size", "48", "--train", "2", "--test-defect", "5"]
    assert main(args) == 0
    summary = discover([tmp_path]).summary()["categories"]
    assert sorted(summary) == ["gen_dots", "gen_rings"]
    assert summary["gen_dots"]["train"] == 2 and summary["gen_dots"]["test_defect"] == 5


def test_a_borrowed_defect_is_another_categorys_own_normal_look(tmp_path: Path) -> None:
    root = make_synthetic_dataset(
        tmp_path,
        ["gen_dots", "gen_rings"],
        n_train=1,
        n_test_good=0,
        n_test_defect=3,
        size=64,
        styles=["dots", "rings"],
        defect_types=["borrowed"],
    )
    normal = {
        c: cv2.imread(str(root / c / "train/good/000.png")).reshape(-1, 3).mean(axis=0)
        for c in ("gen_dots", "gen_rings")
    }
    for path in sorted((root / "gen_dots/test/borrowed").glob("*.png")):
        mask = cv2.imread(str(root / "gen_dots/ground_truth/borrowed" / f"{path.stem}_mask.png"), 0) > 127
        inside = cv2.imread(str(path))[mask].mean(axis=0)
        assert np.abs(inside - normal["gen_rings"]).sum() < np.abs(inside - normal["gen_dots"]).sum(), path


def test_a_borrowed_defect_needs_other_generated_categories(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="other categories"):
        make_synthetic_dataset(tmp_path, ["a"], n_train=1, n_test_good=0, n_test_defect=1, defect_types=["borrowed"])
