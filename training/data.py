"""MVTec-AD-layout datasets: finding samples under several roots, and loading them as model inputs.

Layout of one category folder (``<root>/<category>/``)::

    train/good/*                               normal training images
    validation/good/*                          optional held-out normal images (calibration)
    test/<defect_type>/*                       test images; ``good`` holds the normal ones
    ground_truth/<defect_type>/<stem>_mask.png binary mask (0/255, image size) of every defect test image

Problems are found as early as they can be: the layout (missing roots, empty categories, defect images without a
mask) when the index is built, unreadable pixels and masks of the wrong size when a file is loaded. Every problem
is a ``DataError`` naming the path, so a bad dataset costs its owner one read of the message, not a traceback.

Images become model inputs only through ``model_store.preprocess`` (``decode_rgb8``, then ``resize_square``: one
squashed square) or ``model_store.tiling.cut_tiles`` (aspect-kept tiles, ``load_tiles``): the same decode, resize
and cut the service applies to uploads, so training, evaluation and serving see identical pixels.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

from model_store.planner import ScoringRule
from model_store.preprocess import ImageDecodeError, decode_rgb8, resize_square
from model_store.tiling import TileLayout, cut_tiles

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})
NORMAL = "good"
SPLITS = ("train", "validation", "test")
_MAX_LISTED = 5  # paths named in one error message; the rest are counted


class DataError(ValueError):
    """A dataset problem a person must fix; the message names the path and what is wrong with it."""


@dataclass(frozen=True)
class Sample:
    """One image file and what the folder layout says about it (``label`` 0 = normal, 1 = defect)."""

    path: Path
    category: str
    label: int
    defect_type: str
    mask_path: Path | None
    split: str


@dataclass(frozen=True)
class DatasetIndex:
    """Every sample of the chosen categories, by split; ``categories`` is sorted and fixes the class order."""

    categories: list[str]
    train: list[Sample]
    validation: list[Sample]
    test: list[Sample]
    category_dirs: dict[str, Path] = field(default_factory=dict)

    def samples(self, split: str, category: str | None = None) -> list[Sample]:
        """Samples of one split, optionally of one category, in index order."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {list(SPLITS)}")
        chosen: list[Sample] = getattr(self, split)
        return [s for s in chosen if category is None or s.category == category]

    def summary(self) -> dict[str, object]:
        """Counts per category and split (JSON-ready), recorded in run configs and bundle manifests."""
        per_category: dict[str, object] = {}
        for name in self.categories:
            test = self.samples("test", name)
            per_category[name] = {
                "root": str(self.category_dirs.get(name, "")),
                "train": len(self.samples("train", name)),
                "validation": len(self.samples("validation", name)),
                "test_good": sum(1 for s in test if s.label == 0),
                "test_defect": sum(1 for s in test if s.label == 1),
                "defect_types": dict(sorted(Counter(s.defect_type for s in test if s.label == 1).items())),
            }
        totals = {
            "train": len(self.train),
            "validation": len(self.validation),
            "test_good": sum(1 for s in self.test if s.label == 0),
            "test_defect": sum(1 for s in self.test if s.label == 1),
        }
        return {"categories": per_category, "totals": totals}


def discover(roots: Sequence[Path] | Path, categories: Sequence[str] | None = None) -> DatasetIndex:
    """Index the categories found under ``roots`` (each a folder of category folders, or one category folder).

    Args:
        roots: data roots; a category name may appear under only one of them.
        categories: names to keep (all when None); an unknown name is an error listing the known ones.

    Raises:
        DataError: a root is missing, no category is found, a name is unknown or duplicated, a category has no
            training images, or defect images have no mask.
    """
    root_list = [Path(roots)] if isinstance(roots, (str, Path)) else [Path(r) for r in roots]
    found: dict[str, list[Path]] = {}
    for root in root_list:
        for name, directory in _category_dirs(root):
            known = found.setdefault(name, [])
            if all(d.resolve() != directory.resolve() for d in known):  # the same root given twice is harmless
                known.append(directory)
    if not found:
        where = ", ".join(str(r) for r in root_list) or "(no roots)"
        message = f"no categories found under {where}: expected <root>/<category>/train/good/<images>"
        raise DataError(message)
    chosen = sorted(found) if categories is None else sorted(set(categories))
    unknown = [name for name in chosen if name not in found]
    if unknown or not chosen:
        message = f"unknown categories {unknown or '(none chosen)'}; known categories: {sorted(found)}"
        raise DataError(message)
    for name in chosen:
        if len(found[name]) > 1:
            message = f"category '{name}' is in two roots: {found[name][0]} and {found[name][1]}; keep one of them"
            raise DataError(message)
    split_samples: dict[str, list[Sample]] = {split: [] for split in SPLITS}
    for name in chosen:
        for sample in _category_samples(name, found[name][0]):
            split_samples[sample.split].append(sample)
    return DatasetIndex(
        categories=chosen,
        train=split_samples["train"],
        validation=split_samples["validation"],
        test=split_samples["test"],
        category_dirs={name: found[name][0] for name in chosen},
    )


