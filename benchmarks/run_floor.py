"""Dagster's floor for a day's run: the same assets and checks with steps that do nothing.

``benchmarks.one_day`` runs it beside the pipeline and the pure side on the same instance, so
the three are compared in one run: what a run of that shape costs before any work is done.
The shape is read from the project's own assets, so it follows the graph.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import dagster as dg

from mlops_assets.defs.automation import DAY_CHAIN
from mlops_assets.defs.features import flight_features
from mlops_assets.defs.ingestion import raw_flights, raw_weather
from mlops_assets.defs.partitions import daily_partitions

PREFIX = "floor"


def _empty_copy(asset: dg.AssetsDefinition, shape: set[dg.AssetKey]) -> dg.AssetsDefinition:
    """``asset`` with its parents inside ``shape`` and its checks, and a step that does nothing."""
    key = dg.AssetKey([PREFIX, *asset.key.path])
    specs = [
        dg.AssetCheckSpec(s.name, asset=key, blocking=s.blocking, partitions_def=daily_partitions)
        for s in asset.check_specs
    ]
    parents = [dg.AssetKey([PREFIX, *d.path]) for d in asset.dependency_keys if d in shape]

    @dg.asset(key=key, deps=parents, partitions_def=daily_partitions, check_specs=specs)
    def _asset() -> Iterator[Any]:
        yield dg.MaterializeResult(metadata={"dagster/row_count": 0})
        for spec in specs:
            yield dg.AssetCheckResult(check_name=spec.name, passed=True)

    return _asset


def floor_job(chain: bool) -> dg.JobDefinition:
    """A job of empty steps shaped like a day's landing run (with ``chain``, on to the reports)."""
    originals = [raw_flights, raw_weather, flight_features, *(DAY_CHAIN if chain else ())]
    shape = {a.key for a in originals}
    assets = [_empty_copy(a, shape) for a in originals]
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
