"""Released bundles in git history: list them, and restore one into the model repository.

Only the default bundle sits in the working tree (a clone stays light); every version ever committed is still in
history, under today's layout (``model_store/repository/<name>/<version>/``) or the one before it
(``model_store/<name>/<version>/``). ``restore`` finds the commit that last held the version's manifest, writes its
files into the repository with ``git show`` and checks the graph's sha256 against the manifest, so a restored
bundle is byte for byte the one that was released::

    python -m model_store.releases list
    python -m model_store.releases restore 3        # = make bundle VERSION=3

Serve it with ``PRD_MODEL_VERSION=3`` (or ``POST /models/reload`` on a service set to it). Needs ``git`` and a clone
with history (not ``--depth 1``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from model_store.bundle import DEFAULT_STORE, MANIFEST_FILE, BundleError, read_manifest, sha256_file

LAYOUTS = ("model_store/repository/{name}/{version}", "model_store/{name}/{version}")
"""Where a bundle folder has lived in this repository, newest layout first."""


class ReleaseError(RuntimeError):
    """A version that cannot be listed or restored; the message says why and what to do."""


def _git(args: list[str], cwd: Path) -> bytes:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, check=False)
    except FileNotFoundError as exc:
        raise ReleaseError("git is not installed: restoring a bundle reads it from git history") from exc
    if done.returncode != 0:
        message = f"git {' '.join(args)} failed in {cwd}: {done.stderr.decode(errors='replace').strip()}"
        raise ReleaseError(message)
    return done.stdout


def released_versions(name: str = "prd", clone: Path = Path(".")) -> list[int]:
    """Versions of ``name`` whose manifest was ever committed, in either layout, ascending."""
    patterns = [layout.format(name=name, version="*") + f"/{MANIFEST_FILE}" for layout in LAYOUTS]
    listed = _git(["log", "--all", "--format=", "--name-only", "--", *patterns], clone).decode()
    versions = set()
    for line in listed.splitlines():
        parts = line.strip().split("/")
        if len(parts) >= 3 and parts[-1] == MANIFEST_FILE and parts[-2].isdigit() and parts[-3] == name:
            versions.add(int(parts[-2]))
    return sorted(versions)


def _find(name: str, version: int, clone: Path) -> tuple[str, str]:
    """(commit, folder) of the last commit that held the version's manifest."""
    for layout in LAYOUTS:
        folder = layout.format(name=name, version=version)
        found = _git(["log", "--all", "--format=%H", "-n", "1", "--", f"{folder}/{MANIFEST_FILE}"], clone).decode()
        if found.strip():
            commit = found.strip()
            # The last commit touching the path may be the one that deleted it: take its parent then.
            held = _git(["ls-tree", "--name-only", commit, f"{folder}/"], clone).split()
            return (commit if held else f"{commit}^"), folder
    known = released_versions(name, clone)
    raise ReleaseError(f"no version {version} of '{name}' in this clone's history; released versions: {known}")


def restore(version: int, name: str = "prd", repository: Path = DEFAULT_STORE, clone: Path = Path(".")) -> Path:
    """Write ``<repository>/<name>/<version>/`` from history and verify it; returns the folder.

    Refuses to overwrite an existing folder (a version is never changed once released).
    """
    target = Path(repository) / name / str(version)
    if target.exists():
        raise ReleaseError(f"{target} already exists: a released version is never overwritten")
    ref, folder = _find(name, version, clone)
    files = _git(["ls-tree", "--name-only", ref, f"{folder}/"], clone).decode().split()
    staging = target.with_name(f".restore-{version}-{os.getpid()}")
    staging.mkdir(parents=True)
    try:
        for path in files:
            (staging / Path(path).name).write_bytes(_git(["show", f"{ref}:{path}"], clone))
        manifest = read_manifest(staging / MANIFEST_FILE)
        actual = sha256_file(staging / manifest.onnx.file)
        if actual != manifest.onnx.sha256:
            message = f"{folder} at {ref[:12]}: graph sha256 {actual} != manifest {manifest.onnx.sha256}"
            raise ReleaseError(message)
        staging.rename(target)
    except BaseException:
        for leftover in staging.glob("*"):
            leftover.unlink()
        staging.rmdir()
        raise
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model_store.releases", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="versions released in this clone's history")
    listing.add_argument("--name", default="prd", help="model name (default: %(default)s)")
    restoring = commands.add_parser("restore", help="write a released version into the model repository")
    restoring.add_argument("version", type=int, help="the integer version to restore")
    restoring.add_argument("--name", default="prd", help="model name (default: %(default)s)")
    restoring.add_argument(
        "--repository", type=Path, default=DEFAULT_STORE, help="model repository to write into (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            print(" ".join(str(v) for v in released_versions(args.name)))
        else:
            print(restore(args.version, args.name, args.repository))
    except (ReleaseError, BundleError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
