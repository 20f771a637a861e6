"""Monitoring: the champion's drift reference, and each day's drift and real performance.

The retraining sensor (``defs/retraining.py``) reads these reports' metadata.
"""

from collections.abc import Iterator
from typing import Any

import dagster as dg

from mlops_assets.defs.outputs import frame_output
from mlops_assets.defs.partitions import daily_asset, daily_partitions, follow_upstream
from mlops_assets.defs.training import CHAMPION_KEY
from mlops_assets.resources.lake import LakeReader
from mlops_assets.resources.metrics_gateway import MetricsGateway
from mlops_assets.resources.reports import ReportStore
from mlops_assets.resources.tracking import MlflowTracking

MONITORING_GROUP = "monitoring"
DRIFT_CHECK = "drift_within_threshold"


def _version(predictions: Any) -> str | None:
    """The model version that predicted a day (None for a day without flights)."""
    return str(predictions["model_version"].iloc[0]) if len(predictions) else None


@dg.asset(
    group_name=MONITORING_GROUP,
    deps=[CHAMPION_KEY],
    automation_condition=dg.AutomationCondition.eager(),
    kinds={"pandas", "parquet"},
)
def drift_reference(tracking: MlflowTracking, lake: LakeReader) -> dg.Output[Any]:
    """What the champion learned from: a bounded sample of its training window, with its scores.

    The flights of the champion's training window (read from the lake), sampled to at most
    `reference_max_rows` rows with a fixed seed, and the champion's predicted probability for
    each, so prediction drift is measured like feature drift. Rebuilt when a new champion is
    promoted; every daily drift report compares against the champion's own window, not a
    whole year (the weather is seasonal: a year-long reference flags drift every day).
    """
    import pandas as pd

    from mlops_assets.lib.drift import DriftPolicy, scored_reference
    from mlops_assets.lib.modeling import TrainingWindow

    version = str(tracking.champion().version)
    facts = tracking.model_facts(version)
    if not facts.window_start or not facts.window_end:
        raise dg.Failure(f"v{version}'s MLflow run has no training-window tag")
    window = TrainingWindow.spanning(facts.window_start, facts.window_end)
    frames = lake.read_partitions("flight_features", window.keys())
    if not frames:
        raise dg.Failure(f"no flight_features in v{version}'s training window {window}")
    flights = pd.concat(frames.values(), ignore_index=True)
    policy = DriftPolicy()
    sample = scored_reference(flights, tracking.classifier(version), version, policy)
    return frame_output(
        sample,
        {
            "model_version": version,
            "window": str(window),
            "window_days_present": len(frames),
            "window_rows": len(flights),
            "sampled_rows": len(sample),
            "seed": policy.seed,
        },
    )


@daily_asset(
    MONITORING_GROUP,
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
    metrics: MetricsGateway,
    flight_features: Any,
    batch_predictions: Any,
    drift_reference: Any,
) -> Iterator[Any]:
    """Evidently data drift of the day's flights and predictions against the champion's window.

    Compares the monitored feature columns and the predicted probability of the day with
    `drift_reference` (the champion's training window, sampled), each column with the method
    and threshold set in `lib.drift.DriftPolicy`. Writes the Evidently HTML (gzipped) and JSON
    reports (paths and links in the metadata; locally `make reports` serves them, `html_url`
    opens the page in the browser) and stores one row per column. The
    `drift_within_threshold` check warns when the share of drifted columns is over the
    policy's threshold; an empty day is recorded as such, never as drift. The
    share and the verdict are pushed to the Pushgateway when one is configured.
    """
    from mlops_assets.lib.drift import DriftPolicy, EmptyDataError, compute_drift, scored_rows
    from mlops_assets.lib.pipeline_metrics import day_samples

    day, policy = context.partition_key, DriftPolicy()
    versions = {
        "model_version": _version(batch_predictions),
        # The reference carries the version that scored it on every row.
        "reference_model_version": str(drift_reference["model_version"].iloc[0]),
    }
    current = scored_rows(flight_features, batch_predictions)
    try:
        result = compute_drift(current, drift_reference, policy)
    except EmptyDataError as error:
        context.log.warning(f"drift_report {day}: {error}")
        rows = {"current_rows": len(current), "reference_rows": len(drift_reference)}
        yield from _empty_day(str(error), {**rows, **versions})
        return
    links = _write_reports(reports, day, result)
    summary = result.summary(policy)
    samples = day_samples(day, str(versions["model_version"]), drift=summary)
    pushed = metrics.publish("drift_report", samples, context.log)
    yield dg.Output(result.table(), metadata={**summary, **versions, **links, **pushed})
    yield dg.AssetCheckResult(
        check_name=DRIFT_CHECK,
        passed=not result.drifted,
        severity=dg.AssetCheckSeverity.WARN,
        description=result.verdict(policy),
        metadata={"drift_share": round(result.drift_share, 4)},
    )


