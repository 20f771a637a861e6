"""The Grafana dashboards (deploy/observability/dashboards), checked without Grafana.

Grafana cannot be installed here, and a dashboard is only as good as its queries: every
panel's PromQL, with Grafana's variables substituted (``dashboards.panel_queries``), is
parsed by the real ``promtool`` and run by it against series shaped like the real ones (the
pipeline's pushes built with ``lib.pipeline_metrics``, BentoML's request metrics), through
the repository's recording rules. A query that does not parse, reads a metric nobody
exports, or returns nothing fails, naming its dashboard and panel; so does a metric of
``lib.pipeline_metrics`` that no panel shows (directly or through a recording rule). The
rest is the JSON's shape: unique uids and titles, the datasource variable, a layout without
overlaps.
Without ``promtool`` those tests skip with the install command (fail when ``CI=true``).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import re
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlops_assets.lib import pipeline_metrics
from mlops_assets_tests.deploy.dashboards import (
    DASHBOARDS,
    DashboardError,
    PanelQuery,
    load_dashboards,
    metric_names,
    panel_queries,
    panels,
    promtool_problems,
    rule_name,
    variable_query_metrics,
)
from mlops_assets_tests.deploy.tools import require

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "observability" / "rules"
RULE_FILES = sorted(p for p in RULES.glob("*.yml") if not p.name.endswith("_test.yml"))
FILES = {"serving.json", "model_health.json", "data_quality.json"}
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
GRID_WIDTH = 24
# Series Prometheus and the Pushgateway make themselves.
BUILT_IN = {
    "up": "Prometheus: every scrape target",
    "push_time_seconds": "Pushgateway: every pushed group",
    "push_failure_time_seconds": "Pushgateway: every pushed group",
}


# -- where metric names come from ---------------------------------------------------------


def bentoml_metrics() -> dict[str, str]:
    """The request metrics the installed BentoML's service server exports, by exposed name.

    A ``@bentoml.service`` is served by ``_bentoml_impl/server/app.py``, which adds one of the
    traffic middlewares of ``http/instruments.py`` (in 1.4, the "runner" one, with the API
    server's namespace): its metrics are read from that class, so an upgrade that renames or
    drops one fails here.
    """
    spec = importlib.util.find_spec("bentoml")
    assert spec and spec.origin
    package = Path(spec.origin).parent
    defaults = (package / "_internal/configuration/v2/default_configuration.yaml").read_text()
    namespace = re.search(r"^\s+namespace: (\w+)$", defaults, re.MULTILINE)
    assert namespace, "BentoML's default metrics namespace moved"
    server = (package.parent / "_bentoml_impl" / "server" / "app.py").read_text()
    middleware = re.search(r"Middleware\(\s*(\w+TrafficMetricsMiddleware),", server)
    assert middleware, "the service server adds no traffic metrics middleware"
    source = (package / "_internal/server/http/instruments.py").read_text()
    section = source[source.index(f"class {middleware.group(1)}") :]
    section = section.split("\nclass ", 1)[0]
    found = re.findall(
        r"metrics_client\.(Histogram|Counter|Gauge|Summary)\(\s*namespace=[^,]+,\s*name=\"(\w+)\"",
        section,
    )
    assert found, f"{middleware.group(1)} defines no metrics"
    suffixes = {"Histogram": ("_bucket", "_sum", "_count"), "Summary": ("_sum", "_count")}
    names = {}
    for kind, name in found:
        for suffix in suffixes.get(kind, ("",)):
            where = f"BentoML {kind.lower()} ({middleware.group(1)}, http/instruments.py)"
            names[f"{namespace.group(1)}_{name}{suffix}"] = where
    return names


def recording_rules() -> dict[str, str]:
    return {
        rule["record"]: f"recording rule in rules/{path.name}"
        for path in RULE_FILES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "record" in rule
    }


def recording_rule_inputs() -> dict[str, set[str]]:
    """The metrics each recording rule reads, other recording rules resolved to theirs."""
    direct = {
        rule["record"]: metric_names(rule["expr"])
        for path in RULE_FILES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "record" in rule
    }

    def resolve(name: str, seen: frozenset[str]) -> set[str]:
        found = set()
        for read in direct[name]:
            found |= resolve(read, seen | {name}) if read in direct and read not in seen else {read}
        return found

    return {name: resolve(name, frozenset()) for name in direct}


def shown_metrics(queries: list[PanelQuery]) -> set[str]:
    """The metrics the panels show, directly or through a recording rule."""
    inputs = recording_rule_inputs()
    shown = set()
    for query in queries:
        for name in metric_names(query.expr):
            shown |= {name} | inputs.get(name, set())
    return shown


def unshown_pipeline_metrics(queries: list[PanelQuery]) -> list[str]:
    shown = shown_metrics(queries)
    return [m.name for m in pipeline_metrics.METRICS if m.name not in shown]


def metric_sources() -> dict[str, str]:
    """Every metric name a dashboard may read, and where it comes from."""
    sources = dict(BUILT_IN)
    sources |= bentoml_metrics()
    sources |= recording_rules()
    sources |= {m.name: "lib/pipeline_metrics.py" for m in pipeline_metrics.METRICS}
    return sources


def unknown_metrics(queries: list[PanelQuery]) -> list[str]:
    sources = metric_sources()
    return [
        f"{query.where}: {name}"
        for query in queries
        for name in sorted(metric_names(query.expr))
        if name not in sources
    ]


# -- series shaped like the real ones, and promtool running the queries on them ------------

SERVICE = {
    "job": "mlops-assets-service",
    "instance": "127.0.0.1:3001",
    "service_name": "flight_delay_service",
    "service_version": "v1",
    "runner_name": "flight_delay_service",
}
MINUTES = 20


def series(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
    pairs = ", ".join(f'{key}="{value}"' for key, value in labels.items())
    return {"series": f"{name}{{{pairs}}}", "values": values}


def pushed(
    asset: str, samples: list[pipeline_metrics.Sample], misses: int = 0
) -> list[dict[str, str]]:
    """A source's push as Prometheus scrapes it from the gateway (honor_labels).

    Every push carries the source's miss count, as ``MetricsGateway.publish`` sends it.
    """
    group = {"job": pipeline_metrics.JOB, pipeline_metrics.GROUP_LABEL: asset}
    counted = [*samples, pipeline_metrics.misses_sample(misses)]
    scraped = [
        series(s.metric.name, {**group, **s.labels}, f"{s.value}x{MINUTES}") for s in counted
    ]
    return [*scraped, series("push_time_seconds", group, f"60x{MINUTES}")]


def realistic_series() -> list[dict[str, str]]:
    day, version = "2013-08-05", "2"
    requests = {**SERVICE, "endpoint": "/predict"}
    service = [
        series("up", {"job": SERVICE["job"], "instance": SERVICE["instance"]}, f"1x{MINUTES}"),
        series("up", {"job": "pushgateway", "instance": "127.0.0.1:9091"}, f"1x{MINUTES}"),
        series(
            "bentoml_service_request_total",
            {**requests, "http_response_code": "200"},
            f"0+60x{MINUTES}",
        ),
        # BentoML starts every route's 200 and 500 counters at 0.
        series(
            "bentoml_service_request_total",
            {**requests, "http_response_code": "500"},
            f"0x{MINUTES}",
        ),
        series(
            "bentoml_service_request_total",
            {**requests, "endpoint": "/readyz", "http_response_code": "200"},
            f"0+6x{MINUTES}",
        ),
        series("bentoml_service_request_in_progress", requests, f"0x{MINUTES}"),
        series(
            "bentoml_service_last_request_timestamp_seconds",
            SERVICE,
            f"0+60x{MINUTES}",
        ),
        *(
            series(
                "bentoml_service_request_duration_seconds_bucket",
                {**requests, "http_response_code": "200", "le": le},
                f"0+{count}x{MINUTES}",
            )
            for le, count in (("0.005", 50), ("0.01", 59), ("0.025", 60), ("+Inf", 60))
        ),
    ]
    performance = {"usable": True, "labelled_rows": 912, "roc_auc": 0.6, "validation_roc_auc": 0.71}
    drift = {"drift_share": 0.2, "drifted": False}
    now = datetime(2013, 8, 6, tzinfo=UTC)
    labels = {"day": day, "model_version": version}
    # The metrics sensor's parts (defs/observability.py), built directly: the sources and
    # label sets it pushes, independent of how it derives the values.
    health = [
        pipeline_metrics.Sample(pipeline_metrics.DRIFT_STREAK_DAYS, 3, labels),
        pipeline_metrics.Sample(pipeline_metrics.ROLLING_ROC_AUC, 0.66, labels),
        pipeline_metrics.Sample(pipeline_metrics.ROLLING_AUC_DROP, 0.05, labels),
    ]
    trial = {"model_version": "3", "champion_version": version, "mode": "shadow"}
    gate = pipeline_metrics.gate_samples(
        "trial",
        "3",
        now,
        champion=version,
        totals={"promoted": 2, "rejected": 1, "trial": 1},
        trial={**trial, "status": "running"},
    )
    retraining = [
        *pipeline_metrics.retraining_samples(day, version, failed=False, finished_at=now),
        *pipeline_metrics.retraining_totals({"success": 1, "failure": 0, "canceled": 0}),
    ]
    pipeline = [
        *pushed(
            "model_performance",
            pipeline_metrics.day_samples(day, version, performance=performance),
            misses=1,
        ),
        *pushed("drift_report", pipeline_metrics.day_samples(day, version, drift=drift)),
        *pushed("raw_flights", pipeline_metrics.contract_samples("raw_flights", day, 0)),
        *pushed("raw_weather", pipeline_metrics.contract_samples("raw_weather", day, 2)),
        *pushed("landing", pipeline_metrics.landing_samples(day, now)),
        *pushed("model_health", health),
        *pushed("model_gate", gate),
        *pushed("retraining", retraining),
    ]
    return service + pipeline


def no_data_problems(queries: list[PanelQuery], folder: Path, promtool: str) -> list[str]:
    """Queries that return nothing on ``realistic_series`` (promtool test rules)."""
    for path in RULE_FILES:
        shutil.copy(path, folder / path.name)
    # One alert per query that fires when the query has no result; the test expects none.
    alerts = [
        {"alert": rule_name(i), "expr": f"absent({query.expr})"} for i, query in enumerate(queries)
    ]
    (folder / "queries.yml").write_text(
        yaml.safe_dump({"groups": [{"name": "dashboards", "rules": alerts}]})
    )
    unit_test = {
        "rule_files": [*(p.name for p in RULE_FILES), "queries.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": realistic_series(),
                "alert_rule_test": [
                    {"eval_time": f"{MINUTES - 5}m", "alertname": alert["alert"], "exp_alerts": []}
                    for alert in alerts
                ],
            }
        ],
    }
    (folder / "queries_test.yml").write_text(yaml.safe_dump(unit_test))
    done = subprocess.run(
        [promtool, "test", "rules", "queries_test.yml"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if done.returncode == 0:
        return []
    text = done.stdout + done.stderr
    failed = set(re.findall(r"alertname: (dashboard_query_\d+)", text))
    by_name = {rule_name(i): query for i, query in enumerate(queries)}
    return [f"{by_name[n].where}: no data for {by_name[n].expr}" for n in sorted(failed)] or [text]


@pytest.fixture(scope="module")
def boards() -> dict[str, dict[str, Any]]:
    return load_dashboards()


@pytest.fixture(scope="module")
def queries() -> list[PanelQuery]:
    return panel_queries(interval="1m")


# -- the JSON -------------------------------------------------------------------------------


def test_every_dashboard_is_valid_json_with_a_unique_uid_and_title(
    boards: dict[str, dict[str, Any]],
) -> None:
    assert set(boards) == FILES
    uids = [board["uid"] for board in boards.values()]
    titles = [board["title"] for board in boards.values()]
    assert len(set(uids)) == len(uids) and len(set(titles)) == len(titles)
    for board in boards.values():
        # Grafana's limit for a uid is 40 characters; links and provisioning rely on it.
        assert re.fullmatch(r"[a-z0-9-]{1,40}", board["uid"]), board["uid"]
        assert board["title"].startswith("mlops_assets / ")
        assert 36 <= board["schemaVersion"] <= 41
        assert "id" not in board or board["id"] is None, "a fixed id clashes on import"


def test_invalid_json_is_reported_with_its_file(tmp_path: Path) -> None:
    (tmp_path / "broken.json").write_text('{"uid": "x",')
    with pytest.raises(DashboardError, match=r"broken\.json: invalid JSON"):
        panel_queries(tmp_path)


def test_dashboards_import_anywhere(boards: dict[str, dict[str, Any]]) -> None:
    """Every panel and target reads the `datasource` variable: no uid of one Grafana."""
    for file, board in boards.items():
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource", file
        assert variables["datasource"]["query"] == "prometheus", file
        assert "__inputs" not in board, file
        for panel in panels(board):
            assert panel["datasource"] == DATASOURCE, f"{file}: {panel['title']}"
            for target in panel["targets"]:
                assert target["datasource"] == DATASOURCE, f"{file}: {panel['title']}"
        for name, variable in variables.items():
            if variable["type"] == "query":
                assert variable["datasource"] == DATASOURCE, f"{file}: {name}"
                # "All" must be a regex that matches, for the =~ matchers of the panels.
                assert variable["includeAll"] and variable["allValue"] == ".*", f"{file}: {name}"


def test_every_panel_has_a_titled_query(boards: dict[str, dict[str, Any]]) -> None:
    for file, board in boards.items():
        titles = [panel["title"] for panel in panels(board)]
        assert len(titles) == len(set(titles)), f"{file}: two panels share a title"
        for panel in panels(board):
            assert panel["title"] and panel.get("description"), f"{file}: {panel}"
            assert panel["targets"], f"{file}: {panel['title']} has no target"
            ref_ids = [target["refId"] for target in panel["targets"]]
            assert len(ref_ids) == len(set(ref_ids)), f"{file}: {panel['title']}"
            for target in panel["targets"]:
                assert target["expr"].strip(), f"{file}: {panel['title']} {target['refId']}"


def test_a_panel_without_targets_is_reported(tmp_path: Path) -> None:
    board = json.loads((DASHBOARDS / "serving.json").read_text())
    panel = panels(board)[0]
    panel["targets"] = []
    (tmp_path / "serving.json").write_text(json.dumps(board))
    with pytest.raises(DashboardError, match=rf"'mlops-serving' panel '{panel['title']}': no"):
        panel_queries(tmp_path)


def test_panels_fit_the_grid_without_overlapping(boards: dict[str, dict[str, Any]]) -> None:
    for file, board in boards.items():
        taken: dict[tuple[int, int], str] = {}
        ids = [panel["id"] for panel in board["panels"]]
        assert len(ids) == len(set(ids)), file
        for panel in board["panels"]:
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= GRID_WIDTH and grid["w"] > 0 and grid["h"] > 0
            for x in range(grid["x"], grid["x"] + grid["w"]):
                for y in range(grid["y"], grid["y"] + grid["h"]):
                    assert (x, y) not in taken, f"{file}: {panel['title']} over {taken[(x, y)]}"
                    taken[(x, y)] = panel["title"]


# -- substitution -------------------------------------------------------------------------


def test_queries_are_plain_promql(queries: list[PanelQuery]) -> None:
    assert len(queries) >= 25
    assert {q.dashboard for q in queries} == {
        "mlops-serving",
        "mlops-model-health",
        "mlops-data-quality",
    }
    for query in queries:
        assert "$" not in query.expr and "[[" not in query.expr, query.where
    rated = [q for q in queries if "$__rate_interval" in q.raw]
    assert rated and all("[1m]" in q.expr for q in rated)


def test_substitution_takes_a_window_and_variable_values() -> None:
    [query] = [
        q
        for q in panel_queries(interval="5s", variables={"service_version": "v2"})
        if q.panel == "Request rate by endpoint and status"
    ]
    assert "[5s]" in query.expr
    assert 'service_version=~"v2"' in query.expr
    assert 'service_name=~".*"' in query.expr


def test_queries_of_chosen_dashboards(queries: list[PanelQuery]) -> None:
    serving = panel_queries(dashboards=["mlops-serving"])
    assert serving and {q.dashboard for q in serving} == {"mlops-serving"}
    assert serving == [q for q in queries if q.dashboard == "mlops-serving"]


def test_an_undeclared_variable_is_reported(tmp_path: Path) -> None:
    board = json.loads((DASHBOARDS / "model_health.json").read_text())
    panel = panels(board)[0]
    panel["targets"][0]["expr"] = 'mlops_day_roc_auc{day="$day"}'
    (tmp_path / "model_health.json").write_text(json.dumps(board))
    with pytest.raises(DashboardError, match=r"panel '.+' \(refId A\): variable \$day"):
        panel_queries(tmp_path)


# -- promtool -----------------------------------------------------------------------------


def test_every_panel_query_parses_with_promtool(queries: list[PanelQuery], tmp_path: Path) -> None:
    assert promtool_problems(queries, require("promtool"), tmp_path) == []


def test_a_broken_panel_query_fails_naming_its_dashboard_and_panel(tmp_path: Path) -> None:
    board = json.loads((DASHBOARDS / "data_quality.json").read_text())
    panel = next(p for p in panels(board) if p["title"] == "Contract failure cases by dataset")
    panel["targets"][0]["expr"] = 'max by (dataset) (mlops_contract_failures{dataset=~"$dataset"}'
    (tmp_path / "data_quality.json").write_text(json.dumps(board))

    problems = promtool_problems(panel_queries(tmp_path), require("promtool"), tmp_path)
    assert len(problems) == 1, problems
    assert problems[0].startswith(
        "dashboard 'mlops-data-quality' panel 'Contract failure cases by dataset' (refId A): "
        "could not parse expression"
    ), problems


def test_every_panel_query_returns_data_on_realistic_series(
    queries: list[PanelQuery], tmp_path: Path
) -> None:
    assert no_data_problems(queries, tmp_path, require("promtool")) == []


def test_a_query_that_matches_nothing_is_reported(
    queries: list[PanelQuery], tmp_path: Path
) -> None:
    # A label the metric does not have: parses, returns nothing.
    [auc] = [
        q for q in queries if q.panel == "Day ROC AUC vs validation ROC AUC" and q.ref_id == "A"
    ]
    wrong = dataclasses.replace(auc, expr='max by (model_version) (mlops_day_roc_auc{dataset="x"})')
    problems = no_data_problems([queries[0], wrong], tmp_path, require("promtool"))
    assert problems == [f"{auc.where}: no data for {wrong.expr}"]


# -- metric names -------------------------------------------------------------------------


def test_every_metric_comes_from_a_known_source(
    queries: list[PanelQuery], boards: dict[str, dict[str, Any]]
) -> None:
    sources = metric_sources()
    used = {name for query in queries for name in metric_names(query.expr)}
    for board in boards.values():
        used |= variable_query_metrics(board)
    assert unknown_metrics(queries) == []
    assert used <= set(sources), sorted(used - set(sources))
    origins = {sources[name].split(" (")[0] for name in used}
    # Each kind of source is used: the dashboards cover the service and the pipeline.
    assert {"lib/pipeline_metrics.py", "Prometheus: every scrape target"} <= origins
    assert any(origin.startswith("BentoML") for origin in origins)
    assert any(origin.startswith("recording rule") for origin in origins)


def test_every_pipeline_metric_is_on_a_dashboard(queries: list[PanelQuery]) -> None:
    """A metric the pipeline pushes and no panel shows is a number nobody looks at."""
    assert unshown_pipeline_metrics(queries) == []
    # Through a recording rule counts: the landing age panel reads the arrival timestamps.
    assert pipeline_metrics.LANDING_ARRIVAL.name not in {
        name for query in queries for name in metric_names(query.expr)
    }


def test_a_pipeline_metric_without_a_panel_is_reported(queries: list[PanelQuery]) -> None:
    without_trial = [q for q in queries if pipeline_metrics.TRIAL_RUNNING.name not in q.expr]
    assert len(without_trial) < len(queries)
    assert unshown_pipeline_metrics(without_trial) == [pipeline_metrics.TRIAL_RUNNING.name]


def test_an_unknown_metric_is_reported(queries: list[PanelQuery]) -> None:
    wrong = dataclasses.replace(queries[0], expr="sum(rate(bentoml_api_server_request_total[1m]))")
    assert unknown_metrics([wrong]) == [f"{wrong.where}: bentoml_api_server_request_total"]


def test_the_bentoml_metrics_are_read_from_the_installed_package() -> None:
    names = bentoml_metrics()
    assert {
        "bentoml_service_request_total",
        "bentoml_service_request_duration_seconds_bucket",
        "bentoml_service_request_in_progress",
        "bentoml_service_last_request_timestamp_seconds",
    } <= set(names)


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        (
            "histogram_quantile(0.99, sum by (le, service_name) "
            '(rate(a_bucket{endpoint=~"/p.*"}[1m])))',
            {"a_bucket"},
        ),
        ("(a - b) and on (day, model_version) (c == 1)", {"a", "b", "c"}),
        ('time() - max by (asset) (push_time_seconds{job="x"})', {"push_time_seconds"}),
        ("sum(mlops:rule:p99_5m > bool 0) or vector(0)", {"mlops:rule:p99_5m"}),
        ('count(up{job="by"} offset 5m) * 1e3', {"up"}),
    ],
)
def test_metric_names_of_an_expression(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names
