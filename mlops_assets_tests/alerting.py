"""Real failed and fixed runs for the alerting sensors: a bad landing day through raw_flights.

The reference tables and one day are replayed into a throwaway state folder; the day's
flights file is then broken (an unknown carrier), so ``raw_flights`` fails its blocking
``contract`` check and the run fails, as a bad delivery would. ``fix`` replays the good file
and runs the day again.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pytest

from mlops_assets import settings
from mlops_assets.defs import alerting, ingestion
from mlops_assets.lib.replay import replay
from mlops_assets.resources import build_resources
from mlops_assets.resources.alertmanager import Alertmanager
from mlops_assets_tests.deliveries import land_day

DAY = "2013-01-01"
ASSETS = [ingestion.airlines, ingestion.airports, ingestion.raw_flights]


@dataclass
class BadDay:
    """A state folder and instance with a reference run and a failed run of ``DAY``."""

    state: Path
    instance: dg.DagsterInstance
    resources: dict[str, Any]
    failed: dg.ExecuteInProcessResult

    @property
    def landing(self) -> Path:
        return settings.locations({settings.STATE_DIR_VAR: str(self.state)}).landing

    def fix(self) -> dg.ExecuteInProcessResult:
        """Replays the good file and runs the day again; returns the successful run."""
        replay(self.landing, date.fromisoformat(DAY), 1, include_reference=False)
        result = run_day(self.instance, self.resources)
        assert result.success
        return result


def run_day(instance: dg.DagsterInstance, resources: dict[str, Any]) -> dg.ExecuteInProcessResult:
    """``raw_flights`` of ``DAY`` (a failed run does not raise)."""
    return dg.materialize(
        ASSETS,
        selection=[ingestion.raw_flights],
        partition_key=DAY,
        instance=instance,
        resources=resources,
        raise_on_error=False,
    )


def break_flights(flights: pd.DataFrame) -> None:
    """Every flight of the day flown by a carrier that does not exist."""
    flights["carrier"] = "Q9"


@contextmanager
def bad_day(root: Path) -> Iterator[BadDay]:
    """A failed run of ``raw_flights`` on ``DAY`` in a test instance under ``root``."""
    state = root / "state"
    env = {settings.STATE_DIR_VAR: str(state)}
    with pytest.MonkeyPatch.context() as patch, dg.instance_for_test() as instance:
        patch.setenv(settings.STATE_DIR_VAR, str(state))
        landing = settings.locations(env).landing
        land_day(landing, date.fromisoformat(DAY), break_flights, include_reference=True)
        resources = build_resources(env)
        assert dg.materialize(ASSETS[:2], instance=instance, resources=resources).success
        failed = run_day(instance, resources)
        assert not failed.success
        yield BadDay(state, instance, resources, failed)


def failure_context(
    instance: dg.DagsterInstance, result: dg.ExecuteInProcessResult, alertmanager: Alertmanager
) -> dg.RunFailureSensorContext:
    """The context the daemon gives ``run_failure_alerts`` for the run of ``result``."""
    return dg.build_run_status_sensor_context(
        sensor_name=alerting.FAILURE_SENSOR,
        dagster_event=result.get_run_failure_event(),
        dagster_instance=instance,
        dagster_run=result.dagster_run,
        resources={"alertmanager": alertmanager},
        partition_key=result.dagster_run.tags.get("dagster/partition"),
    ).for_run_failure()


def success_context(
    instance: dg.DagsterInstance, result: dg.ExecuteInProcessResult, alertmanager: Alertmanager
) -> dg.RunStatusSensorContext:
    """The context the daemon gives ``run_success_alerts`` for the run of ``result``."""
    return dg.build_run_status_sensor_context(
        sensor_name=alerting.SUCCESS_SENSOR,
        dagster_event=result.get_run_success_event(),
        dagster_instance=instance,
        dagster_run=result.dagster_run,
        resources={"alertmanager": alertmanager},
    )
