"""The retraining sensor: reads monitoring metadata, applies the policy, requests training.

The loop closes here without a cycle in the graph: drift and performance reports are assets
downstream of the predictions; this sensor reads their metadata and requests the training
job, whose gate decides; a promotion then rebuilds the bento and the drift reference by
automation. The decision itself is the plain function ``lib.retraining.decide_retraining``.
"""

import os
from collections.abc import Iterator, Mapping
from datetime import date
from typing import Any

import dagster as dg

from mlops_assets.defs.jobs import (
    AS_OF_TAG,
    CHAMPION_TAG,
    CONDITION_TAG,
    REASON_TAG,
    RETRAIN_TRIGGER,
    TRAINING_ASSETS,
    TRAINING_JOB,
    TRIGGER_TAG,
)
from mlops_assets.defs.monitoring import drift_report, model_performance
from mlops_assets.lib.retraining import (
    DayStatus,
    RetrainPolicy,
    decide_retraining,
    policy_from_json,
)

# The skip reason of a tick that waits for days still being processed (the cursor stays).
IN_FLIGHT_SKIP = "waiting for day(s) still in flight"

RETRAIN_SENSOR = "retrain_sensor"
RETRAIN_INTERVAL = 30  # seconds between evaluations
POLICY_VAR = "MLOPS_RETRAIN_POLICY"
# Runs that may still write a monitored day.
IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def retrain_policy(env: Mapping[str, str] | None = None) -> RetrainPolicy:
    """The retraining policy in force.

    The defaults live in ``lib.retraining.RetrainPolicy``; ``MLOPS_RETRAIN_POLICY`` may
    override fields with a JSON object, e.g. ``{"max_auc_drop": 0.03, "cooldown_days": 21}``,
    read at each sensor evaluation (no code change or reload needed).

    Raises:
        ValueError: for a value that is not a JSON object of known fields and valid numbers.
    """
    return policy_from_json((os.environ if env is None else env).get(POLICY_VAR, ""), POLICY_VAR)


def _latest_by_partition(records: list[Any]) -> dict[str, dict[str, Any]]:
    """Metadata of the newest materialization of each partition (records newest first)."""
    latest: dict[str, dict[str, Any]] = {}
    for record in records:
        event = record.asset_materialization
        if event is None or not record.partition_key or record.partition_key in latest:
            continue
        latest[record.partition_key] = {k: v.value for k, v in event.metadata.items()}
    return latest


def _day_status(day: str, performance: dict[str, Any], drift: dict[str, Any]) -> DayStatus:
    version = str(performance["model_version"])
    window_end = performance.get("window_end")
    return DayStatus(
        day=date.fromisoformat(day),
        model_version=version,
        roc_auc=performance.get("roc_auc"),
        usable=bool(performance.get("usable")),
        validation_roc_auc=performance.get("validation_roc_auc"),
        window_end=date.fromisoformat(window_end) if window_end else None,
        # Only a report on the same champion counts; an empty day is not drift.
        drifted=drift.get("drifted") if str(drift.get("model_version")) == version else None,
        drift_share=drift.get("drift_share"),
    )


def monitored_days(instance: dg.DagsterInstance, records: int) -> tuple[list[DayStatus], int]:
    """The monitored days and the newest storage id seen.

    Args:
        instance: The Dagster instance.
        records: Newest materializations read per report asset (``policy.lookback_records``).
    """
    performance = instance.fetch_materializations(model_performance.key, limit=records).records
    drift = instance.fetch_materializations(drift_report.key, limit=records).records
    newest = max((r.storage_id for r in [*performance, *drift]), default=0)
    drift_by_day = _latest_by_partition(list(drift))
    days = [
        _day_status(day, meta, drift_by_day.get(day, {}))
        for day, meta in _latest_by_partition(list(performance)).items()
        if meta.get("model_version")
    ]
    return days, newest


def last_retraining(instance: dg.DagsterInstance) -> tuple[date | None, tuple[str, str] | None]:
    """The newest retraining run requested (any outcome).

    Returns:
        Its ``as_of`` day, and the champion version and condition that triggered it.
    """
    runs = instance.get_runs(filters=dg.RunsFilter(tags={TRIGGER_TAG: RETRAIN_TRIGGER}), limit=1)
    if not runs:
        return None, None
    tags = runs[0].tags
    as_of = tags.get(AS_OF_TAG)
    return (
        date.fromisoformat(as_of) if as_of else None,
        (tags.get(CHAMPION_TAG, ""), tags.get(CONDITION_TAG, "")),
    )


def days_in_flight(instance: dg.DagsterInstance, up_to: date) -> list[str]:
    """Days up to ``up_to`` that a queued or running run is still working on.

    Under the daemon, days run concurrently: the latest day can be reported while an earlier
    one is still being processed, and a training window read now would miss it.
    """
    runs = instance.get_runs(filters=dg.RunsFilter(statuses=IN_FLIGHT), limit=200)
    days = set()
    for run in runs:
        partition = run.tags.get("dagster/partition")
        start = run.tags.get("dagster/asset_partition_range_start")
        for key in (partition, start):
            if key and len(key) == 10 and key <= up_to.isoformat():
                days.add(key)
    return sorted(days)


def retrain_requests(context: dg.SensorEvaluationContext) -> Iterator[Any]:
    """One tick: read monitoring metadata, apply the policy, request training if it says so."""
    seen = int(context.cursor) if context.cursor else 0
    policy = retrain_policy()
    days, newest = monitored_days(context.instance, policy.lookback_records())
    if newest <= seen:
        yield dg.SkipReason("no new monitoring results since the last evaluation")
        return
    latest = max((d.day for d in days), default=None)
    busy = days_in_flight(context.instance, latest) if latest else []
    if busy:
        # The cursor stays: the next tick evaluates again once these days are done.
        yield dg.SkipReason(f"{IN_FLIGHT_SKIP}: {', '.join(busy)}")
        return
    last_day, last_trigger = last_retraining(context.instance)
    decision = decide_retraining(days, policy, last_retraining=last_day, last_trigger=last_trigger)
    context.update_cursor(str(newest))
    if not decision.retrain or decision.as_of is None:
        yield dg.SkipReason(decision.reason)
        return
    context.log.info(f"requesting retraining: {decision.reason}")
    window = {
        "as_of": decision.as_of.isoformat(),
        "days": policy.training_days,
        "validation_days": policy.validation_days,
    }
    yield dg.RunRequest(
        run_key=decision.run_key,
        # The whole training job, named explicitly: the run then records its selection, and
        # automation sees the gate already ran with the candidate (no second evaluation).
        asset_selection=TRAINING_ASSETS,
        run_config={"ops": {"training_set": {"config": window}}},
        tags={
            TRIGGER_TAG: RETRAIN_TRIGGER,
            REASON_TAG: decision.reason,
            CONDITION_TAG: str(decision.condition),
            AS_OF_TAG: decision.as_of.isoformat(),
            CHAMPION_TAG: str(decision.champion_version),
        },
    )


@dg.sensor(
    name=RETRAIN_SENSOR,
    job_name=TRAINING_JOB,
    minimum_interval_seconds=RETRAIN_INTERVAL,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Reads drift and performance metadata and requests the training job when the "
    "retraining policy says the champion has decayed (cursor: newest monitoring event).",
)
def retrain_sensor(context: dg.SensorEvaluationContext) -> Iterator[Any]:
    """Requests retraining on the recent window when the champion decays."""
    yield from retrain_requests(context)
