"""The retraining sensor waits for days still in flight (the daemon runs days concurrently)."""

from __future__ import annotations

import uuid
from datetime import date

import dagster as dg

from mlops_assets.defs.monitoring import days_in_flight


def add_run(instance: dg.DagsterInstance, status: dg.DagsterRunStatus, **tags: str) -> None:
    instance.add_run(
        dg.DagsterRun(job_name="__ASSET_JOB", run_id=str(uuid.uuid4()), status=status, tags=tags)
    )


def test_days_in_flight_up_to_the_latest_monitored_day() -> None:
    with dg.instance_for_test() as instance:
        assert days_in_flight(instance, date(2013, 1, 25)) == []
        add_run(instance, dg.DagsterRunStatus.STARTED, **{"dagster/partition": "2013-01-24"})
        add_run(instance, dg.DagsterRunStatus.NOT_STARTED, **{"dagster/partition": "2013-01-26"})
        add_run(instance, dg.DagsterRunStatus.SUCCESS, **{"dagster/partition": "2013-01-23"})
        add_run(
            instance,
            dg.DagsterRunStatus.STARTING,
            **{
                "dagster/asset_partition_range_start": "2013-01-20",
                "dagster/asset_partition_range_end": "2013-01-22",
            },
        )
        add_run(instance, dg.DagsterRunStatus.STARTED)  # a training run: no day
        assert days_in_flight(instance, date(2013, 1, 25)) == ["2013-01-20", "2013-01-24"]
        assert days_in_flight(instance, date(2013, 1, 21)) == ["2013-01-20"]
