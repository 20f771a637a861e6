"""The periodic background thread shared by the prediction log and off-path scoring."""

from __future__ import annotations

import threading

from mlops_assets.lib.background import Periodic


def test_woken_work_runs_before_the_interval_and_a_failure_does_not_stop_it():
    calls: list[int] = []
    twice = threading.Event()

    def work() -> None:
        calls.append(len(calls))
        if len(calls) == 2:
            twice.set()
        if len(calls) == 1:
            raise RuntimeError("the first call fails")

    periodic = Periodic(work, interval=60, name="test work")
    periodic.wake()
    while not calls:
        twice.wait(0.01)
    periodic.wake()
    assert twice.wait(5)
    assert not periodic.closed
    before = len(calls)
    periodic.close(timeout=5)
    assert periodic.closed
    assert len(calls) > before  # close works once more, for what is left
