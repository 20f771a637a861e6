"""The landing zone: where upstream files arrive, one file per dataset and day.

Layout (any fsspec/UPath URL works as the root)::

    <root>/flights/2013-01-05.csv
    <root>/weather/2013-01-05.csv
    <root>/manifests/2013-01-05.json     the day's completeness signal, written last
    <root>/reference/planes.csv | airports.csv | airlines.csv

The manifest format and its verification live in ``mlops_assets.lib.manifest``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from upath import UPath

DAY_DATASETS = ("flights", "weather")
REFERENCE_DATASETS = ("planes", "airports", "airlines")
MANIFEST_FOLDER = "manifests"
# What ``scan`` calls a day's manifest (its ``dataset``).
MANIFEST = "manifest"
_DAY_NAME = re.compile(r"^(\d{4}-\d{2}-\d{2})\.csv$")
_MANIFEST_NAME = re.compile(r"^(\d{4}-\d{2}-\d{2})\.json$")
GZIP_MAGIC = b"\x1f\x8b"


class LandingFileError(ValueError):
    """A landing file cannot be read as the CSV its dataset promises.

    Attributes:
        rule: The rule the delivery broke, as the failed check reports it.
    """

    rule = "readable_csv"


def landing_path(root: UPath | Path, dataset: str, day: date | None = None) -> Any:
    """Path of a dataset's file for ``day`` (day datasets) or of a reference table."""
    if dataset in REFERENCE_DATASETS:
        return root / "reference" / f"{dataset}.csv"
    if dataset not in DAY_DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}")
    if day is None:
        raise ValueError(f"dataset {dataset!r} needs a day")
    return root / dataset / f"{day.isoformat()}.csv"


def manifest_path(root: UPath | Path, day: date) -> Any:
    """Path of the manifest of ``day``'s files."""
    return root / MANIFEST_FOLDER / f"{day.isoformat()}.json"


@dataclass(frozen=True)
class LandingFile:
    """One file seen in the landing zone.

    Attributes:
        dataset: ``flights``, ``weather`` or a reference table name.
        key: Relative path inside the landing root (stable across restarts).
        day: The day the file is for, or ``None`` for reference tables and bad names.
        fingerprint: Size and modification time; changes when a file is re-delivered.
        problem: Why the file cannot be used as it is named, if it cannot.
        arrived: When it arrived (modification time), to say how long it has waited.
    """

    dataset: str
    key: str
    day: date | None
    fingerprint: str
    problem: str | None = None
    arrived: datetime | None = None


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
    """Lists the landing files and manifests, parsing the day from each day file's name.

    Hidden files (in-flight temporary writes) are ignored. Files whose name is not a valid
    ``YYYY-MM-DD.csv`` (``.json`` for manifests) are listed with a ``problem`` so the caller
    can report them.
    """
    found: list[LandingFile] = []
    _forget_listings(root)
    if not root.exists():
        return found
    for folder_name in (*DAY_DATASETS, MANIFEST_FOLDER, "reference"):
        folder: Any = root / folder_name
        _forget_listings(folder)
        if not folder.exists():
            continue
        for path in sorted(folder.iterdir(), key=lambda p: p.name):
            if path.name.startswith(".") or not path.is_file():
                continue
            key = f"{folder_name}/{path.name}"
            seen = (_fingerprint(path), arrival_time(path))
            if folder_name == "reference":
                found.append(_reference_file(path.name, key, *seen))
            elif folder_name == MANIFEST_FOLDER:
                found.append(_day_file(MANIFEST, _MANIFEST_NAME, path.name, key, *seen))
            else:
                found.append(_day_file(folder_name, _DAY_NAME, path.name, key, *seen))
    return found


def _reference_file(name: str, key: str, fingerprint: str, arrived: datetime) -> LandingFile:
    stem = name.removesuffix(".csv")
    problem = (
        None
        if stem in REFERENCE_DATASETS and name.endswith(".csv")
        else (
            f"unknown reference file {name!r} (expected one of "
            f"{', '.join(n + '.csv' for n in REFERENCE_DATASETS)})"
        )
    )
    return LandingFile(stem, key, None, fingerprint, problem, arrived)


def _day_file(
    dataset: str, pattern: re.Pattern[str], name: str, key: str, fingerprint: str, arrived: datetime
) -> LandingFile:
    match = pattern.match(name)
    day: date | None = None
    problem = None
    if match:
        try:
            day = date.fromisoformat(match.group(1))
        except ValueError:
            problem = f"{key}: {match.group(1)!r} is not a calendar date"
    else:
        suffix = ".json" if dataset == MANIFEST else ".csv"
        problem = f"{key}: file name must be YYYY-MM-DD{suffix}"
    return LandingFile(dataset, key, day, fingerprint, problem, arrived)


