"""A real NATS server with JetStream for the streaming tests (``streaming/nats_server.py``).

``nats_broker`` (module-scoped) and ``fresh_nats_broker`` (one test) in ``conftest.py`` give a
ready ``NatsServer`` on a free port of 127.0.0.1: ``.url`` for clients, ``.restart()`` (same
port and store: JetStream keeps what it acknowledged), ``.stop()``. Starting one takes well
under a second, so a test that restarts or stops the broker takes a fresh one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from mlops_assets.streaming.nats_server import NatsServer, start


@contextlib.contextmanager
def running_nats(root: Path) -> Iterator[NatsServer]:
    """A ready server with its store and log in ``root``, stopped at the end of the block.

    Fails if stopping it left a process behind.
    """
    server = start(root / "store", log_path=root / "nats-server.log")
    try:
        with server.report_on_failure():
            yield server
    finally:
        leftovers = server.shutdown()
        assert not leftovers, f"nats-server left processes behind: {leftovers}"
