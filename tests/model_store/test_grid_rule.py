"""``grid/1`` in the scoring rule: what a manifest states, what it refuses, what admission reserves, and scoring a
grid category end to end with a graph."""

from __future__ import annotations

import json

import numpy as np
import pytest

from model_store.bundle import BundleError, load_bundle, read_manifest
from model_store.manifest import Manifest
from model_store.planner import GridSpec, Planner, ScoringRule
from model_store.session import GraphSession
from model_store.tiling import TileLayout
from tests.fixtures.tiny_bundle import make_tiny_bundle, tiny_manifest
from tests.model_store.test_planner import Counting

GRID = {"red": GridSpec(scale=2.0, max_tiles=4)}
RULE = ScoringRule.tiled(32, 4, ["red", "blue"], grid=GRID)
PLANNER = Planner(RULE, ["red", "green", "blue"])


def _raw(**grid: object) -> dict:
    raw = tiny_manifest("tiny", 1, 32, ["alpha", "beta"], "0" * 64, {}, max_tiles=4, tiled_categories=["alpha"])
    raw["scoring"]["tiling"].update(grid)
    return raw


def test_a_grid_rule_goes_through_the_manifest_and_back() -> None:
    raw = tiny_manifest(
        "tiny",
        1,
        32,
        ["alpha", "beta"],
        "0" * 64,
        {},
        max_tiles=4,
        tiled_categories=["alpha", "beta"],
        grid={"alpha": GridSpec(scale=3.0, max_tiles=9)},
    )
    assert raw["scoring"]["tiling"]["scheme"] == "grid/1"
    assert raw["scoring"]["tiling"]["grid"] == {"alpha": {"scale": 3.0, "max_tiles": 9}}
    manifest = Manifest.model_validate(json.loads(json.dumps(raw)))
    assert manifest.scoring.layout(96, 96, "alpha").count == 9 and manifest.scoring.layout(96, 32, "beta").count == 3
    assert Manifest.model_validate(json.loads(manifest.model_dump_json())) == manifest


def test_scale_one_everywhere_writes_the_strip_with_no_grid_field() -> None:
    rule = ScoringRule.tiled(32, 4, ["red"], grid={"red": GridSpec(scale=1.0, max_tiles=4)})
    assert rule == ScoringRule.tiled(32, 4, ["red"])  # so older readers keep reading what new exports write
    assert rule.tiling.scheme == "aspect-strip/1" and "grid" not in rule.model_dump(mode="json")["tiling"]


@pytest.mark.parametrize(
    ("tiling", "message"),
    [
        ({"grid": {"alpha": {"scale": 2.0, "max_tiles": 4}}}, "grid is read only under grid/1, not aspect-strip/1"),
        ({"scheme": "grid/1"}, "grid/1 needs at least one category in grid"),
        ({"scheme": "grid/1", "grid": {"beta": {"scale": 2.0, "max_tiles": 4}}}, r"grid names \['beta'\]"),
        ({"scheme": "grid/1", "grid": {"alpha": {"scale": 0.5, "max_tiles": 4}}}, r"grid\.alpha\.scale"),
        ({"scheme": "grid/1", "grid": {"alpha": {"scale": 2.0, "max_tiles": 0}}}, r"grid\.alpha\.max_tiles"),
        ({"scheme": "grid/1", "grid": {"alpha": {"scale": 2.0}}}, r"grid\.alpha\.max_tiles"),
        ({"scheme": "grid/1", "grid": {"alpha": {"scale": 2.0, "max_tiles": 4, "overlap": 1}}}, r"overlap"),
    ],
)
def test_a_bad_grid_is_refused_naming_the_field(tmp_path, tiling: dict, message: str) -> None:
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(_raw(**tiling)))
    with pytest.raises(BundleError, match=rf"manifest.json: invalid manifest: scoring.tiling.*{message}"):
        read_manifest(path)


def test_each_category_is_cut_by_its_own_part_of_the_rule() -> None:
    assert PLANNER.rule.layout(64, 64, "red").count == 4  # grid: 2×2 on a 64 px canvas
    assert PLANNER.rule.layout(96, 32, "blue") == TileLayout(96, 32, 32, ((0, 0), (32, 0), (64, 0)))  # strip
    assert PLANNER.rule.layout(64, 64, "green").count == 1  # not tiled: squashed


@pytest.mark.parametrize("given", [None, "red", "green", "blue"])
@pytest.mark.parametrize("shape", [(64, 64), (32, 32), (96, 32), (64, 96), (200, 64)])
def test_max_inputs_bounds_what_grid_scoring_runs_whatever_is_recognised(shape: tuple[int, int], given) -> None:
    height, width = shape
    worst = 0
    for channel in (0, 1, 2):  # recognised as red (grid), green (squashed) or blue (strip)
        image = np.zeros((height, width, 3), np.uint8)
        image[..., channel] = 200
        run = Counting()
        PLANNER.score(run, [image], given=[given])
        worst = max(worst, sum(run.calls))
    assert PLANNER.max_inputs(height, width, given) >= worst
    if given is not None:
        assert PLANNER.max_inputs(height, width, given) == worst
    assert PLANNER.max_inputs(64, 64, None) == 1 + 4


def test_a_grid_category_is_scored_end_to_end_by_a_graph(tmp_path) -> None:
    """A 2-pixel flaw in a 128 px photo: squashed to the 32 px graph it is averaged away; at scale 4 (4×4 tiles of
    the photo at its own resolution) the graph sees it whole."""
    make_tiny_bundle(tmp_path, categories=("alpha", "beta"), max_tiles=4, tiled_categories=["alpha"])
    squash_bundle = load_bundle(tmp_path, "tiny", 1)
    make_tiny_bundle(
        tmp_path, version=2, max_tiles=4, tiled_categories=["alpha"], grid={"alpha": GridSpec(scale=4, max_tiles=16)}
    )
    grid_bundle = load_bundle(tmp_path, "tiny", 2)
    assert grid_bundle.manifest.scoring.tiling.scheme == "grid/1"
    photo = np.full((128, 128, 3), 100, np.uint8)
    photo[70:72, 50:52] = 255
    session = GraphSession(grid_bundle.onnx_path)
    runs: list[int] = []

    def run(batch: np.ndarray):
        runs.append(len(batch))
        return session.run(batch)

    [squashed] = squash_bundle.manifest.planner().score(run, [photo], given=["alpha"])
    [grid] = grid_bundle.manifest.planner().score(run, [photo], given=["alpha"])
    assert runs == [1, 16] and (squashed.tiles, grid.tiles) == (1, 16)
    assert grid.anomaly_map.shape == (128, 128)
    assert np.unravel_index(np.argmax(grid.anomaly_map), grid.anomaly_map.shape) in {
        (70, 50),
        (70, 51),
        (71, 50),
        (71, 51),
    }
    assert grid.score > 4 * squashed.score  # the flaw at full strength in one tile, against a quarter-pixel smear
    assert grid_bundle.manifest.planner().max_inputs(128, 128, None) == 1 + 16
