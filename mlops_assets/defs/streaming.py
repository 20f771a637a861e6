"""Streaming: the champion published for the stream scorer, and its predictions back in the graph.

The stream scorer (``mlops_assets.streaming``, outside the code location) scores flight
events with the bundle ``scoring_bundle`` publishes and writes its predictions to the lake
sink; ``stream_sensor`` requests ``stream_predictions`` for the days whose parts changed, and
``stream_performance`` judges a day once its labels land. The sensor's decision is the plain
function ``lib.stream_monitoring.plan_stream_days``.
"""

import json
from collections.abc import Iterator
from typing import Any

import dagster as dg

from mlops_assets import settings
from mlops_assets.defs.deployment import REFERENCE_TABLES
from mlops_assets.defs.partitions import daily_asset, daily_partitions
from mlops_assets.defs.training import CHAMPION_KEY
from mlops_assets.resources.streaming import ScoringBundles, StreamSink
from mlops_assets.resources.tracking import MlflowTracking

STREAMING_GROUP = "streaming"
STREAM_SENSOR = "stream_sensor"
STREAM_INTERVAL = 30  # seconds between evaluations
# Skipped sink folders named in a tick's skip reason (the tick's log names them all).
SKIPPED_SHOWN = 3


@dg.asset(
    group_name=STREAMING_GROUP,
    deps=[CHAMPION_KEY],
    # A new champion is published at once; reference updates reach the next publication.
    automation_condition=dg.AutomationCondition.eager().ignore(REFERENCE_TABLES),
    kinds={"parquet"},
)
def scoring_bundle(
    context: dg.AssetExecutionContext,
    tracking: MlflowTracking,
    scoring_bundles: ScoringBundles,
    planes: Any,
    airports: Any,
    airlines: Any,
) -> dg.MaterializeResult:
    """The champion's scoring bundle, published for the stream scorer.

    The same bundle the bento holds (classifier, planes table, known carriers and airports,
    the model's identity and lineage) as plain files in `<root>/<version>/`, then the pointer
    `<root>/champion.json` moved to it: a running scorer switches to the new champion between
    two micro-batches, without a restart. Runs when the champion changes.
    """
    from mlops_assets.lib import model_tags
    from mlops_assets.resources.tracking import project_fingerprint

    references = (planes, airports, airlines, project_fingerprint()[model_tags.GIT_COMMIT])
    bundle, labels = tracking.scoring_bundle(str(tracking.champion().version), references)
    published = scoring_bundles.publish(bundle)
    files = published["files"]
    context.log.info(f"published v{published['model_version']} at {published['where']}")
    return dg.MaterializeResult(
        metadata={
            **labels,
            "where": dg.MetadataValue.path(published["where"]),
            "files": files,
            "size_bytes": sum(files.values()),
            "threshold": round(bundle.classifier.threshold, 4),
        },
        data_version=dg.DataVersion(str(published["model_version"])),
    )


@dg.asset(
    partitions_def=daily_partitions,
    group_name=STREAMING_GROUP,
    # The bundle the scorer scored with; requested by `stream_sensor`, not by automation.
    deps=[scoring_bundle],
    kinds={"pandas", "parquet"},
)
def stream_predictions(
    context: dg.AssetExecutionContext, stream_sink: StreamSink
) -> dg.Output[Any]:
    """The stream scorer's predictions for the day's flights, one per event.

    Every part the scorer wrote to the lake sink for flights scheduled on this day, one row
    per event id (an event delivered twice is scored twice and kept once; the first scored
    wins). Columns: event id, flight key, probability, decision, threshold, model version,
    `sent_at` and `scored_at`. Metadata: events, duplicates dropped, the model versions seen
    and their events, the event-to-prediction latency percentiles, and a preview.
    """
    from mlops_assets.defs.outputs import frame_output
    from mlops_assets.lib.stream_monitoring import day_summary, preview

    predictions, received = stream_sink.read_day(context.partition_key)
    summary = day_summary(predictions, received)
    context.log.info(f"{context.partition_key}: {summary['events']} streamed predictions")
    return frame_output(
        predictions,
        {**summary, "sink": stream_sink.root, "preview": dg.MetadataValue.md(preview(predictions))},
    )


@daily_asset(STREAMING_GROUP, kinds={"pandas", "parquet"})
def stream_performance(
    stream_predictions: Any, flight_features: Any, batch_predictions: Any
) -> dg.Output[Any]:
    """The streamed predictions judged once the day's labels land.

    Per model version and for the day: the streamed flights with a label, ROC AUC and
    accuracy on them, and the agreement with `batch_predictions` of the same model version
    on the same flights (largest probability gap, share of equal decisions): the stream
    scorer runs the batch's scoring code with the same model, so the gap should be ~0.
    """
    from mlops_assets.lib.stream_monitoring import stream_performance as judge

    table, metadata = judge(stream_predictions, flight_features, batch_predictions)
    return dg.Output(table, metadata={"dagster/row_count": len(table), **metadata})


def stream_run_requests(
    context: dg.SensorEvaluationContext, stream_sink: StreamSink
) -> Iterator[dg.RunRequest | dg.SkipReason]:
    """One sensor tick: list the sink, plan with the plain helper, request, move the cursor."""
    from mlops_assets.lib.stream_monitoring import plan_stream_days

    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    plan = plan_stream_days(
        stream_sink.listing(),
        seen,
        first_day=settings.PARTITION_START,
        end_day=settings.PARTITION_END,
    )
    for reason in plan.skipped:
        context.log.warning(f"stream sink folder skipped: {reason}")
    for request in plan.requests:
        yield dg.RunRequest(
            run_key=request.run_key,
            partition_key=request.day,
            asset_selection=[stream_predictions.key],
        )
    context.update_cursor(json.dumps(plan.seen, sort_keys=True))
    if not plan.requests:
        reason = "no new streamed predictions"
        if plan.skipped:
            reason += f"; skipped: {'; '.join(plan.skipped[:SKIPPED_SHOWN])}"
        yield dg.SkipReason(reason)


@dg.sensor(
    name=STREAM_SENSOR,
    target=[stream_predictions],
    minimum_interval_seconds=STREAM_INTERVAL,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Lists the stream sink and requests `stream_predictions` for each day whose "
    "parts changed (cursor: day -> digest of its part names; run key: day and digest).",
)
def stream_sensor(context: dg.SensorEvaluationContext, stream_sink: StreamSink) -> Iterator[Any]:
    """Records streamed predictions in the graph, a day at a time."""
    yield from stream_run_requests(context, stream_sink)


ASSETS = [scoring_bundle, stream_predictions, stream_performance]
SENSORS = [stream_sensor]
