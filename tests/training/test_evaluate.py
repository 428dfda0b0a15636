"""training.evaluate end to end on generated data with a plain numpy scorer: the report folder, the issue's
metrics.json schema, numbers that agree with a reference, scorer mistakes caught, and an ONNX graph scored alike."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")
pytest.importorskip("tqdm")
sklearn_metrics = pytest.importorskip("sklearn.metrics")

from training.data import DatasetIndex, discover  # noqa: E402
from training.evaluate import EvaluationError, evaluate_scorer  # noqa: E402
from training.synthetic import make_synthetic_dataset  # noqa: E402

pytestmark = pytest.mark.torch  # the training half: runs where the training extras are installed

SIZE = 48
KEYS = {"image_auroc", "pixel_auroc", "aupro", "image_f1_max", "n_test"}


def brightness_scorer(images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Map = distance of the grey level from mid-grey (synthetic defects are near-black or near-white); score = its
    max; similarity = [colourfulness - 10, 10 - colourfulness] (texture_a is colourful, texture_b grey)."""
    x = images.astype(np.float32)
    maps = np.abs(x.mean(axis=3) - 128.0)
    colourful = (x.max(axis=3) - x.min(axis=3)).mean(axis=(1, 2))
    return maps.max(axis=(1, 2)), maps, np.stack([colourful - 10.0, 10.0 - colourful], axis=1)


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> DatasetIndex:
    root = make_synthetic_dataset(tmp_path_factory.mktemp("data"), n_train=2, n_test_good=3, n_test_defect=4, size=SIZE)
    return discover([root])


