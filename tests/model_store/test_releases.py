"""Released bundles come back from git history byte for byte (model_store/releases.py), in either layout."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from model_store.bundle import load_bundle
from model_store.releases import ReleaseError, main, released_versions, restore
from tests.fixtures.tiny_bundle import make_tiny_bundle


def _git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True, capture_output=True
    )


@pytest.fixture()
def clone(tmp_path: Path) -> Path:
    """A repository whose history holds v1 in the old layout and v2 in today's, both later deleted."""
    repo = tmp_path / "clone"
    repo.mkdir()
    _git(repo, "init", "-q")
    make_tiny_bundle(repo / "model_store", name="prd", version=1)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "v1, old layout")
    make_tiny_bundle(repo / "model_store" / "repository", name="prd", version=2)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "v2, repository layout")
    _git(repo, "rm", "-rq", "model_store")
    _git(repo, "commit", "-qm", "bundles leave the tree")
    return repo


def test_released_versions_are_found_in_both_layouts(clone: Path) -> None:
    assert released_versions("prd", clone) == [1, 2]


@pytest.mark.parametrize("version", [1, 2])
def test_restore_writes_the_released_bytes_and_loads(clone: Path, tmp_path: Path, version: int) -> None:
    repository = tmp_path / "repository"
    folder = restore(version, "prd", repository, clone)
    bundle = load_bundle(repository, "prd", version)  # verifies the graph's sha256 against the manifest
    assert folder == repository / "prd" / str(version) and bundle.manifest.version == version
    assert not list(repository.glob("prd/.restore-*")), "the staging folder must not stay behind"


def test_restore_refuses_an_unknown_version_naming_the_known_ones(clone: Path, tmp_path: Path) -> None:
    with pytest.raises(ReleaseError, match=r"no version 7 .*\[1, 2\]"):
        restore(7, "prd", tmp_path / "repository", clone)


def test_restore_never_overwrites_a_version(clone: Path, tmp_path: Path) -> None:
    restore(1, "prd", tmp_path / "repository", clone)
    with pytest.raises(ReleaseError, match="already exists"):
        restore(1, "prd", tmp_path / "repository", clone)


def test_cli_reports_an_error_without_a_traceback(clone: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(clone)
    assert main(["restore", "9", "--repository", str(tmp_path / "r")]) == 1
    assert "no version 9" in capsys.readouterr().err
