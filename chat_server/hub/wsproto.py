"""uvicorn's websockets-sansio protocol plus one ASGI extension: pre-framed writes.

Fan-out sends the same event to many sockets. Through plain ASGI every socket pays for
framing (websockets' serializer) and one `transport.write` per frame. With the
`tutorhub.frames` extension the hub frames each event once (server frames are unmasked,
so the bytes are the same for every socket) and a socket that is behind writes all its
queued frames in one `transport.write`. Offered only when no WebSocket extension was
negotiated (permessage-deflate must compress per socket); otherwise the hub falls back
to `websocket.send`. Run with `uvicorn --ws chat_server.hub.wsproto:HubWebSocketProtocol`
(`tutorhub serve` does).
"""

from __future__ import annotations

import asyncio
import logging
import struct
from typing import Any

from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request

EXTENSION = "tutorhub.frames"


def text_frame(payload: bytes) -> bytes:
    """One unfragmented, unmasked text frame (RFC 6455 §5.2)."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", 0x81, 126, n) + payload
    return struct.pack("!BBQ", 0x81, 127, n) + payload


class _Inbox:
    """What uvicorn needs of its per-connection asyncio.Queue, in ~200 bytes instead of ~3 KB
    (an idle socket holds one of these for its whole life)."""

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def get(self) -> Any:
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.pop(0)

    def empty(self) -> bool:
        return not self._items


class _Flag:
    """asyncio.Event without its waiter deque (same methods uvicorn uses)."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = True
        self._waiters: list[asyncio.Future[None]] = []

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> bool:
        if self._set:
            return True
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        finally:
            if fut in self._waiters:
                self._waiters.remove(fut)
        return True


class _ClientFault(logging.Filter):
    """uvicorn logs a text frame that is not UTF-8 at ERROR with a traceback and closes the
    socket 1007 (docs/protocol.md): that is a client's fault, not ours, so it becomes one
    WARNING line. (A filter on its logger: the parsing itself stays uvicorn's.)"""

    MESSAGE = "Invalid UTF-8 sequence received from client."

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and record.msg == self.MESSAGE:
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg = "A client sent a text frame that is not UTF-8; closed it with 1007."
            record.exc_info = record.exc_text = None
        return True


_CLIENT_FAULT = _ClientFault()


class HubWebSocketProtocol(WebSocketsSansIOProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if _CLIENT_FAULT not in self.logger.filters:
            self.logger.addFilter(_CLIENT_FAULT)
        self.queue = _Inbox()  # type: ignore[assignment]
        self.writable = _Flag()  # type: ignore[assignment]

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        response = getattr(self, "response", None)
        if (response is not None and response.status_code == 101
                and "Sec-WebSocket-Extensions" not in response.headers):
            # `write_now`: a frame written at once when nothing stops it (see below).
            self.scope["extensions"][EXTENSION] = {  # type: ignore[index]
                "write_now": self.write_now}

    async def send(self, message: Any) -> None:
        if message["type"] != EXTENSION:
            await super().send(message)
            if message["type"] == "websocket.accept" and self.handshake_complete:
                # The handshake is done: its request and response headers are not needed.
                self.request = None  # type: ignore[assignment]
                self.response = None  # type: ignore[assignment]
            return
        if not self.writable.is_set():
            await self.writable.wait()
        if self.disconnected or self.transport.is_closing():
            raise ClientDisconnected()
        if self.close_sent or not self.handshake_complete:
            raise RuntimeError(
                f"Unexpected ASGI message '{EXTENSION}' before accept or after close."
            )
        self.transport.write(message["data"])

    def write_now(self, data: bytes) -> bool:
        """Write pre-framed bytes now if `send` would write them without waiting; False
        (nothing written) when it would wait or raise: the caller queues them for `send`."""
        if (not self.writable.is_set() or self.disconnected or self.transport.is_closing()
                or self.close_sent or not self.handshake_complete):
            return False
        self.transport.write(data)
        return True
