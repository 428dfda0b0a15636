"""An int8 bundle (``onnx.precision: int8``, convolutions in QDQ form) is served and described like any other."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from model_store.bundle import load_bundle
from model_store.triton import check_config, write_config
from tests.fixtures.images import png
from tests.fixtures.tiny_bundle import make_tiny_bundle, square_image
from tests.service.harness import run, serving, settings_for


def test_the_service_serves_an_int8_bundle_and_says_its_precision(tmp_path: Path) -> None:
    store = tmp_path / "store"
    directory = make_tiny_bundle(store, busy_layers=2, busy_channels=8, precision="int8")
    ops = {node.op_type for node in onnx.load(str(directory / "model.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # the fixture's convolutions are the quantised form

    async def scenario() -> None:
        async with serving(settings_for(store)) as h:
            assert (await h.client.get("/models")).json()["precision"] == "int8"
            response = await h.score(("white.png", png(square_image(32, 8))))
            assert response.status_code == 200, response.text
            [result] = response.json()["results"]
            assert result["score"] == pytest.approx(1 - 8**2 / 32**2, abs=1e-5)  # the int8 work adds ×1e-12

    run(scenario())


def test_triton_configuration_of_an_int8_bundle_is_written_and_checked_as_for_fp32(tmp_path: Path) -> None:
    store = tmp_path / "store"
    make_tiny_bundle(store, busy_layers=1, busy_channels=4, precision="int8")
    config = write_config(store, "tiny")
    check_config(config.read_text(), load_bundle(store, "tiny").manifest, config)
