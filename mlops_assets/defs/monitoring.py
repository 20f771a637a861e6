"""Monitoring: daily drift and real performance of the champion, and the retraining sensor.

The loop closes here without a cycle in the graph: the reports are assets downstream of the
predictions; the retraining sensor reads their metadata and requests the training job, whose
gate decides; a promotion then rebuilds the bento and the drift reference by automation.
"""

import functools
import json
import os
from collections.abc import Iterator, Mapping
from datetime import date
from typing import Any

import dagster as dg

from mlops_assets.defs.partitions import daily_partitions, follow_upstream
from mlops_assets.defs.training import candidate_model, champion_model, model_card, training_set
from mlops_assets.lib import model_tags
from mlops_assets.resources.lake import LakeReader
from mlops_assets.resources.reports import ReportStore
from mlops_assets.resources.tracking import MlflowTracking

MONITORING_GROUP = "monitoring"
DRIFT_CHECK = "drift_within_threshold"
RETRAIN_SENSOR = "retrain_sensor"
TRAINING_JOB = "training"
RETRAIN_INTERVAL = 30  # seconds between evaluations of the retraining sensor
# Tags of a retraining run (the reason is shown on the run in the UI).
TRIGGER_TAG = "mlops/trigger"
REASON_TAG = "mlops/retrain_reason"
CONDITION_TAG = "mlops/retrain_condition"
AS_OF_TAG = "mlops/retrain_as_of"
CHAMPION_TAG = "mlops/retrain_champion"
RETRAIN_TRIGGER = "retrain"
# Materializations read per tick: enough for the longest policy window, re-materialized
# days included.
LOOKBACK_RECORDS = 60
# What a retraining run materializes: the training group and the drift reference (the
# `training` job's selection in definitions.py is this list).
RETRAIN_ASSETS = [a.key for a in (training_set, candidate_model, champion_model, model_card)] + [
    dg.AssetKey("drift_reference")
]


POLICY_VAR = "MLOPS_RETRAIN_POLICY"


def retrain_policy(env: Mapping[str, str] | None = None) -> Any:
    """The retraining policy in force.

    The defaults live in ``lib.retraining.RetrainPolicy``; ``MLOPS_RETRAIN_POLICY`` may
    override fields with a JSON object, e.g. ``{"max_auc_drop": 0.03, "cooldown_days": 21}``,
    read at each sensor evaluation (no code change or reload needed).

    Raises:
        ValueError: for a value that is not a JSON object of known fields and valid numbers.
    """
    from dataclasses import fields

    from mlops_assets.lib.retraining import RetrainPolicy

    raw = (os.environ if env is None else env).get(POLICY_VAR, "").strip()
    if not raw:
        return RetrainPolicy()
    try:
        values = json.loads(raw)
    except json.JSONDecodeError as error:
        raise ValueError(f"{POLICY_VAR} is not valid JSON: {error}") from error
    known = {f.name for f in fields(RetrainPolicy)}
    if not isinstance(values, dict) or set(values) - known:
        unknown = sorted(set(values) - known) if isinstance(values, dict) else values
        raise ValueError(f"{POLICY_VAR}: unknown field(s) {unknown}; known: {sorted(known)}")
    return RetrainPolicy(**values)


