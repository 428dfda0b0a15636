"""README stays true: its commands exist, its tables list every setting and metric the code has."""

from __future__ import annotations

import re

from service.config import Settings
from tests.ops.support import REPO, contract_metrics

README = (REPO / "README.md").read_text()
MAKEFILE = (REPO / "Makefile").read_text()


def _section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", README, flags=re.M | re.S)
    assert match, f"README has no '## {title}' section"
    return match.group(1)


def _table_first_column(section: str) -> set[str]:
    return set(re.findall(r"^\| `([^`]+)` \|", section, flags=re.M))


def test_first_screen_says_what_it_is_then_the_two_commands() -> None:
    first_screen = "\n".join(README.splitlines()[:25])
    assert "anomal" in first_screen.lower()
    assert re.search(r"^make serve\b", first_screen, flags=re.M)
    assert re.search(r"^make test\b", first_screen, flags=re.M)
    assert "-H 'Accept: image/png'" in first_screen and "/score" in first_screen


def test_every_make_target_in_readme_exists() -> None:
    targets = set(re.findall(r"^([a-z][a-z-]*):", MAKEFILE, flags=re.M))
    used = set(re.findall(r"\bmake ((?:[a-z][a-z-]* ?)+)", README))
    named = {word for phrase in used for word in phrase.split()}
    assert {"serve", "test", "lint", "train", "eval", "export", "bench"} <= named
    assert named <= targets, f"README names make targets that do not exist: {sorted(named - targets)}"


def test_configuration_table_lists_every_service_setting() -> None:
    listed = _table_first_column(_section("Configuration"))
    settings = {f"PRD_{name.upper()}" for name in Settings.model_fields}
    assert listed == settings, f"missing {sorted(settings - listed)}, unknown {sorted(listed - settings)}"


def test_metrics_table_lists_every_contract_metric() -> None:
    assert _table_first_column(_section("Metrics")) == set(contract_metrics())


def test_measured_figures_section_claims_nothing_unmeasured_by_a_command() -> None:
    section = _section("Measured figures")
    # Figures come in groups, each opened by a bold title (its table, if any, follows); every group that holds a
    # number must name the command or script that produced it.
    groups = re.split(r"^(?=\*\*)", section, flags=re.M)[1:]
    assert groups, "no figure groups (paragraphs opened by a **bold title**)"
    for group in groups:
        if re.search(r"\d\.\d", group):
            assert re.search(r"`(make |python -m |python3? \S+\.py)|\.py`", group), (
                f"figures without a command: {group[:80]}"
            )