def _category_dirs(root: Path) -> Iterator[tuple[str, Path]]:
    """Category folders of a root; a root that is itself a category folder yields itself."""
    if not root.is_dir():
        raise DataError(f"{root}: data root does not exist or is not a folder")
    if (root / "train").is_dir():
        yield root.resolve().name, root
        return
    for child in sorted(root.iterdir()):
        if (
            child.is_dir()
            and not child.name.startswith(".")
            and ((child / "train").is_dir() or (child / "test").is_dir())
        ):
            yield child.name, child


def _image_files(folder: Path) -> list[Path]:
    """Image files of a folder by extension (any case), sorted; hidden files and other files are ignored."""
    if not folder.is_dir():
        return []
    return sorted(
        p
        for p in folder.iterdir()
        if not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
    )


def _subfolders(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _find_mask(category_dir: Path, defect_type: str, image: Path) -> Path | None:
    """``ground_truth/<type>/<stem>_mask.<ext>``, preferring ``.png``."""
    folder = category_dir / "ground_truth" / defect_type
    for extension in (".png", *sorted(IMAGE_EXTENSIONS - {".png"})):
        for candidate in (folder / f"{image.stem}_mask{extension}", folder / f"{image.stem}_mask{extension.upper()}"):
            if candidate.is_file():
                return candidate
    return None


def _category_samples(name: str, directory: Path) -> list[Sample]:
    train = _image_files(directory / "train" / NORMAL)
    if not train:
        message = f"{directory / 'train' / NORMAL}: category '{name}' has no training images (normal images expected)"
        raise DataError(message)
    samples = [Sample(p, name, 0, NORMAL, None, "train") for p in train]
    samples += [Sample(p, name, 0, NORMAL, None, "validation") for p in _image_files(directory / "validation" / NORMAL)]
    missing: list[Path] = []
    for type_dir in _subfolders(directory / "test"):
        defect_type = type_dir.name
        for path in _image_files(type_dir):
            if defect_type == NORMAL:
                samples.append(Sample(path, name, 0, NORMAL, None, "test"))
                continue
            mask = _find_mask(directory, defect_type, path)
            if mask is None:
                missing.append(path)
            else:
                samples.append(Sample(path, name, 1, defect_type, mask, "test"))
    if missing:
        listed = ", ".join(str(p) for p in missing[:_MAX_LISTED])
        more = f" and {len(missing) - _MAX_LISTED} more" if len(missing) > _MAX_LISTED else ""
        expected = directory / "ground_truth" / missing[0].parent.name / f"{missing[0].stem}_mask.png"
        message = f"defect images without a mask: {listed}{more} (expected e.g. {expected})"
        raise DataError(message)
    return samples


def _read_bytes(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read file ({exc.strerror or exc})") from exc


def load_image(path: Path, size: int) -> np.ndarray:
    """Decode a file (``load_rgb``) and squash it to size×size RGB uint8 with the bundle's resize rule."""
    return resize_square(load_rgb(path), size)


def load_rgb(path: Path) -> np.ndarray:
    """Decode a file to full-size RGB uint8 (H, W, 3), the bundle's decode; a bad file is a DataError naming it."""
    try:
        return decode_rgb8(_read_bytes(path))
    except ImageDecodeError as exc:
        raise DataError(f"{path}: unreadable image: {exc}") from exc


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file header, without decoding pixels."""
    try:
        with Image.open(path) as image:
            return image.width, image.height
    except OSError as exc:  # includes PIL.UnidentifiedImageError
        raise DataError(f"{path}: unreadable image: {exc}") from exc


def load_full_mask(sample: Sample, image_wh: tuple[int, int] | None = None) -> np.ndarray:
    """The sample's defect mask at its image's own size, uint8 0/1 (zeros for normal samples).

    The mask must have the image's size (a mismatch means the two files do not belong together). Foreground is
    > 127, or > 0 for masks stored as 0/1.
    """
    width, height = image_wh or image_size(sample.path)
    if sample.mask_path is None:
        return np.zeros((height, width), np.uint8)
    try:
        gray = decode_rgb8(_read_bytes(sample.mask_path)).max(axis=2)
    except ImageDecodeError as exc:
        raise DataError(f"{sample.mask_path}: unreadable mask: {exc}") from exc
    if gray.shape != (height, width):
        message = (
            f"{sample.mask_path}: mask is {gray.shape[1]}x{gray.shape[0]} but its image {sample.path} is "
            f"{width}x{height}"
        )
        raise DataError(message)
    cut = 0 if gray.max() == 1 else 127
    return (gray > cut).astype(np.uint8)


def load_mask(sample: Sample, size: int, image_wh: tuple[int, int] | None = None) -> np.ndarray:
    """The sample's defect mask (``load_full_mask``) as size×size uint8 0/1, resized with nearest neighbour so it
    stays binary.

    Args:
        sample: the test sample.
        size: side of the square model input.
        image_wh: the image's (width, height) when the caller already knows it, saving one header read.
    """
    if sample.mask_path is None:
        return np.zeros((size, size), np.uint8)
    return cv2.resize(load_full_mask(sample, image_wh), (size, size), interpolation=cv2.INTER_NEAREST)


def load_images(
    samples: Sequence[Sample | Path], size: int, progress: bool = True, workers: int = 2, desc: str = "decoding"
) -> np.ndarray:
    """Decode and resize many files into one (N, size, size, 3) uint8 array, on a small thread pool.

    OpenCV releases the GIL while decoding and resizing, so two threads roughly halve the wait on two cores; the
    array is filled in place, so holding ~1300 training images at 256 px costs ~250 MB and no copy.
    """
    paths = [s.path if isinstance(s, Sample) else Path(s) for s in samples]
    images = np.empty((len(paths), size, size, 3), np.uint8)

    def fill(i: int) -> None:
        images[i] = load_image(paths[i], size)

    _for_each_file(fill, len(paths), workers, progress, desc)
    return images


def _for_each_file(fill: Callable[[int], None], count: int, workers: int, progress: bool, desc: str) -> None:
    """``fill(i)`` for i in range(count) on a small thread pool, with a progress bar; the first error is raised."""
    pool = ThreadPoolExecutor(max_workers=max(1, workers))
    try:
        for _ in tqdm(pool.map(fill, range(count)), total=count, desc=desc, unit="img", disable=not progress):
            pass
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@dataclass(frozen=True)
class TiledImages:
    """Every tile of some samples (``model_store.tiling``), in sample order, and which sample each came from."""

    images: np.ndarray
    """(T, size, size, 3) uint8."""
    owners: np.ndarray
    """(T,) index of each tile's sample."""
    layouts: list[TileLayout]
    """One per sample: where its tiles lie on its aspect-kept canvas."""

    def tiles_of(self, sample_index: int) -> slice:
        start = int(np.searchsorted(self.owners, sample_index))
        return slice(start, start + self.layouts[sample_index].count)


def load_tiles(
    samples: Sequence[Sample],
    rule: ScoringRule,
    progress: bool = True,
    workers: int = 2,
    desc: str = "decoding",
) -> TiledImages:
    """Decode files and cut each as the scoring rule cuts an image of its category (``ScoringRule.layout``), on a
    small thread pool. An image squashed by the rule gets the same pixels as ``load_images``."""
    size = rule.tiling.tile_size
    cut: list[tuple[np.ndarray, TileLayout] | None] = [None] * len(samples)

    def fill(i: int) -> None:
        rgb = load_rgb(samples[i].path)
        layout = rule.layout(rgb.shape[0], rgb.shape[1], samples[i].category)
        cut[i] = cut_tiles(rgb, layout), layout

    _for_each_file(fill, len(samples), workers, progress, desc)
    done = [c for c in cut if c is not None]
    if not done:
        return TiledImages(np.empty((0, size, size, 3), np.uint8), np.empty(0, np.int64), [])
    owners = np.concatenate([np.full(layout.count, i, np.int64) for i, (_, layout) in enumerate(done)])
    return TiledImages(np.concatenate([tiles for tiles, _ in done]), owners, [layout for _, layout in done])


class ImageCache:
    """Resized images kept in memory by path, so repeated passes (epochs, calibration) decode each file once."""

    def __init__(self, size: int, workers: int = 2) -> None:
        self.size = size
        self.workers = workers
        self._images: dict[Path, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self._images)

    @property
    def nbytes(self) -> int:
        return sum(image.nbytes for image in self._images.values())

    def load(self, samples: Sequence[Sample | Path], progress: bool = True) -> np.ndarray:
        """(N, size, size, 3) uint8 for ``samples`` in order, decoding only files not seen before."""
        paths = [s.path if isinstance(s, Sample) else Path(s) for s in samples]
        new = list(dict.fromkeys(p for p in paths if p not in self._images))
        if new:
            decoded = load_images(new, self.size, progress=progress, workers=self.workers)
            self._images.update(zip(new, decoded, strict=True))
        if not paths:
            return np.empty((0, self.size, self.size, 3), np.uint8)
        return np.stack([self._images[p] for p in paths])