def _write_reports(reports: ReportStore, day: str, result: Any) -> dict[str, Any]:
    """Stores the day's HTML (gzipped) and JSON reports; metadata with the table and the links.

    ``html_url`` opens the page in one click through the folder's viewer page.
    """
    from mlops_assets.lib.report_assets import share_assets, store_page

    page = share_assets(result.html)
    reports.write_missing(page.files)  # before the page that links to them
    stored = store_page("drift", day, page.html)
    html = reports.write(stored.relative, stored.payload)
    # Rewritten every time (1 KB), so a newer viewer replaces an older one.
    reports.write(stored.viewer, stored.viewer_html)
    links = {
        "columns": dg.MetadataValue.md(result.markdown()),
        "html": dg.MetadataValue.path(html),
        "json": dg.MetadataValue.path(reports.write(f"drift/{day}.json", result.json.encode())),
    }
    if link := reports.link(stored.address):
        links["html_url"] = dg.MetadataValue.url(link)
    return links


def _empty_day(detail: str, facts: dict[str, Any]) -> Iterator[Any]:
    """An empty day's report: recorded as such, its check passes with nothing compared."""
    from mlops_assets.lib.drift import empty_table

    metadata = {"status": "empty day", "detail": detail, **facts}
    yield dg.Output(empty_table(), metadata=metadata)
    yield dg.AssetCheckResult(
        check_name=DRIFT_CHECK,
        passed=True,
        description=f"nothing compared: {detail}",
        metadata={"status": "empty day"},
    )


@daily_asset(MONITORING_GROUP, kinds={"pandas", "parquet"})
def model_performance(
    context: dg.AssetExecutionContext,
    tracking: MlflowTracking,
    metrics: MetricsGateway,
    batch_predictions: Any,
    flight_features: Any,
) -> dg.Output[Any]:
    """The champion's real performance on the day, from the day's actual arrivals.

    Joins the day's batch predictions with the labels (15+ minutes late on arrival; cancelled
    and diverted flights have none) and computes ROC AUC, PR AUC, precision, recall and F1 at
    the model's threshold, the actual and the predicted positive rate, and the prediction-rate
    shift against the model's validation holdout. The numbers are metadata, so the UI plots
    them over the days; the predicting model's validation ROC AUC and training window ride
    along for the retraining policy. A day without labels says so and is not judged. The
    numbers of a day after the model's training window are pushed to the Pushgateway when
    one is configured.
    """
    import pandas as pd

    from mlops_assets.lib.performance import PerformanceInputError, day_performance
    from mlops_assets.lib.pipeline_metrics import day_samples

    day, version = context.partition_key, _version(batch_predictions)
    facts = tracking.model_facts(version) if version else None
    try:
        result = day_performance(
            batch_predictions,
            flight_features,
            validation_predicted_rate=facts.validation_predicted_rate if facts else None,
        )
    except PerformanceInputError as error:
        raise dg.Failure(f"model_performance {day}: {error}", allow_retries=False) from error
    validation_auc = facts.validation_roc_auc if facts else None
    metadata = {"model_version": version, **result.summary(validation_auc)}
    if facts and facts.window_end:
        metadata["window_end"] = facts.window_end.isoformat()
    if result.status != "ok":
        context.log.info(f"model_performance {day}: {result.status}")
    # A day the model was trained or validated on says nothing about it: not pushed.
    if version and not (facts and facts.window_end and day <= facts.window_end.isoformat()):
        samples = day_samples(day, version, performance=metadata)
        metadata.update(metrics.publish("model_performance", samples, context.log))
    frame = pd.DataFrame(
        [{"day": day, "model_version": version, "status": result.status, **result.metrics}]
    )
    return dg.Output(frame, metadata=metadata)
