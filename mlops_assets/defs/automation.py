"""Automation: the landing sensor starts days; declarative automation carries them on."""

import json
from collections.abc import Iterator, Sequence
from typing import Any

import dagster as dg

from mlops_assets import settings
from mlops_assets.defs.features import flight_features
from mlops_assets.defs.ingestion import airlines, airports, planes, raw_flights, raw_weather
from mlops_assets.defs.jobs import FILES_TAG, LANDING_TRIGGER, TRIGGER_TAG
from mlops_assets.resources.landing import LandingZone

LANDING_SENSOR = "landing_sensor"
AUTOMATION_SENSOR = "automation_sensor"
DAY_ASSETS = {"flights": raw_flights.key, "weather": raw_weather.key}
REFERENCE_ASSETS = {a.key.to_user_string(): a.key for a in (planes, airports, airlines)}
# How often the daemon ticks the sensors (seconds).
LANDING_INTERVAL = 15
AUTOMATION_INTERVAL = 15


def day_selection(datasets: Sequence[str]) -> list[dg.AssetKey]:
    """The assets of a landing run for a day whose ``datasets`` are delivered.

    A complete day (flights and weather, new or landed earlier) carries its features in the
    same run, and a failed contract skips them inside that run. A re-delivery of one file
    reads the day's other file again rather than leaving the features to automation:
    declarative automation forgets a parent's update when the child was updated by another
    run within the same tick (``since_last_handled``), which left features stale.
    """
    keys = [DAY_ASSETS[d] for d in sorted(set(datasets))]
    return [*keys, flight_features.key] if set(datasets) == set(DAY_ASSETS) else keys


def references_ready(instance: dg.DagsterInstance) -> bool:
    """Whether every reference table has been materialized at least once."""
    return all(instance.get_latest_materialization_event(k) for k in REFERENCE_ASSETS.values())


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
    for request in plan.days:
        yield dg.RunRequest(
            run_key=request.run_key,
            partition_key=request.day.isoformat(),
            asset_selection=day_selection(request.datasets + request.landed),
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
    target=[raw_flights, raw_weather, flight_features, planes, airports, airlines],
    minimum_interval_seconds=LANDING_INTERVAL,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Watches the landing zone and requests the partitions of new or re-delivered "
    "files once their day's manifest lists them (a complete day with its features, in one run, "
    "a re-delivered file with the day's other file; cursor: landing path -> size and mtime); "
    "files still waiting are named in the tick.",
)
def landing_sensor(context: dg.SensorEvaluationContext, landing: LandingZone) -> Iterator[Any]:
    """Requests the raw partitions (a complete day with its features) of new landing files."""
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
