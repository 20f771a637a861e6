from __future__ import annotations

import asyncio

import pytest

from mlops_assets.serving.coalescing import Coalescer


def _doubler(calls: list[list[int]]) -> Coalescer[int, int]:
    def handle(items: list[int]) -> list[int]:
        calls.append(list(items))
        return [2 * i for i in items]

    return Coalescer(handle)


def test_a_lone_request_is_answered_alone():
    calls: list[list[int]] = []
    singles = _doubler(calls)

    async def one_after_another() -> list[int]:
        return [await singles.submit(i) for i in range(3)]

    assert asyncio.run(one_after_another()) == [0, 2, 4]
    assert calls == [[0], [1], [2]]


def test_requests_waiting_together_are_answered_by_one_call_each_its_own_result():
    calls: list[list[int]] = []
    singles = _doubler(calls)

    async def together() -> list[int]:
        return list(await asyncio.gather(*(singles.submit(i) for i in range(8))))

    assert asyncio.run(together()) == [0, 2, 4, 6, 8, 10, 12, 14]
    assert calls == [list(range(8))]
    assert singles.batches == 1


def test_a_failing_call_fails_every_caller_of_its_batch_and_the_next_batch_is_served():
    def handle(items: list[int]) -> list[int]:
        if 13 in items:
            raise ValueError("the model failed")
        return items

    singles: Coalescer[int, int] = Coalescer(handle)

    async def scenario() -> tuple[list[object], int]:
        failed = await asyncio.gather(*(singles.submit(i) for i in (1, 13)), return_exceptions=True)
        return failed, await singles.submit(5)

    failed, later = asyncio.run(scenario())
    assert all(isinstance(f, ValueError) and "the model failed" in str(f) for f in failed)
    assert later == 5


def test_a_wrong_number_of_results_is_an_error_not_a_hang():
    singles: Coalescer[int, int] = Coalescer(lambda items: items[:1])

    async def scenario() -> list[object]:
        waiting = (asyncio.wait_for(singles.submit(i), 5) for i in range(2))
        return list(await asyncio.gather(*waiting, return_exceptions=True))

    answers = asyncio.run(scenario())
    assert all(isinstance(a, RuntimeError) and "1 results for 2 items" in str(a) for a in answers)


def test_a_caller_that_gave_up_does_not_stop_the_others():
    calls: list[list[int]] = []
    singles = _doubler(calls)

    async def scenario() -> int:
        gone = asyncio.ensure_future(singles.submit(1))
        stays = asyncio.ensure_future(singles.submit(2))
        await asyncio.sleep(0)  # both are waiting
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        return await stays

    assert asyncio.run(scenario()) == 4
    assert calls == [[1, 2]]
