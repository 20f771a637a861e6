"""Alerting: failed runs and failed blocking checks go to Alertmanager; successes resolve them.

Two run-status sensors of Dagster's own kind watch every job of the code location:

- ``run_failure_alerts`` posts ``DagsterRunFailed`` for a failed run and, for each blocking
  check the run saw fail (a contract on a bad landing day), ``DagsterBlockingCheckFailed``;
- ``run_success_alerts`` posts the same alerts resolved when a later run succeeds: the run
  alert for the same job, partition and assets, and the check alert of each check that now
  passed on the same partition.

Alertmanager routes them like Prometheus' alerts.
The routing is in ``deploy/observability/alertmanager.yml``.  # [template:only with_observability]
What became of a failed run's alerts is the run tag ``mlops/alert_delivery``: the UI filters
runs by it, and an undelivered post also leaves an engine event on the run. The payloads are
built by ``lib.alerts``; the helpers here only read the instance, so tests call them directly.
"""

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import dagster as dg

from mlops_assets.defs.jobs import ALERT_DELIVERY_TAG
from mlops_assets.lib.alerts import ALERT_TTL, Alert, check_failed, resolved, run_failed
from mlops_assets.resources.alertmanager import DELIVERED, UNDELIVERED, Alertmanager, Delivery

FAILURE_SENSOR = "run_failure_alerts"
SUCCESS_SENSOR = "run_success_alerts"
ALERT_INTERVAL = 30  # seconds between evaluations
PARTITION_TAG = "dagster/partition"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
# Failed runs a success looks back through (newest first, within ALERT_TTL).
RESOLVE_LOOKBACK = 50


def run_partition(run: dg.DagsterRun) -> str | None:
    """The run's partition key, ``first...last`` for a range, or ``None``."""
    tags = run.tags
    if tags.get(PARTITION_TAG):
        return tags[PARTITION_TAG]
    if tags.get(RANGE_START_TAG):
        return f"{tags[RANGE_START_TAG]}...{tags.get(RANGE_END_TAG, '')}"
    return None


def run_assets(instance: dg.DagsterInstance, run: dg.DagsterRun) -> list[str]:
    """The names of the assets the run was to materialize (empty for a job without assets).

    A run launched with an asset selection carries it; a job's whole-graph run does not, and
    its planned materializations say the same.
    """
    keys = run.asset_selection or instance.get_asset_keys_for_run(
        run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED
    )
    return sorted(key.to_user_string() for key in keys)


def check_evaluations(
    instance: dg.DagsterInstance, run_id: str
) -> list[tuple[dg.AssetCheckEvaluation, float]]:
    """Every asset check evaluation of the run, with its time."""
    records = instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
    ).records
    found = []
    for record in records:
        event = record.event_log_entry.dagster_event
        if event is not None:
            found.append((event.asset_check_evaluation_data, record.timestamp))
    return found


def failed_blocking_checks(
    instance: dg.DagsterInstance, run_id: str
) -> list[tuple[dg.AssetCheckEvaluation, float]]:
    """The run's failed evaluations of blocking checks (the ones that stop downstream)."""
    return [(e, t) for e, t in check_evaluations(instance, run_id) if e.blocking and not e.passed]


def _error_type(event: dg.DagsterEvent) -> str:
    data = event.step_failure_data
    error = data.error if data is not None else None
    if error is None:
        return "error"
    # A user-code error is wrapped by the framework: name the innermost cause.
    while error.cause is not None:
        error = error.cause
    return error.cls_name or "error"


def _ended_at(instance: dg.DagsterInstance, run: dg.DagsterRun) -> datetime:
    record = instance.get_run_record_by_id(run.run_id)
    ended = record.end_time if record is not None else None
    return datetime.fromtimestamp(ended, UTC) if ended else datetime.now(UTC)


def _run_alert(
    instance: dg.DagsterInstance, run: dg.DagsterRun, at: datetime, ui_url: str, **details: Any
) -> Alert:
    return run_failed(
        job=run.job_name,
        run_id=run.run_id,
        partition=run_partition(run),
        assets=run_assets(instance, run),
        failed_steps=details.get("failed_steps", {}),
        message=details.get("message", ""),
        at=at,
        ui_url=ui_url,
    )


def _check_alert(
    run: dg.DagsterRun, evaluation: dg.AssetCheckEvaluation, at: datetime, ui_url: str
) -> Alert:
    return check_failed(
        asset=evaluation.asset_key.to_user_string(),
        check=evaluation.check_name,
        partition=evaluation.partition or run_partition(run),
        job=run.job_name,
        run_id=run.run_id,
        description=evaluation.description or "",
        at=at,
        ui_url=ui_url,
    )