@functools.lru_cache(maxsize=16)
def _model_facts(tracking_uri: str, model_name: str, version: str) -> dict[str, Any]:
    """Validation metrics and training window of a registered version (cached per process)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    run = client.get_run(str(client.get_model_version(model_name, version).run_id))
    start, _, end = run.data.tags.get(model_tags.DATA_WINDOW, "").partition(
        model_tags.WINDOW_SEPARATOR
    )
    metrics = run.data.metrics
    return {
        "validation_roc_auc": metrics.get("roc_auc"),
        "validation_predicted_rate": metrics.get("predicted_positive_rate"),
        "window_start": start or None,
        "window_end": end or None,
        "mlflow_run_id": run.info.run_id,
    }


@dg.asset(
    group_name=MONITORING_GROUP,
    deps=[champion_model],
    automation_condition=dg.AutomationCondition.eager(),
    kinds={"pandas", "parquet"},
)
def drift_reference(
    context: dg.AssetExecutionContext, tracking: MlflowTracking, lake: LakeReader
) -> dg.Output[Any]:
    """What the champion learned from: a bounded sample of its training window, with its scores.

    The flights of the champion's training window (read from the lake), sampled to at most
    `reference_max_rows` rows with a fixed seed, and the champion's predicted probability for
    each, so prediction drift is measured like feature drift. Rebuilt when a new champion is
    promoted; every daily drift report compares against the champion's own window, not a
    whole year (the weather is seasonal: a year-long reference flags drift every day).
    """
    import pandas as pd

    from mlops_assets.lib.drift import DriftPolicy, sample_reference
    from mlops_assets.lib.fingerprints import frame_fingerprint
    from mlops_assets.lib.modeling import TrainingWindow

    champion = tracking.version_by_alias(model_tags.CHAMPION)
    if champion is None:
        raise dg.Failure(f"{tracking.model_name} has no champion yet: promote a model first")
    version = str(champion.version)
    facts = _model_facts(tracking.tracking_uri, tracking.model_name, version)
    if not facts["window_start"] or not facts["window_end"]:
        raise dg.Failure(f"v{version}'s MLflow run has no mlops.data.window tag")
    start, end = date.fromisoformat(facts["window_start"]), date.fromisoformat(facts["window_end"])
    window = TrainingWindow(end, (end - start).days + 1, 1)
    frames = lake.read_partitions("flight_features", [d.isoformat() for d in window.all_days()])
    if not frames:
        raise dg.Failure(f"no flight_features in v{version}'s training window {start} .. {end}")
    flights = pd.concat(frames.values(), ignore_index=True)
    policy = DriftPolicy()
    sample = sample_reference(flights, policy.reference_max_rows, policy.seed)
    classifier = _classifier(tracking, version)
    sample = sample.assign(probability=classifier.predict_proba(sample), model_version=version)
    return dg.Output(
        sample,
        data_version=dg.DataVersion(frame_fingerprint(sample)),
        metadata={
            "dagster/row_count": len(sample),
            "model_version": version,
            "window": f"{start} .. {end}",
            "window_days_present": len(frames),
            "window_rows": len(flights),
            "sampled_rows": len(sample),
            "seed": policy.seed,
        },
    )


def _classifier(tracking: MlflowTracking, version: str) -> Any:
    from mlops_assets.defs.deployment import _classifier as load

    return load(tracking.tracking_uri, tracking.model_name, version)


@dg.asset(
    partitions_def=daily_partitions,
    group_name=MONITORING_GROUP,
    check_specs=[
        dg.AssetCheckSpec(
            DRIFT_CHECK,
            asset="drift_report",
            partitions_def=daily_partitions,
            description="Warns when the share of drifted columns is over the policy threshold.",
        )
    ],
    # A new champion brings a new reference; past days keep the report they had.
    automation_condition=follow_upstream(ignore=dg.AssetSelection.assets(drift_reference))
    & ~dg.AutomationCondition.any_deps_missing().allow(dg.AssetSelection.assets(drift_reference)),
    kinds={"evidently", "parquet"},
)
def drift_report(
    context: dg.AssetExecutionContext,
    reports: ReportStore,
    flight_features: Any,
    batch_predictions: Any,
    drift_reference: Any,
) -> Iterator[Any]:
    """Evidently data drift of the day's flights and predictions against the champion's window.

    Compares the monitored feature columns and the predicted probability of the day with
    `drift_reference` (the champion's training window, sampled), each column with the method
    and threshold set in `lib.drift.DriftPolicy`. Writes the Evidently HTML and JSON reports
    (paths and links in the metadata; locally `make reports` serves them) and stores one row
    per column. The `drift_within_threshold` check warns when the share of drifted columns is
    over the policy's threshold; an empty day is recorded as such, never as drift.
    """
    import pandas as pd

    from mlops_assets.lib.drift import DriftPolicy, EmptyDataError, compute_drift
    from mlops_assets.lib.features import KEY_COLUMNS

    day = context.partition_key
    # drift_reference carries the version that scored it on every row.
    reference_version = str(drift_reference["model_version"].iloc[0])
    current = flight_features.merge(
        batch_predictions[[*KEY_COLUMNS, "probability", "model_version"]],
        on=KEY_COLUMNS,
        how="inner",
    )
    version = str(batch_predictions["model_version"].iloc[0]) if len(batch_predictions) else None
    policy = DriftPolicy()
    try:
        result = compute_drift(current, drift_reference, policy)
    except EmptyDataError as error:
        message = f"drift_report {day}: {error}"
        context.log.warning(message)
        yield dg.Output(
            pd.DataFrame({"column": [], "method": [], "score": [], "threshold": [], "drifted": []}),
            metadata={
                "status": "empty day",
                "detail": str(error),
                "current_rows": len(current),
                "reference_rows": len(drift_reference),
                "model_version": version,
            },
        )
        yield dg.AssetCheckResult(
            check_name=DRIFT_CHECK,
            passed=True,
            description=f"nothing compared: {error}",
            metadata={"status": "empty day"},
        )
        return
    html_path = reports.write(f"drift/{day}.html", result.html.encode())
    json_path = reports.write(f"drift/{day}.json", result.json.encode())
    table = pd.DataFrame(
        [
            {
                "column": c.column,
                "method": c.method,
                "score": c.score,
                "threshold": c.threshold,
                "drifted": c.drifted,
            }
            for c in result.columns
        ]
    )
    link = reports.link(f"drift/{day}.html")
    metadata: dict[str, Any] = {
        "status": "drifted" if result.drifted else "ok",
        "drifted": result.drifted,
        "drift_share": round(result.drift_share, 4),
        "drift_share_threshold": policy.drift_share_threshold,
        "drifted_columns": ", ".join(result.drifted_columns) or "none",
        "drifted_count": len(result.drifted_columns),
        "columns": dg.MetadataValue.md(result.markdown()),
        # Columns without data on one side are not evaluated (no score, not in the share).
        "scores": json.dumps({c.column: round(c.score, 4) for c in result.columns if c.evaluated}),
        "not_evaluated": ", ".join(c.column for c in result.columns if not c.evaluated) or "none",
        "current_rows": result.current_rows,
        "reference_rows": result.reference_rows,
        "reference_model_version": reference_version,
        "model_version": version,
        "html": dg.MetadataValue.path(html_path),
        "json": dg.MetadataValue.path(json_path),
    }
    if link:
        metadata["html_url"] = dg.MetadataValue.url(link)
    yield dg.Output(table, metadata=metadata)
    yield dg.AssetCheckResult(
        check_name=DRIFT_CHECK,
        passed=not result.drifted,
        severity=dg.AssetCheckSeverity.WARN,
        description=(
            f"drift share {result.drift_share:.2f} "
            f"{'>' if result.drifted else '<='} {policy.drift_share_threshold}: "
            + (", ".join(result.drifted_columns) or "no column drifted")
        ),
        metadata={"drift_share": round(result.drift_share, 4)},
    )


@dg.asset(
    partitions_def=daily_partitions,
    group_name=MONITORING_GROUP,
    automation_condition=follow_upstream(),
    kinds={"pandas", "parquet"},
)
def model_performance(
    context: dg.AssetExecutionContext,
    tracking: MlflowTracking,
    batch_predictions: Any,
    flight_features: Any,
) -> dg.Output[Any]:
    """The champion's real performance on the day, from the day's actual arrivals.

    Joins the day's batch predictions with the labels (15+ minutes late on arrival; cancelled
    and diverted flights have none) and computes ROC AUC, PR AUC, precision, recall and F1 at
    the model's threshold, the actual and the predicted positive rate, and the prediction-rate
    shift against the model's validation holdout. The numbers are metadata, so the UI plots
    them over the days; the predicting model's validation ROC AUC and training window ride
    along for the retraining policy. A day without labels says so and is not judged.
    """
    import pandas as pd

    from mlops_assets.lib.performance import PerformanceInputError, day_performance

    day = context.partition_key
    version = str(batch_predictions["model_version"].iloc[0]) if len(batch_predictions) else None
    facts = (
        _model_facts(tracking.tracking_uri, tracking.model_name, version)
        if version
        else {"validation_roc_auc": None, "validation_predicted_rate": None, "window_end": None}
    )
    try:
        result = day_performance(
            batch_predictions,
            flight_features,
            validation_predicted_rate=facts["validation_predicted_rate"],
        )
    except PerformanceInputError as error:
        raise dg.Failure(
            description=f"model_performance {day}: {error}", allow_retries=False
        ) from error
    metrics = {k: round(v, 4) for k, v in result.metrics.items()}
    metadata: dict[str, Any] = {
        "status": result.status,
        "usable": result.usable,
        "rows": result.rows,
        "labelled_rows": result.labelled_rows,
        "model_version": version,
        **metrics,
    }
    if facts["validation_roc_auc"] is not None:
        metadata["validation_roc_auc"] = round(float(facts["validation_roc_auc"]), 4)
        if "roc_auc" in metrics:
            metadata["auc_drop"] = round(metadata["validation_roc_auc"] - metrics["roc_auc"], 4)
    if facts["window_end"]:
        metadata["window_end"] = facts["window_end"]
    if result.status != "ok":
        context.log.info(f"model_performance {day}: {result.status}")
    frame = pd.DataFrame(
        [{"day": day, "model_version": version, "status": result.status, **result.metrics}]
    )
    return dg.Output(frame, metadata=metadata)


# -- the retraining sensor ------------------------------------------------------------------


def _latest_by_partition(records: list[Any]) -> dict[str, dict[str, Any]]:
    """Metadata of the newest materialization of each partition (records newest first)."""
    latest: dict[str, dict[str, Any]] = {}
    for record in records:
        event = record.asset_materialization
        if event is None or not record.partition_key or record.partition_key in latest:
            continue
        latest[record.partition_key] = {k: v.value for k, v in event.metadata.items()}
    return latest


def monitored_days(instance: dg.DagsterInstance) -> tuple[list[Any], int]:
    """The monitored days (``lib.retraining.DayStatus``) and the newest storage id seen."""
    from mlops_assets.lib.retraining import DayStatus

    performance = instance.fetch_materializations(
        model_performance.key, limit=LOOKBACK_RECORDS
    ).records
    drift = instance.fetch_materializations(drift_report.key, limit=LOOKBACK_RECORDS).records
    newest = max((r.storage_id for r in [*performance, *drift]), default=0)
    drift_by_day = _latest_by_partition(list(drift))
    days = []
    for day, meta in _latest_by_partition(list(performance)).items():
        if not meta.get("model_version"):
            continue
        found = drift_by_day.get(day, {})
        window_end = meta.get("window_end")
        days.append(
            DayStatus(
                day=date.fromisoformat(day),
                model_version=str(meta["model_version"]),
                roc_auc=meta.get("roc_auc"),
                usable=bool(meta.get("usable")),
                validation_roc_auc=meta.get("validation_roc_auc"),
                window_end=date.fromisoformat(window_end) if window_end else None,
                # Only a report on the same champion counts; an empty day is not drift.
                drifted=found.get("drifted")
                if str(found.get("model_version")) == str(meta["model_version"])
                else None,
                drift_share=found.get("drift_share"),
            )
        )
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


IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


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
    from mlops_assets.lib.retraining import decide_retraining

    seen = int(context.cursor) if context.cursor else 0
    days, newest = monitored_days(context.instance)
    if newest <= seen:
        yield dg.SkipReason("no new monitoring results since the last evaluation")
        return
    latest = max((d.day for d in days), default=None)
    busy = days_in_flight(context.instance, latest) if latest else []
    if busy:
        # The cursor stays: the next tick evaluates again once these days are done.
        yield dg.SkipReason(f"waiting for day(s) still in flight: {', '.join(busy)}")
        return
    policy = retrain_policy()
    last_day, last_trigger = last_retraining(context.instance)
    decision = decide_retraining(days, policy, last_retraining=last_day, last_trigger=last_trigger)
    context.update_cursor(str(newest))
    if not decision.retrain or decision.as_of is None:
        yield dg.SkipReason(decision.reason)
        return
    context.log.info(f"requesting retraining: {decision.reason}")
    yield dg.RunRequest(
        run_key=decision.run_key,
        # The whole training job, named explicitly: the run then records its selection, and
        # automation sees the gate already ran with the candidate (no second evaluation).
        asset_selection=RETRAIN_ASSETS,
        run_config={
            "ops": {
                "training_set": {
                    "config": {
                        "as_of": decision.as_of.isoformat(),
                        "days": policy.training_days,
                        "validation_days": policy.validation_days,
                    }
                }
            }
        },
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
