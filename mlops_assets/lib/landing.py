"""The landing zone: where upstream files arrive, one file per dataset and day.

Layout (any fsspec/UPath URL works as the root)::

    <root>/flights/2013-01-05.csv
    <root>/weather/2013-01-05.csv
    <root>/reference/planes.csv | airports.csv | airlines.csv
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from upath import UPath

DAY_DATASETS = ("flights", "weather")
REFERENCE_DATASETS = ("planes", "airports", "airlines")
_DAY_NAME = re.compile(r"^(\d{4}-\d{2}-\d{2})\.csv$")


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


def write_atomic(target: Any, payload: bytes) -> None:
    """Writes ``payload`` under a hidden temporary name, then renames it into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.{uuid.uuid4().hex}.tmp"
    tmp.write_bytes(payload)
    tmp.rename(target)


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


def _fingerprint(path: Any) -> str:
    info = path.stat()
    mtime = getattr(info, "st_mtime_ns", None) or int(getattr(info, "st_mtime", 0) * 1e9)
    return f"{info.st_size}:{mtime}"


def scan(root: UPath | Path) -> list[LandingFile]:
    """Lists the landing files, parsing the day from each day file's name.

    Hidden files (in-flight temporary writes) are ignored. Files whose name is not a valid
    ``YYYY-MM-DD.csv`` are listed with a ``problem`` so the caller can report them.
    """
    found: list[LandingFile] = []
    if not root.exists():
        return found
    for dataset in (*DAY_DATASETS, "reference"):
        folder = root / dataset
        if not folder.exists():
            continue
        for path in sorted(folder.iterdir(), key=lambda p: p.name):
            if path.name.startswith(".") or not path.is_file():
                continue
            key = f"{dataset}/{path.name}"
            fingerprint = _fingerprint(path)
            if dataset == "reference":
                stem = path.name.removesuffix(".csv")
                problem = None if stem in REFERENCE_DATASETS and path.name.endswith(".csv") else (
                    f"unknown reference file {path.name!r} (expected one of "
                    f"{', '.join(n + '.csv' for n in REFERENCE_DATASETS)})"
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
        LandingFileError: naming the file when it is empty, binary or not parseable CSV.
    """
    import pandas as pd

    try:
        payload = path.read_bytes()
    except FileNotFoundError as exc:
        raise LandingFileError(f"{path}: landing file does not exist") from exc
    if not payload.strip():
        raise LandingFileError(f"{path}: file is empty (0 data bytes, no header)")
    if b"\x00" in payload[:4096]:
        raise LandingFileError(f"{path}: not a CSV file (binary content)")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LandingFileError(f"{path}: not a CSV file (not UTF-8 text: {exc.reason})") from exc
    import io

    try:
        frame = pd.read_csv(
            io.StringIO(text), dtype=str, keep_default_na=False, na_values=["", "NA"]
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise LandingFileError(f"{path}: not a parseable CSV file ({exc})") from exc
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame
