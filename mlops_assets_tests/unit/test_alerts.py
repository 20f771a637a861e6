"""Alertmanager payloads and their post; the resource that sends them and never raises."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from mlops_assets.lib import alerts
from mlops_assets.processes import HOST, free_port
from mlops_assets.resources.alertmanager import (
    DELIVERED,
    OFF,
    UNDELIVERED,
    Alertmanager,
    alertmanager_from,
)

AT = datetime(2013, 1, 2, 6, 30, tzinfo=UTC)


@contextmanager
def api(status: int = 200) -> Iterator[tuple[str, list[tuple[str, Any]]]]:
    """A stand-in for Alertmanager's API on 127.0.0.1 answering ``status``: (url, requests)."""
    received: list[tuple[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            received.append((self.path, json.loads(body)))
            self.send_response(status)
            self.end_headers()
            self.wfile.write(b"bad alert" if status >= 400 else b"")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((HOST, 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{HOST}:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()


def a_run_failure(**changes: Any) -> alerts.Alert:
    fields: dict[str, Any] = {
        "job": "daily_data",
        "run_id": "r-1",
        "partition": "2013-01-02",
        "assets": ["raw_weather", "raw_flights"],
        "failed_steps": {"raw_flights": "Failure"},
        "message": "Execution of run for \"daily_data\" failed. Steps failed: ['raw_flights'].",
        "at": AT,
        "ui_url": "http://dagster.example.com/",
    }
    return alerts.run_failed(**{**fields, **changes})


def test_a_run_failure_is_labelled_by_job_day_and_assets() -> None:
    payload = a_run_failure().payload()
    assert payload["labels"] == {
        "alertname": "DagsterRunFailed",
        "severity": "warning",
        "job": "daily_data",
        "day": "2013-01-02",
        "assets": "raw_flights,raw_weather",
    }
    assert payload["annotations"]["summary"] == "Dagster run of daily_data for 2013-01-02 failed"
    assert "Failed steps: raw_flights (Failure)." in payload["annotations"]["description"]
    assert payload["generatorURL"] == "http://dagster.example.com/runs/r-1"
    # An event, not a state: it fires for ALERT_TTL unless a success resolves it earlier.
    assert payload["startsAt"] == "2013-01-02T06:30:00Z"
    assert payload["endsAt"] == "2013-01-03T06:30:00Z"


def test_partitions_assets_and_links_are_summarized() -> None:
    labels = a_run_failure(partition=None, assets=[], ui_url="").payload()
    assert "day" not in labels["labels"] and "assets" not in labels["labels"]
    assert "generatorURL" not in labels
    ranged = a_run_failure(partition="2013-01-01...2013-01-31").labels
    assert ranged["partition"] == "2013-01-01...2013-01-31" and "day" not in ranged
    many = a_run_failure(assets=[f"a{i}" for i in range(8)]).labels["assets"]
    assert many == "a0,a1,a2,a3,a4 +3 more"


def test_a_long_description_is_cut() -> None:
    alert = a_run_failure(message="x" * 5000)
    description = alert.annotations["description"]
    assert len(description) == alerts.DESCRIPTION_LIMIT and description.endswith("…")


def test_a_failed_check_is_labelled_by_asset_check_and_day_not_by_run() -> None:
    alert = alerts.check_failed(
        asset="raw_flights",
        check="contract",
        partition="2013-01-02",
        job="__ASSET_JOB",
        run_id="r-2",
        description="contract 'flights' failed: 1 rule(s) broken (carrier: known_carrier)",
        at=AT,
    )
    assert alert.labels == {
        "alertname": "DagsterBlockingCheckFailed",
        "severity": "warning",
        "asset": "raw_flights",
        "check": "contract",
        "day": "2013-01-02",
    }
    assert alert.annotations["run_id"] == "r-2" and alert.annotations["job"] == "__ASSET_JOB"
    assert "downstream is blocked" in alert.annotations["summary"]


def test_resolving_keeps_the_labels_and_ends_the_alert() -> None:
    firing = a_run_failure()
    later = AT + timedelta(hours=2)
    done = alerts.resolved(firing, later, run_id="r-9", ui_url="http://ui")
    assert done.labels == firing.labels
    assert done.payload()["endsAt"] == "2013-01-02T08:30:00Z"
    assert done.annotations["resolved_by_run_id"] == "r-9"
    assert done.generator_url == "http://ui/runs/r-9"


def test_post_sends_one_json_list_to_the_v2_api() -> None:
    with api() as (url, received):
        alerts.post(url + "/", [a_run_failure(), a_run_failure(job="training")])
    [(path, body)] = received
    assert path == "/api/v2/alerts"
    assert [item["labels"]["job"] for item in body] == ["daily_data", "training"]


def test_post_of_nothing_sends_nothing() -> None:
    with api() as (url, received):
        alerts.post(url, [])
    assert received == []


def test_a_refused_post_raises_delivery_error_with_the_answer() -> None:
    with api(status=400) as (url, _), pytest.raises(alerts.DeliveryError, match="400: bad alert"):
        alerts.post(url, [a_run_failure()])


def test_an_unreachable_alertmanager_raises_delivery_error_quickly() -> None:
    url = f"http://{HOST}:{free_port()}"
    started = time.monotonic()
    with pytest.raises(alerts.DeliveryError, match="unreachable"):
        alerts.post(url, [a_run_failure()], timeout=1)
    assert time.monotonic() - started < 2


class Log:
    def __init__(self) -> None:
        self.errors: list[str] = []

    def error(self, message: str) -> None:
        self.errors.append(message)


def test_the_resource_delivers_and_reports_it() -> None:
    with api() as (url, received):
        delivery = Alertmanager(url=url).send([a_run_failure()])
    assert delivery.status == DELIVERED and len(received) == 1


def test_the_resource_without_an_address_sends_nothing() -> None:
    assert not Alertmanager().enabled
    assert Alertmanager().send([a_run_failure()]).status == OFF


def test_the_resource_retries_then_logs_and_never_raises() -> None:
    log = Log()
    with api(status=500) as (url, received):
        delivery = Alertmanager(url=url, attempts=2).send([a_run_failure()], log)
    assert delivery.status == UNDELIVERED and "500" in delivery.error
    assert len(received) == 2  # retried once
    [message] = log.errors
    assert "DagsterRunFailed not delivered after 2 attempt(s)" in message


def test_the_resource_reads_its_variables() -> None:
    resource = alertmanager_from(
        {alerts.ALERTMANAGER_URL_VAR: " http://am:9093 ", alerts.DAGSTER_UI_URL_VAR: "http://ui"}
    )
    assert (resource.url, resource.ui_url) == ("http://am:9093", "http://ui")
    assert not alertmanager_from({}).enabled