def read_csv(path: Any) -> pd.DataFrame:
    """Reads a landing CSV as strings, so type problems surface in the contract, not here.

    Raises:
        LandingFileError: naming the file when it is missing, empty, binary (gzip said so),
            not UTF-8 (the offset and line of the first bad byte) or not parseable CSV.
    """
    return parse_csv(read_payload(path), path)


def read_payload(path: Any) -> bytes:
    """The bytes of a landing file.

    Raises:
        LandingFileError: when it does not exist.
    """
    try:
        return bytes(path.read_bytes())
    except FileNotFoundError as exc:
        raise LandingFileError(f"{path}: landing file does not exist") from exc


def parse_csv(payload: bytes, path: Any) -> pd.DataFrame:
    """Parses the bytes of the landing file ``path`` as a CSV of strings (see ``read_csv``)."""
    import pandas as pd

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
    """Materialize these day datasets for ``day`` (a run per day).

    Attributes:
        day: The partition day.
        datasets: The day's new or re-delivered datasets.
        run_key: One per delivery (the files' fingerprints).
        landed: The day's other datasets, handled earlier and unchanged: a re-delivery
            reads them again, so the day's run can carry its features.
    """

    day: date
    datasets: tuple[str, ...]
    run_key: str
    landed: tuple[str, ...] = ()


@dataclass(frozen=True)
class LandingPlan:
    """What a landing-sensor tick should do.

    Attributes:
        references: Reference tables to (re)materialize, with their run key.
        days: One request per day with new or re-delivered files.
        skipped: Files that will not be materialized, with the reason.
        deferred: Day files left for a later tick (reference tables not ready yet).
        seen: The new cursor state: landing key -> fingerprint of every handled file.
        waiting: Day files whose delivery is not complete yet (no manifest, not listed in
            it, or listed and absent), each with how long it has waited.
    """

    references: tuple[tuple[str, ...], str] | None
    days: list[DayRequest]
    skipped: list[str]
    deferred: list[str]
    seen: dict[str, str]
    waiting: list[str] = field(default_factory=list)


# The keys a day's manifest lists, or why it cannot be read (``lib.manifest.listing``).
ManifestListing = Callable[[date], "frozenset[str] | str"]


def plan_landing_runs(
    files: list[LandingFile],
    seen: dict[str, str],
    *,
    first_day: date,
    end_day: date,
    references_ready: bool,
    listing: ManifestListing,
    require_manifests: bool = True,
    now: datetime | None = None,
) -> LandingPlan:
    """Decides which partitions a landing-sensor tick requests.

    A file is new when its key is not in ``seen`` or its fingerprint changed (a
    re-delivery); a re-delivered manifest with no new file makes its day's files new again
    (the upstream corrected the manifest of a blocked day). A day file is requested once its
    day's manifest lists it (without a manifest, only when manifests are not required);
    until then it waits, reported in ``waiting``. Run keys contain the
    fingerprints (the manifest's too), so the same delivery never yields two runs, even if
    the cursor is lost. Day files wait until the reference tables they are checked against
    have been materialized once.

    Args:
        files: The current landing listing (``scan``).
        seen: Cursor state from the previous tick.
        first_day: First partition day.
        end_day: Day after the last partition day.
        references_ready: Whether planes, airports and airlines have been materialized.
        listing: Reads the keys a day's manifest lists (called for days with news only).
        require_manifests: Whether a day without a manifest waits for it.
        now: The time waits are measured to (default: now).
    """
    found = _Listing(seen)
    for item in files:
        found.add(item, first_day, end_day, references_ready)
    for day, listed in found.manifests.items():
        # A new manifest alone (a corrected count) delivers its day's files again.
        if found.news.get(day) == {} and seen.get(listed.key) != listed.fingerprint:
            found.news[day].update(found.delivered.get(day, {}))

    completeness = _Completeness(listing, require_manifests, now or datetime.now(UTC))
    days: list[DayRequest] = []
    waiting: list[str] = []
    for day in sorted(found.news):
        manifest = found.manifests.get(day)
        delivered = set(found.delivered.get(day, {}))
        ready, wait = completeness.split(day, found.news[day], manifest, delivered)
        waiting += wait
        if not ready:
            continue
        days.append(found.request(day, ready, manifest))
    references = _references(found.refs, found.seen)
    return LandingPlan(references, days, found.skipped, found.deferred, found.seen, waiting)


