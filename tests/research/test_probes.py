"""Every kept probe runs as the docs quote it (``python docs/research/<probe>.py``), and none is installed."""

from __future__ import annotations

import subprocess
import sys

import pytest
from setuptools import find_packages

from tests.ops.support import pyproject
from tests.research.probes import PROBES, REPO, RESEARCH


def test_the_installed_packages_hold_no_research_code() -> None:
    config = pyproject()["tool"]["setuptools"]["packages"]["find"]
    packages = find_packages(where=str(REPO), include=config["include"], exclude=config.get("exclude", ()))
    assert {"training", "service", "model_store"} <= set(packages)
    assert not [name for name in packages if "research" in name or name.startswith(("docs", "tests"))]


def test_every_probe_is_described_in_the_research_readme() -> None:
    readme = (RESEARCH / "README.md").read_text()
    assert PROBES, f"no probes in {RESEARCH}"
    assert not [probe for probe in PROBES if f"docs/research/{probe}.py" not in readme]


@pytest.mark.slow
@pytest.mark.torch
@pytest.mark.parametrize("probe", PROBES)
def test_probe_imports_and_answers_help_from_the_repository_root(probe: str) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    done = subprocess.run(
        [sys.executable, f"docs/research/{probe}.py", "--help"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("usage:")
