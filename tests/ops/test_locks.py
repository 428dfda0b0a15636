"""The dependency locks (requirements/*.txt, `make lock`): every pin hashed, every extra's requirement satisfied,
one version of a package across the locks, and every installer (Makefile, .ci/run, the images) honouring them."""

from __future__ import annotations

import re
from importlib import metadata

import pytest
from packaging.requirements import Requirement

from tests.ops.support import DOCKER, REPO, locked_versions, pyproject

LOCKS = REPO / "requirements"
LOCK_EXTRAS = {
    "serve": ("serve",),
    "gpu": ("gpu",),
    "ci-serve": ("serve", "dev"),
    "train": ("train",),
    "dev": ("train", "serve", "dev"),
}
"""Each lock and the extras it is compiled from (Makefile, target lock); torch is installed apart, never locked."""


def _requirements(extras: tuple[str, ...]) -> list[Requirement]:
    project = pyproject()["project"]
    found = [Requirement(r) for r in project["dependencies"]]
    pending, seen = list(extras), set()
    while pending:
        extra = pending.pop()
        seen.add(extra)
        for requirement in map(Requirement, project["optional-dependencies"][extra]):
            if requirement.name == project["name"]:
                pending += [name for name in requirement.extras if name not in seen]
            else:
                found.append(requirement)
    return found


def test_every_lock_is_there_and_every_pin_carries_a_hash() -> None:
    assert {path.stem for path in LOCKS.glob("*.txt")} == set(LOCK_EXTRAS)
    for name in LOCK_EXTRAS:
        text = (LOCKS / f"{name}.txt").read_text()
        entries = re.split(r"\n(?=[A-Za-z0-9])", text)
        pins = [entry for entry in entries if re.match(r"[A-Za-z0-9][\w.-]*==", entry)]
        assert pins, name
        assert all("--hash=sha256:" in pin for pin in pins), f"{name}.txt has a pin without a hash"
        assert "#    make lock\n" in text.split("\n\n", 1)[0], f"{name}.txt: not written by make lock"


@pytest.mark.parametrize("lock", LOCK_EXTRAS)
def test_each_lock_satisfies_its_extras_and_holds_no_torch(lock: str) -> None:
    pinned = locked_versions(LOCKS / f"{lock}.txt")
    assert "torch" not in pinned, "torch is installed apart (TORCH_SPEC), its CPU build from pip's find-links"
    for requirement in _requirements(LOCK_EXTRAS[lock]):
        if requirement.name == "torch":
            continue
        version = pinned.get(requirement.name.lower())
        assert version, f"{lock}.txt misses {requirement}: run make lock"
        assert requirement.specifier.contains(version, prereleases=True), f"{lock}.txt: {requirement} vs {version}"


def test_a_package_has_one_version_across_the_locks() -> None:
    """What CI tests (dev, ci-serve) is what the images run (serve, gpu) and `make serve` installs (serve)."""
    versions: dict[str, dict[str, str]] = {}
    for lock in LOCK_EXTRAS:
        for package, version in locked_versions(LOCKS / f"{lock}.txt").items():
            versions.setdefault(package, {})[lock] = version
    split = {package: by_lock for package, by_lock in versions.items() if len(set(by_lock.values())) > 1}
    assert not split, split


def test_the_tests_run_with_the_locked_versions() -> None:
    installed = {}
    for package in locked_versions(LOCKS / "ci-serve.txt"):
        try:
            installed[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    pinned = locked_versions(LOCKS / "ci-serve.txt")
    drift = {
        package: (version, pinned[package]) for package, version in installed.items() if version != pinned[package]
    }
    assert not drift, f"installed vs locked: {drift}; reinstall from requirements/ (make test does)"


def test_every_installer_installs_the_locks_with_hashes() -> None:
    makefile = (REPO / "Makefile").read_text()
    assert "PIP_LOCKED := $(PIP) install --no-deps --require-hashes" in makefile
    assert "$(PIP_LOCKED) -r $(LOCKS)/serve.txt" in makefile and "$(PIP_LOCKED) -r $(LOCKS)/dev.txt" in makefile
    ci = (REPO / ".ci" / "run").read_text()
    assert re.search(r"pip install .*--require-hashes.* -r requirements/ci-serve\.txt", ci)
    for dockerfile, lock in (("Dockerfile.cpu", "serve"), ("Dockerfile.gpu", "gpu"), ("Dockerfile.train", "train")):
        text = (DOCKER / dockerfile).read_text()
        assert f"--require-hashes --no-compile -r requirements/{lock}.txt" in text or (
            f"--require-hashes -r requirements/{lock}.txt" in text
        ), dockerfile
