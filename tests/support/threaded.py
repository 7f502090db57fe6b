"""An event loop on a thread of its own, for synchronous tests (hypothesis, schemathesis, the
sync websockets client) that need servers speaking asyncio beside them."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Awaitable, Iterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack, contextmanager
from typing import Any, TypeVar

T = TypeVar("T")


class LoopThread:
    """Runs coroutines on its loop from the calling thread; async context managers entered
    with `enter` are exited, in reverse, when the thread stops."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._stack = AsyncExitStack()

    def run(self, coro: Awaitable[T], timeout_s: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(_wrap(coro), self.loop).result(timeout_s)

    def enter(self, cm: AbstractAsyncContextManager[T], timeout_s: float = 120.0) -> T:
        return self.run(self._stack.enter_async_context(cm), timeout_s)

    def spawn(self, coro: Awaitable[T]) -> concurrent.futures.Future[T]:
        """Start `coro` on the loop; the future's `result()` waits for it."""
        return asyncio.run_coroutine_threadsafe(_wrap(coro), self.loop)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        try:
            self.run(self._stack.aclose(), 120)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(30)
            self.loop.close()


async def _wrap(coro: Awaitable[Any]) -> Any:
    return await coro


@contextmanager
def loop_thread() -> Iterator[LoopThread]:
    thread = LoopThread()
    thread.start()
    try:
        yield thread
    finally:
        thread.stop()
