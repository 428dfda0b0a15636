"""``python -m training export`` end to end on the real ``PRDModel`` (untrained, small): run folder → bundle."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("efficientnet_lite_pytorch")

from model_store.bundle import load_bundle  # noqa: E402
from model_store.triton import CONFIG_FILE, check_config  # noqa: E402
from training.export import add_export_arguments, run_export  # noqa: E402

pytestmark = pytest.mark.torch


def _save_small_run(run: Path, dataset, prepare=None, **overrides: object) -> None:
    """An untrained small PRD model saved as a run folder; ``prepare(model)`` may set buffers first."""
    from training.config import TrainConfig
    from training.model import PRDModel, save_checkpoint

    roots = sorted({str(d.parent) for d in dataset.category_dirs.values()})
    small = {"image_size": 64, "embed_dim": 32, "prototypes": 8, "recall_topk": 2, "decoder_width": 16}
    defaults = {"memory_entries": 0, "tile_categories": [], **small}  # fit resolves the tiled categories; none here
    config = TrainConfig(data=roots, teacher="efficientnet_lite0", **{**defaults, **overrides})
    model = PRDModel(config, dataset.categories).eval()
    if prepare is not None:
        prepare(model)
    config.save(run / "config.json")
    save_checkpoint(model, run, epoch=0)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, dataset) -> Path:
    run = tmp_path_factory.mktemp("run")
    _save_small_run(run, dataset)
    (run / "metrics.json").write_text(json.dumps({"mean": {"image_auroc": 0.5}, "warnings": ["from evaluate"]}))
    return run


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="training export")
    add_export_arguments(parser)
    return parser.parse_args(list(argv))


def test_cli_exports_a_run_folder_with_the_runs_data_and_metrics(run_dir: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    target = run_export(_args(str(run_dir), "--store", str(store), "--name", "prd", "--target-far", "0.05"))
    assert target == store / "prd" / "1"
    bundle = load_bundle(store, "prd", "latest")
    manifest = bundle.manifest
    assert manifest.calibration.target_false_alarm_rate == 0.05 and manifest.teacher == "efficientnet_lite0"
    assert manifest.prd["prototypes"] == 8 and manifest.input.height == 64
    assert manifest.metrics["warnings"] == ["from evaluate"] and "calibration_warnings" in manifest.metrics
    assert manifest.metrics["export_parity"]["score_max_rel_diff"] <= 1e-4
    assert manifest.training_data["categories"].keys() == set(manifest.categories)
    check_config((store / "prd" / CONFIG_FILE).read_text(), manifest)
    assert manifest.format_version == 2 and manifest.scoring.tiling.scheme == "squash/1"  # the run's: none tiled


def test_calibration_scores_a_file_of_a_tiled_category_as_its_merged_tiles(dataset, tmp_path: Path) -> None:
    import numpy as np

    from model_store.planner import FEATHER_MERGE, ScoringRule
    from model_store.preprocess import decode_rgb8
    from model_store.tiling import cut_tiles
    from training.onnx_graph import OnnxScorer

    run = tmp_path / "run"
    run.mkdir()
    _save_small_run(run, dataset, tile_categories=list(dataset.categories))
    store = tmp_path / "store"
    run_export(_args(str(run), "--store", str(store), "--name", "prd"))
    manifest = load_bundle(store, "prd", "latest").manifest
    floor = manifest.metrics["recognition_floor"]["min_similarity"]  # derived from the held-out normals
    assert manifest.scoring.routing.min_similarity == pytest.approx(floor)
    expected = ScoringRule.tiled(64, 4, sorted(dataset.categories), merge=FEATHER_MERGE).with_floor(floor)
    assert manifest.scoring == expected
    graph = store / "prd" / "1" / "model.onnx"
    tall = next(s.path for s in dataset.test if s.category == "blobs")  # 1.5× taller than wide: two tiles
    rgb = decode_rgb8(tall.read_bytes())
    layout = manifest.scoring.layout(rgb.shape[0], rgb.shape[1], "blobs")
    assert layout.count == 2
    plain = OnnxScorer(graph)
    squashed_layout = ScoringRule.squash(64).layout(rgb.shape[0], rgb.shape[1], "blobs")
    per_tile, squashed = plain.run(cut_tiles(rgb, layout)), plain.run(cut_tiles(rgb, squashed_layout))
    scored = OnnxScorer(graph, manifest.planner()).score_files([tall])
    assert scored.score[0] == pytest.approx(float(per_tile.score.max()), rel=1e-6)
    np.testing.assert_allclose(scored.similarity[0], squashed.category_similarity[0], rtol=1e-6)  # chose it
    assert scored.map_max[0] <= scored.score[0] + 1e-6  # overlaps averaged: the stitched peak is at most the score
    assert plain.score_files([tall]).score[0] == pytest.approx(float(squashed.score[0]), rel=1e-6)  # no tiling


def test_a_grid_run_exports_grid_1_and_its_bundle_scores_a_grid_category_as_its_tiles(dataset, tmp_path: Path) -> None:
    from model_store.preprocess import decode_rgb8
    from model_store.tiling import cut_tiles
    from training.onnx_graph import OnnxScorer

    run = tmp_path / "run"
    run.mkdir()
    tiled = list(dataset.categories)
    _save_small_run(run, dataset, tile_categories=tiled, grid_scales={"blobs": 2.0}, grid_max_tiles=6)
    store = tmp_path / "store"
    run_export(_args(str(run), "--store", str(store), "--name", "prd"))
    manifest = load_bundle(store, "prd", "latest").manifest
    tiling = manifest.scoring.tiling
    assert (tiling.scheme, tiling.grid["blobs"].scale, tiling.grid["blobs"].max_tiles) == ("grid/1", 2.0, 6)
    tall = next(s.path for s in dataset.test if s.category == "blobs")  # 1.5× taller than wide: 3 × 2 tiles
    rgb = decode_rgb8(tall.read_bytes())
    layout = manifest.scoring.layout(rgb.shape[0], rgb.shape[1], "blobs")
    assert layout.count == 6 and (layout.height, layout.width) == (192, 128)
    graph = store / "prd" / "1" / "model.onnx"
    per_tile = OnnxScorer(graph).run(cut_tiles(rgb, layout))
    scorer = OnnxScorer(graph, manifest.planner())
    [scored] = scorer.planner.score(scorer.run, [rgb], given=["blobs"])
    assert scored.tiles == 6 and scored.score == pytest.approx(float(per_tile.score.max()), rel=1e-6)


def test_cli_reports_a_bad_run_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=r"export failed: .*checkpoint\.pt: no checkpoint"):
        run_export(_args(str(tmp_path / "missing-run"), "--store", str(tmp_path / "store")))


@pytest.mark.parametrize(
    ("fp16", "per_category"), [(False, True), (True, True), (False, False)], ids=["fp32", "fp16", "fp32-shared"]
)
def test_a_patch_memory_is_exported_inside_the_graph(dataset, tmp_path: Path, fp16: bool, per_category: bool) -> None:
    import torch

    def fill_memory(model) -> None:
        shape = model.anomaly_map.memory.entries.shape  # (categories · 32, D) per category, (32, D) shared
        model.anomaly_map.memory.set_entries(torch.rand(*shape, generator=torch.Generator().manual_seed(0)))
        model.anomaly_map.rd_scale.fill_(0.5)
        model.anomaly_map.memory_scale.fill_(3.0)

    run = tmp_path / "run"
    run.mkdir()
    _save_small_run(run, dataset, fill_memory, memory_entries=32, memory_weight=2.0, memory_per_category=per_category)
    store = tmp_path / "store"
    flags = ["--fp16"] if fp16 else []
    run_export(_args(str(run), "--store", str(store), "--name", "prd", *flags))
    manifest = load_bundle(store, "prd", "latest").manifest
    assert manifest.prd["memory_entries"] == 32 and manifest.prd["memory_weight"] == 2.0
    assert manifest.prd["memory_per_category"] is per_category
    parity = manifest.metrics["export_parity"]
    assert parity["score_max_rel_diff"] <= (1e-2 if fp16 else 1e-4)
    import onnx

    graph = onnx.load(str(store / "prd" / "1" / "model.onnx")).graph
    memory_nodes = [n for n in graph.node if "/anomaly_map/memory/" in n.name]
    assert any(n.op_type == "MatMul" for n in memory_nodes) and any(n.op_type == "ReduceMin" for n in memory_nodes)
    weights = {t.name: t for t in graph.initializer}
    memory_weights = [weights[i] for n in memory_nodes for i in n.input if i in weights]
    assert memory_weights and all(w.data_type == onnx.TensorProto.FLOAT for w in memory_weights)  # fp32 even in fp16
