"""Training end to end on generated images: fit → evaluate → ablate through the CLI, resume, determinism, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from training.cli import main  # noqa: E402
from training.config import TrainConfig  # noqa: E402
from training.model import with_resolved_taps  # noqa: E402
from training.synthetic import make_synthetic_dataset  # noqa: E402

pytestmark = pytest.mark.torch

TINY = [
    "--teacher",
    "efficientnet_lite0",
    "--image-size",
    "64",
    "--embed-dim",
    "32",
    "--prototypes",
    "16",
    "--decoder-width",
    "32",
    "--batch-size",
    "4",
]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_dataset(tmp_path_factory.mktemp("data"), n_train=8, n_test_good=3, n_test_defect=3, size=64)


def _weights(run: Path) -> dict:
    return torch.load(run / "checkpoint.pt", weights_only=False)["model"]


def test_fit_evaluate_writes_run_folder_and_report(dataset: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert main(["fit", "--data", str(dataset), "--out", str(run), "--epochs", "2", *TINY]) == 0
    assert {"config.json", "checkpoint.pt", "log.jsonl", "training_data.json"} <= {p.name for p in run.iterdir()}
    epochs = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in epochs] == [0, 1]
    trained = json.loads((run / "training_data.json").read_text())
    # Both categories' photos share one frame, so both are tiled (written out); texture_b is 1.5× taller than
    # wide: each of its images trains as two aspect-kept tiles, texture_a's (square) as one.
    assert json.loads((run / "config.json").read_text())["tile_categories"] == ["texture_a", "texture_b"]
    assert trained["training_tiles"] == trained["trained_on"] + trained["trained_on"] // 2
    assert main(["evaluate", str(run), "--report", str(tmp_path / "report")]) == 0
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert set(metrics["categories"]) == {"texture_a", "texture_b"}
    assert 0.0 <= metrics["mean"]["image_auroc"] <= 1.0
    assert json.loads((run / "metrics.json").read_text())["mean"] == metrics["mean"]


def test_same_seed_gives_same_weights_and_resume_continues_exactly(dataset: Path, tmp_path: Path) -> None:
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert main(["fit", "--data", str(dataset), "--out", str(straight), "--epochs", "2", *TINY]) == 0
    assert main(["fit", "--data", str(dataset), "--out", str(split), "--epochs", "1", *TINY]) == 0
    assert main(["fit", "--data", str(dataset), "--out", str(split), "--epochs", "2", "--resume", *TINY]) == 0
    a, b = _weights(straight), _weights(split)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_changed_settings(dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    assert main(["fit", "--data", str(dataset), "--out", str(run), "--epochs", "1", *TINY]) == 0
    assert main(["fit", "--data", str(dataset), "--out", str(run), "--resume", *TINY, "--lr", "0.1"]) == 2
    assert "lr" in capsys.readouterr().err


def test_fit_writes_its_taps_out_and_runs_saved_before_load_with_the_taps_they_were_trained_on(
    dataset: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    assert main(["fit", "--data", str(dataset), "--out", str(run), "--epochs", "1", *TINY]) == 0
    saved = json.loads((run / "config.json").read_text())
    assert saved["teacher_taps"] == [4, 10, 13]  # Lite0's defaults, written out: a later default cannot move them
    older = {k: v for k, v in saved.items() if k not in ("memory_entries", "memory_per_category", "max_tiles")}
    config = TrainConfig.from_dict(older | {"teacher_taps": None})  # saved before the taps moved, before the memory
    assert (config.teacher_taps, config.memory_entries, config.memory_per_category) == ([3, 9, 13], 0, False)
    assert (saved["max_tiles"], config.max_tiles) == (4, 1)  # runs saved before tiling squashed every image
    with_shared_memory = {k: v for k, v in saved.items() if k != "memory_per_category"}  # prd/4's run: one memory
    assert TrainConfig.from_dict(with_shared_memory).memory_per_category is False
    assert with_resolved_taps(TrainConfig(teacher="efficientnet_lite2")).teacher_taps == [4, 13, 18]
    assert with_resolved_taps(TrainConfig(teacher="wide_resnet50_2")).teacher_taps is None  # ResNets: fixed taps


def test_tile_categories_can_be_chosen_or_switched_off(dataset: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    no_tiles = ["--tile-categories", ""]
    assert main(["fit", "--data", str(dataset), "--out", str(run), "--epochs", "1", *no_tiles, *TINY]) == 0
    assert json.loads((run / "config.json").read_text())["tile_categories"] == []
    trained = json.loads((run / "training_data.json").read_text())
    assert trained["training_tiles"] == trained["trained_on"]  # every image squashed into one square


def test_max_minutes_stops_after_the_first_epoch(dataset: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert main(["fit", "--data", str(dataset), "--out", str(run), "--epochs", "5", "--max-minutes", "0", *TINY]) == 0
    assert len((run / "log.jsonl").read_text().splitlines()) == 1
    assert torch.load(run / "checkpoint.pt", weights_only=False)["stopped_early"] is True


def test_ablation_writes_one_table_for_prd_and_plain_rd(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "ablation"
    args = ["ablate", "--data", str(dataset), "--out", str(out), "--epochs", "1", "--variants", "prd,rd", *TINY]
    assert main(args) == 0
    table = (out / "ablation.md").read_text()
    assert "| prd |" in table and "| rd |" in table
    results = json.loads((out / "ablation.json").read_text())["variants"]
    assert results["rd"]["overrides"] == {"prototypes": 0, "memory_entries": 0}
    assert (out / "ablation.png").stat().st_size > 0
    rd, prd = _weights(out / "rd"), _weights(out / "prd")
    assert "bank.prototypes" not in rd and "anomaly_map.memory.entries" not in rd  # plain RD4AD
    assert "bank.prototypes" in prd and "anomaly_map.memory.entries" in prd


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--teacher", "wide_resnet50_2"], "--teacher-weights"),
        (["--teacher", "resnet18", "--teacher-weights", "/nonexistent/w.pth"], "/nonexistent/w.pth"),
        (["--categories", "nope"], "nope"),
        (["--set", "no_such_field=1"], "no_such_field"),
        (["--holdout-fraction", "0"], "--memory-entries: the patch memory is scaled on held-out normal images"),
        (["--tile-categories", "texture_a,nope"], "--tile-categories: ['nope'] not among the data's categories"),
    ],
)
def test_fit_bad_options_exit_2_with_one_line(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture, args: list[str], expected: str
) -> None:
    assert main(["fit", "--data", str(dataset), "--out", str(tmp_path / "run"), *TINY, *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and expected in err and "Traceback" not in err


def test_fit_names_the_file_when_a_defect_image_has_no_mask(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = make_synthetic_dataset(tmp_path / "data", n_train=4, n_test_good=1, n_test_defect=1, size=64)
    mask = next(root.glob("*/ground_truth/*/*"))
    mask.unlink()
    assert main(["fit", "--data", str(root), "--out", str(tmp_path / "run"), *TINY]) == 2
    assert mask.stem.removesuffix("_mask") in capsys.readouterr().err


def test_fit_names_an_unreadable_training_image(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = make_synthetic_dataset(tmp_path / "data", n_train=4, n_test_good=1, n_test_defect=1, size=64)
    broken = sorted(root.glob("*/train/good/*"))[0]
    broken.write_bytes(b"not an image at all")
    assert main(["fit", "--data", str(root), "--out", str(tmp_path / "run"), *TINY]) == 2
    assert str(broken) in capsys.readouterr().err


def test_fresh_fit_into_an_old_run_folder_starts_a_new_log(dataset: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert main(["fit", "--data", str(dataset), "--out", str(run), "--epochs", "2", *TINY]) == 0
    assert main(["fit", "--data", str(dataset), "--out", str(run), "--epochs", "1", *TINY]) == 0
    assert [json.loads(line)["epoch"] for line in (run / "log.jsonl").read_text().splitlines()] == [0]


def test_magnitude_term_gets_its_channel_weights_from_the_training_features(dataset: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = ["--set", "magnitude_weight=0.5", "--set", "score=max_minus_mean"]
    assert main(["fit", "--data", str(dataset), "--out", str(run), "--epochs", "1", *TINY, *args]) == 0
    weights = _weights(run)["anomaly_map.channel_weights"]
    assert weights.shape == (40 + 112 + 192,)  # Lite0's default taps: one weight per teacher channel
    assert (
        torch.isfinite(weights).all() and (weights > 0).all() and not torch.allclose(weights, torch.ones_like(weights))
    )
    assert main(["evaluate", str(run), "--report", str(tmp_path / "report")]) == 0


def test_patch_memory_is_built_from_training_patches_and_scaled_on_held_out_normals(
    dataset: Path, tmp_path: Path
) -> None:
    from training.calibrate import holdout_split
    from training.data import discover, load_tiles
    from training.model import load_run

    run = tmp_path / "run"
    args = ["--memory-entries", "64", "--memory-weight", "2"]
    assert main(["fit", "--data", str(dataset), "--out", str(run), "--epochs", "1", *TINY, *args]) == 0
    state = _weights(run)
    entries = state["anomaly_map.memory.entries"]
    categories = len(discover([dataset]).categories)
    assert entries.shape == (categories * 64, 40 + 112)  # one memory of 64 per category; Lite0's first two taps
    assert entries.abs().sum(dim=1).min() > 0  # every entry filled
    scales = json.loads((run / "map_scales.json").read_text())
    assert scales["rd_scale"] > 0 and scales["memory_scale"] > 0 and scales["held_out_images"] > 0
    assert float(state["anomaly_map.memory_scale"]) == pytest.approx(scales["memory_scale"])
    index = discover([dataset])
    _, held_out = holdout_split(index.train, 0.1, validation=index.validation)
    model = load_run(run)
    with torch.no_grad():
        fused = model(torch.from_numpy(load_tiles(held_out, model.config.scoring, progress=False).images)).anomaly_map
    # each part is 1 on average over the held-out normals, so the fused map averages 1 + α there
    assert float(fused.mean()) == pytest.approx(1 + 2, rel=0.05)
    assert main(["evaluate", str(run), "--report", str(tmp_path / "report")]) == 0
    shared = tmp_path / "shared"
    one_memory = [*args, "--memory-per-category", "false"]
    assert main(["fit", "--data", str(dataset), "--out", str(shared), "--epochs", "1", *TINY, *one_memory]) == 0
    assert _weights(shared)["anomaly_map.memory.entries"].shape == (64, 40 + 112)  # one memory for all


@pytest.fixture(scope="module")
def large_photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Photos twice the graph's 64 px: texture_a 128 × 128, texture_b 192 × 128."""
    root = tmp_path_factory.mktemp("large")
    return make_synthetic_dataset(root, n_train=8, n_test_good=2, n_test_defect=2, size=128)