def failure_alerts(
    instance: dg.DagsterInstance,
    run: dg.DagsterRun,
    failure: dg.DagsterEvent | None,
    step_failures: Sequence[dg.DagsterEvent],
    ui_url: str = "",
) -> list[Alert]:
    """``DagsterRunFailed`` for the run, then ``DagsterBlockingCheckFailed`` per failed check.

    Args:
        instance: The Dagster instance.
        run: The failed run.
        failure: The run's failure event (its message is Dagster's sentence about the run).
        step_failures: The run's step failure events.
        ui_url: Base address of the Dagster UI, for links.
    """
    failed_steps = {e.step_key or "?": _error_type(e) for e in step_failures}
    alerts = [
        _run_alert(
            instance,
            run,
            _ended_at(instance, run),
            ui_url,
            failed_steps=failed_steps,
            message=(failure.message or "") if failure is not None else "",
        )
    ]
    for evaluation, timestamp in failed_blocking_checks(instance, run.run_id):
        alerts.append(_check_alert(run, evaluation, datetime.fromtimestamp(timestamp, UTC), ui_url))
    return alerts


def resolution_alerts(
    instance: dg.DagsterInstance, run: dg.DagsterRun, ui_url: str = ""
) -> list[Alert]:
    """The alerts a successful run resolves, each with ``endsAt`` at the run's end.

    Only failures whose alerts were delivered, within ``ALERT_TTL`` and ended before this run,
    are looked at: the run alert of a failure with the same job, partition and asset
    selection, and the check alert of each blocking check that failed there and passed here.
    """
    ended = _ended_at(instance, run)
    partition = run_partition(run)
    earlier = [
        record.dagster_run
        for record in instance.get_run_records(
            filters=dg.RunsFilter(
                statuses=[dg.DagsterRunStatus.FAILURE],
                tags={ALERT_DELIVERY_TAG: DELIVERED},
                created_after=ended - ALERT_TTL,
            ),
            limit=RESOLVE_LOOKBACK,
        )
        if record.dagster_run.run_id != run.run_id
        and record.end_time is not None
        and record.end_time <= ended.timestamp()
        and run_partition(record.dagster_run) == partition
    ]
    if not earlier:
        return []
    passed = {
        (e.asset_key, e.check_name)
        for e, _ in check_evaluations(instance, run.run_id)
        if e.passed and (e.partition or partition) == partition
    }
    assets = run_assets(instance, run)
    found: dict[tuple[tuple[str, str], ...], Alert] = {}
    for failed in earlier:
        if failed.job_name == run.job_name and run_assets(instance, failed) == assets:
            alert = _run_alert(instance, failed, ended, ui_url)
            found[tuple(sorted(alert.labels.items()))] = alert
        for evaluation, _ in failed_blocking_checks(instance, failed.run_id):
            if (evaluation.asset_key, evaluation.check_name) in passed:
                alert = _check_alert(failed, evaluation, ended, ui_url)
                found[tuple(sorted(alert.labels.items()))] = alert
    return [resolved(alert, ended, run.run_id, ui_url) for alert in found.values()]


def record_delivery(
    instance: dg.DagsterInstance, run: dg.DagsterRun, alerts: Sequence[Alert], delivery: Delivery
) -> None:
    """Tags the failed run with what became of its alerts; an undelivered post also logs there."""
    instance.add_run_tags(run.run_id, {ALERT_DELIVERY_TAG: delivery.status})
    if delivery.status == UNDELIVERED:
        names = ", ".join(alert.name for alert in alerts)
        instance.report_engine_event(
            f"Alerts not delivered to Alertmanager ({names}): {delivery.error}", dagster_run=run
        )


# Both sensors run by default, on the same interval.
RUNNING_EVERY: dict[str, Any] = {
    "minimum_interval_seconds": ALERT_INTERVAL,
    "default_status": dg.DefaultSensorStatus.RUNNING,
}


@dg.run_failure_sensor(
    name=FAILURE_SENSOR,
    **RUNNING_EVERY,
    description="Posts every failed run of this code location to Alertmanager "
    "(DagsterRunFailed), with DagsterBlockingCheckFailed for each failed blocking check.",
)
def run_failure_alerts(context: dg.RunFailureSensorContext, alertmanager: Alertmanager) -> None:
    """Alerts on a failed run; never raises on an unreachable Alertmanager."""
    if not alertmanager.enabled:
        context.log.info(f"no {FAILURE_SENSOR} alert: Alertmanager is not configured")
        return
    alerts = failure_alerts(
        context.instance,
        context.dagster_run,
        context.failure_event,
        context.get_step_failure_events(),
        alertmanager.ui_url,
    )
    delivery = alertmanager.send(alerts, context.log)
    record_delivery(context.instance, context.dagster_run, alerts, delivery)
    if delivery.status == DELIVERED:
        context.log.info(f"posted {', '.join(a.name for a in alerts)} to Alertmanager")


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    name=SUCCESS_SENSOR,
    **RUNNING_EVERY,
    description="Resolves the Alertmanager alerts of earlier failures that a successful run "
    "of the same job and partition (or a passed check) puts right.",
)
def run_success_alerts(context: dg.RunStatusSensorContext, alertmanager: Alertmanager) -> None:
    """Resolves what a successful run puts right; never raises on an unreachable Alertmanager."""
    if not alertmanager.enabled:
        return
    alerts = resolution_alerts(context.instance, context.dagster_run, alertmanager.ui_url)
    if alerts and alertmanager.send(alerts, context.log).status == DELIVERED:
        context.log.info(f"resolved {', '.join(a.name for a in alerts)} at Alertmanager")


SENSORS = [run_failure_alerts, run_success_alerts]
