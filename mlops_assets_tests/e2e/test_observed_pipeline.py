"""The whole chain, observed: a served champion and the pipeline, scraped, alerting, received.

One stack for the module (``mlops_assets.observe`` with test timings): Prometheus scrapes a
real ``bentoml serve`` of the champion and the Pushgateway the pipeline pushes to (the state
is opened with ``MLOPS_PUSHGATEWAY_URL`` set, as an operator would), and Alertmanager sends
to a webhook receiver on 127.0.0.1.

- Valid and invalid traffic reaches the service; a day with shuffled labels (the champion no
  better than chance) and a day whose flights break the contract land through the real
  sensors and automation.
- Prometheus then holds the service's request series (2xx and 4xx) and the pipeline's
  series, ``ModelAucDrop`` arrives at the receiver naming the degraded day and the model
  version, and ``ContractFailures`` arrives naming the blocked day and its dataset.
- Every panel query of the Grafana dashboards returns a number from this Prometheus, except
  the panels listed in ``NO_DATA_HERE`` with the reason (no trial, no retraining run here),
  which must be exactly the empty ones.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pytest

from mlops_assets import observe, settings
from mlops_assets.defs.observability import METRICS_SENSOR
from mlops_assets.defs.retraining import POLICY_VAR
from mlops_assets.lib import pipeline_metrics as pm
from mlops_assets.observe import Receiver, Stack
from mlops_assets.processes import HOST, free_port, wait_for
from mlops_assets_tests.deploy.dashboards import PanelQuery, panel_queries
from mlops_assets_tests.deployed import (
    PREDICT_DAY,
    Deployment,
    day_requests,
    deployed_copy,
    shuffle_labels,
)
from mlops_assets_tests.e2e.observability import observed_stack, wait_for_alerts
from mlops_assets_tests.e2e.servers import BentoServer, Servers

pytestmark = pytest.mark.e2e

DEGRADED_DAY = PREDICT_DAY + timedelta(days=1)
BLOCKED_DAY = PREDICT_DAY + timedelta(days=2)
ALERT_TIMEOUT = 60.0
VALID_REQUESTS = 20
INVALID_REQUESTS = 5
# The retraining policy's window, shortened to the two monitored days of this scenario so
# the rolling ROC AUC exists (with the default 7 it is absent until a week is monitored).
# Retraining still waits for min_new_days (7) after the training window: none starts here.
ROLLING_WINDOW_DAYS = 2
# What Grafana's $__rate_interval becomes. One minute holds 60 scrapes (every second here),
# far more than a rate's two, and outlasts PANEL_TIMEOUT after the requests the panel test
# sends, so the service's rates, quantiles and 5xx ratio are of real traffic for the whole
# wait, never 0/0 (NaN) of an idle window, whatever the order the module's tests ran in.
PANEL_WINDOW = "1m"
PANEL_TIMEOUT = 30.0
PANEL_REQUESTS = 5
# Panels that cannot have data in this scenario, and why. The test asserts that these and
# only these are empty: one that gets data must leave this list.
NO_DATA_HERE = {
    ("mlops-model-health", "Trial"): "no challenger is ever on live trial here",
    ("mlops-model-health", "Newest retraining run failed"): (
        "no retraining runs here (min_new_days): there is no newest run; "
        "'Retraining runs by status' shows the totals, 0"
    ),
    ("mlops-model-health", "Since the newest retraining run ended"): (
        "no retraining runs here (min_new_days): there is no newest run"
    ),
}


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with observe.receiving() as running:
        yield running


@pytest.fixture(scope="module")
def service_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, receiver: Receiver, service_port: int
) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("observability")
    with observed_stack(root, receiver.url, [f"{HOST}:{service_port}"]) as running:
        yield running


@pytest.fixture(scope="module")
def deployment(
    tmp_path_factory: pytest.TempPathFactory, stack: Stack, deployed_state: Path
) -> Iterator[Deployment]:
    """A champion, its bento and a predicted day, opened with the Pushgateway configured: the
    days that land from here on push, as after an operator set ``MLOPS_PUSHGATEWAY_URL``."""
    state = tmp_path_factory.mktemp("observed") / "state"
    gateway = {pm.GATEWAY_VAR: stack.pushgateway.url}
    with (
        pytest.MonkeyPatch.context() as mp,
        deployed_copy(deployed_state, state, gateway) as copy,
    ):
        mp.setenv(POLICY_VAR, json.dumps({"window_days": ROLLING_WINDOW_DAYS}))
        yield copy


@pytest.fixture(scope="module")
def server(deployment: Deployment, servers: Servers, service_port: int) -> BentoServer:
    tag = str(deployment.metadata("bento")["bento_tag"])
    return servers.bentoml(tag, deployment.bentoml_home, port=service_port)


def break_the_contract(flights: pd.DataFrame) -> None:
    """Three flights of an airline nobody knows: the day's flights break their contract."""
    flights.loc[flights.index[:3], "carrier"] = "ZZ"


