"""training.config: every knob checked when a config is built — choice-valued knobs against their Literal, numbers
against their range, types against the annotation — whether it comes from Python, a config.json or a checkpoint;
runs saved before newer knobs existed still load."""

from __future__ import annotations

import json
from pathlib import Path
from typing import get_args

import pytest

from training.config import (
    ConfigError,
    Device,
    FilterSite,
    ImageScoreRule,
    LossMode,
    LossTarget,
    TeacherName,
    TrainConfig,
)


@pytest.mark.parametrize(
    ("knob", "value", "allowed"),
    [
        ("loss", "hrad", get_args(LossMode)),
        ("score", "mean", get_args(ImageScoreRule)),
        ("device", "gpu", get_args(Device)),
        ("teacher", "resnet50", get_args(TeacherName)),
        ("filter_at", "decoder", get_args(FilterSite)),
        ("loss_target", "pointwise", get_args(LossTarget)),
    ],
)
def test_a_choice_outside_its_literal_is_refused_naming_knob_value_and_choices(
    knob: str, value: str, allowed: tuple[str, ...]
) -> None:
    with pytest.raises(ConfigError) as caught:
        TrainConfig(**{knob: value})
    message = str(caught.value)
    assert message.startswith(f"{knob}={value!r}") and all(choice in message for choice in allowed)
    assert caught.value.name == knob


@pytest.mark.parametrize(
    ("knob", "value", "rule"),
    [
        ("epochs", 0, "at least 1"),
        ("batch_size", -4, "at least 1"),
        ("image_size", 16, "at least 32"),
        ("prototypes", -1, "at least 0"),
        ("hard_mining_quantile", 1.0, "(0, 1)"),
        ("holdout_fraction", 1.0, "[0, 1)"),
        ("score_topk", 0.0, "(0, 1]"),
        ("recall_temperature", 0.0, "greater than 0"),
        ("map_sigma", -1.0, "greater than 0"),
        ("lr", 0.0, "greater than 0"),
        ("betas", (0.5, 1.5), "[0, 1)"),
        ("max_minutes", -1.0, "at least 0"),
        ("memory_weight", -2.0, "at least 0"),
        ("bottleneck_dropout", 1.0, "[0, 1)"),
        ("bottleneck_dropout", -0.1, "[0, 1)"),
    ],
)
def test_a_number_outside_its_range_is_refused_naming_the_knob(knob: str, value: object, rule: str) -> None:
    with pytest.raises(ConfigError, match=knob) as caught:
        TrainConfig(**{knob: value})
    assert rule in str(caught.value)


@pytest.mark.parametrize(
    ("knob", "value"),
    [("epochs", "10"), ("epochs", 2.5), ("memory_weight", True), ("categories", ["a", 1]), ("betas", [0.5, 0.9])],
)
def test_a_value_of_the_wrong_type_is_refused(knob: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"^{knob}=.*expected"):
        TrainConfig(**{knob: value})


def test_edge_values_that_mean_off_or_none_are_accepted() -> None:
    config = TrainConfig(
        holdout_fraction=0.0, prototypes=0, recall_topk=0, memory_entries=0, max_minutes=0, memory_weight=2
    )
    assert (config.prototypes, config.memory_entries, config.memory_weight) == (0, 0, 2)


@pytest.mark.parametrize("target", ["global", "group"])
def test_a_loose_loss_target_refuses_the_per_position_magnitude_term(target: str) -> None:
    with pytest.raises(ConfigError, match="loss_target") as caught:
        TrainConfig(loss_target=target, magnitude_weight=0.5)
    assert "magnitude" in str(caught.value)
    assert TrainConfig(loss_target=target).magnitude_weight == 0.0


def test_a_config_cannot_be_changed_after_it_was_checked() -> None:
    config = TrainConfig()
    with pytest.raises(AttributeError):
        config.loss = "hrad"  # type: ignore[misc]


def test_a_config_json_with_a_bad_value_is_refused_on_load_naming_file_and_knob(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(TrainConfig().to_dict() | {"loss": "hrad"}))
    with pytest.raises(ConfigError) as caught:
        TrainConfig.load(path)
    message = str(caught.value)
    assert str(path) in message and "loss='hrad'" in message and "pixel, hard" in message