def test_grid_auto_cuts_photos_large_enough_into_a_grid_and_trains_on_its_tiles(
    large_photos: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    assert main(["fit", "--data", str(large_photos), "--out", str(run), "--epochs", "1", "--grid", "auto", *TINY]) == 0
    saved = json.loads((run / "config.json").read_text())
    # texture_a: 128 px photos feed scale 2 (2×2 tiles); texture_b at scale 2 would be 2×3 tiles, over the cap of 4
    assert saved["grid_scales"] == {"texture_a": 2.0}
    trained = json.loads((run / "training_data.json").read_text())
    assert trained["training_tiles"] == 4 * (trained["trained_on"] // 2) + 2 * (trained["trained_on"] // 2)
    assert TrainConfig.load(run / "config.json").scoring.tiling.scheme == "grid/1"
    assert (
        main(
            [
                "fit",
                "--data",
                str(large_photos),
                "--out",
                str(run),
                "--epochs",
                "2",
                "--resume",
                "--grid",
                "auto",
                *TINY,
            ]
        )
        == 0
    )  # the choice is made again, the same, so the run resumes


def test_grid_scales_override_the_choice_and_must_name_tiled_categories(
    large_photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run = tmp_path / "run"
    override = ["--grid-scales", "texture_b=2", "--grid-max-tiles", "6"]
    assert main(["fit", "--data", str(large_photos), "--out", str(run), "--epochs", "1", *override, *TINY]) == 0
    assert json.loads((run / "config.json").read_text())["grid_scales"] == {"texture_b": 2.0}
    trained = json.loads((run / "training_data.json").read_text())
    assert trained["training_tiles"] == 1 * (trained["trained_on"] // 2) + 6 * (trained["trained_on"] // 2)
    untiled = ["--tile-categories", "texture_a", "--grid-scales", "texture_b=2"]
    assert main(["fit", "--data", str(large_photos), "--out", str(run), "--epochs", "1", *untiled, *TINY]) == 2
    assert "--grid-scales: ['texture_b'] are not tiled categories" in capsys.readouterr().err
