"""The scoring rule (model_store/planner.py): what a manifest states, and the one planner that carries it out."""

from __future__ import annotations

import json

import numpy as np
import pytest

from model_store.bundle import BundleError, read_manifest
from model_store.manifest import Manifest
from model_store.outputs import GraphOutputs
from model_store.planner import DEFAULT_SLACK, Planner, ScoringRule
from tests.fixtures.tiny_bundle import tiny_manifest


def _brightest(images: np.ndarray) -> GraphOutputs:
    """A stand-in graph: map = brightness, score = its peak, similarity = [red share, green share]."""
    x = images.astype(np.float32) / 255.0
    maps = x.mean(axis=3)
    similarity = np.stack([x[..., 0].mean((1, 2)), x[..., 1].mean((1, 2))], axis=1)
    return GraphOutputs.from_arrays(maps.max(axis=(1, 2)), maps, similarity)


def _tall(channel: int) -> np.ndarray:
    """96 × 32, tinted in ``channel``, with a 2-px spot a squash would average away."""
    image = np.zeros((96, 32, 3), np.uint8)
    image[:, :, channel] = 40
    image[40:42, 0:2, channel] = 255
    return image


class Counting:
    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, images: np.ndarray) -> GraphOutputs:
        self.calls.append(len(images))
        return _brightest(images)


PLANNER = Planner(ScoringRule.tiled(32, 4, ["red"]), ["red", "green"])


def test_an_image_recognised_as_a_tiled_category_is_cut_in_a_second_pass() -> None:
    run = Counting()
    red, green = PLANNER.score(run, [_tall(0), _tall(1)])
    assert run.calls == [2, 3]  # both squashed; then the red one (recognised, tiled) as its three tiles
    assert (red.tiles, green.tiles) == (3, 1)
    assert (red.category, red.category_source, green.category) == ("red", "recognised", "green")
    assert red.score == pytest.approx(1 / 3)  # the spot at full strength in the middle tile
    assert green.score < 0.25  # squashed 3× along its height: the spot averaged with the background
    assert red.anomaly_map.shape == (96, 32) and green.anomaly_map.shape == (32, 32)
    assert red.category_similarity[0] > red.category_similarity[1]  # the squashed pass's: it chose the category


def test_a_given_category_decides_in_one_pass() -> None:
    run = Counting()
    [tiled] = PLANNER.score(run, [_tall(1)], given=["red"])  # green pixels, but given as red: its tiles at once
    assert run.calls == [3] and (tiled.tiles, tiled.category, tiled.category_source) == (3, "red", "given")
    run.calls.clear()
    [squashed] = PLANNER.score(run, [_tall(0)], given=["green"])  # a category that is not tiled: squashed
    assert run.calls == [1] and squashed.tiles == 1 and squashed.category == "green"


def test_a_tiled_category_of_one_tiles_shape_keeps_its_squashed_pass() -> None:
    run = Counting()
    [square] = PLANNER.score(run, [_tall(0)[:32]])
    assert run.calls == [1] and square.tiles == 1 and square.category == "red"


def test_the_floor_leaves_an_unsure_image_of_no_category_and_squashed() -> None:
    run = Counting()
    floored = Planner(PLANNER.rule.with_floor(0.9), PLANNER.categories)
    [unsure] = floored.score(run, [_tall(0)])  # its best similarity is the red share, about 0.18
    assert (unsure.category, unsure.category_source, unsure.tiles) == (None, "unknown", 1)
    assert run.calls == [1]  # not cut: only a recognised tiled category is


def test_squash_rule_cuts_nothing() -> None:
    run = Counting()
    planner = Planner(ScoringRule.squash(32), ["red", "green"])
    assert [a.tiles for a in planner.score(run, [_tall(0), _tall(1)])] == [1, 1] and run.calls == [2]
    assert ScoringRule.tiled(32, 1, ["red"]).tiling.scheme == "squash/1"  # one tile at most is the squash


def test_a_rule_may_only_tile_the_graphs_categories() -> None:
    with pytest.raises(ValueError, match=r"scoring.tiling.categories names \['blue'\]"):
        Planner(ScoringRule.tiled(32, 4, ["blue"]), ["red", "green"])
    raw = tiny_manifest("tiny", 1, 32, ["alpha", "beta"], "0" * 64, {}, max_tiles=4, tiled_categories=["alpha"])
    raw["scoring"]["tiling"]["categories"] = ["gamma"]
    with pytest.raises(ValueError, match=r"scoring.tiling.categories names \['gamma'\]"):
        Manifest.model_validate(raw)


