"""The in-process engine (`memory://`): the embedded single-process mode.

Publishing is synchronous: the frame is made, appended to the user's history and handed to
`Deliver` before `publish` returns — no queue. Bounds: a user's history keeps its newest
`max_events` frames (older ones are trimmed: a resume behind them fails with
history_trimmed); a user's whole history is dropped `ttl_s` after its last event (a later
event starts a new epoch, told to `OnEpoch` first), so idle users cost nothing — as the
Redis engine's key TTLs.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from chat_server.bus.base import (
    Bus,
    Deliver,
    Event,
    OnEpoch,
    StreamHead,
    check_since,
    new_epoch,
    observe_publish,
    trimmed,
)
from chat_server.protocol import codec


@dataclass(slots=True)
class _History:
    epoch: str
    frames: deque[tuple[int, str]]
    offset: int = 0  # offset of the newest event
    touched: float = field(default_factory=time.monotonic)  # the last event's time


class MemoryBus(Bus):
    def __init__(self, deliver: Deliver, max_events: int, ttl_s: float = 86400,
                 on_epoch: OnEpoch | None = None) -> None:
        super().__init__()
        self._deliver = deliver
        self._on_epoch = on_epoch
        self._max = max_events
        self._ttl = ttl_s
        self._histories: OrderedDict[str, _History] = OrderedDict()  # least recent first
        self._subscribed: dict[str, int] = {}

    async def signal(self, message: dict[str, Any]) -> None:
        # The same copy semantics as across Redis: handlers get a decoded copy.
        copy = codec.signal_from_json(codec.signal_json(message))
        assert copy is not None
        self._signalled(copy)

    async def publish(self, user_id: str, event: Event) -> int:
        started = time.perf_counter()
        offset = self._append(user_id, event, time.monotonic())
        observe_publish(time.perf_counter() - started)
        return offset

    async def publish_many(self, events: Sequence[tuple[str, Event]]) -> list[int]:
        started = time.perf_counter()
        now = time.monotonic()
        offsets: list[int] = []
        failed: Exception | None = None
        for user_id, event in events:
            try:
                offsets.append(self._append(user_id, event, now))
            except (ValueError, TypeError) as exc:  # this event fails; the others go out
                failed = failed or exc
        observe_publish(time.perf_counter() - started)
        if failed is not None:
            raise failed
        return offsets

    def _append(self, user_id: str, event: Event, now: float) -> int:
        self._expire(now)
        history = self._histories.get(user_id)
        offset = (history.offset if history is not None else 0) + 1
        frame = codec.frame(event, offset)  # raises for a bad event: nothing changed yet
        subscribed = self._subscribed.get(user_id)
        if history is None:
            history = self._histories[user_id] = _History(new_epoch(), deque(maxlen=self._max))
            if subscribed and self._on_epoch is not None:  # expired under a subscriber
                self._on_epoch(user_id, history.epoch)
        else:
            self._histories.move_to_end(user_id)
        history.frames.append((offset, frame))
        history.offset = offset
        history.touched = now
        if subscribed:
            self._deliver(user_id, offset, frame, event["type"])
        return offset

    def _expire(self, now: float) -> None:
        histories = self._histories
        while histories:
            user_id, oldest = next(iter(histories.items()))
            if now - oldest.touched < self._ttl:
                return
            del histories[user_id]

    def _history(self, user_id: str) -> _History:
        self._expire(time.monotonic())
        history = self._histories.get(user_id)
        if history is None:
            # An epoch for a user without events yet; touched now, so it lives ttl_s too.
            history = self._histories[user_id] = _History(new_epoch(), deque(maxlen=self._max))
        return history

    async def head(self, user_id: str) -> StreamHead:
        history = self._history(user_id)
        return StreamHead(history.epoch, history.offset)

    async def since(self, user_id: str, offset: int, epoch: str) -> list[str]:
        history = self._history(user_id)
        check_since(epoch, StreamHead(history.epoch, history.offset), offset)
        frames = history.frames
        if offset < history.offset and (not frames or frames[0][0] > offset + 1):
            raise trimmed()
        return [frame for o, frame in frames if o > offset]

    async def subscribe(self, user_id: str) -> None:
        self._subscribed[user_id] = self._subscribed.get(user_id, 0) + 1

    async def unsubscribe(self, user_id: str) -> None:
        left = self._subscribed.get(user_id, 0) - 1
        if left > 0:
            self._subscribed[user_id] = left
        else:
            self._subscribed.pop(user_id, None)