class _Listing:
    """A landing listing sorted for planning: what is new, per day, and what is skipped."""

    def __init__(self, seen: dict[str, str]):
        self.seen = dict(seen)
        self.old = seen
        self.skipped: list[str] = []
        self.deferred: list[str] = []
        self.refs: list[LandingFile] = []
        self.news: dict[date, dict[str, LandingFile]] = {}  # new day files (manifest or not)
        self.delivered: dict[date, dict[str, LandingFile]] = {}  # every day file present
        self.manifests: dict[date, LandingFile] = {}

    def request(
        self, day: date, ready: list[LandingFile], manifest: LandingFile | None
    ) -> DayRequest:
        """The run request of ``day``'s ready files, which are then seen (with the manifest)."""
        items = sorted(ready, key=lambda f: f.key)
        parts = [f"{f.dataset}={f.fingerprint}" for f in items]
        parts += [f"{MANIFEST}={manifest.fingerprint}"] if manifest else []
        landed = self.landed(day, {f.key for f in items})
        self.seen.update({f.key: f.fingerprint for f in items})
        if manifest:
            self.seen[manifest.key] = manifest.fingerprint
        return DayRequest(day, tuple(f.dataset for f in items), f"{day}:" + ",".join(parts), landed)

    def landed(self, day: date, new: set[str]) -> tuple[str, ...]:
        """The datasets of ``day`` handled on an earlier tick, other than ``new``."""
        earlier = self.delivered.get(day, {}).values()
        return tuple(
            sorted(
                f.dataset
                for f in earlier
                if f.key not in new and self.old.get(f.key) == f.fingerprint
            )
        )

    def add(
        self, item: LandingFile, first_day: date, end_day: date, references_ready: bool
    ) -> None:
        if item.problem is None and item.day is not None:
            if item.dataset == MANIFEST:
                self.manifests[item.day] = item
            else:
                self.delivered.setdefault(item.day, {})[item.key] = item
        if self.old.get(item.key) == item.fingerprint:
            return
        if item.problem:
            self.skipped.append(item.problem)
            self.seen[item.key] = item.fingerprint
        elif item.day is None:
            self.refs.append(item)
        elif not first_day <= item.day < end_day:
            self.skipped.append(
                f"{item.key}: {item.day} is outside the partition range "
                f"{first_day} .. {end_day} (exclusive)"
            )
            self.seen[item.key] = item.fingerprint
        elif not references_ready:
            if item.dataset != MANIFEST:
                self.deferred.append(item.key)
        else:
            day_news = self.news.setdefault(item.day, {})
            if item.dataset != MANIFEST:
                day_news[item.key] = item


def _references(
    refs: list[LandingFile], new_seen: dict[str, str]
) -> tuple[tuple[str, ...], str] | None:
    """The reference tables to request and their run key; marks them seen."""
    if not refs:
        return None
    names = tuple(sorted(r.dataset for r in refs))
    ordered = sorted(refs, key=lambda r: r.key)
    key = "reference:" + ",".join(f"{r.dataset}={r.fingerprint}" for r in ordered)
    new_seen.update({r.key: r.fingerprint for r in refs})
    return names, key


@dataclass(frozen=True)
class _Completeness:
    """Splits a day's new files into those whose delivery is complete and those that wait."""

    listing: ManifestListing
    require: bool
    now: datetime

    def split(
        self,
        day: date,
        items: dict[str, LandingFile],
        manifest: LandingFile | None,
        delivered: set[str],
    ) -> tuple[list[LandingFile], list[str]]:
        if manifest is None:
            if not self.require:
                return list(items.values()), []
            expected = f"{MANIFEST_FOLDER}/{day.isoformat()}.json"
            return [], [
                f"{f.key}: waiting for its manifest {expected} ({self.waited(f)})"
                for f in items.values()
            ]
        listed = self.listing(day)
        if isinstance(listed, str):
            return [], [f"{key}: waiting for a valid manifest ({listed})" for key in sorted(items)]
        unlisted = [
            f"{f.key}: not listed in {manifest.key}, waiting for a manifest that lists it "
            f"({self.waited(f)})"
            for f in items.values()
            if f.key not in listed
        ]
        absent = [
            f"{key}: listed in {manifest.key} but not delivered "
            f"(the manifest {self.waited(manifest)})"
            for key in sorted(listed - delivered)
        ]
        return [f for f in items.values() if f.key in listed], unlisted + absent

    def waited(self, item: LandingFile) -> str:
        if item.arrived is None:
            return "arrival time unknown"
        return f"arrived {_duration((self.now - item.arrived).total_seconds())} ago"


def _duration(seconds: float) -> str:
    """``45 s``, ``12 min``, ``3 h 5 min``: how long a file has waited, for a person."""
    seconds = max(0, int(seconds))
    if seconds < 90:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 90:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60} min"
