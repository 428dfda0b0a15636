"""What the ops tests share: repository paths, the service command, the metric contract, PromQL sources and helpers.

The PromQL helpers read the queries straight from the dashboard JSON and the rule files, so the tests check what
Grafana and Prometheus will run, not a copy.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
PROMETHEUS_DIR = DOCKER / "prometheus"
RULE_FILES = sorted((PROMETHEUS_DIR / "rules").glob("*.yml"))
RULE_TEST_FILES = sorted((PROMETHEUS_DIR / "tests").glob("*.yml"))
DASHBOARD = DOCKER / "grafana" / "dashboards" / "prd-inspect.json"
COMPOSE_FILE = REPO / "docker-compose.yml"
CONTRACT = REPO / "model_store" / "CONTRACT.md"
MODEL_REPOSITORY = "model_store/repository"
"""The bundles: a Triton model repository, relative to REPO; images mount it, they never carry it."""
HEALTHCHECK_SCRIPT = DOCKER / "healthcheck.py"

SERVICE_COMMAND = ("python", "-m", "service")
"""How the service starts: the images' CMD, `make serve` and the end-to-end tests all run exactly this."""
TRAINING_COMMAND = ("python", "-m", "training")
SCRAPE_JOB = "prd-scorer"
DATASOURCE_UID = "prd-prometheus"

TEMPLATE_VALUES = {"__rate_interval": "5m", "__interval": "15s", "category": ".*"}
"""Values the end-to-end test gives Grafana's variables (`$category` = All, i.e. Grafana's allValue)."""

HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def locked_versions(lock: Path) -> dict[str, str]:
    """``{package: version}`` of a lock file (requirements/*.txt, written by `make lock`), names normalised."""
    pins = re.findall(r"^([A-Za-z0-9][\w.-]*)==([^\s;\\]+)", lock.read_text(), flags=re.MULTILINE)
    return {re.sub(r"[-_.]+", "-", name).lower(): version for name, version in pins}


def require_binary(name: str, install: str = "Debian: apt-get install prometheus; .ci/run installs it") -> str:
    """Path of ``name``; skip with the reason when absent locally, but fail under CI, where `.ci/run` installs it."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed ({install})"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI must run this check")
        pytest.skip(message)
    return path


def run(command: list[str], timeout: float = 60, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run a command to completion with a bound, capturing text output."""
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False, **kwargs)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def contract_metrics() -> dict[str, str]:
    """Metric name → type, from the table in model_store/CONTRACT.md."""
    metrics: dict[str, str] = {}
    for line in CONTRACT.read_text().splitlines():
        match = re.match(r"^\|\s*`(prd_[a-z0-9_]+)`\s*\|\s*([^|]+)\|", line)
        if match:
            metrics[match.group(1)] = match.group(2).strip()
    return metrics


@dataclass(frozen=True)
class Query:
    """One PromQL expression and where it comes from."""

    source: str
    expr: str
    kind: str  # "panel", "record" or "alert"
    name: str = ""


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    for panel in board.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def dashboard_queries() -> list[Query]:
    queries = []
    for panel in panels(dashboard()):
        for target in panel.get("targets", []):
            source = f"panel '{panel['title']}' target {target.get('refId', '?')}"
            queries.append(Query(source=source, expr=target.get("expr", ""), kind="panel"))
    return queries


def rules() -> list[dict[str, Any]]:
    """Every rule of every rule file, each with its file name under ``_file``."""
    found = []
    for path in RULE_FILES:
        for group in load_yaml(path)["groups"]:
            for rule in group["rules"]:
                found.append({**rule, "_file": path.name})
    return found


def rule_queries() -> list[Query]:
    queries = []
    for rule in rules():
        kind = "alert" if "alert" in rule else "record"
        name = rule.get("alert") or rule["record"]
        queries.append(Query(source=f"{rule['_file']} {kind} {name}", expr=rule["expr"], kind=kind, name=name))
    return queries


def substitute_variables(expr: str) -> str:
    """Replace Grafana variables (`$x`, `${x}`, `${x:fmt}`) with TEMPLATE_VALUES; an unknown one is an error."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in TEMPLATE_VALUES:
            raise KeyError(f"dashboard variable ${name} has no test value in TEMPLATE_VALUES")
        return TEMPLATE_VALUES[name]

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", value, expr)


_COMPARISON = re.compile(r"(==|!=|>=|<=|>|<)(?!\s*bool\b)")


def with_bool_comparisons(expr: str) -> str:
    """Turn every filtering comparison into its ``bool`` form (``x > 1`` → ``x > bool 1``).

    An alert expression returns nothing while the alert is quiet; its ``bool`` form returns 0 or 1 for the same
    series, so a healthy system shows whether the expression's metrics, labels and matching really exist. Label
    matchers (inside braces) and string literals are left alone.
    """
    out: list[str] = []
    depth, index, quote = 0, 0, ""
    while index < len(expr):
        char = expr[index]
        if quote:
            out.append(char)
            if char == "\\" and index + 1 < len(expr):
                out.append(expr[index + 1])
                index += 1
            elif char == quote:
                quote = ""
            index += 1
            continue
        if char in "\"'`":
            quote = char
        elif char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
        elif depth == 0:
            match = _COMPARISON.match(expr, index)
            if match:
                out.append(f"{match.group(1)} bool")
                index = match.end()
                continue
        out.append(char)
        index += 1
    return "".join(out)


def metric_names(expr: str) -> set[str]:
    """Names of ``prd_*`` metrics and ``prd:*`` recording rules an expression reads (string literals ignored)."""
    without_strings = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'', '""', expr)
    return set(re.findall(r"\bprd[_:][A-Za-z0-9_:]*", without_strings))


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs of a Dockerfile, continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, arguments = line.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
    return instructions


def exec_form(arguments: str) -> list[str]:
    """The JSON array of an exec-form CMD/ENTRYPOINT/HEALTHCHECK CMD; a shell form is a test failure."""
    parsed = json.loads(arguments)
    assert isinstance(parsed, list) and all(isinstance(part, str) for part in parsed), arguments
    return parsed


def dockerignore_patterns() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go filepath.Match plus ``**``) as a regex over slash-separated relative paths.

    As in Docker's matcher, ``**/`` stands for zero or more folders, so ``**/*.onnx`` also matches ``model.onnx``.
    """
    parts = []
    index = 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            parts.append("(.*/)?")
            index += 3
        elif pattern.startswith("**", index):
            parts.append(".*")
            index += 2
        elif pattern[index] == "*":
            parts.append("[^/]*")
            index += 1
        elif pattern[index] == "?":
            parts.append("[^/]")
            index += 1
        else:
            parts.append(re.escape(pattern[index]))
            index += 1
    return re.compile("".join(parts) + "(/.*)?$")


def dockerignored(relative: str) -> bool:
    """Whether the build context excludes ``relative`` (last matching pattern wins, ``!`` re-includes)."""
    excluded = False
    for pattern in dockerignore_patterns():
        negate = pattern.startswith("!")
        cleaned = pattern.lstrip("!").strip("/")
        if _pattern_regex(cleaned).match(relative.strip("/")):
            excluded = not negate
    return excluded
