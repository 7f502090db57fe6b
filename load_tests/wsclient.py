"""A raw-asyncio WebSocket client socket for the load generators: just enough RFC 6455.

The handshake (no extensions: permessage-deflate is not offered), server frames parsed in
`data_received` (text, ping, close; no fragmentation: the servers under test send whole
messages), masked text frames out. Subclasses get each text payload as bytes in `on_text`,
in the same loop turn the bytes arrived, with no task wakeup per frame: a load generator
must cost far less per frame than the server it measures (a general-purpose client library
costs about as much as our server does per frame).
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
from typing import Any


def frame(payload: bytes, opcode: int = 1) -> bytes:
    """A client frame. Client frames must be masked; a zero mask key leaves the payload as is."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return head + b"\x00\x00\x00\x00" + payload


class RawWebSocket(asyncio.Protocol):
    """One client socket; `on_open` once upgraded, `on_text` per text message. `opened` is for
    the subclass to resolve when its protocol says the socket is ready (a welcome frame…); a
    refused upgrade or a lost connection fails it first."""

    def __init__(self, path: str, host: str, opened: asyncio.Future[Any]) -> None:
        self.path = path
        self.host = host
        self.opened = opened
        self.buf = bytearray()
        self.upgraded = False
        self.transport: asyncio.Transport | None = None
        self.closed_code: int | None = None

    def on_open(self) -> None:
        """The upgrade was accepted."""

    def on_text(self, payload: bytes) -> None:
        raise NotImplementedError

    def _fail(self, reason: str) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(reason))

    def send_text(self, payload: bytes) -> None:
        assert self.transport is not None
        self.transport.write(frame(payload))

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(
            f"GET {self.path} HTTP/1.1\r\nHost: {self.host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail("closed before it was ready")

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if b" 101 " not in buf[:end]:
                self._fail(bytes(buf[:end]).decode("latin-1"))  # not 101: refused
                return
            del buf[:end + 4]
            self.upgraded = True
            self.on_open()
        pos = 0
        n = len(buf)
        while n - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            ln = b1 & 0x7F
            hl = 2
            if ln == 126:
                if n - pos < 4:
                    break
                ln = (buf[pos + 2] << 8) | buf[pos + 3]
                hl = 4
            elif ln == 127:
                if n - pos < 10:
                    break
                ln = struct.unpack_from("!Q", buf, pos + 2)[0]
                hl = 10
            if n - pos < hl + ln:
                break
            payload = bytes(buf[pos + hl:pos + hl + ln])
            pos += hl + ln
            opcode = b0 & 0x0F
            if opcode == 1:
                self.on_text(payload)
            elif opcode == 9:
                self.transport.write(frame(payload, 10))  # type: ignore[union-attr]
            elif opcode == 8:
                self.closed_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                self.transport.close()  # type: ignore[union-attr]
        if pos:
            del buf[:pos]
