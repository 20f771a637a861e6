"""Features: one row per flight with what is known before departure, plus the label."""

from collections.abc import Iterator
from typing import Any

import dagster as dg

from mlops_assets.defs.contract_checks import contract_spec, failed, validated_output
from mlops_assets.defs.partitions import daily_asset, daily_partitions, follow_upstream
from mlops_assets.lib.features import MAX_FLIGHTS_WITHOUT_WEATHER_SHARE
from mlops_assets.resources.lake import versioned_in_registry

FEATURES_GROUP = "features"
LEAKAGE_CHECK = "no_leakage"
WEATHER_CHECK = "weather_coverage"
REGISTRY_POOL = "data_registry"


@daily_asset(
    FEATURES_GROUP,
    check_specs=[
        contract_spec("flight_features", daily_partitions),
        contract_spec(
            "flight_features",
            daily_partitions,
            name=LEAKAGE_CHECK,
            description="Fails if any post-departure field (dep_delay, arr_time, air_time, ...) "
            "is among the feature columns.",
        ),
        contract_spec(
            "flight_features",
            daily_partitions,
            name=WEATHER_CHECK,
            description=f"Fails if more than {MAX_FLIGHTS_WITHOUT_WEATHER_SHARE:.0%} of the "
            "day's flights have no weather at their origin in their departure hour (an "
            "incomplete weather delivery).",
        ),
    ],
    # Follow new raw days; a changed planes table does not rewrite history.
    automation_condition=follow_upstream(ignore=dg.AssetSelection.assets("planes")),
    # The lake IO manager commits each day to the DVC registry as it writes it (one at a time).
    metadata=versioned_in_registry("flight_features/{partition}.parquet"),
    pool=REGISTRY_POOL,
    kinds={"pandas", "parquet", "dvc"},
)
def flight_features(
    context: dg.AssetExecutionContext,
    raw_flights: Any,
    raw_weather: Any,
    planes: Any,
) -> Iterator[Any]:
    """Model-ready rows for one day: schedule, route, plane and origin weather, plus the label.

    Joins the day's flights with the weather at the origin in the scheduled departure hour
    and with the plane; adds day of week, scheduled hour and minute, block time and plane age;
    the label `is_delayed` is 1 when the flight arrived 15+ minutes late and missing for
    cancelled or diverted flights. Three blocking checks run before anything is written: the
    leakage guard, the weather coverage (flights without weather at their origin and hour,
    recorded as metadata) and the feature contract. Each version is written to the lake and
    committed to the DVC data registry together (both or neither); `registry_rev` and
    `dvc_md5` restore it bit for bit
    (`mlops-assets restore flight_features <day> --rev <registry_rev>`).
    """
    from mlops_assets.lib import features
    from mlops_assets.lib.contracts import validate

    day = context.partition_key
    frame = features.build_flight_features(raw_flights, raw_weather, planes)
    leaks = features.find_leakage(list(frame.columns))
    if leaks:
        yield from failed(
            LEAKAGE_CHECK,
            f"flight_features {day}: post-departure field(s) used as features: {', '.join(leaks)}",
            {"leaking_columns": leaks},
        )
        return

    coverage = features.weather_coverage(raw_flights, raw_weather)
    limit = MAX_FLIGHTS_WITHOUT_WEATHER_SHARE
    covered = _coverage_metadata(coverage)
    if coverage.share > limit:
        yield from failed(WEATHER_CHECK, coverage.message(day, limit), covered)
        return

    labelled = frame[features.LABEL_COLUMN].dropna()
    yield from validated_output(
        lambda: validate(frame, features.features_schema(), source=f"flight_features {day}"),
        source=f"raw_flights/raw_weather {day}",
        metadata={
            "labelled_rows": len(labelled),
            "cancelled": int(frame["is_cancelled"].sum()),
            "delayed_share": round(float(labelled.mean()), 4) if len(labelled) else 0.0,
            "feature_columns": features.FEATURE_COLUMNS,
            **covered,
        },
    )
    yield dg.AssetCheckResult(
        check_name=LEAKAGE_CHECK, passed=True, metadata={"features": len(features.FEATURE_COLUMNS)}
    )
    yield dg.AssetCheckResult(check_name=WEATHER_CHECK, passed=True, metadata=covered)


def _coverage_metadata(coverage: Any) -> dict[str, Any]:
    """The day's weather coverage as metadata: counts, share and the hours without weather."""
    hours = "".join(f"| {o} | {h} | {n} |\n" for o, h, n in coverage.missing_hours)
    return {
        "flights_without_weather": coverage.without_weather,
        "flights_without_weather_share": round(coverage.share, 4),
        "hours_without_weather": dg.MetadataValue.md(
            "| origin | hour | flights |\n|---|---|---|\n" + hours
        ),
    }
