"""README and docs/ stay true: their commands and links exist, the README's tables list every setting and metric the
code has, and every figure it states names the command that measured it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from service.config import Settings
from tests.ops.support import REPO, contract_metrics

README = (REPO / "README.md").read_text()
MAKEFILE = (REPO / "Makefile").read_text()
# The documents this project writes for people (model_store/'s contract documents have their own tests).
DOCS = [REPO / "README.md", REPO / "training" / "README.md", REPO / "service" / "README.md"]
DOCS += sorted(path for path in (REPO / "docs").rglob("*.md") if "results" not in path.parts)  # not raw outputs


def _section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", README, flags=re.M | re.S)
    assert match, f"README has no '## {title}' section"
    return match.group(1)


def _table_first_column(section: str) -> set[str]:
    """The names in backticks in each table row's first cell (a row may name two: `A` / `B`)."""
    cells = re.findall(r"^\| ([^|]+) \|", section, flags=re.M)
    return {name for cell in cells for name in re.findall(r"`([^`]+)`", cell)}


def _command_target_exists(command: str) -> bool:
    """Whether the module or script a `python ...` command runs is in the repository (`../shared/...` is not)."""
    module = re.match(r"python3? -m ([\w.]+)", command)
    if module:
        path = REPO / module.group(1).replace(".", "/")
        return path.with_suffix(".py").is_file() or (path / "__main__.py").is_file()
    script = re.match(r"python3? (\S+\.py)", command)
    return bool(script) and (script.group(1).startswith("../") or (REPO / script.group(1)).is_file())


def test_first_screen_says_what_it_is_then_the_two_commands() -> None:
    first_screen = "\n".join(README.splitlines()[:25])
    assert "anomal" in first_screen.lower()
    assert re.search(r"^make serve\b", first_screen, flags=re.M)
    assert re.search(r"^make test\b", first_screen, flags=re.M)
    assert "-H 'Accept: image/png'" in first_screen and "/score" in first_screen


def test_readme_is_short() -> None:
    assert len(README.splitlines()) < 200, "README is for the people who run the product: history goes to docs/"


def test_every_make_target_in_readme_exists() -> None:
    targets = set(re.findall(r"^([a-z][a-z-]*):", MAKEFILE, flags=re.M))
    used = set(re.findall(r"\bmake ((?:[a-z][a-z-]* ?)+)", README))
    named = {word for phrase in used for word in phrase.split()}
    assert {"serve", "test", "lint", "train", "eval", "export", "bench", "bundle"} <= named
    assert named <= targets, f"README names make targets that do not exist: {sorted(named - targets)}"


def test_curl_examples_upload_files_that_exist_next_to_a_clone() -> None:
    uploads = re.findall(r"-F \w+=@(\S+)", README)
    assert len(uploads) >= 3, "the curl examples upload real images"
    assert all(path.startswith("../shared/data/") for path in uploads), uploads
    if not (REPO.parent / "shared" / "data").is_dir():
        pytest.skip("no ../shared/data next to this clone")
    missing = [path for path in uploads if not (REPO / path).is_file()]
    assert not missing, f"curl examples upload files that do not exist: {missing}"


def test_configuration_table_lists_every_service_setting() -> None:
    listed = _table_first_column(_section("Configuration"))
    settings = {f"PRD_{name.upper()}" for name in Settings.model_fields}
    assert listed == settings, f"missing {sorted(settings - listed)}, unknown {sorted(listed - settings)}"


def test_metrics_table_lists_every_contract_metric() -> None:
    assert _table_first_column(_section("Metrics")) == set(contract_metrics())


def test_pinned_answers_are_the_ones_the_shipped_bundle_test_pins() -> None:
    from tests.service.test_shipped_bundle import PINNED

    cells = r"^\| `([^`]+)` \| (\w+) \((\d+)\) \| ([\d.]+) \| ([\d.]+) \| (\w+) \| ([\d.]+) \|$"
    rows = re.findall(cells, _section("Pinned answers"), re.M)
    quoted = {name: (float(score), float(threshold), verdict == "anomalous", category, int(tiles), float(false_alarm))
              for name, category, tiles, score, threshold, verdict, false_alarm in rows}  # fmt: skip
    assert quoted.keys() == PINNED.keys()
    for name, (score, threshold, anomalous, category, tiles, false_alarm) in PINNED.items():
        close = [pytest.approx(value, abs=5e-4) for value in (score, threshold)]
        assert quoted[name] == (*close, anomalous, category, tiles, pytest.approx(false_alarm, abs=5e-4)), name


def test_measured_figures_are_one_table_each_row_naming_the_command_that_measured_it() -> None:
    section = _section("Measured figures")
    tables = re.findall(r"(?:^\|.*\|\n)+", section, flags=re.M)
    assert len(tables) == 1, "one table of current figures; history lives in docs/changelog.md"
    rows = tables[0].splitlines()[2:]
    commands = dict(re.findall(r"^- \(([a-z])\) (.+?)(?=^- \(|\n\n|\Z)", section, flags=re.M | re.S))
    used = set()
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        if re.search(r"\d", "".join(cells[1:-1])):
            keys = re.findall(r"\(([a-z])\)", cells[-1])
            assert keys and set(keys) <= set(commands), f"figures without a command: {row}"
            used.update(keys)
    assert used == set(commands), f"commands listed but no figure uses them: {sorted(set(commands) - used)}"
    for key, text in commands.items():
        named = re.findall(r"`((?:time )?(?:python3? |make )[^`]+)`", text)
        assert named, f"({key}) names no command"
        for command in named:
            command = command.removeprefix("time ")
            assert command.startswith("make ") or _command_target_exists(command), f"({key}): {command}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda path: str(path.relative_to(REPO)))
def test_every_relative_link_resolves(doc: Path) -> None:
    links = re.findall(r"\]\(([^)\s]+)\)", doc.read_text())
    local = [link.split("#")[0] for link in links if not re.match(r"[a-z]+:|#", link)]
    missing = [link for link in local if not (doc.parent / link).exists()]
    assert not missing, f"{doc.relative_to(REPO)} links to files that do not exist: {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda path: str(path.relative_to(REPO)))
def test_every_probe_a_doc_runs_exists(doc: Path) -> None:
    scripts = set(re.findall(r"python3? (docs/research/\w+\.py)", doc.read_text()))
    assert not [script for script in scripts if not (REPO / script).is_file()]
    assert "python -m training.research" not in doc.read_text(), "the probes run as scripts from docs/research/"
