"""A daemon thread that does a piece of work now and then, off the caller's path."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

logger = logging.getLogger(__name__)


class Periodic:
    """Calls ``work`` on a daemon thread every ``interval`` seconds, or as soon as woken.

    The thread starts at once. An exception escaping ``work`` is logged and the thread carries
    on; ``close`` stops it and calls ``work`` a last time, for what is left.

    Args:
        work: What to do (flush a buffer, drain a queue); its result is ignored.
        interval: Longest wait between two calls.
        name: The thread's name, also in the log.
    """

    def __init__(self, work: Callable[[], object], interval: float, name: str) -> None:
        self.work = work
        self.interval = interval
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def closed(self) -> bool:
        """Whether ``close`` was called."""
        return self._closed.is_set()

    def wake(self) -> None:
        """Calls ``work`` now rather than at the end of the interval."""
        self._wake.set()

    def close(self, timeout: float) -> None:
        """Stops the thread (waiting at most ``timeout`` seconds) and calls ``work`` once more."""
        self._closed.set()
        self._wake.set()
        self._thread.join(timeout)
        self.work()

    def _run(self) -> None:
        while not self._closed.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            try:
                self.work()
            except Exception:  # keep working on later items whatever happened to these
                logger.exception("%s failed", self._thread.name)
