"""Runs a stopped server left in progress are failed before the next server starts."""

from __future__ import annotations

import os
import subprocess
import sys

import dagster as dg

from mlops_assets.orphans import fail_orphaned_runs, process_alive, worker_pid


def _started_run(instance: dg.DagsterInstance, pid: int | None) -> str:
    """A STARTED run whose worker recorded ``pid``, as the code server's run worker does."""
    # The engine event the run worker writes first ("Started process for run (pid: N).").
    from dagster._core.events import EngineEventData

    run = instance.add_run(
        dg.DagsterRun(job_name="__ASSET_JOB", status=dg.DagsterRunStatus.STARTED)
    )
    if pid is not None:
        instance.report_engine_event(
            f"Started process for run (pid: {pid}).", run, EngineEventData.in_process(pid)
        )
    return run.run_id


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_only_runs_whose_worker_is_gone_are_failed() -> None:
    dead = _dead_pid()
    assert not process_alive(dead) and process_alive(os.getpid())
    with dg.instance_for_test() as instance:
        orphan = _started_run(instance, dead)
        alive = _started_run(instance, os.getpid())
        in_process = _started_run(instance, None)  # no worker recorded: maybe still going
        assert worker_pid(instance, orphan) == dead

        assert fail_orphaned_runs(instance) == [orphan]
        status = {r: instance.get_run_by_id(r).status for r in (orphan, alive, in_process)}  # type: ignore[union-attr]
        assert status == {
            orphan: dg.DagsterRunStatus.FAILURE,
            alive: dg.DagsterRunStatus.STARTED,
            in_process: dg.DagsterRunStatus.STARTED,
        }
        failure = instance.get_records_for_run(
            orphan, of_type=dg.DagsterEventType.RUN_FAILURE
        ).records
        message = failure[0].event_log_entry.dagster_event.message  # type: ignore[union-attr]
        assert f"The run worker (process {dead}) is gone" in str(message)
        assert fail_orphaned_runs(instance) == []  # once
