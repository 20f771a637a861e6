"""Trials: the challenger on live trial scores each new day beside the champion.

The paired evidence decides, and the trial sensor ends the trial (promote or retire) through
the gate.
The decision rule is the plain function ``lib.trials.decide_trial``.
"""

from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

import dagster as dg

from mlops_assets.defs.jobs import (
    TRAINING_JOB,
    TRIAL_CONCLUSION_ASSETS,
    TRIAL_OUTCOME_TAG,
    TRIAL_REASON_TAG,
    TRIAL_TRIGGER,
    TRIGGER_TAG,
)
from mlops_assets.defs.partitions import daily_asset, follow_upstream
from mlops_assets.defs.training import (
    TRIAL_EVALUATION_KEY,
    TRIAL_KEY,
    TRIALS_GROUP,
    model_gate,
)
from mlops_assets.lib import estimator
from mlops_assets.resources.lake import LakeReader
from mlops_assets.resources.prediction_log import PredictionLog
from mlops_assets.resources.tracking import MlflowTracking, Trial

TRIAL_SENSOR = "trial_sensor"
TRIAL_INTERVAL = 30  # seconds between evaluations


def _running_trial(context: dg.AssetExecutionContext, tracking: MlflowTracking) -> Trial | None:
    """The trial this day belongs to, or None (no trial, or a day before it started)."""
    trial = tracking.trial()
    if trial is None:
        context.log.info("no trial is running: nothing to score")
        return None
    if date.fromisoformat(context.partition_key) < trial.start_day:
        context.log.info(f"{context.partition_key} is before v{trial.version}'s trial")
        return None
    return trial


@daily_asset(
    TRIALS_GROUP,
    deps=[TRIAL_KEY],
    output_required=False,
    # New feature days are scored while a trial runs; a trial's start or end rewrites nothing.
    automation_condition=follow_upstream(ignore=dg.AssetSelection.assets(TRIAL_KEY))
    & ~dg.AutomationCondition.any_deps_missing().allow(dg.AssetSelection.assets(TRIAL_KEY)),
    kinds={estimator.KIND, "parquet"},
)
def challenger_predictions(
    context: dg.AssetExecutionContext, tracking: MlflowTracking, flight_features: Any
) -> Iterator[dg.Output[Any]]:
    """The challenger's predictions for the day's flights while it is on trial (batch shadow).

    Same columns and scoring code as `batch_predictions`, from the version holding the
    `trial` alias. Days before the trial started, or without a trial, are not materialized.
    """
    from mlops_assets.lib.predictions import prediction_frame

    trial = _running_trial(context, tracking)
    if trial is None:
        return
    classifier = tracking.classifier(trial.version)
    out = prediction_frame(flight_features, classifier, tracking.model_name, trial.version)
    yield dg.Output(
        out,
        metadata={
            "dagster/row_count": len(out),
            "model_version": trial.version,
            "champion_version": trial.champion_version,
            "mlflow_run_id": trial.mlflow_run_id,
            "mean_probability": round(float(out["probability"].mean()), 4) if len(out) else 0.0,
        },
    )


@daily_asset(TRIALS_GROUP, kinds={"pandas", "parquet"})
def online_predictions(
    context: dg.AssetExecutionContext,
    prediction_log: PredictionLog,
    flight_features: Any,
    batch_predictions: Any,
) -> dg.Output[Any]:
    """What the prediction service answered for the day's flights, from its prediction log.

    Every line the service logged for flights scheduled on this day (champion and
    challenger, served and shadow; `docs/serving.md`), once the day's labels land. Metadata:
    lines and requests, the share of answers the challenger served, each role's ROC AUC on
    the labelled flights, and the largest gap between an online answer and the batch
    prediction of the same model version (the same scoring code: it should be ~0).
    """
    from mlops_assets.lib.predictions import online_summary

    log = prediction_log.read_day(context.partition_key)
    summary = online_summary(log, flight_features, batch_predictions)
    return dg.Output(log, metadata={"dagster/row_count": len(log), **summary})


@daily_asset(
    TRIALS_GROUP,
    deps=[TRIAL_KEY],
    output_required=False,
    automation_condition=follow_upstream(ignore=dg.AssetSelection.assets(TRIAL_KEY)),
    kinds={"pandas", "parquet"},
)
def trial_evaluation(
    context: dg.AssetExecutionContext,
    tracking: MlflowTracking,
    lake: LakeReader,
    challenger_predictions: Any,
    batch_predictions: Any,
    flight_features: Any,
    online_predictions: Any,
) -> Iterator[dg.Output[Any]]:
    """The trial's evidence up to this day, and its verdict: promote, retire or continue.

    Pools the labelled flights of every trial day up to this one that both models scored
    (the champion's `batch_predictions`, the challenger's `challenger_predictions`) and
    bootstraps the ROC AUC gain on the same flights (`lib.trials.compare_paired`). The
    verdict follows the policy the trial started with (`lib.trials.decide_trial`); days
    without labels of both classes never count. The trial sensor acts on the verdict.
    The day's online answers (`online_predictions`, by role) are reported beside the batch
    evidence; the batch pairs decide, as every flight is scored by both models there.
    """
    from mlops_assets.lib.trials import days_between, decide_trial

    trial = _running_trial(context, tracking)
    if trial is None:
        return
    day = context.partition_key
    today = (flight_features, batch_predictions, challenger_predictions)
    pairs = _trial_pairs(lake, trial, day, today)
    comparison, counted = _paired_comparison(pairs, trial)
    running = days_between(trial.start_day, date.fromisoformat(day))
    verdict = decide_trial(comparison, len(counted), running, trial.policy)
    context.log.info(f"trial of v{trial.version} on {day}: {verdict.outcome} ({verdict.reason})")
    evidence = {
        "trial_version": trial.version,
        "champion_version": trial.champion_version,
        "start_day": trial.start_day.isoformat(),
        "days_running": running,
        "labelled_days": len(counted),
        "outcome": verdict.outcome,
        "reason": verdict.reason,
        **_comparison_metadata(comparison),
        **_online_metadata(online_predictions, flight_features, batch_predictions),
    }
    yield dg.Output(pairs, metadata={"dagster/row_count": len(pairs), **evidence})


