"""Runs left in progress by a server that went down: failed when the next server starts.

Locally, ``dagster dev`` launches each run worker as a process of its code server. While the
server is up, it notices a worker that died (killed, out of memory) and fails its run. If the
server goes down with its workers (a crash, a reboot), nothing is left to report how their
runs ended: they would stay STARTED for good, holding a run slot and their day's run limit,
and run monitoring cannot help, since this launcher cannot tell whether a worker is alive.
``mlops-assets dev`` therefore calls ``fail_orphaned_runs`` before it starts the server: a
run whose worker process is gone is marked failed, and the run retries of ``dagster.yaml``
run it again. (On Kubernetes, run monitoring checks the run pods instead.)
"""

from __future__ import annotations

import os
from typing import Any

# The run worker's first engine event carries its process id ("Started process for run").
PID_KEY = "pid"


def process_alive(pid: int) -> bool:
    """Whether a process with this id exists (and is not a zombie)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            return stat.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:  # no /proc: signal 0 answered, so it exists
        return True


def worker_pid(instance: Any, run_id: str) -> int | None:
    """The process id the run's worker recorded when it started, if it recorded one."""
    import dagster as dg

    records = instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.ENGINE_EVENT, limit=20
    ).records
    for record in records:
        event = record.event_log_entry.dagster_event
        data = getattr(event, "engine_event_data", None) if event else None
        value = data.metadata.get(PID_KEY) if data else None
        if value is not None:
            try:
                return int(value.value)
            except (TypeError, ValueError):
                continue
    return None


def fail_orphaned_runs(instance: Any) -> list[str]:
    """Marks failed every STARTED run whose recorded worker process no longer exists.

    A run that recorded no worker process (executed in-process, e.g. by ``mlops-assets
    demo``, maybe still going in another terminal) is left alone.

    Returns:
        The ids of the runs marked failed.
    """
    import dagster as dg

    failed = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
        pid = worker_pid(instance, run.run_id)
        if pid is None or process_alive(pid):
            continue
        instance.report_run_failed(
            run,
            f"The run worker (process {pid}) is gone: the server stopped while this run was in "
            "progress. Nothing it had not finished was published; the run is retried once "
            "(run_retries in dagster.yaml).",
        )
        failed.append(run.run_id)
    return failed