@pytest.fixture(scope="module")
def report(index: DatasetIndex, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("report")
    return folder, evaluate_scorer(brightness_scorer, index, SIZE, folder, batch_size=3, progress=False)


def test_report_folder_holds_every_file_a_reader_needs(report: tuple[Path, dict]) -> None:
    folder, _ = report
    expected = {"metrics.json", "metrics.md", "scores.csv", "README.md", "curves.png", "histograms.png"}
    expected |= {"gallery_texture_a.png", "gallery_texture_b.png"}
    assert {p.name for p in folder.iterdir()} == expected
    for name in expected - {"metrics.json", "metrics.md", "scores.csv", "README.md"}:
        assert (folder / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    readme = (folder / "README.md").read_text()
    assert all(name in readme for name in expected - {"README.md", "gallery_texture_a.png", "gallery_texture_b.png"})
    assert "| texture_a |" in (folder / "metrics.md").read_text()


def test_a_report_without_galleries_has_the_same_metrics_and_every_other_file(
    index: DatasetIndex, report: tuple[Path, dict], tmp_path: Path
) -> None:
    _, full = report
    lean = evaluate_scorer(brightness_scorer, index, SIZE, tmp_path, batch_size=3, progress=False, galleries=False)
    assert {p.name for p in tmp_path.iterdir()} == {
        "metrics.json",
        "metrics.md",
        "scores.csv",
        "README.md",
        "curves.png",
        "histograms.png",
    }
    assert lean["categories"] == full["categories"] and lean["mean"] == full["mean"]


def test_metrics_json_follows_the_issue_schema(report: tuple[Path, dict]) -> None:
    folder, returned = report
    written = json.loads((folder / "metrics.json").read_text())
    assert written == returned
    assert set(written["categories"]) == {"texture_a", "texture_b"}
    for entry in [*written["categories"].values(), written["mean"]]:
        assert set(entry) == KEYS
        assert all(0.0 <= entry[key] <= 1.0 for key in KEYS - {"n_test"})
    assert [written["categories"][c]["n_test"] for c in ("texture_a", "texture_b")] == [7, 7]
    assert written["mean"]["n_test"] == 14
    means = [np.mean([e[k] for e in written["categories"].values()]) for k in ("image_auroc", "aupro")]
    assert [written["mean"]["image_auroc"], written["mean"]["aupro"]] == pytest.approx(means)


def test_numbers_agree_with_a_reference_on_the_per_image_scores(report: tuple[Path, dict]) -> None:
    folder, metrics = report
    with open(folder / "scores.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 14
    for category in ("texture_a", "texture_b"):
        mine = [r for r in rows if r["category"] == category]
        labels, scores = [int(r["label"]) for r in mine], [float(r["score"]) for r in mine]
        expected = sklearn_metrics.roc_auc_score(labels, scores)
        assert metrics["categories"][category]["image_auroc"] == pytest.approx(expected, abs=1e-4)


def test_a_plain_detector_separates_synthetic_defects_and_recognises_categories(report: tuple[Path, dict]) -> None:
    _, metrics = report
    assert metrics["mean"]["image_auroc"] >= 0.9 and metrics["mean"]["pixel_auroc"] >= 0.9
    assert metrics["category_recognition_accuracy"] == 1.0
    assert metrics["warnings"] == []


def test_evaluate_rejects_maps_of_the_wrong_size_naming_the_batch(index: DatasetIndex, tmp_path: Path) -> None:
    def small_maps(images: np.ndarray) -> tuple[np.ndarray, np.ndarray, None]:
        return np.zeros(len(images)), np.zeros((len(images), SIZE // 2, SIZE // 2)), None

    with pytest.raises(EvaluationError, match=r"maps \(3, 24, 24\).*expected.*\(3, 48, 48\).*texture_a/test"):
        evaluate_scorer(small_maps, index, SIZE, tmp_path, batch_size=3, progress=False)


def test_evaluate_rejects_nan_scores(index: DatasetIndex, tmp_path: Path) -> None:
    def nan_scores(images: np.ndarray) -> tuple[np.ndarray, np.ndarray, None]:
        return np.full(len(images), np.nan), np.zeros((len(images), SIZE, SIZE)), None

    with pytest.raises(EvaluationError, match="NaN or infinite"):
        evaluate_scorer(nan_scores, index, SIZE, tmp_path, progress=False)


def test_evaluate_rejects_similarity_columns_that_do_not_match_the_categories(
    index: DatasetIndex, tmp_path: Path
) -> None:
    with pytest.raises(EvaluationError, match=r"category_similarity \(7, 2\); expected \(7, 3\)"):
        evaluate_scorer(brightness_scorer, index, SIZE, tmp_path, model_categories=["a", "b", "c"], progress=False)


def _brightness_graph(path: Path) -> None:
    """``brightness_scorer`` as an ONNX graph with the contract's input and output names (opset 17)."""
    from onnx import TensorProto, helper, save

    n = helper.make_node
    nodes = [
        n("Cast", ["image"], ["x"], to=TensorProto.FLOAT),
        n("ReduceMean", ["x"], ["grey"], axes=[3], keepdims=1),
        n("Sub", ["grey", "mid"], ["centred"]),
        n("Abs", ["centred"], ["deviation"]),
        n("Transpose", ["deviation"], ["anomaly_map"], perm=[0, 3, 1, 2]),
        n("ReduceMax", ["anomaly_map"], ["score"], axes=[1, 2, 3], keepdims=0),
        n("ReduceMax", ["x"], ["top"], axes=[3], keepdims=1),
        n("ReduceMin", ["x"], ["bottom"], axes=[3], keepdims=1),
        n("Sub", ["top", "bottom"], ["spread"]),
        n("ReduceMean", ["spread"], ["colourful"], axes=[2, 3], keepdims=0),  # (N, S)
        n("ReduceMean", ["colourful"], ["colourful_n1"], axes=[1], keepdims=1),  # (N, 1)
        n("Sub", ["colourful_n1", "ten"], ["first"]),
        n("Sub", ["ten", "colourful_n1"], ["second"]),
        n("Concat", ["first", "second"], ["category_similarity"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "brightness",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["batch", SIZE, SIZE, 3])],
        [
            helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch"]),
            helper.make_tensor_value_info("anomaly_map", TensorProto.FLOAT, ["batch", 1, SIZE, SIZE]),
            helper.make_tensor_value_info("category_similarity", TensorProto.FLOAT, ["batch", 2]),
        ],
        initializer=[
            helper.make_tensor("mid", TensorProto.FLOAT, [], [128.0]),
            helper.make_tensor("ten", TensorProto.FLOAT, [], [10.0]),
        ],
    )
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


@pytest.mark.slow  # imports torch (a few seconds) and writes a second report
def test_an_onnx_graph_is_evaluated_like_the_same_scorer_in_numpy(
    index: DatasetIndex, report: tuple[Path, dict], tmp_path: Path
) -> None:
    pytest.importorskip("torch")  # training.onnx_graph, which runs graphs for export too, imports torch
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from training.evaluate import score_fn_from_onnx

    _brightness_graph(tmp_path / "model.onnx")
    score_fn = score_fn_from_onnx(tmp_path / "model.onnx")
    assert score_fn.size == SIZE and score_fn.categories is None  # no manifest beside this graph
    metrics = evaluate_scorer(score_fn, index, score_fn.size, tmp_path / "report", batch_size=5, progress=False)
    _, reference = report
    for name in ("texture_a", "texture_b"):
        for key in KEYS:
            assert metrics["categories"][name][key] == pytest.approx(reference["categories"][name][key], abs=1e-6)
    assert metrics["category_recognition_accuracy"] == reference["category_recognition_accuracy"]


def test_images_of_a_tiled_category_are_scored_as_their_merged_tiles(index: DatasetIndex, tmp_path: Path) -> None:
    import csv

    from model_store.planner import ScoringRule
    from model_store.preprocess import decode_rgb8, resize_square
    from model_store.tiling import cut_tiles

    rule = ScoringRule.tiled(SIZE, 4, ["texture_b"])  # recognised by the scorer: texture_b is the grey one
    metrics = evaluate_scorer(brightness_scorer, index, SIZE, tmp_path, batch_size=3, progress=False, scoring=rule)
    assert set(metrics["categories"]) == {"texture_a", "texture_b"}
    assert metrics["details"]["texture_b"]["tiles_per_image"] == 2 and metrics["tiles_per_image"] == 1.5
    with open(tmp_path / "scores.csv") as handle:
        rows = {row["path"]: row for row in csv.DictReader(handle)}
    for sample in index.test:
        rgb = decode_rgb8(sample.path.read_bytes())
        if sample.category == "texture_b":  # 1.5× taller than wide: two tiles, the image scores as its highest
            layout = rule.layout(rgb.shape[0], rgb.shape[1], "texture_b")
            tiles = cut_tiles(rgb, layout)
            assert layout.count == 2
            expected = brightness_scorer(tiles)[0].max()
        else:
            expected = brightness_scorer(resize_square(rgb, SIZE)[None])[0][0]
        assert float(rows[str(sample.path)]["score"]) == pytest.approx(expected, rel=1e-5)