def _trial_pairs(lake: LakeReader, trial: Trial, day: str, today: tuple[Any, ...]) -> Any:
    """Labelled pairs of every trial day up to ``day`` (this day from the step's inputs)."""
    import pandas as pd

    from mlops_assets.lib.predictions import labelled_pairs

    span = (date.fromisoformat(day) - trial.start_day).days
    earlier = [(trial.start_day + timedelta(days=i)).isoformat() for i in range(span)]
    frames = {
        name: lake.read_partitions(name, earlier)
        for name in ("flight_features", "batch_predictions", "challenger_predictions")
    }
    days = [
        (key, *(frames[n][key] for n in frames))
        for key in earlier
        if all(key in frames[n] for n in frames)
    ]
    pairs = [
        labelled_pairs(key, labels, champion, challenger)
        for key, labels, champion, challenger in [*days, (day, *today)]
    ]
    return pd.concat(pairs, ignore_index=True)


def _paired_comparison(pairs: Any, trial: Trial) -> tuple[Any, list[str]]:
    """The bootstrap over the labelled days' pairs (None before any), and those days."""
    from mlops_assets.lib.features import LABEL_COLUMN
    from mlops_assets.lib.predictions import labelled_days
    from mlops_assets.lib.trials import compare_paired

    counted = labelled_days(pairs)
    if not counted:
        return None, counted
    rows = pairs[pairs["day"].isin(counted)]
    labels = rows[LABEL_COLUMN].astype(bool)
    return compare_paired(labels, rows["champion"], rows["challenger"], trial.policy), counted


def _comparison_metadata(comparison: Any) -> dict[str, Any]:
    if comparison is None:
        return {}
    return {
        "flights": comparison.flights,
        "champion_roc_auc": round(comparison.champion_auc, 4),
        "challenger_roc_auc": round(comparison.challenger_auc, 4),
        "roc_auc_gain": round(comparison.gain, 4),
        "gain_lower_bound": round(comparison.low, 4),
        "gain_upper_bound": round(comparison.high, 4),
    }


def _online_metadata(log: Any, labels: Any, batch: Any) -> dict[str, Any]:
    """The day's online evidence (lines, challenger share, AUC by role) when there is any."""
    from mlops_assets.lib.predictions import online_summary

    return online_summary(log, labels, batch) if len(log) else {"online_lines": 0}


def trial_requests(context: dg.SensorEvaluationContext) -> Iterator[Any]:
    """One tick: read the newest trial evaluation; when it decided, request the trial's end."""
    seen = int(context.cursor) if context.cursor else 0
    records = context.instance.fetch_materializations(TRIAL_EVALUATION_KEY, limit=1).records
    if not records or records[0].storage_id <= seen or records[0].asset_materialization is None:
        yield dg.SkipReason("no new trial evaluation since the last tick")
        return
    context.update_cursor(str(records[0].storage_id))
    meta = {k: v.value for k, v in records[0].asset_materialization.metadata.items()}
    outcome, version = meta.get("outcome"), str(meta.get("trial_version"))
    if outcome not in ("promote", "retire"):
        yield dg.SkipReason(f"trial of v{version} continues: {meta.get('reason')}")
        return
    yield dg.RunRequest(
        run_key=f"trial-v{version}-{outcome}",
        asset_selection=TRIAL_CONCLUSION_ASSETS,
        run_config={"ops": {model_gate.op.name: {"config": {"conclude_trial": True}}}},
        tags={
            TRIGGER_TAG: TRIAL_TRIGGER,
            TRIAL_OUTCOME_TAG: str(outcome),
            TRIAL_REASON_TAG: str(meta.get("reason")),
        },
    )


@dg.sensor(
    name=TRIAL_SENSOR,
    minimum_interval_seconds=TRIAL_INTERVAL,
    default_status=dg.DefaultSensorStatus.RUNNING,
    job_name=TRAINING_JOB,
    description="Reads the newest trial_evaluation and, when it decided, requests the run "
    "that ends the trial: promote the challenger or retire it (cursor: newest evaluation).",
)
def trial_sensor(context: dg.SensorEvaluationContext) -> Iterator[Any]:
    """Ends a live trial when its evaluation says promote or retire."""
    yield from trial_requests(context)
