"""Batcher: what arrives while a write runs goes out together in the next write; a failed
batch is written again one by one, so only the bad item fails; nothing submitted is lost."""

from __future__ import annotations

import asyncio

import pytest

from chat_server.batch import Batcher


class Store:
    """Records each write; the first one waits for `release`; items < 0 are refused."""

    def __init__(self) -> None:
        self.calls: list[list[int]] = []
        self.stored: list[int] = []
        self.release = asyncio.Event()

    async def write(self, items: list[int]) -> None:
        self.calls.append(list(items))
        if len(self.calls) == 1:
            await self.release.wait()
        if any(i < 0 for i in items):
            raise ValueError(f"refused {[i for i in items if i < 0]}")
        if 0 in items:
            raise ConnectionError("the store is unreachable")
        self.stored += items


def _batcher(store: Store, max_items: int = 256) -> Batcher[int]:
    return Batcher(store.write, refused=lambda exc: isinstance(exc, ValueError),
                   max_items=max_items)


async def _started(batcher: Batcher[int], items: list[int]) -> list[asyncio.Task[None]]:
    tasks = [asyncio.create_task(batcher.submit(i)) for i in items]
    for _ in range(3):
        await asyncio.sleep(0)
    return tasks


async def test_items_arriving_during_a_write_go_out_together_next() -> None:
    store = Store()
    batcher = _batcher(store)
    first = await _started(batcher, [1])
    assert store.calls == [[1]]  # alone: written at once
    rest = await _started(batcher, [2, 3, 4])
    assert store.calls == [[1]]  # one write at a time
    store.release.set()
    await asyncio.gather(*first, *rest)
    assert store.calls == [[1], [2, 3, 4]]
    assert store.stored == [1, 2, 3, 4]


async def test_a_failed_batch_fails_only_its_bad_item() -> None:
    store = Store()
    batcher = _batcher(store)
    first = await _started(batcher, [1])
    good1, bad, good2 = await _started(batcher, [2, -3, 4])
    store.release.set()
    await asyncio.gather(*first, good1, good2)
    with pytest.raises(ValueError, match=r"refused \[-3\]"):
        await bad
    assert store.calls == [[1], [2, -3, 4], [2], [-3], [4]]
    assert store.stored == [1, 2, 4]


async def test_a_cancelled_submitter_still_gets_its_item_written_and_drain_waits() -> None:
    store = Store()
    batcher = _batcher(store, max_items=2)
    first = await _started(batcher, [1])
    later = await _started(batcher, [2, 3, 4])
    later[0].cancel()
    store.release.set()
    await batcher.drain()
    assert store.calls == [[1], [2, 3], [4]]  # max_items per write
    assert store.stored == [1, 2, 3, 4]
    await asyncio.gather(*first, *later[1:])
    assert later[0].cancelled()


async def test_an_unreachable_store_fails_the_whole_batch_at_once() -> None:
    """Not refused for its content: no retry item by item (one slow failure each)."""
    store = Store()
    batcher = _batcher(store)
    first = await _started(batcher, [1])
    rest = await _started(batcher, [2, 0, 4])
    store.release.set()
    await asyncio.gather(*first)
    for task in rest:
        with pytest.raises(ConnectionError, match="unreachable"):
            await task
    assert store.calls == [[1], [2, 0, 4]]
    assert store.stored == [1]
