"""Scoring off the response path: requests queued by the handler, scored later in batches.

The service answers with one model and hands the request to this queue for the other one;
the handler only appends to a list. A background thread scores what waits, a batch per model,
every ``interval`` seconds or as soon as ``batch`` flights wait. Batches matter twice: scoring
100 flights in one call costs a fraction of 100 single calls, and the thread takes Python's
GIL a few times a second instead of after every request, so the answers that follow are not
slowed down (``benchmarks.serving_shadow``). Plain Python (no BentoML): unit-tested alone.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from mlops_assets.lib.background import Periodic

# One call's flights stay within what a batch request may hold (lib.scoring.MAX_BATCH).
CHUNK = 1000
BATCH = 200
INTERVAL_S = 0.5
# More than this waiting is dropped (and reported): a slow model must not grow the worker's
# memory without bound.
LIMIT = 20_000

logger = logging.getLogger(__name__)

Work = Callable[[str, list[dict[str, Any]], list[str]], None]


class OffPathQueue:
    """Requests waiting to be scored by another model than the one that answered.

    Args:
        work: ``work(role, requests, request_ids)`` scores and records one batch; its own
            failures are its business (an exception escaping it is logged and counted).
        on_dropped: ``on_dropped(role, count)`` for flights that were never scored: dropped
            from a full queue, or failed in ``work``.
        batch: Flights waiting that wake the thread before ``interval``.
        interval: Longest wait before queued flights are scored.
        limit: Flights that may wait; more are dropped.
    """

    def __init__(
        self,
        work: Work,
        on_dropped: Callable[[str, int], None],
        *,
        batch: int = BATCH,
        interval: float = INTERVAL_S,
        limit: int = LIMIT,
    ) -> None:
        self.work = work
        self.on_dropped = on_dropped
        self.batch = batch
        self.limit = limit
        self._pending: list[tuple[str, dict[str, Any], str]] = []
        self._lock = threading.Lock()
        self._scorer = Periodic(self.drain, interval, name="off-path scoring")

    def put(self, role: str, requests: list[dict[str, Any]], ids: list[str]) -> None:
        """Queues ``requests`` for ``role`` (never blocks on scoring)."""
        with self._lock:
            full = self._scorer.closed or len(self._pending) + len(requests) > self.limit
            if not full:
                self._pending.extend((role, r, i) for r, i in zip(requests, ids, strict=True))
                wake = len(self._pending) >= self.batch
        if full:
            logger.warning(
                "off-path scoring: queue full or closed, %d flights dropped", len(requests)
            )
            self.on_dropped(role, len(requests))
        elif wake:
            self._scorer.wake()

    def drain(self) -> int:
        """Scores everything waiting now; returns how many flights were handed to ``work``."""
        with self._lock:
            pending, self._pending = self._pending, []
        by_role: dict[str, tuple[list[dict[str, Any]], list[str]]] = {}
        for role, request, request_id in pending:
            requests, ids = by_role.setdefault(role, ([], []))
            requests.append(request)
            ids.append(request_id)
        for role, (requests, ids) in by_role.items():
            for start in range(0, len(requests), CHUNK):
                chunk = slice(start, start + CHUNK)
                try:
                    self.work(role, requests[chunk], ids[chunk])
                except Exception:  # keep scoring later batches whatever happened to this one
                    logger.exception("off-path scoring by the %s failed", role)
                    self.on_dropped(role, len(requests[chunk]))
        return len(pending)

    def close(self, timeout: float = 10.0) -> None:
        """Stops taking requests and scores what waits (within ``timeout``)."""
        self._scorer.close(timeout)
