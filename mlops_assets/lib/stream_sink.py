"""The lake sink of streamed predictions: Parquet parts in day folders, idempotent by event id.

The stream scorer writes each micro-batch here before it acknowledges the batch's events, so a
batch delivered again (a broker restart, a scorer killed before its ack) is written again. Two
rules make that harmless:

- a part is named after the digest of its sorted event ids, so the same batch written twice
  is the same file (replaced atomically, never doubled);
- a reader keeps one row per event id (the first scored), so an event that comes back in a
  differently composed batch still counts once.

Layout: ``<root>/<flight_date>/part-<digest>.parquet``, one folder per scheduled flight date
(the partition the labels land in). Parts are written with ``storage.write_atomic`` (a rename
on a disk, one PUT in an object store): a killed writer leaves only a hidden staged file that
no reader lists, and the next write of that day removes such leftovers once they are old.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mlops_assets.lib.storage import (
    discard,
    is_object_store,
    location,
    write_atomic,
)

if TYPE_CHECKING:
    import pandas as pd

ROOT_VARIABLE = "MLOPS_STREAM_SINK"
COLUMNS = [
    "event_id",
    "flight_date",
    "carrier",
    "flight",
    "origin",
    "probability",
    "delayed",
    "threshold",
    "model_version",
    "sent_at",
    "scored_at",
]
DTYPES = {
    "event_id": "object",
    "flight_date": "object",
    "carrier": "object",
    "flight": "int64",
    "origin": "object",
    "probability": "float64",
    "delayed": "bool",
    "threshold": "float64",
    "model_version": "object",
    "sent_at": "float64",
    "scored_at": "float64",
}
PART_PREFIX, PART_SUFFIX = "part-", ".parquet"
# A staged file this old belongs to a writer that is gone (a part is written in milliseconds).
STALE_STAGED_S = 300.0


def write_batch(root: str, rows: list[dict[str, Any]]) -> list[str]:
    """Writes one micro-batch of predictions: one part per flight date, each atomically.

    Args:
        root: Folder or URL of the sink.
        rows: Predictions with the fields of ``COLUMNS`` (extra fields are dropped), all of
            one model version.

    Returns:
        The written parts as ``<flight_date>/<name>``, in date order.

    Raises:
        ValueError: if the batch mixes model versions or a row misses a field.
    """
    if not rows:
        return []
    versions = sorted({str(row.get("model_version")) for row in rows})
    if len(versions) > 1:
        raise ValueError(f"a batch is scored by one model version, got {', '.join(versions)}")
    missing = sorted({name for row in rows for name in COLUMNS if name not in row})
    if missing:
        raise ValueError(f"predictions miss the field(s) {', '.join(missing)}")
    by_day: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_day.setdefault(str(row["flight_date"]), []).append(row)
    written = []
    for day in sorted(by_day):
        name = part_name([str(row["event_id"]) for row in by_day[day]])
        folder = location(root) / day
        write_atomic(folder / name, _parquet(by_day[day]))
        sweep_staged(folder)
        written.append(f"{day}/{name}")
    return written


def _parquet(rows: list[dict[str, Any]]) -> bytes:
    """Rows as Parquet in the sink's schema, straight from the dicts (no DataFrame: ~1 ms)."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    types = {"int64": pa.int64(), "float64": pa.float64(), "bool": pa.bool_()}
    schema = pa.schema([(name, types.get(DTYPES[name], pa.string())) for name in COLUMNS])
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), buffer, compression="zstd")
    return buffer.getvalue()


def part_name(event_ids: list[str]) -> str:
    """The part's name: the digest of its sorted event ids (the same batch, the same name)."""
    digest = hashlib.sha256("\n".join(sorted(event_ids)).encode()).hexdigest()[:24]
    return f"{PART_PREFIX}{digest}{PART_SUFFIX}"


def sweep_staged(folder: Any, older_than_s: float = STALE_STAGED_S) -> list[str]:
    """Removes staged files of writers that are gone (on a disk; an object store has none).

    Returns:
        The names removed.
    """
    if is_object_store(folder) or not folder.exists():
        return []
    now, removed = time.time(), []
    for staged in folder.glob(".*.tmp"):
        try:
            old = now - staged.stat().st_mtime > older_than_s
        except FileNotFoundError:
            continue  # its writer just published or removed it
        if old:
            discard(staged)
            removed.append(staged.name)
    return removed


def days(root: str) -> list[str]:
    """Flight dates with at least one folder in the sink, sorted."""
    try:
        return sorted(p.name for p in location(root).iterdir() if not p.name.startswith("."))
    except (FileNotFoundError, NotADirectoryError):
        return []


def parts(root: str, day: str) -> list[str]:
    """Names of the day's published parts, sorted (a listing: cheap enough for a sensor)."""
    try:
        return sorted(
            p.name
            for p in (location(root) / day).iterdir()
            if p.name.startswith(PART_PREFIX) and p.name.endswith(PART_SUFFIX)
        )
    except (FileNotFoundError, NotADirectoryError):
        return []


def read_raw(root: str, day: str) -> pd.DataFrame:
    """Every row of every part of the day, duplicates included (``COLUMNS``)."""
    import io

    import pandas as pd

    folder = location(root) / day
    frames = [
        pd.read_parquet(io.BytesIO((folder / name).read_bytes())) for name in parts(root, day)
    ]
    if not frames:
        return pd.DataFrame(columns=COLUMNS).astype(DTYPES)
    return pd.concat(frames, ignore_index=True)[COLUMNS].astype(DTYPES)


def deduplicate(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per event id, the first scored (ties: model version), sorted by event id."""
    ordered = frame.sort_values(["event_id", "scored_at", "model_version"], kind="stable")
    return ordered.drop_duplicates("event_id", keep="first").reset_index(drop=True)


def read_day(root: str, day: str) -> pd.DataFrame:
    """The day's streamed predictions, one row per event id (``COLUMNS``; empty if none)."""
    return deduplicate(read_raw(root, day))


def default_root(env: Mapping[str, str] | None = None) -> str:
    """Where streamed predictions go when nothing else says.

    ``MLOPS_STREAM_SINK``; else in production ``<MLOPS_LAKE_URL>/stream_sink`` (where the
    pipeline reads them back); else the state folder's ``lake/stream_sink``.
    """
    from mlops_assets import settings

    return settings.lake_root(ROOT_VARIABLE, "stream_sink", env=env)
