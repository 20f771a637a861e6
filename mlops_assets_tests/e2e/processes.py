"""Helpers for end-to-end tests that run real servers: ports, waits, process-group teardown."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
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


class LoggedServer:
    """What every server started by ``spawn_logged`` offers: log, liveness, readiness, stop.

    Subclasses provide ``process`` and ``log_path`` and name themselves in ``NAME``.
    """

    NAME = "server"
    STOP_GRACE = 15.0  # SIGTERM grace period before SIGKILL
    process: subprocess.Popen[bytes]
    log_path: Path

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError as error:
            return f"(no server log: {error})"

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def check_alive(self) -> None:
        code = self.process.poll()
        if code is not None:
            raise AssertionError(
                f"{self.NAME} exited with code {code}; log tail:\n{self.log_tail()}"
            )

    def wait_http(self, url: str, timeout: float, interval: float = 0.5) -> float:
        """Polls ``url`` until it answers 200 (failing at once if the server died); returns the
        seconds waited."""
        import requests

        started = time.monotonic()
        with requests.Session() as http:
            http.trust_env = False  # no proxies: only 127.0.0.1

            def ready() -> bool:
                self.check_alive()
                try:
                    return http.get(url, timeout=5).status_code == 200
                except requests.RequestException:
                    return False

            wait_for(
                ready,
                timeout,
                interval,
                what=f"{self.NAME} to answer {url}",
                diagnose=lambda: f"log tail:\n{self.log_tail()}",
            )
        return time.monotonic() - started

    def stop(self) -> list[str]:
        """SIGTERM, up to ``STOP_GRACE`` s, then SIGKILL; returns the escalations needed."""
        return stop_process_group(self.process, self.STOP_GRACE)

    @contextlib.contextmanager
    def report_on_failure(self) -> Iterator[None]:
        """Prints the server log tail (shown by pytest with the failure) when the block raises."""
        try:
            yield
        except BaseException:
            print(f"{self.NAME} log tail ({self.log_path}):\n{self.log_tail()}")
            raise
