"""The alerting sensors on a real failed run: a bad landing day fails raw_flights' contract.

The sensors are evaluated the way the daemon does (``build_run_status_sensor_context``) on a
test instance; Alertmanager is stood in for by nothing (unreachable) or by a local capture of
its API.
The real ones are in ``e2e/test_alerting.py``.  # [template:only with_observability]
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import dagster as dg
import pytest

from mlops_assets.defs import alerting
from mlops_assets.defs.jobs import ALERT_DELIVERY_TAG
from mlops_assets.processes import HOST, free_port
from mlops_assets.resources.alertmanager import DELIVERED, UNDELIVERED, Alertmanager
from mlops_assets_tests.alerting import (
    ASSETS,
    DAY,
    BadDay,
    bad_day,
    failure_context,
    run_day,
    success_context,
)

UI = "http://127.0.0.1:3000"


@pytest.fixture(scope="module")
def day(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BadDay]:
    with bad_day(tmp_path_factory.mktemp("alerting")) as built:
        yield built


@pytest.fixture
def captured() -> Iterator[tuple[str, list[list[dict[str, Any]]]]]:
    """A capture of Alertmanager's API on 127.0.0.1: its URL and every posted list."""
    posts: list[list[dict[str, Any]]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            posts.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((HOST, 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://{HOST}:{server.server_address[1]}", posts
    finally:
        server.shutdown()
        server.server_close()


def test_a_failed_contract_gives_a_run_alert_and_a_check_alert(day: BadDay) -> None:
    run = day.failed.dagster_run
    alerts = alerting.failure_alerts(
        day.instance,
        run,
        day.failed.get_run_failure_event(),
        day.failed.get_step_failure_events(),
        UI,
    )
    assert [dict(a.labels) for a in alerts] == [
        {
            "alertname": "DagsterRunFailed",
            "severity": "warning",
            "job": run.job_name,
            "day": DAY,
            "assets": "raw_flights",
        },
        {
            "alertname": "DagsterBlockingCheckFailed",
            "severity": "warning",
            "asset": "raw_flights",
            "check": "contract",
            "day": DAY,
        },
    ]
    run_alert, check_alert = alerts
    assert "Failed steps: raw_flights (Failure)." in run_alert.annotations["description"]
    assert "carrier: known_carrier" in check_alert.annotations["description"]
    assert run_alert.generator_url == f"{UI}/runs/{run.run_id}"
    # Names and rules, never the values: the step's own message quotes the bad carrier.
    for alert in alerts:
        assert "Q9" not in json.dumps(alert.payload())


def test_an_unreachable_alertmanager_is_logged_and_recorded_not_raised(day: BadDay) -> None:
    run = day.failed.dagster_run
    undelivered = dg.RunsFilter(tags={ALERT_DELIVERY_TAG: UNDELIVERED})
    before = day.instance.get_runs_count(undelivered)
    nowhere = Alertmanager(url=f"http://{HOST}:{free_port()}", timeout_seconds=1, attempts=2)

    alerting.run_failure_alerts(failure_context(day.instance, day.failed, nowhere))

    # Counted: the run carries the outcome, so the UI and the instance can count them.
    assert day.instance.get_runs_count(undelivered) == before + 1
    assert day.instance.get_run_by_id(run.run_id).tags[ALERT_DELIVERY_TAG] == UNDELIVERED  # type: ignore[union-attr]
    # Visible on the run itself.
    messages = [entry.message for entry in day.instance.all_logs(run.run_id)]
    [note] = [m for m in messages if m.startswith("Alerts not delivered to Alertmanager")]
    assert "DagsterRunFailed, DagsterBlockingCheckFailed" in note and "unreachable" in note


def test_the_daemon_path_moves_the_cursor_past_an_undelivered_alert(day: BadDay) -> None:
    # Evaluated as the daemon does: the first tick only places the cursor after the runs so far.
    nowhere = Alertmanager(url=f"http://{HOST}:{free_port()}", timeout_seconds=1, attempts=1)

    def tick(cursor: str | None) -> Any:
        context = dg.build_sensor_context(
            instance=day.instance, cursor=cursor, resources={"alertmanager": nowhere}
        )
        return alerting.run_failure_alerts.evaluate_tick(context)

    first = tick(None)
    assert first.dagster_run_reactions == [] and first.cursor
    again = run_day(day.instance, day.resources)  # the same bad file, delivered again
    assert not again.success

    second = tick(first.cursor)
    [reaction] = second.dagster_run_reactions
    # Delivered or not, Dagster moves the cursor on (it does not repeat a sensor's side
    # effects); the sensor did not fail, and the run says its alerts were not delivered.
    assert reaction.dagster_run.run_id == again.dagster_run.run_id and reaction.error is None
    assert second.cursor != first.cursor
    run = day.instance.get_run_by_id(again.dagster_run.run_id)
    assert run is not None and run.tags[ALERT_DELIVERY_TAG] == UNDELIVERED
    assert tick(second.cursor).dagster_run_reactions == []


def test_without_an_address_nothing_is_posted_or_recorded(
    day: BadDay, captured: tuple[str, list[Any]]
) -> None:
    _, posts = captured
    before = day.instance.get_run_by_id(day.failed.dagster_run.run_id).tags  # type: ignore[union-attr]
    alerting.run_failure_alerts(failure_context(day.instance, day.failed, Alertmanager()))
    after = day.instance.get_run_by_id(day.failed.dagster_run.run_id).tags  # type: ignore[union-attr]
    assert posts == [] and before == after


def test_the_sensor_posts_and_a_later_success_resolves(
    day: BadDay, captured: tuple[str, list[list[dict[str, Any]]]]
) -> None:
    url, posts = captured
    manager = Alertmanager(url=url, ui_url=UI)
    # A success with no delivered failure before it resolves nothing.
    reference = dg.materialize([ASSETS[0]], instance=day.instance, resources=day.resources)
    alerting.run_success_alerts(success_context(day.instance, reference, manager))
    assert posts == []

    alerting.run_failure_alerts(failure_context(day.instance, day.failed, manager))
    [fired] = posts
    run = day.instance.get_run_by_id(day.failed.dagster_run.run_id)
    assert run is not None and run.tags[ALERT_DELIVERY_TAG] == DELIVERED
    assert [a["labels"]["alertname"] for a in fired] == [
        "DagsterRunFailed",
        "DagsterBlockingCheckFailed",
    ]

    fixed = day.fix()
    alerting.run_success_alerts(success_context(day.instance, fixed, manager))
    [_, resolved] = posts
    assert sorted(json.dumps(a["labels"], sort_keys=True) for a in resolved) == sorted(
        json.dumps(a["labels"], sort_keys=True) for a in fired
    )
    for alert in resolved:
        assert alert["endsAt"] < fired[0]["endsAt"]  # ended now, not after ALERT_TTL
        assert alert["annotations"]["resolved_by_run_id"] == fixed.dagster_run.run_id


def test_the_sensors_are_in_the_code_location_and_running() -> None:
    from mlops_assets.definitions import SENSORS

    for sensor in alerting.SENSORS:
        assert sensor in SENSORS
        assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
        assert sensor.required_resource_keys == {"alertmanager"}


def test_the_helpers_read_partition_ranges() -> None:
    run = dg.DagsterRun(
        job_name="training",
        run_id="r",
        tags={
            "dagster/asset_partition_range_start": "2013-01-01",
            "dagster/asset_partition_range_end": "2013-01-28",
        },
    )
    assert alerting.run_partition(run) == "2013-01-01...2013-01-28"