@pytest.fixture(scope="module")
def observed(deployment: Deployment, server: BentoServer) -> Deployment:
    """Traffic to the service, then a degraded and a blocked day through the real loop."""
    requests = day_requests(deployment)[:VALID_REQUESTS]
    for request in requests:
        assert server.post("/predict", request).status_code == 200
    for request in requests[:INVALID_REQUESTS]:
        assert server.post("/predict", {**request, "distance": "far"}).status_code == 400
    deployment.land_edited(DEGRADED_DAY, shuffle_labels)
    deployment.land_edited(BLOCKED_DAY, break_the_contract)
    deployment.loop.tick_sensor(METRICS_SENSOR)  # as the daemon ticks it
    return deployment


def arrived(receiver: Receiver, stack: Stack, name: str, **labels: str) -> dict[str, Any]:
    """The first firing ``name`` alert with ``labels`` at the receiver, waited for."""
    return wait_for_alerts(receiver, stack, name, **labels)[0]


def test_the_degraded_day_arrives_as_an_auc_drop_naming_day_and_model(
    observed: Deployment, receiver: Receiver, stack: Stack
) -> None:
    performance = observed.metadata("model_performance", DEGRADED_DAY.isoformat())
    assert performance["metrics_push"].startswith("pushed"), performance
    assert performance["validation_roc_auc"] - performance["roc_auc"] > 0.1, performance
    alert = arrived(receiver, stack, "ModelAucDrop", model_version="1")
    assert alert["labels"]["day"] == DEGRADED_DAY.isoformat()
    # Days of the training window are not pushed: no alert about them.
    assert {a["labels"]["day"] for a in receiver.alerts(name="ModelAucDrop")} == {
        DEGRADED_DAY.isoformat()
    }
    assert alert["labels"][pm.GROUP_LABEL] == "model_performance"
    assert f"ROC AUC on {DEGRADED_DAY.isoformat()}" in alert["annotations"]["summary"]


def test_the_blocked_day_arrives_as_a_contract_failure(
    observed: Deployment, receiver: Receiver, stack: Stack
) -> None:
    alert = arrived(receiver, stack, "ContractFailures", dataset="flights")
    assert alert["labels"]["day"] == BLOCKED_DAY.isoformat()
    assert alert["labels"]["dataset"] == "flights"
    assert alert["labels"][pm.GROUP_LABEL] == "raw_flights"
    # The blocked day stored nothing and ran nothing downstream, as without the stack.
    assert observed.count("raw_flights") == observed.count("flight_features")
    lake = settings.locations({settings.STATE_DIR_VAR: str(observed.state)}).lake
    assert not (lake / "raw_flights" / f"{BLOCKED_DAY.isoformat()}.parquet").exists()


def test_prometheus_holds_the_service_and_pipeline_series(
    observed: Deployment, stack: Stack
) -> None:
    def requests_by_status() -> dict[str, float]:
        selector = f'bentoml_service_request_total{{job="{observe.SERVICE_JOB}"}}'
        result = stack.query(f"sum by (http_response_code) ({selector})")
        return {r["metric"].get("http_response_code", ""): float(r["value"][1]) for r in result}

    statuses = wait_for(
        lambda: (found := requests_by_status()).get("400") and found,
        ALERT_TIMEOUT,
        0.5,
        what="the service's request series",
        diagnose=stack.report,
    )
    assert statuses["200"] >= VALID_REQUESTS and statuses["400"] == INVALID_REQUESTS
    assert stack.up() == {observe.SERVICE_JOB: 1.0, "pushgateway": 1.0, "prometheus": 1.0}
    for metric in (pm.ROC_AUC, pm.DRIFT_SHARE, pm.CONTRACT_FAILURES, pm.LANDING_ARRIVAL):
        assert stack.query(metric.name), f"{metric.name} is not in Prometheus"
    # What needs history is pushed by the metrics sensor the loop runs, like the daemon.
    for metric in (pm.DRIFT_STREAK_DAYS, pm.CHAMPION, pm.GATE_DECISIONS):
        assert stack.query(metric.name), f"{metric.name} is not in Prometheus ({METRICS_SENSOR})"
    (champion,) = stack.query(pm.CHAMPION.name)
    assert champion["metric"]["model_version"] == "1"


