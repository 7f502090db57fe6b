"""The bus: per-user event streams with history, one interface (`base`), engines chosen by URL.

`memory://` (or no URL) is the in-process engine for the embedded single process;
`redis://`, `rediss://` and `unix://` fan out across instances through Redis. An engine's
module (and its client library) is imported only when a URL asks for it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from chat_server.bus.base import (
    Bus,
    BusError,
    BusFull,
    BusUnavailable,
    Deliver,
    Event,
    OnEpoch,
    OnSignal,
    ResumeFailed,
    StreamHead,
)

__all__ = [
    "Bus", "BusError", "BusFull", "BusUnavailable", "Deliver", "Event", "OnEpoch", "OnSignal",
    "ResumeFailed", "StreamHead", "open_bus",
]

REDIS_SCHEMES = ("redis", "rediss", "unix")


@asynccontextmanager
async def open_bus(url: str | None, deliver: Deliver, *, max_events: int = 1000,
                   ttl_s: int = 86400, on_epoch: OnEpoch | None = None) -> AsyncIterator[Bus]:
    """`memory://` (or None) → in-process; `redis://…`, `rediss://…`, `unix://…` → Redis."""
    scheme = (url or "memory://").partition("://")[0]
    if scheme == "memory":
        from chat_server.bus.memory import MemoryBus

        yield MemoryBus(deliver, max_events, ttl_s, on_epoch)
    elif scheme in REDIS_SCHEMES:
        from chat_server.bus.redis import RedisBus

        bus = RedisBus(url or "", deliver, max_events=max_events, ttl_s=ttl_s,
                       on_epoch=on_epoch)
        await bus.start()
        try:
            yield bus
        finally:
            await bus.close()
    else:
        raise ValueError(f"Unsupported bus URL scheme {scheme!r}: use memory://, redis://, "
                         "rediss:// or unix://")
