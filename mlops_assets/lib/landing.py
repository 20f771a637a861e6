"""The landing zone: where upstream files arrive, one file per dataset and day.

Layout (any fsspec/UPath URL works as the root)::

    <root>/flights/2013-01-05.csv
    <root>/weather/2013-01-05.csv
    <root>/reference/planes.csv | airports.csv | airlines.csv
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from upath import UPath

DAY_DATASETS = ("flights", "weather")
REFERENCE_DATASETS = ("planes", "airports", "airlines")
_DAY_NAME = re.compile(r"^(\d{4}-\d{2}-\d{2})\.csv$")
GZIP_MAGIC = b"\x1f\x8b"


class LandingFileError(ValueError):
    """A landing file cannot be read as the CSV its dataset promises."""


def landing_path(root: UPath | Path, dataset: str, day: date | None = None) -> Any:
    """Path of a dataset's file for ``day`` (day datasets) or of a reference table."""
    if dataset in REFERENCE_DATASETS:
        return root / "reference" / f"{dataset}.csv"
    if dataset not in DAY_DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}")
    if day is None:
        raise ValueError(f"dataset {dataset!r} needs a day")
    return root / dataset / f"{day.isoformat()}.csv"


@dataclass(frozen=True)
class LandingFile:
    """One file seen in the landing zone.

    Attributes:
        dataset: ``flights``, ``weather`` or a reference table name.
        key: Relative path inside the landing root (stable across restarts).
        day: The day the file is for, or ``None`` for reference tables and bad names.
        fingerprint: Size and modification time; changes when a file is re-delivered.
        problem: Why the file cannot be used as it is named, if it cannot.
    """

    dataset: str
    key: str
    day: date | None
    fingerprint: str
    problem: str | None = None


def arrival_time(path: Any) -> datetime:
    """When a landing file arrived: its modification time (now when the store has none)."""
    try:
        return datetime.fromtimestamp(float(path.stat().st_mtime), UTC)
    except (OSError, AttributeError, TypeError, ValueError):
        return datetime.now(UTC)


def _fingerprint(path: Any) -> str:
    info = path.stat()
    mtime = getattr(info, "st_mtime_ns", None) or int(getattr(info, "st_mtime", 0) * 1e9)
    return f"{info.st_size}:{mtime}"


def _forget_listings(folder: Any) -> None:
    """Drops fsspec's cached listing of ``folder`` (object stores cache listings per process).

    A long-lived sensor process would otherwise never see files another client delivered
    after its first scan, nor the new size of a re-delivered file.
    """
    fs = getattr(folder, "fs", None)
    if fs is not None:
        fs.invalidate_cache(folder.path)


def scan(root: UPath | Path) -> list[LandingFile]:
    """Lists the landing files, parsing the day from each day file's name.

    Hidden files (in-flight temporary writes) are ignored. Files whose name is not a valid
    ``YYYY-MM-DD.csv`` are listed with a ``problem`` so the caller can report them.
    """
    found: list[LandingFile] = []
    _forget_listings(root)
    if not root.exists():
        return found
    for dataset in (*DAY_DATASETS, "reference"):
        folder: Any = root / dataset
        _forget_listings(folder)
        if not folder.exists():
            continue
        for path in sorted(folder.iterdir(), key=lambda p: p.name):
            if path.name.startswith(".") or not path.is_file():
                continue
            key = f"{dataset}/{path.name}"
            fingerprint = _fingerprint(path)
            if dataset == "reference":
                stem = path.name.removesuffix(".csv")
                problem = (
                    None
                    if stem in REFERENCE_DATASETS and path.name.endswith(".csv")
                    else (
                        f"unknown reference file {path.name!r} (expected one of "
                        f"{', '.join(n + '.csv' for n in REFERENCE_DATASETS)})"
                    )
                )
                found.append(LandingFile(stem, key, None, fingerprint, problem))
                continue
            match = _DAY_NAME.match(path.name)
            day: date | None = None
            problem = None
            if match:
                try:
                    day = date.fromisoformat(match.group(1))
                except ValueError:
                    problem = f"{key}: {match.group(1)!r} is not a calendar date"
            else:
                problem = f"{key}: file name must be YYYY-MM-DD.csv"
            found.append(LandingFile(dataset, key, day, fingerprint, problem))
    return found