def test_a_pushgateway_that_is_gone_fails_no_run(
    observed: Deployment, tmp_path: Path, stack: Stack
) -> None:
    """Pushes to a port where nothing listens: the day is processed, the miss recorded."""
    closed = f"http://{HOST}:{free_port()}"
    resources = {**observed.resources, "metrics": _gateway(closed, tmp_path)}
    result = dg.materialize(
        list(observed.defs.assets or []),  # type: ignore[arg-type]
        selection=["model_performance"],
        partition_key=DEGRADED_DAY.isoformat(),
        instance=observed.instance,
        resources=resources,
    )
    assert result.success
    meta = observed.metadata("model_performance", DEGRADED_DAY.isoformat())
    assert meta["metrics_push"].startswith("missed:") and meta["metrics_push_misses"] == 1
    logged = [entry.user_message for entry in observed.instance.all_logs(result.run_id)]
    assert any("not pushed" in m and "the run goes on" in m for m in logged), logged
    # The next push that arrives carries the count.
    resources["metrics"] = _gateway(stack.pushgateway.url, tmp_path)
    again = dg.materialize(
        list(observed.defs.assets or []),  # type: ignore[arg-type]
        selection=["model_performance"],
        partition_key=DEGRADED_DAY.isoformat(),
        instance=observed.instance,
        resources=resources,
    )
    assert again.success
    query = f'{pm.PUSH_MISSES.name}{{asset="model_performance"}} == 1'
    wait_for(
        lambda: stack.query(query),
        ALERT_TIMEOUT,
        0.5,
        what="the miss count (1) in Prometheus",
        diagnose=lambda: str(stack.query(pm.PUSH_MISSES.name)),
    )


def _gateway(url: str, folder: Path) -> Any:
    from mlops_assets.resources.metrics_gateway import MetricsGateway

    return MetricsGateway(url=url, misses_file=str(folder / "push_misses.json"))


def has_number(result: list[dict[str, Any]]) -> bool:
    """True when an instant query's vector holds a sample that is a number (not NaN)."""
    return any(not math.isnan(float(item["value"][1])) for item in result)


def test_every_dashboard_panel_has_data(
    observed: Deployment, server: BentoServer, stack: Stack
) -> None:
    """Every panel query of every dashboard, against this Prometheus: a number, or listed."""
    for request in day_requests(observed)[:PANEL_REQUESTS]:
        assert server.post("/predict", request).status_code == 200
    queries = panel_queries(interval=PANEL_WINDOW)
    panels = {(q.dashboard, q.panel) for q in queries}
    titles = {q.dashboard: q.dashboard_title for q in queries}
    assert set(NO_DATA_HERE) <= panels, sorted(set(NO_DATA_HERE) - panels)

    def empty() -> list[PanelQuery]:
        return [q for q in queries if not has_number(stack.query(q.expr))]

    # Bounded: rates need two scrapes after the requests, a push needs one scrape.
    deadline = time.monotonic() + PANEL_TIMEOUT
    missing = empty()
    while {(q.dashboard, q.panel) for q in missing} != set(NO_DATA_HERE):
        if time.monotonic() > deadline:
            break
        time.sleep(1.0)
        missing = empty()
    without = [q for q in missing if (q.dashboard, q.panel) not in NO_DATA_HERE]
    now_with = sorted(set(NO_DATA_HERE) - {(q.dashboard, q.panel) for q in missing})
    problems = [
        f"{q.dashboard_title} / {q.panel} (refId {q.ref_id}): no data for {q.expr}" for q in without
    ] + [
        f"{titles[uid]} / {panel}: has data now, take it off NO_DATA_HERE"
        for uid, panel in now_with
    ]
    assert not problems, (
        f"{len(problems)} problem(s) in {len(panels)} panels after {PANEL_TIMEOUT:.0f} s "
        f"(targets up: {stack.up()}):\n" + "\n".join(problems)
    )
