"""Single requests that arrive together, scored in one call.

A worker's event loop parses every request whose bytes arrived before it turns; each handler
hands its flight to a ``Coalescer`` and waits. On the loop's next turn the flights waiting are
answered by one call of ``handle``: alone at concurrency 1 (one loop turn later, microseconds),
together when several callers were waiting on a busy worker, where the features and the model
call for 8 rows cost little more than for one. Plain asyncio (no BentoML): unit-tested alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")


class Coalescer(Generic[In, Out]):
    """Batches the items submitted within one turn of the running event loop.

    Args:
        handle: ``handle(items)`` returns one result per item, in order (runs on the loop). If
            it raises, every caller of that batch gets the exception.
    """

    def __init__(self, handle: Callable[[list[In]], list[Out]]) -> None:
        self.handle = handle
        self.waiting: list[tuple[In, asyncio.Future[Out]]] = []
        self.batches = 0  # calls of ``handle`` so far (the tests read it)

    async def submit(self, item: In) -> Out:
        """``item``'s result, computed with whatever else waits on this loop turn."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Out] = loop.create_future()
        self.waiting.append((item, future))
        if len(self.waiting) == 1:
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        batch, self.waiting = self.waiting, []
        self.batches += 1
        try:
            results = self.handle([item for item, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"{len(results)} results for {len(batch)} items")
        except Exception as error:
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        for (_, future), result in zip(batch, results, strict=False):
            if not future.done():  # its caller gave up (a closed connection)
                future.set_result(result)
