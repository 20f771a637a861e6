"""The retraining sensor: it waits for days in flight, and reads back as far as its policy."""

from __future__ import annotations

import json
import uuid
from datetime import date, timedelta

import dagster as dg
import pytest

from mlops_assets.defs.jobs import CONDITION_TAG, REASON_TAG
from mlops_assets.defs.retraining import (
    POLICY_VAR,
    RETRAIN_SENSOR,
    days_in_flight,
    retrain_requests,
)


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


def report_day(instance: dg.DagsterInstance, day: date, *, drifted: bool) -> None:
    """One monitored day as the report assets record it (champion v1, trained in January)."""
    key = day.isoformat()
    performance = {
        "model_version": "1",
        "status": "ok",
        "usable": True,
        "roc_auc": 0.70,
        "validation_roc_auc": 0.70,
        "window_end": "2013-01-28",
    }
    drift = {"model_version": "1", "drifted": drifted, "drift_share": 0.5 if drifted else 0.0}
    for asset, metadata in (("model_performance", performance), ("drift_report", drift)):
        instance.report_runless_asset_event(
            dg.AssetMaterialization(asset, partition=key, metadata=metadata)
        )


def test_a_drift_streak_longer_than_sixty_days_is_seen_and_fires(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 90 drifted days with a 90-day streak policy: the sensor must read back far enough.
    monkeypatch.setenv(POLICY_VAR, json.dumps({"drift_days": 90, "cooldown_days": 0}))
    first = date(2013, 2, 5)
    with dg.instance_for_test() as instance:
        for offset in range(90):
            report_day(instance, first + timedelta(days=offset), drifted=True)
        context = dg.build_sensor_context(instance=instance, sensor_name=RETRAIN_SENSOR)
        requests = [r for r in retrain_requests(context) if isinstance(r, dg.RunRequest)]
    assert len(requests) == 1, requests
    assert requests[0].tags[CONDITION_TAG] == "drift"
    assert "90 consecutive drifted day(s)" in requests[0].tags[REASON_TAG]
