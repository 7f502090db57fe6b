"""Group writes that arrive together into one call (one statement, one commit).

Under load many replies end within the same few milliseconds; each end written as its own
statement costs a round trip, a commit (a WAL flush) and Postgres CPU, on the same cores that
stream the other replies. A `Batcher` writes what is submitted while its previous write runs
in the next one: alone, an item is written at once; in a burst, hundreds go in one call.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class Batcher(Generic[T]):
    """`await submit(item)` returns once `write` has stored a batch holding the item, or raises
    what writing it raised. A batch refused for its content (`refused(exc)`: the store
    answered, e.g. one item's text cannot be stored) is written again item by item, so one
    bad item fails only its own submitter; any other failure (the store unreachable) fails
    the whole batch at once, without one slow failure per item. One write runs at a time; a
    submitter that is cancelled does not take its item back (it is written anyway: nothing
    is lost)."""

    def __init__(self, write: Callable[[list[T]], Awaitable[None]], *,
                 refused: Callable[[Exception], bool], max_items: int = 256) -> None:
        self._write = write
        self._refused = refused
        self._max = max_items
        self._queue: list[tuple[T, asyncio.Future[None]]] = []
        self._runner: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((item, fut))
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run(), name="batch-writer")
        await fut

    async def drain(self) -> None:
        """Return when everything submitted so far is written (or failed)."""
        while self._runner is not None and not self._runner.done():
            await asyncio.wait({self._runner})

    async def _run(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[:self._max], self._queue[self._max:]
            try:
                await self._write([item for item, _ in batch])
            except Exception as exc:
                if len(batch) == 1 or not self._refused(exc):
                    for _, fut in batch:
                        _settle(fut, exc)
                    continue
                log.warning("a batch of %d writes failed (%s); writing them one by one",
                            len(batch), exc)
                for item, fut in batch:
                    try:
                        await self._write([item])
                    except Exception as one:
                        _settle(fut, one)
                    else:
                        _settle(fut, None)
            else:
                for _, fut in batch:
                    _settle(fut, None)


def _settle(fut: asyncio.Future[None], exc: BaseException | None) -> None:
    if fut.done():  # its submitter was cancelled
        return
    if exc is None:
        fut.set_result(None)
    else:
        fut.set_exception(exc)
