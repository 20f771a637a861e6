"""Dagster's floor for a day's run: the same assets and checks with steps that do nothing.

``benchmarks.one_day`` runs it beside the pipeline and the pure side on the same instance, so
the three are compared in one run: what a run of that shape costs before any work is done.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import dagster as dg

from mlops_assets.defs.partitions import daily_partitions

PREFIX = "floor"

# The day's assets with their checks (asset -> (parents, checks)), as the graph has them.
DATA_HALF: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "raw_flights": ((), ("contract",)),
    "raw_weather": ((), ("contract",)),
    "flight_features": (
        ("raw_flights", "raw_weather"),
        ("contract", "no_leakage", "weather_coverage"),
    ),
}
CHAIN: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "batch_predictions": (("flight_features",), ()),
    "drift_report": (("flight_features", "batch_predictions"), ("drift",)),
    "model_performance": (("batch_predictions", "flight_features"), ()),
    "online_predictions": (("flight_features", "batch_predictions"), ()),
    "challenger_predictions": (("flight_features",), ()),
    "trial_evaluation": (
        ("challenger_predictions", "batch_predictions", "flight_features", "online_predictions"),
        (),
    ),
}


def _empty_asset(name: str, parents: Sequence[str], checks: Sequence[str]) -> dg.AssetsDefinition:
    key = dg.AssetKey([PREFIX, name])

    @dg.asset(
        key=key,
        deps=[dg.AssetKey([PREFIX, p]) for p in parents],
        partitions_def=daily_partitions,
        check_specs=[
            dg.AssetCheckSpec(c, asset=key, blocking=True, partitions_def=daily_partitions)
            for c in checks
        ],
    )
    def _asset() -> Iterator[Any]:
        yield dg.MaterializeResult(metadata={"dagster/row_count": 0})
        for check in checks:
            yield dg.AssetCheckResult(check_name=check, passed=True)

    return _asset


def floor_job(chain: bool) -> dg.JobDefinition:
    """A job of empty steps shaped like a day's landing run (with ``chain``, on to the reports)."""
    shape = {**DATA_HALF, **(CHAIN if chain else {})}
    assets = [_empty_asset(name, *spec) for name, spec in shape.items()]
    defs = dg.Definitions(
        assets=assets,
        jobs=[dg.define_asset_job("floor", selection=dg.AssetSelection.assets(*assets))],
        # The executor the project's runs use: every step in the run's process.
        executor=dg.in_process_executor,
    )
    return defs.resolve_job_def("floor")


def run_floor(job: dg.JobDefinition, instance: dg.DagsterInstance, day: str) -> None:
    """One run of ``job`` for ``day``, as the local loop launches a day's run."""
    result = job.execute_in_process(
        partition_key=day,
        instance=instance,
        raise_on_error=False,
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
    )
    if not result.success:
        raise RuntimeError(f"the floor run for {day} failed")
