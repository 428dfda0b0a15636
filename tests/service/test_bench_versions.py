"""``python -m service.bench.versions``: several versions of one model timed in turns, ratios to the first."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.bench.versions import main
from tests.fixtures.tiny_bundle import make_tiny_bundle


def test_versions_are_timed_in_one_run_with_ratios_to_the_first(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    make_tiny_bundle(tmp_path, "tiny", 1)
    make_tiny_bundle(tmp_path, "tiny", 2, busy_layers=2)
    main(["--store", str(tmp_path), "--name", "tiny", "--versions", "1,2", "--batch-sizes", "1,2", "--seconds", "0.05"])
    lines = capsys.readouterr().out.splitlines()
    assert "CPUExecutionProvider" in lines[0]
    rows = [line for line in lines if line.strip().startswith("batch")]
    assert len(rows) == 2
    for row in rows:
        assert "v1" in row and "(1.00× v1)" in row and "v2" in row
        ratio = float(row.split("v2 ")[1].split("(")[1].split("×")[0])
        assert ratio > 0  # a measured figure; no claim on which is faster (no timing assertions in tests)
