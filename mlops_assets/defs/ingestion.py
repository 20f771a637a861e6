"""Ingestion: landing files -> validated Parquet in the lake (reference tables and days).

Every dataset enters the lake the same way: its contract is checked on the values as
delivered, then the columns the contract marks as personal data are pseudonymized (a keyed
hash, ``lib/pseudonyms.py``) before the IO manager writes; a failure table masks them.
"""

from collections.abc import Callable, Iterator, Mapping
from datetime import date
from typing import Any

import dagster as dg

from mlops_assets.defs.contract_checks import Reporter, contract_spec, validated_output
from mlops_assets.defs.partitions import daily_partitions
from mlops_assets.resources.landing import LandingZone
from mlops_assets.resources.metrics_gateway import MetricsGateway
from mlops_assets.resources.pseudonyms import PseudonymKey

REFERENCE_GROUP = "reference"
INGESTION_GROUP = "ingestion"
DAY_CONTRACT = (
    "The day's manifest (rows, bytes, SHA-256: is the file complete?) and the pandera "
    "contract of the dataset, checked before write."
)


def _validated_and_pseudonymized(
    read: Callable[[], Any], schema: Any, source: str, pseudonyms: PseudonymKey
) -> Callable[[], Any]:
    """Reads, validates the raw values, then pseudonymizes the contract's sensitive columns."""
    from mlops_assets.lib import contracts

    def run() -> Any:
        frame = contracts.validate(read(), schema, source=source)
        sensitive = contracts.sensitive_columns(schema)
        return pseudonyms.pseudonymizer().frame(frame, sensitive) if sensitive else frame

    return run


def _reference_asset(name: str, description: str) -> dg.AssetsDefinition:
    @dg.asset(
        name=name,
        group_name=REFERENCE_GROUP,
        description=description,
        check_specs=[contract_spec(name)],
        kinds={"pandas", "parquet"},
    )
    def _reference(
        context: dg.AssetExecutionContext, landing: LandingZone, pseudonyms: PseudonymKey
    ) -> Iterator[Any]:
        from mlops_assets.lib import contracts
        from mlops_assets.lib.landing import read_csv

        path = landing.path(name)
        schema = getattr(contracts, f"{name}_schema")()
        yield from validated_output(
            _validated_and_pseudonymized(lambda: read_csv(path), schema, str(path), pseudonyms),
            source=str(path),
            metadata={"landing_path": dg.MetadataValue.path(str(path))},
        )

    return _reference


planes = _reference_asset(
    "planes",
    "Aircraft registry (tail number, year built, seats, engines) from `reference/planes.csv`.",
)
airports = _reference_asset(
    "airports",
    "FAA airport list from `reference/airports.csv`; destinations are checked against it.",
)
airlines = _reference_asset(
    "airlines",
    "Carrier codes and names from `reference/airlines.csv`; carriers are checked against it.",
)


def _contract_reporter(
    context: dg.AssetExecutionContext, metrics: MetricsGateway, dataset: str, path: Any = None
) -> Reporter:
    """Pushes the day's contract verdict (and, given the landing ``path``, its arrival)."""
    from mlops_assets.lib import pipeline_metrics as pm
    from mlops_assets.lib.landing import arrival_time

    day = context.partition_key

    def report(failures: int) -> Mapping[str, Any]:
        samples = pm.contract_samples(dataset, day, failures)
        if path is not None:
            samples += pm.landing_samples(day, arrival_time(path))
        return metrics.publish(context.assets_def.key.to_user_string(), samples, context.log)

    return report


@dg.asset(
    partitions_def=daily_partitions,
    group_name=INGESTION_GROUP,
    check_specs=[contract_spec("raw_flights", daily_partitions, description=DAY_CONTRACT)],
    kinds={"pandas", "parquet"},
)
def raw_flights(
    context: dg.AssetExecutionContext,
    landing: LandingZone,
    metrics: MetricsGateway,
    pseudonyms: PseudonymKey,
    airlines: Any,
    airports: Any,
) -> Iterator[Any]:
    """One day of scheduled and flown departures from New York, as delivered and validated.

    Reads `flights/<day>.csv` from the landing zone, checks it against the day's manifest
    (rows, bytes, SHA-256: a cut file is caught here) and validates it against the `flights`
    contract (types, ranges, known carriers and airports, unique flight key, every row on
    this day, null rules) before anything is written, then replaces the tail number (a
    personal-data column of the contract) by its keyed pseudonym. A broken file fails the
    `contract` check with a table of failure cases (personal data masked) and leaves the
    stored partition untouched. The
    verdict and the file's arrival are pushed to the Pushgateway when one is configured.
    """
    from mlops_assets.lib import contracts

    day = date.fromisoformat(context.partition_key)
    path = landing.path("flights", day)
    schema = contracts.flights_schema(airlines["carrier"], airports["faa"], day)
    yield from validated_output(
        _validated_and_pseudonymized(
            lambda: landing.read("flights", day), schema, str(path), pseudonyms
        ),
        source=str(path),
        metadata={"landing_path": dg.MetadataValue.path(str(path))},
        report=_contract_reporter(context, metrics, "flights", path),
    )


@dg.asset(
    partitions_def=daily_partitions,
    group_name=INGESTION_GROUP,
    check_specs=[contract_spec("raw_weather", daily_partitions, description=DAY_CONTRACT)],
    kinds={"pandas", "parquet"},
)
def raw_weather(
    context: dg.AssetExecutionContext,
    landing: LandingZone,
    metrics: MetricsGateway,
    pseudonyms: PseudonymKey,
) -> Iterator[Any]:
    """Hourly weather at the three New York airports for one day, as delivered and validated.

    Reads `weather/<day>.csv`, checks it against the day's manifest and validates it against
    the `weather` contract (plausible
    ranges, one reading per airport and hour, not empty) before anything is written.
    """
    from mlops_assets.lib import contracts

    day = date.fromisoformat(context.partition_key)
    path = landing.path("weather", day)
    schema = contracts.weather_schema(day)
    yield from validated_output(
        _validated_and_pseudonymized(
            lambda: landing.read("weather", day), schema, str(path), pseudonyms
        ),
        source=str(path),
        metadata={"landing_path": dg.MetadataValue.path(str(path))},
        report=_contract_reporter(context, metrics, "weather"),
    )
