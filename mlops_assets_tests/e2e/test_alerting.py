"""Dagster-side failures travel: the alerting sensors post to a real Alertmanager.

A bad landing day fails ``raw_flights``' blocking contract in a test instance; the sensors are
evaluated as the daemon does (``build_run_status_sensor_context``) with the ``Alertmanager``
resource pointed at the real Alertmanager of ``observed_stack`` (test timings, receiver of
``mlops_assets.observe``). The alerts must arrive at the receiver through the repository's
routing, and resolve there once a fixed delivery runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlops_assets import observe
from mlops_assets.defs import alerting
from mlops_assets.observe import Receiver, Stack
from mlops_assets.processes import HOST, free_port, wait_for
from mlops_assets.resources.alertmanager import Alertmanager
from mlops_assets_tests.alerting import DAY, bad_day, failure_context, success_context
from mlops_assets_tests.e2e.observability import observed_stack

pytestmark = pytest.mark.e2e

ALERT_TIMEOUT = 30.0  # seconds for a notification to reach the receiver
UI = "http://127.0.0.1:3000"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with observe.receiving() as running:
        yield running


@pytest.fixture
def stack(tmp_path: Path, receiver: Receiver) -> Iterator[Stack]:
    with observed_stack(tmp_path / "stack", receiver.url, [f"{HOST}:{free_port()}"]) as running:
        yield running


def test_a_failed_contract_reaches_the_receiver_and_a_fixed_day_resolves_it(
    tmp_path: Path, stack: Stack, receiver: Receiver
) -> None:
    manager = Alertmanager(url=stack.alertmanager.url, ui_url=UI)

    def arrived(name: str, status: str) -> list[dict[str, Any]]:
        return receiver.alerts(status, name)

    with bad_day(tmp_path) as day:
        run = day.failed.dagster_run
        alerting.run_failure_alerts(failure_context(day.instance, day.failed, manager))

        (run_alert,) = wait_for(
            lambda: arrived("DagsterRunFailed", "firing"),
            ALERT_TIMEOUT,
            0.5,
            what="DagsterRunFailed at the receiver",
            diagnose=stack.report,
        )
        assert run_alert["labels"] == {
            "alertname": "DagsterRunFailed",
            "severity": "warning",
            "job": run.job_name,
            "day": DAY,
            "assets": "raw_flights",
        }
        assert run_alert["generatorURL"] == f"{UI}/runs/{run.run_id}"
        assert run_alert["annotations"]["summary"] == (
            f"Dagster run of {run.job_name} for {DAY} failed"
        )
        (check_alert,) = wait_for(
            lambda: arrived("DagsterBlockingCheckFailed", "firing"),
            ALERT_TIMEOUT,
            0.5,
            what="DagsterBlockingCheckFailed at the receiver",
            diagnose=stack.report,
        )
        assert check_alert["labels"] == {
            "alertname": "DagsterBlockingCheckFailed",
            "severity": "warning",
            "asset": "raw_flights",
            "check": "contract",
            "day": DAY,
        }
        assert check_alert["annotations"]["run_id"] == run.run_id

        # The good file is delivered again and the day runs: both alerts resolve.
        fixed = day.fix()
        alerting.run_success_alerts(success_context(day.instance, fixed, manager))
        for name, firing in (
            ("DagsterRunFailed", run_alert),
            ("DagsterBlockingCheckFailed", check_alert),
        ):
            (done,) = wait_for(
                lambda name=name: arrived(name, "resolved"),  # type: ignore[misc]
                ALERT_TIMEOUT,
                0.5,
                what=f"{name} resolved at the receiver",
                diagnose=stack.report,
            )
            assert done["labels"] == firing["labels"]
    # Nothing else came from Dagster.
    names = {a["labels"]["alertname"] for a in receiver.alerts()}
    assert names - {"ServiceDown"} == {"DagsterRunFailed", "DagsterBlockingCheckFailed"}
