"""The bus interface: per-user event streams with offsets and a capped history.

What the hub, the tutor and the workers call:

- `publish(user_id, event)` / `publish_many([(user_id, event), ...])`: append to the user's
  history and deliver to every instance subscribed to that user, in one atomic step, so an
  event has its offset (`o`, 1, 2, 3… per user) before anyone sees it. Returns the offsets.
- `subscribe(user_id)` / `unsubscribe(user_id)`: reference-counted; once `subscribe` returns,
  every later event of that user reaches this instance's `Deliver` callback, once, in
  offset order, as its wire frame (`chat_server.protocol.codec`).
- `head(user_id)` → `StreamHead(epoch, offset)`; `since(user_id, offset, epoch)` → the wire
  frames after `offset`, or `ResumeFailed` when the history cannot give exactly those.
- `signal(message)` / `on_signal(handler)`: control messages to every instance (no history).
- `ready()` / `wait_ready(wait_s)`: whether the engine can deliver right now.

Errors:

    BusError
    ├── BusUnavailable   the backend (Redis) cannot be reached, or refused the call
    │   └── BusFull      a bounded buffer is full: the call is refused at once, nothing queued
    └── ResumeFailed     `since` cannot cover the offset: `.reason` is epoch_changed,
                         history_trimmed or offset_ahead (the codes of resume.failed)

An event the codec cannot encode (no "type", "o" set by the caller, not JSON, text that is not
valid Unicode) is not published: its call raises the encoder's `ValueError` / `TypeError`
(`UnicodeEncodeError` for lone surrogates) once the call's other events are published.
"""

from __future__ import annotations

import logging
import secrets
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from chat_server.protocol.codec import Event
from chat_server.protocol.codes import ResumeReason

log = logging.getLogger("chat_server.bus")

# Called by the engine for every event of a user this instance subscribed to:
# (user_id, offset, wire frame, the event's type) — the frame is the event's JSON text with its
# "o"; the type comes along so that the hub never has to look inside the text.
Deliver = Callable[[str, int, str, str], None]
# Called before the first delivered event of a new epoch: (user_id, new epoch).
OnEpoch = Callable[[str, str], None]
# Called for every control message sent with Bus.signal, from any instance.
OnSignal = Callable[[dict[str, Any]], None]


class BusError(Exception):
    """Base of the bus's errors."""


class BusUnavailable(BusError):
    """The bus backend (Redis) cannot be reached right now."""


class BusFull(BusUnavailable):
    """A bounded buffer of the bus is full; the call was refused and nothing of it queued."""


class ResumeFailed(BusError):
    """History no longer reaches back to the requested offset, or the epoch changed."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason  # stable code: epoch_changed | history_trimmed | offset_ahead


@dataclass(frozen=True)
class StreamHead:
    epoch: str
    offset: int  # offset of the newest event (0 when none yet)


class Bus(ABC):
    """Interface every engine implements."""

    def __init__(self) -> None:
        self._signal_handlers: list[OnSignal] = []

    @abstractmethod
    async def publish(self, user_id: str, event: Event) -> int:
        """Append to the user's history, deliver to every subscriber; return the offset."""

    @abstractmethod
    async def publish_many(self, events: Sequence[tuple[str, Event]]) -> list[int]:
        """Publish several (user_id, event) pairs at once, in list order; their offsets.

        One Redis round trip for all of them (a flush tick of the tutor publishes every
        streaming reply's pending delta together). Every event is queued before the first
        await, so an event published after this call started is ordered after all of them.
        """

    @abstractmethod
    async def head(self, user_id: str) -> StreamHead: ...

    @abstractmethod
    async def since(self, user_id: str, offset: int, epoch: str) -> list[str]:
        """Wire frames after `offset`; raises ResumeFailed if history can't reach back."""

    @abstractmethod
    async def subscribe(self, user_id: str) -> None:
        """Start delivering this user's events to this instance's Deliver callback.

        Reference-counted; returns once the subscription is live, so an event published
        after it returns is delivered.
        """

    @abstractmethod
    async def unsubscribe(self, user_id: str) -> None: ...

    @abstractmethod
    async def signal(self, message: dict[str, Any]) -> None:
        """Send a control message to the `on_signal` handlers of every instance (this one
        too). Fire and forget: no history, an instance that is down never sees it."""

    async def ready(self) -> bool:
        return True

    async def wait_ready(self, wait_s: float) -> bool:
        """Whether the engine is ready, waiting up to `wait_s` for it."""
        return await self.ready()

    def on_signal(self, handler: OnSignal) -> None:
        """Call `handler(message)` for every signal from any instance (synchronously)."""
        self._signal_handlers.append(handler)

    def _signalled(self, message: dict[str, Any]) -> None:
        for handler in self._signal_handlers:
            try:
                handler(message)
            except Exception:  # one bad handler must not stop the others or the reader
                log.exception("bus signal handler failed")


def new_epoch() -> str:
    return secrets.token_hex(6)


def check_since(epoch: str, head: StreamHead, offset: int) -> None:
    """The ResumeFailed every engine raises for an epoch or offset that is not in `head`."""
    if epoch != head.epoch:
        raise ResumeFailed(ResumeReason.EPOCH_CHANGED,
                           "The history epoch changed; reload over REST.")
    if offset > head.offset or offset < 0:
        raise ResumeFailed(ResumeReason.OFFSET_AHEAD, "The offset is not in this history.")


def trimmed() -> ResumeFailed:
    return ResumeFailed(ResumeReason.HISTORY_TRIMMED,
                        "History no longer reaches back to the offset.")


def observe_publish(seconds: float) -> None:
    from chat_server.metrics import bus_publish_seconds

    bus_publish_seconds.observe(seconds)
