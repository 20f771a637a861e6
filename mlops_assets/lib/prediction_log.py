"""The online prediction log: one JSON line per prediction, in day folders of the lake.

Every prediction the service makes, the shadow ones included, becomes one line with the
flight's key, the model (version and role), whether the answer was returned (``served``),
the serving mode, the probability and the decision. Never the request body: no weather, no
tail number.

Layout: ``<root>/<flight_date>/part-<utc stamp>-<pid>-<seq>.jsonl``, one folder per scheduled
flight date (the partition the labels land in). Lines are buffered in memory and each flush
writes every buffered day as a whole new part with ``storage.write_atomic`` (a rename on a
disk, one PUT in an object store), so a reader never sees a torn line and the same code runs
on a folder or an ``s3://`` URL. A failed write never reaches the caller: its lines are
counted as lost (``on_lost``) and logged. No BentoML here: the service wires it in.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from mlops_assets.lib.background import Periodic
from mlops_assets.lib.storage import location, write_atomic

if TYPE_CHECKING:
    import pandas as pd

ROOT_VARIABLE = "MLOPS_PREDICTION_LOG"
COLUMNS = [
    "request_id",
    "time",
    "flight_date",
    "carrier",
    "flight",
    "origin",
    "model_version",
    "role",
    "served",
    "mode",
    "probability",
    "delayed",
]
# Small parts are cheap to read back; more than a few seconds of lines is too much to lose.
FLUSH_LINES = 1000
FLUSH_SECONDS = 5.0
PART_PREFIX, PART_SUFFIX = "part-", ".jsonl"

logger = logging.getLogger(__name__)


def log_line(
    result: Mapping[str, Any],
    *,
    request_id: str,
    role: str,
    served: bool,
    mode: str,
    at: datetime | None = None,
) -> dict[str, Any]:
    """The log line of one scored flight (``result`` is a ``lib.scoring.score`` row).

    Only the named columns are copied, so nothing else of the request can leak in.
    """
    return log_lines([result], [request_id], role=role, served=served, mode=mode, at=at)[0]


def log_lines(
    results: Sequence[Mapping[str, Any]],
    request_ids: Sequence[str],
    *,
    role: str,
    served: bool,
    mode: str,
    at: datetime | None = None,
) -> list[dict[str, Any]]:
    """The log lines of flights scored together: ``log_line`` of each, one time for all."""
    time = (at or datetime.now(UTC)).isoformat(timespec="microseconds")
    return [
        {
            "request_id": request_id,
            "time": time,
            "flight_date": str(result["flight_date"]),
            "carrier": str(result["carrier"]),
            "flight": int(result["flight"]),
            "origin": str(result["origin"]),
            "model_version": str(result["model_version"]),
            "role": role,
            "served": served,
            "mode": mode,
            "probability": float(result["probability"]),
            "delayed": bool(result["delayed"]),
        }
        for result, request_id in zip(results, request_ids, strict=True)
    ]


def encode_lines(lines: list[dict[str, Any]]) -> bytes:
    """JSON lines (UTF-8, compact), read back by ``json.loads`` to the same values.

    pydantic's encoder (Rust): a full batch's 1000 lines in a fraction of what ``json.dumps``
    takes line by line, on the worker that answers requests.
    """
    from pydantic_core import to_json

    return b"".join([to_json(line) + b"\n" for line in lines])


class PredictionLogWriter:
    """Buffers log lines and flushes them as whole part files, off the request path.

    ``append`` only takes a lock and extends a list; a background thread flushes every
    ``flush_seconds``, or sooner once ``flush_lines`` lines wait; ``close`` flushes the rest.

    Args:
        root: Folder or URL of the log (``MLOPS_PREDICTION_LOG``).
        flush_lines: Lines that trigger a flush.
        flush_seconds: Longest time a line waits in memory.
        on_lost: Called with the number of lines a failed flush lost.
        storage_options: fsspec options as JSON (credentials come from the environment).
    """

    def __init__(
        self,
        root: str,
        *,
        flush_lines: int = FLUSH_LINES,
        flush_seconds: float = FLUSH_SECONDS,
        on_lost: Callable[[int], None] | None = None,
        storage_options: str = "{}",
    ) -> None:
        self.root = root
        self.flush_lines = flush_lines
        self.on_lost = on_lost
        self.storage_options = storage_options
        self.lost = 0
        self.written = 0
        self._lines: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()  # one flush at a time: parts keep their order
        self._seq = 0
        self._flusher = Periodic(self.flush, flush_seconds, name="prediction log flush")

    def append(self, lines: list[dict[str, Any]]) -> None:
        """Queues lines for the next flush (never blocks on storage, never raises)."""
        if self._flusher.closed:
            self._lose(len(lines), "the log is closed")
            return
        with self._lock:
            self._lines.extend(lines)
            full = len(self._lines) >= self.flush_lines
        if full:
            self._flusher.wake()

    def flush(self) -> int:
        """Writes every buffered line now; returns how many were written."""
        with self._flush_lock:
            with self._lock:
                lines, self._lines = self._lines, []
            if not lines:
                return 0
            by_day: dict[str, list[dict[str, Any]]] = {}
            for line in lines:
                by_day.setdefault(line["flight_date"], []).append(line)
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
            done = 0
            for day, day_lines in sorted(by_day.items()):
                self._seq += 1
                name = f"{PART_PREFIX}{stamp}-{os.getpid()}-{self._seq:06d}{PART_SUFFIX}"
                payload = encode_lines(day_lines)
                try:
                    target = location(self.root, self.storage_options) / day / name
                    write_atomic(target, payload)
                except Exception as error:  # an unwritable log must not fail predictions
                    self._lose(len(day_lines), f"writing {self.root}/{day}/{name} failed: {error}")
                    continue
                done += len(day_lines)
            self.written += done
            return done

    def close(self, timeout: float = 30.0) -> None:
        """Stops the background thread and flushes what is left."""
        self._flusher.close(timeout)

    def _lose(self, count: int, why: str) -> None:
        self.lost += count
        logger.error("prediction log: %d lines lost: %s", count, why)
        if self.on_lost is not None:
            try:
                self.on_lost(count)
            except Exception:  # a broken metric must not take the caller down either
                logger.exception("prediction log: counting lost lines failed")


def read_day(root: str, day: str) -> pd.DataFrame:
    """Every logged prediction of the flights scheduled on ``day`` (all parts, all writers).

    Args:
        root: Folder or URL of the log.
        day: ``YYYY-MM-DD``.

    Returns:
        The columns of ``COLUMNS``; an empty frame with those columns when nothing was logged.
    """
    import pandas as pd

    folder = location(root) / day
    rows: list[dict[str, Any]] = []
    try:
        parts = sorted(
            p
            for p in folder.iterdir()
            if p.name.startswith(PART_PREFIX) and p.name.endswith(PART_SUFFIX)
        )
    except (FileNotFoundError, NotADirectoryError):
        parts = []
    for part in parts:  # staged files are hidden (a leading dot) and never listed here
        for text in part.read_text(encoding="utf-8").splitlines():
            if text.strip():
                rows.append(json.loads(text))
    frame = pd.DataFrame(rows, columns=COLUMNS)
    if frame.empty:
        return frame.astype(
            {"flight": "int64", "probability": "float64", "served": "bool", "delayed": "bool"}
        )
    return frame


def default_root(env: Mapping[str, str] | None = None) -> str:
    """Where the prediction log goes when nothing else says.

    ``MLOPS_PREDICTION_LOG``; else in production ``<MLOPS_LAKE_URL>/prediction_log`` (where the
    pipeline reads it back); else the state folder's ``prediction_log``.
    """
    from mlops_assets import settings

    return settings.lake_root(ROOT_VARIABLE, "prediction_log", local="prediction_log", env=env)