def read_csv(path: Any) -> pd.DataFrame:
    """Reads a landing CSV as strings, so type problems surface in the contract, not here.

    Raises:
        LandingFileError: naming the file when it is empty, binary (gzip said so), not UTF-8
            (the offset and line of the first bad byte) or not parseable CSV.
    """
    import pandas as pd

    try:
        payload = path.read_bytes()
    except FileNotFoundError as exc:
        raise LandingFileError(f"{path}: landing file does not exist") from exc
    if not payload.strip():
        raise LandingFileError(f"{path}: file is empty (0 data bytes, no header)")
    if payload.startswith(GZIP_MAGIC):
        # A common upstream slip (an export compressed in place); saying so saves a hex dump.
        raise LandingFileError(
            f"{path}: not a CSV file (gzip-compressed data; deliver the uncompressed CSV)"
        )
    if b"\x00" in payload[:4096]:
        raise LandingFileError(f"{path}: not a CSV file (binary content)")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LandingFileError(f"{path}: not a CSV file ({_not_utf8(payload, exc)})") from exc
    import io

    try:
        frame = pd.read_csv(
            io.StringIO(text), dtype=str, keep_default_na=False, na_values=["", "NA"]
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise LandingFileError(f"{path}: not a parseable CSV file ({exc})") from exc
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def _not_utf8(payload: bytes, error: UnicodeDecodeError) -> str:
    """Where the text stops being UTF-8: the byte, its offset and its line, to find it."""
    line = payload.count(b"\n", 0, error.start) + 1
    return (
        f"not UTF-8 text: {error.reason} 0x{payload[error.start]:02x} "
        f"at byte offset {error.start}, line {line}"
    )


@dataclass(frozen=True)
class DayRequest:
    """Materialize these day datasets for ``day`` (a run per day)."""

    day: date
    datasets: tuple[str, ...]
    run_key: str


@dataclass(frozen=True)
class LandingPlan:
    """What a landing-sensor tick should do.

    Attributes:
        references: Reference tables to (re)materialize, with their run key.
        days: One request per day with new or re-delivered files.
        skipped: Files that will not be materialized, with the reason.
        deferred: Day files left for a later tick (reference tables not ready yet).
        seen: The new cursor state: landing key -> fingerprint of every handled file.
    """

    references: tuple[tuple[str, ...], str] | None
    days: list[DayRequest]
    skipped: list[str]
    deferred: list[str]
    seen: dict[str, str]


def plan_landing_runs(
    files: list[LandingFile],
    seen: dict[str, str],
    *,
    first_day: date,
    end_day: date,
    references_ready: bool,
) -> LandingPlan:
    """Decides which partitions a landing-sensor tick requests.

    A file is new when its key is not in ``seen`` or its fingerprint changed (a
    re-delivery). Run keys contain the fingerprints, so the same files never yield two runs,
    even if the cursor is lost. Day files wait until the reference tables they are checked
    against have been materialized once.

    Args:
        files: The current landing listing (``scan``).
        seen: Cursor state from the previous tick.
        first_day: First partition day.
        end_day: Day after the last partition day.
        references_ready: Whether planes, airports and airlines have been materialized.
    """
    new_seen = dict(seen)
    skipped: list[str] = []
    deferred: list[str] = []
    refs: list[LandingFile] = []
    by_day: dict[date, list[LandingFile]] = {}
    for item in files:
        if seen.get(item.key) == item.fingerprint:
            continue
        if item.problem:
            skipped.append(item.problem)
            new_seen[item.key] = item.fingerprint
        elif item.day is None:
            refs.append(item)
        elif not first_day <= item.day < end_day:
            skipped.append(
                f"{item.key}: {item.day} is outside the partition range "
                f"{first_day} .. {end_day} (exclusive)"
            )
            new_seen[item.key] = item.fingerprint
        elif not references_ready:
            deferred.append(item.key)
        else:
            by_day.setdefault(item.day, []).append(item)

    references = None
    if refs:
        names = tuple(sorted(r.dataset for r in refs))
        ordered = sorted(refs, key=lambda r: r.key)
        key = "reference:" + ",".join(f"{r.dataset}={r.fingerprint}" for r in ordered)
        references = (names, key)
        new_seen.update({r.key: r.fingerprint for r in refs})

    days: list[DayRequest] = []
    for day in sorted(by_day):
        items = sorted(by_day[day], key=lambda f: f.key)
        run_key = f"{day}:" + ",".join(f"{f.dataset}={f.fingerprint}" for f in items)
        days.append(DayRequest(day, tuple(f.dataset for f in items), run_key))
        new_seen.update({f.key: f.fingerprint for f in items})
    return LandingPlan(references, days, skipped, deferred, new_seen)
