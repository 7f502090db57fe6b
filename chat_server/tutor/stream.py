"""Delta coalescing: provider tokens become at most one `reply.delta` per reply per flush tick.

A provider emits tokens one by one (tens per second per reply); publishing each as its own
bus event costs a Redis script call, a pub/sub message, a WebSocket frame and a client parse
per token. Instead each reply buffers its tokens and one per-process tick (every
`reply_flush_ms`) publishes every reply's pending text together, in one `Bus.publish_many`
(one Redis round trip for all users). The first token of a reply (with whatever arrived in
the same read) does not wait for a tick (first-token latency), and a reply's pending text
goes out with its `reply.citations` / `reply.end`, so a client sees: deltas with gapless
`seq` from 1, whose texts concatenate to exactly the provider's tokens, then the end.

Ticks start every `reply_flush_ms` from the start of the previous one. Under load a tick
stretches (it awaits its publish before the next one starts), so deltas grow instead of
queueing up: backpressure without losing a token.

`follow()` hands a reply's provider stream to the tick once its tokens flow: each tick lets
every followed socket be read once, takes what arrived of each without waiting (it would
not have been published earlier anyway) and publishes it — one socket read per reply per
tick, however many tokens came, and no task woken per read: the reply's task sleeps until
its stream is over.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from chat_server import metrics

log = logging.getLogger(__name__)

# (user, event): the bus encodes the event (chat_server.bus.codec).
Event = tuple[str, dict[str, Any]]
PublishMany = Callable[[list[Event]], Awaitable[list[int]]]


class Polled(Protocol):
    """A provider stream read by the tick (providers._SSEStream)."""

    def resume(self) -> bool:
        """Let a paused socket be read at the loop's next turn; False if it reads anyway."""

    def poll(self) -> tuple[list[str], bool]:
        """The texts that arrived, without waiting, and whether polling is over; leaves the
        socket paused until `resume()`. Raises the stream's fault."""
        ...


@dataclass(slots=True)
class _Followed:
    pending: Pending
    source: Polled
    sink: list[str]  # the reply's text so far
    done: asyncio.Future[None]  # polling is over (or failed)


class Pending:
    """One reply's side of the coalescer: its next seq and the tokens not yet published."""

    __slots__ = ("user", "reply_id", "seq", "parts", "error")

    def __init__(self, user: str, reply_id: uuid.UUID) -> None:
        self.user = user
        self.reply_id = str(reply_id)
        self.seq = 0  # seq of the last delta taken for publishing
        self.parts: list[str] = []
        self.error: BaseException | None = None  # a failed publish of this reply's text

    def take(self) -> Event:
        """The pending text as the next reply.delta (seq assigned now, so it stays gapless)."""
        self.seq += 1
        text = self.parts[0] if len(self.parts) == 1 else "".join(self.parts)
        self.parts = []
        return self.user, {"type": "reply.delta", "reply_id": self.reply_id, "seq": self.seq,
                           "text": text}


class Coalescer:
    def __init__(self, publish_many: PublishMany, flush_s: float) -> None:
        self._publish_many = publish_many
        self._flush_s = flush_s
        self._dirty: dict[str, Pending] = {}  # replies with pending text, oldest first
        self._ticker: asyncio.Task[None] | None = None
        self._followed: dict[str, _Followed] = {}

    def open(self, user: str, reply_id: uuid.UUID) -> Pending:
        return Pending(user, reply_id)

    async def add(self, pending: Pending, text: str) -> None:
        """Queue a token; the first one of a reply (and every one when flushing is off) is
        published at once."""
        if pending.error is not None:
            raise pending.error
        if pending.seq == 0 or self._flush_s <= 0:
            pending.parts.append(text)
            await self._publish_many([pending.take()])
            return
        pending.parts.append(text)
        if pending.reply_id not in self._dirty:
            self._dirty[pending.reply_id] = pending
            self._run_ticker()

    @property
    def pacing(self) -> bool:
        return self._flush_s > 0

    async def follow(self, pending: Pending, source: Polled, sink: list[str]) -> None:
        """Read `source` at every tick until its polling is over: its texts are appended to
        `sink` and published with the tick. Raises what the source raises (the texts before
        it are published first)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._followed[pending.reply_id] = _Followed(pending, source, sink, done)
        self._run_ticker()
        try:
            await done
        finally:
            self._followed.pop(pending.reply_id, None)

    def _run_ticker(self) -> None:
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.create_task(self._tick(), name="reply-flush")

    def take_rest(self, pending: Pending) -> Event | None:
        """What is pending for this reply as its last delta, for the caller to publish with
        its reply.end (None: nothing left)."""
        if self._dirty.pop(pending.reply_id, None) is not None and pending.parts:
            return pending.take()
        return None

    def discard(self, pending: Pending) -> None:
        self._dirty.pop(pending.reply_id, None)

    async def _tick(self) -> None:
        # Runs while some reply has pending text or is followed; then exits (no idle wakeups).
        loop = asyncio.get_running_loop()
        due = loop.time()
        while self._dirty or self._followed:
            # A tick every flush_s from the start of the last one, not flush_s after its
            # publish: a pause after a long tick would add to every token's wait.
            due = max(due + self._flush_s, loop.time())
            await asyncio.sleep(due - loop.time())
            fired = loop.time()
            if self._followed:
                await self._read_followed()
            batch, self._dirty = list(self._dirty.values()), {}
            events = [p.take() for p in batch if p.parts]
            if not events:
                continue
            try:
                await self._publish_many(events)
            except Exception as exc:  # the reply task raises it at its next token
                log.warning("publishing %d coalesced deltas failed: %s", len(events), exc)
                for p in batch:
                    p.error = exc
            metrics.tutor_flush_tick_seconds.observe(loop.time() - fired)

    async def _read_followed(self) -> None:
        followed = list(self._followed.values())
        resumed = False
        for f in followed:
            resumed = f.source.resume() or resumed
        if resumed:
            # Two loop turns: the loop reads every resumed socket that has data (uvloop in
            # the first turn; asyncio runs this task before the reads it finds, so in the
            # second).
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        for f in followed:
            if f.done.done():  # cancelled meanwhile
                continue
            pending = f.pending
            try:
                if pending.error is not None:
                    raise pending.error
                texts, over = f.source.poll()
            except Exception as exc:
                f.done.set_exception(exc)
                continue
            if texts:
                pending.parts += texts
                f.sink += texts
                if pending.reply_id not in self._dirty:
                    self._dirty[pending.reply_id] = pending
            if over:
                f.done.set_result(None)
