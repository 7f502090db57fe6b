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

The first delta of a reply is published at the loop's next turn rather than at once: a
provider yields the tokens of one network read without waiting, so the tokens that arrived
with the first leave with it, in one delta.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from chat_server import metrics

log = logging.getLogger(__name__)

# (user, event): the bus encodes the event (chat_server.protocol.codec).
Event = tuple[str, dict[str, Any]]
PublishMany = Callable[[list[Event]], Awaitable[list[int]]]


class Pending:
    """One reply's side of the coalescer: its next seq and the tokens not yet published."""

    __slots__ = ("user", "reply_id", "seq", "parts", "error", "gather", "first", "on_first")

    def __init__(self, user: str, reply_id: uuid.UUID, gather: bool,
                 on_first: Callable[[], object] | None) -> None:
        self.user = user
        self.reply_id = str(reply_id)
        self.seq = 0  # seq of the last delta taken for publishing
        self.parts: list[str] = []
        self.error: BaseException | None = None  # a failed publish of this reply's text
        self.gather = gather  # the first delta waits for the loop's next turn
        self.first: asyncio.Task[None] | None = None  # publishes a gathered first delta
        self.on_first = on_first  # called once the first delta is published

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

    def open(self, user: str, reply_id: uuid.UUID, *, gather_first: bool = False,
             on_first: Callable[[], object] | None = None) -> Pending:
        """A reply's pending text. `gather_first` (when flushing): its first delta goes out
        at the loop's next turn with every token added until then, not at once — a provider
        yields the tokens of one network read without waiting, so they leave together.
        `on_first` is called once the first delta is published."""
        return Pending(user, reply_id, gather_first and self._flush_s > 0, on_first)

    async def add(self, pending: Pending, text: str) -> None:
        """Queue a token; the first one of a reply (and every one when flushing is off) is
        published at once (gathered: see `open`)."""
        if pending.error is not None:
            raise pending.error
        pending.parts.append(text)
        if pending.seq == 0 and pending.gather:
            if pending.first is None:
                pending.first = asyncio.create_task(self._gathered_first(pending),
                                                    name=f"reply-first-{pending.reply_id}")
            return
        if pending.seq == 0 or self._flush_s <= 0:
            first = pending.seq == 0
            await self._publish_many([pending.take()])
            if first:
                _first_out(pending)
            return
        if pending.reply_id not in self._dirty:
            self._dirty[pending.reply_id] = pending
            self._run_ticker()

    async def _gathered_first(self, pending: Pending) -> None:
        try:
            await self._publish_many([pending.take()])
        except Exception as exc:  # the reply task raises it at its next token
            pending.error = exc
            return
        _first_out(pending)

    def _run_ticker(self) -> None:
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.create_task(self._tick(), name="reply-flush")

    async def take_rest(self, pending: Pending) -> Event | None:
        """What is pending for this reply as its last delta, for the caller to publish with
        its reply.end (None: nothing left), once a gathered first delta is out."""
        if pending.first is not None:
            await asyncio.wait({pending.first})
        self._dirty.pop(pending.reply_id, None)
        return pending.take() if pending.parts else None

    def discard(self, pending: Pending) -> None:
        """The reply has ended: forget its pending text (and its `on_first`, see `_first_out`)."""
        self._dirty.pop(pending.reply_id, None)
        pending.on_first = None

    async def _tick(self) -> None:
        # Runs while some reply has pending text; then exits (no idle wakeups).
        loop = asyncio.get_running_loop()
        due = loop.time()
        while self._dirty:
            # A tick every flush_s from the start of the last one, not flush_s after its
            # publish: a pause after a long tick would add to every token's wait.
            due = max(due + self._flush_s, loop.time())
            await asyncio.sleep(due - loop.time())
            fired = loop.time()
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


def _first_out(pending: Pending) -> None:
    """Call `on_first` once and drop it. It usually refers to the reply that holds this
    Pending (a reference cycle): left in place, every ended reply — its text, retrieval hits
    and tasks — waited for a full cyclic collection, which the server's GC thresholds make
    minutes apart, and the soak's RSS crept up (load_tests/reports/soak.md)."""
    on_first, pending.on_first = pending.on_first, None
    if on_first is not None:
        on_first()
