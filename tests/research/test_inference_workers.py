"""The inference-workers probe runs both layouts, alone and beside a competing process, on a tiny bundle."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.tiny_bundle import make_tiny_bundle
from tests.research.probes import load_probe

probe = load_probe("inference_workers")


def test_both_layouts_are_timed_alone_and_beside_a_competitor(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = make_tiny_bundle(tmp_path)
    probe.main(["--bundle", str(bundle), "--seconds", "0.05", "--batch", "4", "--competitors", "none,1/1"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("tiny v1: graph inputs/s")
    assert [line.split(":")[0].strip() for line in lines[1:]] == ["alone", "beside a process busy 1/1 ms"]
    assert all("1 x " in line and "(batch 4)" in line and "2 x " in line and "(batch 2)" in line for line in lines[1:])
    assert probe.throughput(bundle / "model.onnx", 2, 1, 2, 0.05) > 0
