"""The off-path queue: batches per model, never blocks the caller, drops and counts overflow."""

from __future__ import annotations

import threading
import time
from typing import Any

from mlops_assets.serving.off_path import OffPathQueue


class Recorder:
    def __init__(self, fail_role: str | None = None, delay: float = 0.0) -> None:
        self.calls: list[tuple[str, list[str]]] = []
        self.dropped: dict[str, int] = {}
        self.fail_role = fail_role
        self.delay = delay
        self.lock = threading.Lock()
        self.started = threading.Event()

    def work(self, role: str, requests: list[dict[str, Any]], ids: list[str]) -> None:
        self.started.set()
        time.sleep(self.delay)
        if role == self.fail_role:
            raise RuntimeError("this model cannot score")
        with self.lock:
            self.calls.append((role, ids))

    def drop(self, role: str, count: int) -> None:
        with self.lock:
            self.dropped[role] = self.dropped.get(role, 0) + count


def test_flights_are_scored_in_batches_per_model_in_arrival_order():
    recorder = Recorder()
    queue = OffPathQueue(recorder.work, recorder.drop, batch=10_000, interval=60)
    for i in range(30):
        queue.put("challenger" if i % 3 else "champion", [{"i": i}], [f"r{i}"])
    queue.close()
    assert [role for role, _ in recorder.calls] == ["champion", "challenger"]  # first seen first
    by_role = dict(recorder.calls)
    assert by_role["champion"] == [f"r{i}" for i in range(0, 30, 3)]
    assert len(by_role["challenger"]) == 20 and not recorder.dropped


def test_a_full_batch_wakes_the_thread_before_the_interval():
    recorder = Recorder()
    queue = OffPathQueue(recorder.work, recorder.drop, batch=5, interval=60)
    queue.put("challenger", [{}] * 5, [str(i) for i in range(5)])
    deadline = time.monotonic() + 10
    while not recorder.calls and time.monotonic() < deadline:
        time.sleep(0.01)
    assert recorder.calls == [("challenger", ["0", "1", "2", "3", "4"])]
    queue.close()


def test_put_never_waits_for_scoring_and_overflow_is_dropped_and_counted():
    recorder = Recorder(delay=2.0)
    queue = OffPathQueue(recorder.work, recorder.drop, batch=1, interval=60, limit=100)
    queue.put("challenger", [{}], ["first"])
    # The thread is scoring "first" (2 s): what follows can only wait or be dropped.
    assert recorder.started.wait(10)
    started = time.perf_counter()
    for i in range(150):
        queue.put("challenger", [{}], [str(i)])
    assert time.perf_counter() - started < 1.5
    queue.close()
    scored = sum(len(ids) for _, ids in recorder.calls)
    assert (scored, recorder.dropped.get("challenger", 0)) == (101, 50)
    queue.put("challenger", [{}], ["late"])  # after close: dropped, not raised
    assert recorder.dropped["challenger"] == 51


def test_a_failing_model_is_counted_and_the_other_still_scores():
    recorder = Recorder(fail_role="challenger")
    queue = OffPathQueue(recorder.work, recorder.drop, batch=10_000, interval=60)
    queue.put("challenger", [{}] * 3, ["a", "b", "c"])
    queue.put("champion", [{}] * 2, ["d", "e"])
    queue.close()
    assert recorder.dropped == {"challenger": 3}
    assert recorder.calls == [("champion", ["d", "e"])]
