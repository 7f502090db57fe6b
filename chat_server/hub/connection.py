"""One authenticated socket: its bounded send queue, the task that writes it, and closing.

Queue policy: frames wait in a deque bounded by `max_frames` and `max_bytes`. A
`reply.delta` queued behind an unsent `reply.delta` of the same reply is merged into it
(coalescing: fewer, larger frames for a reader that is behind). When a bound is exceeded
the queue is dropped at once and the socket is closed with 4408; the client reconnects
and resumes from its last offset. Fan-out never waits for a socket: `push` is synchronous.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from enum import Enum
from typing import Any, Protocol

from chat_server.bus import Bus
from chat_server.hub.fastpath import EXTENSION, text_frame
from chat_server.protocol import codec
from chat_server.protocol.codes import Close, ResumeReason
from chat_server.protocol.frames import ResumeFailedFrame

log = logging.getLogger(__name__)

Send = Callable[[dict[str, Any]], Awaitable[None]]
DELTA = "reply.delta"


class Host(Protocol):
    """What a socket needs of the hub that holds it (hub.Hub): its bounds, its counters, the bus
    and leaving it."""

    max_frames: int
    max_bytes: int
    frames_out: int
    bytes_out: int
    coalesced: int

    @property
    def bus(self) -> Bus | None: ...

    def detach(self, conn: Conn) -> None: ...

    def count_close(self, code: int, *, overflow: bool = False) -> None: ...

CLOSE_TIMEOUT_S = 10.0  # a close frame that can't be written by then: drop the connection
BATCH_BYTES = 65_536  # a socket that is behind writes up to this much in one transport write


class State(Enum):
    SETUP = "setup"  # authenticated; welcome/history not sent yet, live events held back
    LIVE = "live"
    CLOSING = "closing"


class Conn:
    __slots__ = (
        "hub", "_send", "user_id", "session_id", "epoch", "last_o", "state", "queue", "nbytes",
        "held", "_waiter", "writer", "closer", "handler", "forced", "last_recv", "last_ping",
        "expires_at", "warned", "close_code", "raw", "_write_now", "generation", "subscribed",
    )

    def __init__(self, hub: Host, send: Send, user_id: str, session_id: str,
                 expires_at: float, raw: bool = False,
                 write_now: Callable[[bytes], bool] | None = None, generation: int = 0) -> None:
        self.hub = hub
        self._send = send
        self.raw = raw  # the server takes pre-framed bytes (fastpath.EXTENSION)
        # Writes a ready frame at once if the socket can take it (fastpath's write_now).
        self._write_now = write_now if raw else None
        self.user_id = user_id
        self.session_id = session_id
        self.epoch = ""
        self.last_o = 0  # offset of the newest event queued for this socket
        self.state = State.SETUP
        # Items: [text or None (re-encode from the dict), size in bytes, merged delta dict,
        # the text as a ready WebSocket frame or None, the event's type].
        self.queue: list[list[Any]] = []  # a list, not a deque: 56 bytes when empty
        self.nbytes = 0
        # Live events during SETUP: (offset, text, size, frame, type).
        self.held: list[tuple[int, str, int, bytes | None, str]] = []
        self._waiter: asyncio.Future[None] | None = None
        self.writer: asyncio.Task[None] | None = None
        self.closer: asyncio.Task[None] | None = None
        self.handler = asyncio.current_task()
        self.forced = False
        now = time.monotonic()
        self.last_recv = now
        self.last_ping = now
        self.expires_at = expires_at
        self.warned = False
        self.close_code: int | None = None  # set once the close is counted (ours or the peer's)
        self.generation = generation  # the user's token generation the socket authenticated at
        self.subscribed = False  # holds a reference on the bus subscription of its user

    # --- queueing (synchronous; called from fan-out) ---------------------------------
    def push(self, offset: int, text: str, size: int, frame: bytes | None = None,
             kind: str | None = None) -> None:
        """A bus event for this user (`kind`: its type, decoded from `text` when not given);
        dropped if this socket already has it."""
        if offset <= self.last_o and self.state is State.LIVE:
            return
        if kind is None:
            kind = str(codec.decode_event(text)["type"])
        if self.state is State.SETUP:
            self.held.append((offset, text, size, frame, kind))
            if len(self.held) > self.hub.max_frames:
                self.close(Close.SLOW_CONSUMER, "send queue overflow", overflow=True)
            return
        if self.state is State.CLOSING:
            return
        self.last_o = offset
        queue = self.queue
        if not queue:
            # Nothing queued and the writer idle: the frame goes out now, in the fan-out's
            # loop turn, without waking the writer task (one task switch per event saved).
            waiter = self._waiter
            if (frame is not None and self._write_now is not None and waiter is not None
                    and not waiter.done() and self._write_now(frame)):
                self.hub.frames_out += 1
                self.hub.bytes_out += size
                return
        elif kind == DELTA and self._merge(queue[-1], text, size):
            self._check()
            return
        queue.append([text, size, None, frame, kind])
        self.nbytes += size
        self._check()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def send_frame(self, frame: Any) -> None:
        """A frame for this socket only (welcome, error, pong…: a frames.* dict, or its text),
        in order with events."""
        if self.state is State.CLOSING:
            return
        text = frame if isinstance(frame, str) else codec.dumps(frame)
        data = text.encode()
        self.queue.append([text, len(data), None, text_frame(data) if self.raw else None,
                           frame["type"] if isinstance(frame, dict) else None])
        self.nbytes += len(data)
        self._check()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _merge(self, last: list[Any], text: str, size: int) -> bool:
        head = last[2]
        if head is None:
            if last[4] != DELTA:
                return False
            head = codec.decode_event(last[0])
        new = codec.decode_event(text)
        if new.get("reply_id") != head.get("reply_id"):
            return False
        merged = {**head, "seq": new.get("seq"), "text": f"{head.get('text', '')}"
                  f"{new.get('text', '')}", "o": new["o"], "parts": head.get("parts", 1) + 1}
        last[0], last[2], last[3] = None, merged, None
        last[1] += size
        self.nbytes += size
        self.hub.coalesced += 1
        return True

    def _check(self) -> None:
        if len(self.queue) > self.hub.max_frames or self.nbytes > self.hub.max_bytes:
            self.close(Close.SLOW_CONSUMER, "send queue overflow", overflow=True)

    # --- activation --------------------------------------------------------------------
    def activate(self, epoch: str, start_offset: int, first: list[Any],
                 history: list[str]) -> None:
        """Queue `first` frames, then history after start_offset, then held live events."""
        self.epoch = epoch
        self.last_o = start_offset
        self.state = State.LIVE
        for frame in first:
            self.send_frame(frame)
        for text in history:
            data = text.encode()
            event = codec.decode_event(text)
            self.push(event["o"], text, len(data), text_frame(data) if self.raw else None,
                      event["type"])
        held, self.held = self.held, []
        for offset, text, size, ready, kind in held:
            if offset < 0:  # an epoch change noticed while in SETUP
                self.new_epoch(text)
            else:
                self.push(offset, text, size, ready, kind)

    def new_epoch(self, epoch: str) -> None:
        if self.state is State.SETUP:
            self.held.append((-1, epoch, 0, None, ""))
            return
        if epoch == self.epoch or self.state is State.CLOSING:
            return
        self.epoch = epoch
        self.last_o = 0
        failed: ResumeFailedFrame = {
            "type": "resume.failed", "reason": ResumeReason.EPOCH_CHANGED,
            "message": "The history epoch changed; reload over REST.", "epoch": epoch,
            "offset": 0}
        self.send_frame(failed)

    # --- writing -----------------------------------------------------------------------
    def start(self) -> None:
        self.writer = asyncio.create_task(self._write_loop())

    async def _write_loop(self) -> None:
        queue = self.queue
        send = self._send
        hub = self.hub
        raw = self.raw
        loop = asyncio.get_running_loop()
        try:
            while True:
                while not queue:
                    self._waiter = loop.create_future()
                    await self._waiter
                if raw:
                    # Everything queued (up to BATCH_BYTES) in one write: a socket that is
                    # behind catches up with few syscalls.
                    parts: list[bytes] = []
                    batch = taken = 0
                    for text, size, merged, frame, _ in queue:
                        if batch >= BATCH_BYTES:
                            break
                        if frame is None:
                            frame = text_frame((text or codec.dumps(merged)).encode())
                        parts.append(frame)
                        batch += size
                        taken += 1
                    del queue[:taken]
                    self.nbytes -= batch
                    await send({"type": EXTENSION,
                                "data": parts[0] if len(parts) == 1 else b"".join(parts)})
                    hub.frames_out += len(parts)
                    hub.bytes_out += batch
                    continue
                text, size, merged, _, _ = queue.pop(0)
                self.nbytes -= size
                if text is None:
                    text = codec.dumps(merged)
                await send({"type": "websocket.send", "text": text})
                hub.frames_out += 1
                hub.bytes_out += size
        except asyncio.CancelledError:
            raise
        except Exception:  # the client went away; the handler sees the disconnect
            self.state = State.CLOSING

    # --- closing -----------------------------------------------------------------------
    def close(self, code: int, reason: str, *, overflow: bool = False) -> None:
        """Stop queueing at once (memory is released now) and send the close frame."""
        if self.state is State.CLOSING:
            return
        self.state = State.CLOSING
        self.close_code = code
        self.queue.clear()
        self.held.clear()
        self.nbytes = 0
        # Out of fan-out early (finish() detaches too, whatever happens): on the next loop
        # turn, as close() may run inside the hub's fan-out loop over this user's sockets,
        # which must not change under it. Until then push() ignores us.
        asyncio.get_running_loop().call_soon(self.hub.detach, self)
        self.hub.count_close(code, overflow=overflow)
        if self.writer is not None:
            self.writer.cancel()  # it may be blocked on a full transport; nothing half-written
        self.closer = asyncio.create_task(self._close(code, reason))

    async def _close(self, code: int, reason: str) -> None:
        if self.writer is not None:
            with suppress(asyncio.CancelledError, Exception):
                await self.writer
        try:
            await asyncio.wait_for(
                self._send({"type": "websocket.close", "code": int(code), "reason": reason}),
                CLOSE_TIMEOUT_S,
            )
        except TimeoutError:
            # The peer reads nothing: end the handler, which drops the connection.
            log.info("socket %s: close frame not writable in %ss, dropping it",
                     self.session_id, CLOSE_TIMEOUT_S)
            self.forced = True
            if self.handler is not None:
                self.handler.cancel()
        except Exception:
            pass  # already disconnected

    async def finish(self) -> None:
        """The socket's last step, whatever ended it (client close, server close, dropped TCP,
        an exception): the endpoint calls it in `finally`. Leaves the hub, stops the writer and
        the closer, and gives back the bus subscription."""
        self.state = State.CLOSING
        self.queue.clear()
        self.held.clear()
        self.nbytes = 0
        self.hub.detach(self)  # idempotent: close() may have detached it already
        for task in (self.writer, self.closer):
            if task is not None and task is not asyncio.current_task():
                if task is self.writer:
                    task.cancel()
                with suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(task, CLOSE_TIMEOUT_S + 1)
        bus = self.hub.bus
        if self.subscribed and bus is not None:
            self.subscribed = False
            with suppress(Exception):
                await bus.unsubscribe(self.user_id)
