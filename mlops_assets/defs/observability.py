"""The metrics sensor: what the Dagster instance knows about the model, pushed to Prometheus.

The day's drift, performance and contract verdicts are pushed by the assets that compute
them. What needs history is pushed from here, because the instance holds it: the champion's
drift streak and rolling ROC AUC over the retraining policy's window, the gate's decisions
and the trial state, and the retraining runs' outcomes (totals of 0 before the first). Each
part is pushed when it changed (its newest event in the cursor); a push that missed the
gateway is tried again next tick.
"""

import json
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import dagster as dg

from mlops_assets.defs.jobs import AS_OF_TAG, CHAMPION_TAG, RETRAIN_TRIGGER, TRIGGER_TAG
from mlops_assets.defs.retraining import monitored_days, retrain_policy
from mlops_assets.defs.training import CHAMPION_KEY, TRIAL_KEY
from mlops_assets.lib import pipeline_metrics as pm
from mlops_assets.lib.retraining import model_health
from mlops_assets.resources.metrics_gateway import PUSH_KEY, MetricsGateway

METRICS_SENSOR = "pipeline_metrics_sensor"
METRICS_INTERVAL = 30  # seconds between evaluations
GATE_RECORDS = 1000  # gate events counted into the totals
FINISHED = {
    dg.DagsterRunStatus.SUCCESS: "success",
    dg.DagsterRunStatus.FAILURE: "failure",
    dg.DagsterRunStatus.CANCELED: "canceled",
}

# A part's state: a marker that changes when it does, and its samples.
State = tuple[str, list[pm.Sample]]


def _metadata(event: Any) -> dict[str, Any]:
    return {key: value.value for key, value in event.metadata.items()} if event else {}


def health_state(instance: dg.DagsterInstance) -> State:
    """The champion's drift streak and rolling ROC AUC up to its latest monitored day."""
    policy = retrain_policy()
    days, newest = monitored_days(instance, policy.lookback_records())
    health = model_health(days, policy)
    if health is None:
        return "", []
    return str(newest), pm.day_samples(health.day.isoformat(), health.model_version, health=health)


def gate_state(instance: dg.DagsterInstance) -> State:
    """The gate's newest decision, its totals, the champion and the newest trial."""
    promoted = instance.fetch_materializations(CHAMPION_KEY, limit=GATE_RECORDS).records
    rejected = instance.fetch_observations(CHAMPION_KEY, limit=GATE_RECORDS).records
    decisions = [
        (r.storage_id, r.timestamp, _metadata(r.asset_materialization or r.asset_observation))
        for r in [*promoted, *rejected]
    ]
    decisions = [d for d in decisions if d[2].get("decision")]
    if not decisions:
        return "", []
    newest, at, meta = max(decisions, key=lambda d: d[0])
    trials = instance.fetch_materializations(TRIAL_KEY, limit=1).records
    trial = _metadata(trials[0].asset_materialization) if trials else {}
    samples = pm.gate_samples(
        str(meta["decision"]),
        str(meta.get("challenger_version") or meta.get("model_version")),
        datetime.fromtimestamp(at, UTC),
        champion=str(promoted[0].asset_materialization.metadata["model_version"].value)
        if promoted and promoted[0].asset_materialization
        else None,
        totals=Counter(str(d[2]["decision"]) for d in decisions),
        trial=_trial_labels(trial),
    )
    marker = max(newest, trials[0].storage_id if trials else 0)
    return str(marker), samples


def _trial_labels(trial: dict[str, Any]) -> dict[str, str] | None:
    if trial.get("status") in (None, "none"):
        return None
    return {
        "model_version": str(trial.get("model_version", "")),
        "champion_version": str(trial.get("champion_version", "")),
        "mode": str(trial.get("mode", "")),
        "status": str(trial["status"]),
    }


def retraining_state(instance: dg.DagsterInstance) -> State:
    """The runs by status and, once one finished, the newest run (failed or not, when).

    Before any retraining finished the totals are still pushed, all 0: "no retraining yet"
    is a value a dashboard can show, where an absent series is indistinguishable from a
    pipeline that never pushed.
    """
    retraining = {TRIGGER_TAG: RETRAIN_TRIGGER}
    totals = {
        name: instance.get_runs_count(dg.RunsFilter(tags=retraining, statuses=[status]))
        for status, name in FINISHED.items()
    }
    finished = dg.RunsFilter(tags=retraining, statuses=list(FINISHED))
    runs = instance.get_runs(filters=finished, limit=1)
    if not runs:
        return f":{json.dumps(totals, sort_keys=True)}", pm.retraining_totals(totals)
    run = runs[0]
    record = instance.get_run_record_by_id(run.run_id)
    ended = record.end_time if record and record.end_time else datetime.now(UTC).timestamp()
    samples = pm.retraining_samples(
        run.tags.get(AS_OF_TAG, ""),
        run.tags.get(CHAMPION_TAG, ""),
        failed=run.status == dg.DagsterRunStatus.FAILURE,
        finished_at=datetime.fromtimestamp(ended, UTC),
    )
    return f"{run.run_id}:{json.dumps(totals, sort_keys=True)}", [
        *samples,
        *pm.retraining_totals(totals),
    ]


PARTS: dict[str, Callable[[dg.DagsterInstance], State]] = {
    "model_health": health_state,
    "model_gate": gate_state,
    "retraining": retraining_state,
}


@dg.sensor(
    name=METRICS_SENSOR,
    minimum_interval_seconds=METRICS_INTERVAL,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Pushes the champion's drift streak and rolling ROC AUC, the gate's decisions "
    "and trial state, and the retraining runs' outcomes to the Pushgateway "
    "(MLOPS_PUSHGATEWAY_URL; without it the sensor skips).",
)
def pipeline_metrics_sensor(
    context: dg.SensorEvaluationContext, metrics: MetricsGateway
) -> dg.SkipReason:
    """Pushes every part whose newest event changed since the last push that arrived."""
    if not metrics.url:
        return dg.SkipReason(f"{pm.GATEWAY_VAR} is not set: nothing to push")
    cursor = json.loads(context.cursor) if context.cursor else {}
    done = []
    for source, state in PARTS.items():
        marker, samples = state(context.instance)
        if not samples or cursor.get(source) == marker:
            continue
        outcome = metrics.publish(source, samples, context.log)
        if outcome.get(PUSH_KEY, "").startswith("pushed"):
            cursor[source] = marker
        done.append(f"{source}: {outcome.get(PUSH_KEY)}")
    context.update_cursor(json.dumps(cursor, sort_keys=True))
    return dg.SkipReason("; ".join(done) or "nothing changed since the last push")