def test_saved_config_loads_back_equal_and_older_runs_get_their_compatibility_values(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    config = TrainConfig(loss="pixel", score="topk_mean", teacher_taps=[4, 10, 13], tile_categories=["a"])
    config.save(path)
    assert TrainConfig.load(path) == config  # betas come back as a tuple from JSON's list
    older = {k: v for k, v in config.to_dict().items() if k not in ("memory_entries", "max_tiles", "tile_categories")}
    loaded = TrainConfig.from_dict(older | {"teacher_taps": None, "retired_knob": 1})
    assert (loaded.memory_entries, loaded.max_tiles, loaded.tile_categories) == (0, 1, [])
    assert loaded.teacher_taps == [3, 9, 13]  # Lite0's taps before the default moved


@pytest.mark.torch
def test_a_checkpoint_whose_config_is_bad_is_refused_naming_the_checkpoint(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from training.model import RunError, load_run

    config = TrainConfig().to_dict() | {"score": "mean"}
    torch.save({"config": config, "categories": ["a"], "model": {}}, tmp_path / "checkpoint.pt")
    with pytest.raises(RunError, match="score='mean'") as caught:
        load_run(tmp_path)
    assert str(tmp_path / "checkpoint.pt") in str(caught.value)


@pytest.mark.torch
def test_the_parts_a_knob_reaches_take_its_one_default_from_the_config() -> None:
    """AnomalyMap and distillation_loss have no defaults of their own for the config's knobs, so nothing built
    outside the config can score or train with other values than a run's; defaults left on lower-level functions
    (where they mean "off") equal the config's."""
    pytest.importorskip("torch")
    import inspect

    from training.anomaly_map import SCORE_RULES, AnomalyMap, feature_distance_maps
    from training.backbones import build_teacher
    from training.calibrate import DEFAULT_HOLDOUT_FRACTION
    from training.loss import LOSS_MODES, distillation_loss

    def defaults_of(function: object, names: tuple[str, ...]) -> list[object]:
        parameters = inspect.signature(function).parameters
        return [parameters[name].default for name in names]

    knobs = ("image_size", "sigma", "score", "score_topk", "magnitude_weight", "memory_entries", "memory_weight")
    assert set(defaults_of(AnomalyMap.__init__, knobs)) == {inspect.Parameter.empty}
    assert set(defaults_of(distillation_loss, ("mode", "quantile", "magnitude_weight"))) == {inspect.Parameter.empty}
    config = TrainConfig()
    assert defaults_of(feature_distance_maps, ("magnitude_weight",)) == [config.magnitude_weight]
    assert defaults_of(build_teacher, ("smoothing",)) == [config.teacher_smoothing]
    assert DEFAULT_HOLDOUT_FRACTION == config.holdout_fraction  # calibration's hold-out is training's
    assert (SCORE_RULES, LOSS_MODES) == (get_args(ImageScoreRule), get_args(LossMode))
    anomaly_map = AnomalyMap.from_config(config, channels=(8, 8, 8))
    assert (anomaly_map.score_rule, anomaly_map.memory_weight) == (config.score, config.memory_weight)
    assert anomaly_map.topk == round(config.score_topk * config.image_size**2)
    assert anomaly_map.memory is not None and anomaly_map.memory.entries.shape[0] == config.memory_entries


def test_grid_knobs_are_checked_and_give_the_rule_they_describe() -> None:
    with pytest.raises(ConfigError, match=r"grid_scales=\{'wood': 0.5\}: must be at least 1"):
        TrainConfig(grid_scales={"wood": 0.5})
    with pytest.raises(ConfigError, match="grid_scales"):
        TrainConfig(grid_scales={"wood": "2"})  # type: ignore[dict-item]
    with pytest.raises(ConfigError, match="grid=.on.: expected one of off, auto"):
        TrainConfig(grid="on")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="grid_scales is not resolved yet"):
        _ = TrainConfig(grid="auto", tile_categories=["wood"]).scoring
    config = TrainConfig(tile_categories=["wood", "tire"], grid_scales={"wood": 2.0}, grid_max_tiles=6)
    tiling = config.scoring.tiling
    assert (tiling.scheme, tiling.grid["wood"].scale, tiling.grid["wood"].max_tiles) == ("grid/1", 2.0, 6)
    assert TrainConfig(tile_categories=["wood"]).scoring.tiling.scheme == "aspect-strip/1"  # the default: off
    assert TrainConfig.from_dict({"tile_categories": ["wood"]}).grid_scales == {}  # runs saved before the grid
