"""Automation: the landing sensor starts days; declarative automation carries them on."""

import functools
import json
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import dagster as dg

from mlops_assets import settings
from mlops_assets.defs.deployment import batch_predictions
from mlops_assets.defs.features import flight_features
from mlops_assets.defs.ingestion import airlines, airports, planes, raw_flights, raw_weather
from mlops_assets.defs.jobs import FILES_TAG, LANDING_TRIGGER, TRIGGER_TAG
from mlops_assets.defs.monitoring import drift_report, model_performance
from mlops_assets.defs.trials import challenger_predictions, online_predictions, trial_evaluation
from mlops_assets.resources.landing import LandingZone

LANDING_SENSOR = "landing_sensor"
AUTOMATION_SENSOR = "automation_sensor"
DAY_ASSETS = {"flights": raw_flights.key, "weather": raw_weather.key}
REFERENCE_ASSETS = {a.key.to_user_string(): a.key for a in (planes, airports, airlines)}
# How often the daemon ticks the sensors (seconds).
LANDING_INTERVAL = 15
AUTOMATION_INTERVAL = 15


# The rest of a landed day, upstream first: predictions, reports and trial evidence. A
# complete day's run carries each once the models and references it reads exist.
DAY_CHAIN = (
    batch_predictions,
    drift_report,
    model_performance,
    online_predictions,
    challenger_predictions,
    trial_evaluation,
)


def ready_chain(materialized: Callable[[dg.AssetKey], bool]) -> list[dg.AssetKey]:
    """The ``DAY_CHAIN`` assets a complete day's run can carry.

    An asset is ready when every upstream asset outside the day (the champion, the drift
    reference, the trial) has been ``materialized`` and its upstream chain assets are ready;
    until then automation follows with it, as it does for the bootstrap's days.
    """
    day = {*DAY_ASSETS.values(), flight_features.key}
    chain = {a.key for a in DAY_CHAIN}
    ready: list[dg.AssetKey] = []
    for asset in DAY_CHAIN:
        deps = set(asset.dependency_keys) - day
        if deps & chain <= set(ready) and all(materialized(d) for d in deps - chain):
            ready.append(asset.key)
    return ready


def day_selection(datasets: Sequence[str], chain: Sequence[dg.AssetKey] = ()) -> list[dg.AssetKey]:
    """The assets of a landing run for a day whose ``datasets`` are delivered.

    A complete day (flights and weather, new or landed earlier) carries its features and the
    ``chain`` in the same run: one run per day, and a failed contract skips everything
    downstream inside that run. A re-delivery of one file reads the day's other file again
    rather than leaving the rest to automation: declarative automation forgets a parent's
    update when the child was updated by another run within the same tick
    (``since_last_handled``), which left features stale.
    """
    keys = [DAY_ASSETS[d] for d in sorted(set(datasets))]
    if set(datasets) != set(DAY_ASSETS):
        return keys
    return [*keys, flight_features.key, *chain]


def materialized(instance: dg.DagsterInstance, key: dg.AssetKey) -> bool:
    """Whether ``key`` has been materialized at least once."""
    return instance.get_latest_materialization_event(key) is not None


def references_ready(instance: dg.DagsterInstance) -> bool:
    """Whether every reference table has been materialized at least once."""
    return all(materialized(instance, k) for k in REFERENCE_ASSETS.values())


# Waiting files named in a tick's skip reason (the tick's log names them all).
WAITING_SHOWN = 3


def landing_run_requests(
    context: dg.SensorEvaluationContext, landing: LandingZone
) -> Iterator[dg.RunRequest | dg.SkipReason]:
    """One sensor tick: scan, plan with the plain helper, emit requests, move the cursor."""
    from mlops_assets.lib.landing import plan_landing_runs, scan
    from mlops_assets.lib.manifest import listing

    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    root = landing.root()
    plan = plan_landing_runs(
        scan(root),
        seen,
        first_day=settings.PARTITION_START,
        end_day=settings.PARTITION_END,
        references_ready=references_ready(context.instance),
        listing=lambda day: listing(root, day),
        require_manifests=landing.require_manifests,
    )
    for reason in plan.skipped:
        context.log.warning(f"landing file skipped: {reason}")
    for reason in plan.waiting:
        context.log.warning(f"landing file waits: {reason}")
    if plan.references:
        names, run_key = plan.references
        yield dg.RunRequest(
            run_key=run_key,
            asset_selection=[REFERENCE_ASSETS[n] for n in names],
            tags={TRIGGER_TAG: LANDING_TRIGGER, FILES_TAG: ",".join(names)},
        )
    # One look-up per upstream asset: the trial record is read by two chain assets.
    lookup = functools.cache(functools.partial(materialized, context.instance))
    chain = ready_chain(lookup) if plan.days else []
    for request in plan.days:
        yield dg.RunRequest(
            run_key=request.run_key,
            partition_key=request.day.isoformat(),
            asset_selection=day_selection(request.datasets + request.landed, chain),
            tags={TRIGGER_TAG: LANDING_TRIGGER, FILES_TAG: ",".join(request.datasets)},
        )
    context.update_cursor(json.dumps(plan.seen, sort_keys=True))
    if not plan.references and not plan.days:
        yield dg.SkipReason(_nothing_to_run(plan.deferred, plan.waiting))


def _nothing_to_run(deferred: list[str], waiting: list[str]) -> str:
    """The skip reason of a tick: what waits, and for what (the UI shows it on the tick)."""
    reason = "no new landing files"
    if deferred:
        reason += f"; {len(deferred)} day file(s) wait for the reference tables"
    if waiting:
        more = len(waiting) - WAITING_SHOWN
        tail = f"; and {more} more (in the tick's log)" if more > 0 else ""
        reason += f"; {len(waiting)} incomplete: " + "; ".join(waiting[:WAITING_SHOWN]) + tail
    return reason


@dg.sensor(
    name=LANDING_SENSOR,
    target=[raw_flights, raw_weather, flight_features, *DAY_CHAIN, planes, airports, airlines],
    minimum_interval_seconds=LANDING_INTERVAL,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Watches the landing zone and requests the partitions of new or re-delivered "
    "files once their day's manifest lists them (a complete day with its features, predictions "
    "and reports in one run once a champion exists; a re-delivered file with the day's other "
    "file; cursor: landing path -> size and mtime); files still waiting are named in the tick.",
)
def landing_sensor(context: dg.SensorEvaluationContext, landing: LandingZone) -> Iterator[Any]:
    """Requests the days of new landing files (a complete day through its reports)."""
    yield from landing_run_requests(context, landing)


automation_sensor = dg.AutomationConditionSensorDefinition(
    AUTOMATION_SENSOR,
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=AUTOMATION_INTERVAL,
    description="Evaluates the declarative automation conditions (predictions and reports "
    "follow feature days; features follow raw days materialized outside a landing run).",
)

__all__ = ["automation_sensor", "flight_features", "landing_sensor"]
