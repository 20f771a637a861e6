"""Replays the data source into the landing zone, one file per dataset and day.

Generic: the tables come only through the source interface (``read_source_csv`` and
``read_source_table`` of ``mlops_assets.lib.source``), so a team feeding the pipeline from
its own upstream replaces that one module and this replay works unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from mlops_assets.lib import source as default_source
from mlops_assets.lib.landing import (
    DAY_DATASETS,
    REFERENCE_DATASETS,
    landing_path,
    manifest_path,
)
from mlops_assets.lib.manifest import write_manifest
from mlops_assets.lib.storage import write_atomic

if TYPE_CHECKING:
    import pandas as pd
    from upath import UPath


class DataSource(Protocol):
    """The interface of a source module (see ``mlops_assets/lib/source.py``)."""

    def read_source_csv(self, name: str) -> bytes:
        """CSV bytes of one dataset, as the upstream delivers them."""
        ...

    def read_source_table(self, name: str) -> pd.DataFrame:
        """One dataset as a frame of strings."""
        ...


@dataclass(frozen=True)
class ReplaySummary:
    """What a replay wrote."""

    days: list[date]
    files: list[str]
    rows: dict[str, int]


def day_keys(table: pd.DataFrame) -> pd.Series:
    """The ISO day (``2013-01-05``) of each row of a day dataset read as strings."""
    return table["year"] + "-" + table["month"].str.zfill(2) + "-" + table["day"].str.zfill(2)


def replay(
    landing: UPath | Path,
    start: date,
    days: int,
    *,
    include_reference: bool = True,
    skip_existing: bool = False,
    source: DataSource | None = None,
) -> ReplaySummary:
    """Copies ``days`` days from the data source into the landing zone, one file per day.

    The day datasets are split into days by their ``year``, ``month`` and ``day`` columns.
    Files are written atomically (temporary name, then rename), so a watcher never sees a
    partial file. Each day's manifest (``lib/manifest.py``) is written after its files, as
    the signal that the day is complete. A day with no rows in the source (the weather of
    2013-12-31 in the demo data) produces a header-only file, as an upstream export of an
    empty day would.

    Args:
        landing: Root of the landing zone.
        start: First day to replay.
        days: Number of consecutive days.
        include_reference: Also (re)write planes, airports and airlines.
        skip_existing: Leave files that already exist untouched.
        source: A module (or object) with the source interface; default
            ``mlops_assets.lib.source``.

    Returns:
        The days, the files written (manifests last) and row counts per dataset.
    """
    if days < 1:
        raise ValueError("days must be at least 1")
    upstream: DataSource = source if source is not None else default_source
    wanted = [start + timedelta(days=i) for i in range(days)]
    written: list[str] = []
    rows: dict[str, int] = {}
    touched: set[date] = set()
    for dataset in DAY_DATASETS:
        for day, target, count in _write_days(landing, upstream, dataset, wanted, skip_existing):
            written.append(str(target))
            touched.add(day)
            rows[dataset] = rows.get(dataset, 0) + count
    for day in wanted:
        target = manifest_path(landing, day)
        if day not in touched and target.exists():
            continue
        write_manifest(landing, day)
        written.append(str(target))
    if include_reference:
        written += _write_references(landing, upstream, skip_existing)
    return ReplaySummary(days=wanted, files=written, rows=rows)


def _write_days(
    landing: UPath | Path,
    upstream: DataSource,
    dataset: str,
    days: list[date],
    skip_existing: bool,
) -> Iterator[tuple[date, UPath | Path, int]]:
    """Writes each of ``days`` of ``dataset``; yields the day, its file and its rows."""
    table = upstream.read_source_table(dataset)
    groups = dict(iter(table.groupby(day_keys(table), sort=False)))
    for day in days:
        target = landing_path(landing, dataset, day)
        if skip_existing and target.exists():
            continue
        frame = groups.get(day.isoformat(), table.iloc[0:0])
        write_atomic(target, frame.to_csv(index=False).encode())
        yield day, target, len(frame)


def _write_references(
    landing: UPath | Path, upstream: DataSource, skip_existing: bool
) -> list[str]:
    """(Re)writes the reference tables; returns the files written."""
    written = []
    for name in REFERENCE_DATASETS:
        target = landing_path(landing, name)
        if skip_existing and target.exists():
            continue
        write_atomic(target, upstream.read_source_csv(name))
        written.append(str(target))
    return written
