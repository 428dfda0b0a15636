"""Grafana dashboard, provisioning and Prometheus rules: structure, metric names (model_store/CONTRACT.md), promtool."""

from __future__ import annotations

from typing import Any

import pytest

from tests.ops.support import (
    DATASOURCE_UID,
    DOCKER,
    HISTOGRAM_SUFFIXES,
    PROMETHEUS_DIR,
    RULE_FILES,
    RULE_TEST_FILES,
    SCRAPE_JOB,
    contract_metrics,
    dashboard,
    dashboard_queries,
    load_yaml,
    metric_names,
    panels,
    require_binary,
    rule_queries,
    rules,
    run,
    substitute_variables,
    with_bool_comparisons,
)

REQUIRED_ALERTS = {
    "PRDScorerDown",
    "PRDScoreErrorRatioHigh",
    "PRDScoreLatencySLO",
    "PRDQueueSaturated",
    "PRDAnomalyRateSpike",
}


def _known_series_names() -> set[str]:
    """Every name a query may read: contract metrics (histograms with their series suffixes) and recording rules."""
    names = set()
    for name, kind in contract_metrics().items():
        names.add(name)
        if kind.startswith("histogram"):
            names.update(name + suffix for suffix in HISTOGRAM_SUFFIXES)
    names.update(rule["record"] for rule in rules() if "record" in rule)
    return names


def test_contract_table_is_readable() -> None:
    metrics = contract_metrics()
    assert len(metrics) >= 12
    assert metrics["prd_anomaly_score_normalized"].startswith("histogram")


def test_dashboard_json_has_uid_datasource_and_category_variable() -> None:
    board = dashboard()
    assert board["uid"] == "prd-inspect"
    variables = {variable["name"]: variable for variable in board["templating"]["list"]}
    category = variables["category"]
    assert category["datasource"]["uid"] == DATASOURCE_UID
    assert category["includeAll"] and category["allValue"] == ".*"
    assert "label_values(prd_images_scored_total, category)" in category["definition"]


def test_every_dashboard_panel_has_a_promql_target_on_the_provisioned_datasource() -> None:
    for panel in panels(dashboard()):
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == DATASOURCE_UID, panel["title"]
        assert panel["targets"], f"panel '{panel['title']}' has no query"
        for target in panel["targets"]:
            assert target["expr"].strip(), f"panel '{panel['title']}' has an empty query"
            assert target["datasource"]["uid"] == DATASOURCE_UID, panel["title"]


def test_dashboard_panels_do_not_overlap() -> None:
    taken: set[tuple[int, int]] = set()
    for panel in panels(dashboard()):
        grid = panel["gridPos"]
        columns, rows = range(grid["x"], grid["x"] + grid["w"]), range(grid["y"], grid["y"] + grid["h"])
        cells = {(x, y) for x in columns for y in rows}
        assert not cells & taken, f"panel '{panel['title']}' overlaps another"
        assert grid["x"] + grid["w"] <= 24
        taken |= cells


def test_dashboard_shows_every_contract_metric() -> None:
    read = set().union(*(metric_names(query.expr) for query in dashboard_queries()))
    read_bases = {name.removesuffix(suffix) for name in read for suffix in HISTOGRAM_SUFFIXES if name.endswith(suffix)}
    missing = set(contract_metrics()) - read - read_bases
    assert not missing, f"contract metrics with no panel: {sorted(missing)}"


def test_dashboard_has_a_heatmap_of_the_anomaly_score_histogram() -> None:
    heatmaps = [panel for panel in panels(dashboard()) if panel["type"] == "heatmap"]
    assert heatmaps
    target = heatmaps[0]["targets"][0]
    assert target["format"] == "heatmap"
    assert "prd_anomaly_score_normalized_bucket" in target["expr"] and "by (le)" in target["expr"]


@pytest.mark.parametrize("query", [*dashboard_queries(), *rule_queries()], ids=lambda query: query.source)
def test_queries_read_only_metrics_named_in_the_contract(query: Any) -> None:
    unknown = metric_names(query.expr) - _known_series_names()
    assert not unknown, f"{query.source} reads {sorted(unknown)}, not in model_store/CONTRACT.md nor a recording rule"
    substitute_variables(query.expr)  # every variable has a value the end-to-end test can use


def test_rules_cover_the_required_alerts_with_severity_and_summary() -> None:
    alerts = {rule["alert"]: rule for rule in rules() if "alert" in rule}
    assert REQUIRED_ALERTS <= set(alerts)
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
    assert f'job="{SCRAPE_JOB}"' in alerts["PRDScorerDown"]["expr"]
    assert "by (category)" in " ".join(rule["expr"] for rule in rules() if "anomaly_rate" in rule.get("record", ""))


def test_every_alert_has_unit_tests_where_it_fires_and_where_it_stays_silent() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for path in RULE_TEST_FILES:
        for case in load_yaml(path)["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    alerts = {rule["alert"] for rule in rules() if "alert" in rule}
    assert alerts <= firing, f"alerts never tested firing: {sorted(alerts - firing)}"
    assert alerts <= silent, f"alerts never tested silent: {sorted(alerts - silent)}"


def test_bool_rewrite_keeps_label_matchers_and_strings() -> None:
    expr = 'x{a!="b",c=~"d>e"} > 0.2 and y >= 3 * z and w == bool 1'
    assert with_bool_comparisons(expr) == 'x{a!="b",c=~"d>e"} > bool 0.2 and y >= bool 3 * z and w == bool 1'


def test_grafana_provisioning_points_at_the_compose_prometheus_by_uid() -> None:
    datasources = load_yaml(DOCKER / "grafana" / "provisioning" / "datasources" / "prometheus.yml")["datasources"]
    assert [source["uid"] for source in datasources] == [DATASOURCE_UID]
    assert datasources[0]["url"] == "http://prometheus:9090"
    scrape = load_yaml(PROMETHEUS_DIR / "prometheus.yml")
    assert f"{datasources[0]['jsonData']['timeInterval']}" == scrape["scrape_configs"][0]["scrape_interval"]


@pytest.mark.prometheus
def test_promtool_accepts_the_prometheus_config() -> None:
    promtool = require_binary("promtool")
    result = run([promtool, "check", "config", str(PROMETHEUS_DIR / "prometheus.yml")])
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(RULE_FILES)} rule files found" in result.stdout + result.stderr


@pytest.mark.prometheus
def test_promtool_accepts_the_rules() -> None:
    promtool = require_binary("promtool")
    result = run([promtool, "check", "rules", *map(str, RULE_FILES)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout + result.stderr


@pytest.mark.prometheus
def test_promtool_rule_unit_tests_pass() -> None:
    promtool = require_binary("promtool")
    assert RULE_TEST_FILES
    result = run([promtool, "test", "rules", *map(str, RULE_TEST_FILES)], timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAILED" not in result.stdout + result.stderr
