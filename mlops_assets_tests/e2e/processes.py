"""Helpers for end-to-end tests that run real servers: ports, waits, process-group teardown."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
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
