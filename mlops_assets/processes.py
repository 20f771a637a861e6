"""Servers as child processes: free ports on 127.0.0.1, bounded waits, process-group teardown.

Used by ``mlops-assets ui-check`` (which starts ``mlops-assets dev``), by the end-to-end tests
(``mlflow server``, ``bentoml serve``, ``moto_server``, ``dagster dev``) and by the serving
benchmark. Every server runs in a session (process group) of its own with its output in a log
file, so that it can be stopped with everything it started and its log shown on failure.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

HOST = "127.0.0.1"
T = TypeVar("T")


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def console_script(name: str, module: str) -> list[str]:
    """The command that runs console script ``name`` of this environment.

    ``python -m module`` when the script is not installed next to the interpreter.
    """
    script = Path(sys.executable).with_name(name)
    return [str(script)] if script.exists() else [sys.executable, "-m", module]


@functools.cache
def _direct() -> Any:
    """An opener that uses no proxy: every request is for a server on 127.0.0.1."""
    import urllib.request

    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get_ok(url: str, timeout: float = 5.0) -> bool:
    """Whether ``url`` answers a GET with 200 (any connection or HTTP error: no)."""
    try:
        with _direct().open(url, timeout=timeout) as response:
            return int(response.status) == 200
    except (OSError, ValueError):  # URLError and HTTPError are OSErrors
        return False


def http_post_json(url: str, payload: Any, timeout: float = 30.0) -> Any:
    """POSTs ``payload`` as JSON and returns the decoded answer.

    Raises:
        urllib.error.HTTPError: the server answered with an error status.
        OSError: the server could not be reached.
    """
    import urllib.request

    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json", "Accept": "application/json"},
        method="POST",
    )
    with _direct().open(request, timeout=timeout) as response:
        return json.loads(response.read())


def wait_for(
    predicate: Callable[[], T],
    timeout: float,
    interval: float = 2.0,
    *,
    what: str,
    diagnose: Callable[[], str] | None = None,
) -> T:
    """Polls ``predicate`` until it returns something truthy and returns that value.

    Raises:
        AssertionError: after ``timeout`` seconds, naming ``what`` was awaited, the last value
            seen and, if given, the output of ``diagnose``.
    """
    started = time.monotonic()
    last: Any = None
    while True:
        last = predicate()
        if last:
            return last
        waited = time.monotonic() - started
        if waited >= timeout:
            detail = f"\n{diagnose()}" if diagnose else ""
            raise AssertionError(
                f"timed out after {waited:.0f} s waiting for {what}; last value: {last!r}{detail}"
            )
        time.sleep(interval)


def live_group_members(pgid: int) -> list[int]:
    """Processes of a process group that are not zombies (Linux /proc; killpg elsewhere)."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return []
        return [pgid]
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def wait_group_gone(pgid: int, deadline: float) -> bool:
    """Waits until no live process is left in the group, or the deadline passes."""
    while live_group_members(pgid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)
    return True


def default_signals() -> None:
    """``preexec_fn`` for servers: default SIGINT/SIGTERM dispositions.

    A child inherits ignored signals (e.g. from a background shell job); Python then leaves
    SIGINT ignored and dagster maps SIGTERM onto its SIGINT handler, so the server would
    ignore our SIGTERM.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def stop_process_group(process: subprocess.Popen[bytes], grace: float) -> list[str]:
    """Stops a server started with ``start_new_session=True`` and everything it started.

    The leader gets SIGTERM first (``dagster dev`` then stops its webserver, daemon and code
    server in order; signalling the whole group at once races its supervisor, which restarts
    the code server and leaves it orphaned). Whatever is alive a few seconds after the leader
    exits gets SIGTERM, and after ``grace`` seconds SIGKILL.

    Returns:
        The escalations that were needed (empty for a clean shutdown).
    """
    pgid = process.pid
    deadline = time.monotonic() + grace
    escalations: list[str] = []
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace * 0.75)
    if not wait_group_gone(pgid, min(deadline, time.monotonic() + 3)):
        escalations.append(f"SIGTERM to group {pgid}: {live_group_members(pgid)}")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
    if not wait_group_gone(pgid, deadline):
        escalations.append(f"SIGKILL to group {pgid}: {live_group_members(pgid)}")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        wait_group_gone(pgid, time.monotonic() + 5)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)
    return escalations


def spawn_logged(
    command: list[str], *, cwd: Path, env: dict[str, str], log_path: Path
) -> subprocess.Popen[bytes]:
    """Starts ``command`` in a session (process group) of its own, its output in ``log_path``."""
    with log_path.open("wb") as log:
        return subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=default_signals,
        )


class ServerLog:
    """A server's log file: its text, its tail, and the tail printed when a block fails.

    Subclasses provide ``log_path`` and name the server in ``NAME``.
    """

    NAME = "server"
    log_path: Path

    def log_text(self) -> str:
        """The whole log (or why it cannot be read)."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError as error:
            return f"(no server log: {error})"

    def log_tail(self, lines: int = 60) -> str:
        """The last ``lines`` lines of the log."""
        return "\n".join(self.log_text().splitlines()[-lines:])

    @contextlib.contextmanager
    def report_on_failure(self) -> Iterator[None]:
        """Prints the log tail (pytest shows it with the failure) when the block raises."""
        try:
            yield
        except BaseException:
            print(f"{self.NAME} log tail ({self.log_path}):\n{self.log_tail()}")
            raise


class LoggedServer(ServerLog):
    """What every server started by ``spawn_logged`` offers: log, liveness, readiness, stop.

    Subclasses provide ``process`` and ``log_path`` and name themselves in ``NAME``.
    """

    STOP_GRACE = 15.0  # SIGTERM grace period before SIGKILL
    STARTUP_TIMEOUT = 60.0  # the default bound of ``wait_ready``
    process: subprocess.Popen[bytes]

    def wait_ready(self, timeout: float | None = None) -> float:
        """Waits (at most ``timeout`` s, default ``STARTUP_TIMEOUT``) until the server is usable.

        Returns:
            The seconds waited.
        """
        raise NotImplementedError

    def check_alive(self) -> None:
        """Raises AssertionError, with the log tail, if the server has exited."""
        code = self.process.poll()
        if code is not None:
            raise AssertionError(
                f"{self.NAME} exited with code {code}; log tail:\n{self.log_tail()}"
            )

    def wait_http(self, url: str, timeout: float | None = None, interval: float = 0.5) -> float:
        """Polls ``url`` until it answers 200, failing at once if the server died.

        Waits at most ``timeout`` seconds (default ``STARTUP_TIMEOUT``).

        Returns:
            The seconds waited.
        """
        started = time.monotonic()

        def ready() -> bool:
            self.check_alive()
            return http_get_ok(url)

        wait_for(
            ready,
            self.STARTUP_TIMEOUT if timeout is None else timeout,
            interval,
            what=f"{self.NAME} to answer {url}",
            diagnose=lambda: f"log tail:\n{self.log_tail()}",
        )
        return time.monotonic() - started

    def stop(self) -> list[str]:
        """SIGTERM, up to ``STOP_GRACE`` s, then SIGKILL; returns the escalations needed."""
        return stop_process_group(self.process, self.STOP_GRACE)

    def shutdown(self) -> list[int]:
        """Stops the server and everything it started, warning if it had to be forced.

        Returns:
            The processes of its group still alive afterwards (empty when all is well).
        """
        escalations = self.stop()
        if escalations:
            warnings.warn(f"{self.NAME} needed escalation to stop: {escalations}", stacklevel=2)
        return live_group_members(self.process.pid)