def test_a_manifest_with_an_unknown_scheme_is_refused_naming_the_field(tmp_path) -> None:
    raw = tiny_manifest("tiny", 1, 32, ["alpha", "beta"], "0" * 64, {}, max_tiles=4, tiled_categories=["alpha"])
    raw["scoring"]["tiling"]["scheme"] = "grid/2"
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(BundleError, match=r"manifest.json: invalid manifest: scoring.tiling.scheme: .*aspect-strip/1"):
        read_manifest(path)
    raw["scoring"]["tiling"]["scheme"] = "aspect-strip/1"
    raw["scoring"]["merge"]["scheme"] = "median/1"
    path.write_text(json.dumps(raw))
    with pytest.raises(BundleError, match=r"scoring.merge.scheme"):
        read_manifest(path)


def test_a_format_1_manifest_loads_with_its_rule_stated_explicitly() -> None:
    raw = tiny_manifest("tiny", 1, 32, ["alpha", "beta"], "0" * 64, {})
    del raw["scoring"]
    raw["format_version"] = 1
    raw["input"].update(max_tiles=4, tiled_categories=["alpha"])
    manifest = Manifest.model_validate(raw)
    assert manifest.scoring == ScoringRule.tiled(32, 4, ["alpha"], DEFAULT_SLACK)
    assert manifest.scoring.tiling.scheme == "aspect-strip/1" and manifest.scoring.routing.min_similarity is None
    assert manifest.scoring.merge.scheme == "max-mean-squashed/1"  # their maps were averaged, and stay so
    raw["input"].update(max_tiles=1, tiled_categories=[])
    assert Manifest.model_validate(raw).scoring.tiling.scheme == "squash/1"  # bundles before tiles


def test_the_merge_scheme_decides_how_tile_maps_join_but_not_the_score() -> None:
    maps = np.stack([np.full((32, 32), 1.0), np.full((32, 32), 3.0)]).astype(np.float32)
    outputs = GraphOutputs(np.array([0.1, 0.3], np.float32), maps, np.tile(np.float32([0.9, 0.1]), (2, 1)))
    mean = Planner(ScoringRule.tiled(32, 4, ["red"]), ["red", "green"])
    feather = Planner(ScoringRule.tiled(32, 4, ["red"], merge="max-feather-squashed/1"), ["red", "green"])
    layout = mean.rule.layout(48, 32, "red")
    flat, smooth = mean.merge(outputs, layout, "red"), feather.merge(outputs, layout, "red")
    assert flat.score == smooth.score == pytest.approx(0.3)
    assert flat.anomaly_map[24, 0] == pytest.approx(2.0)  # averaged
    assert np.abs(np.diff(smooth.anomaly_map[:, 0])).max() < np.abs(np.diff(flat.anomaly_map[:, 0])).max()
    assert feather.rule.with_floor(0.5).merge.scheme == "max-feather-squashed/1"  # an override keeps the merge


def test_an_operators_floor_replaces_the_bundles() -> None:
    raw = tiny_manifest("tiny", 1, 32, ["alpha", "beta"], "0" * 64, {}, min_similarity=0.5)
    manifest = Manifest.model_validate(raw)
    assert manifest.planner().rule.routing.min_similarity == 0.5
    assert manifest.planner(0.8).rule.routing.min_similarity == 0.8


@pytest.mark.parametrize("given", [None, "red", "green"])
@pytest.mark.parametrize("shape", [(96, 32), (32, 32), (40, 32), (32, 200)])
def test_max_inputs_bounds_what_scoring_runs_whatever_is_recognised(shape: tuple[int, int], given: str | None) -> None:
    """Admission reserves ``max_inputs`` up front: no recognition outcome may need more, the worst one needs it."""
    height, width = shape
    worst = 0
    for channel in (0, 1):  # recognised as red (tiled) or as green (squashed)
        image = np.zeros((height, width, 3), np.uint8)
        image[..., channel] = 200
        run = Counting()
        PLANNER.score(run, [image], given=[given])
        worst = max(worst, sum(run.calls))
    assert PLANNER.max_inputs(height, width, given) == worst
