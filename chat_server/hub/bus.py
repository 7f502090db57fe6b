"""The bus: per-user event streams with history, one interface, engines chosen by URL.

`memory://` is the in-process engine for the embedded single process; `redis://`
(added by the hub) fans out across instances. Publishing appends the event to the
user's capped history and delivers it in one step, so every event has its offset
(`o`) before anyone sees it.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

# Called by the engine for every event of a user this instance subscribed to.
# (user_id, offset, encoded frame) — the frame is JSON text including "o".
Deliver = Callable[[str, int, str], None]


class ResumeFailed(Exception):
    """History no longer reaches back to the requested offset, or the epoch changed."""


@dataclass(frozen=True)
class StreamHead:
    epoch: str
    offset: int  # offset of the newest event (0 when none yet)


class Bus:
    """Interface every engine implements."""

    async def publish(self, user_id: str, event: dict[str, Any]) -> int:
        """Append to the user's history, deliver to every subscriber; return the offset."""
        raise NotImplementedError

    async def head(self, user_id: str) -> StreamHead:
        raise NotImplementedError

    async def since(self, user_id: str, offset: int, epoch: str) -> list[str]:
        """Encoded events after `offset`; raises ResumeFailed if history can't reach back."""
        raise NotImplementedError

    async def subscribe(self, user_id: str) -> None:
        """Start delivering this user's events to this instance's Deliver callback."""
        raise NotImplementedError

    async def unsubscribe(self, user_id: str) -> None:
        raise NotImplementedError

    async def ready(self) -> bool:
        return True


def encode(event: dict[str, Any], offset: int) -> str:
    return json.dumps({**event, "o": offset}, ensure_ascii=False, separators=(",", ":"))


class MemoryBus(Bus):
    def __init__(self, deliver: Deliver, max_events: int) -> None:
        self._deliver = deliver
        self._max = max_events
        self._epochs: dict[str, str] = {}
        self._offsets: dict[str, int] = {}
        self._history: dict[str, deque[tuple[int, str]]] = {}
        self._subscribed: dict[str, int] = {}

    async def publish(self, user_id: str, event: dict[str, Any]) -> int:
        offset = self._offsets.get(user_id, 0) + 1
        self._offsets[user_id] = offset
        self._epochs.setdefault(user_id, uuid.uuid4().hex[:12])
        frame = encode(event, offset)
        self._history.setdefault(user_id, deque(maxlen=self._max)).append((offset, frame))
        if self._subscribed.get(user_id):
            self._deliver(user_id, offset, frame)
        return offset

    async def head(self, user_id: str) -> StreamHead:
        epoch = self._epochs.setdefault(user_id, uuid.uuid4().hex[:12])
        return StreamHead(epoch, self._offsets.get(user_id, 0))

    async def since(self, user_id: str, offset: int, epoch: str) -> list[str]:
        head = await self.head(user_id)
        if epoch != head.epoch or offset > head.offset:
            raise ResumeFailed("epoch changed" if epoch != head.epoch else "offset from the future")
        history = self._history.get(user_id, deque())
        if offset < head.offset and (not history or history[0][0] > offset + 1):
            raise ResumeFailed("history no longer reaches back")
        return [frame for o, frame in history if o > offset]

    async def subscribe(self, user_id: str) -> None:
        self._subscribed[user_id] = self._subscribed.get(user_id, 0) + 1

    async def unsubscribe(self, user_id: str) -> None:
        left = self._subscribed.get(user_id, 0) - 1
        if left > 0:
            self._subscribed[user_id] = left
        else:
            self._subscribed.pop(user_id, None)


@asynccontextmanager
async def open_bus(url: str | None, deliver: Deliver, *, max_events: int = 1000,
                   ttl_s: int = 86400) -> AsyncIterator[Bus]:
    """`memory://` (or None) → in-process; `redis://…` → Redis engine."""
    if url is None or url.startswith("memory://"):
        yield MemoryBus(deliver, max_events)
        return
    raise ValueError(f"Unsupported bus URL {url!r}: use memory:// or redis://")


async def _noop() -> None:  # keeps asyncio imported for engines that need it
    await asyncio.sleep(0)
