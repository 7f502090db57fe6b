"""A streamed provider body taken off aiohttp's connection while the tutor's tick reads it.

aiohttp spends ~20 µs of Python per network read of a streamed body (its parser's callbacks,
StreamReader bookkeeping, a read-timeout timer rescheduled per read): with 500 replies
streaming, more than the rest of reading them. Once a reply's tokens flow, `Tap.take`
swaps the connection's protocol for one that only keeps the bytes it is given, and the
tick decodes the HTTP chunks itself (`read`). When the body ends (its last chunk,
the connection closing) or the stream's consumer is done polling, `give_back` hands the
connection and the bytes not decoded back to aiohttp, which sees an ordinary response from
there on: it parses the rest, ends the body, and pools or closes the connection as usual.

Only a chunked body without content coding, taken between two chunks, is tapped: aiohttp's
parser then has nothing half-read, and the bytes handed back start at a chunk boundary.
Everything here that is aiohttp's own (the chunk bookkeeping, the read-timeout timer) is
looked up with getattr: a version without them is simply not tapped.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any


class TapError(Exception):
    """The body is not valid chunked HTTP."""


class Tap(asyncio.Protocol):
    """The protocol that holds the connection while tapped: keeps bytes, nothing else."""

    def __init__(self, transport: Any, handler: Any, idle_s: float | None) -> None:
        self._transport = transport
        self._handler = handler  # aiohttp's ResponseHandler, given the connection back
        self._idle_s = idle_s  # aiohttp's read timeout, which is off while tapped
        self._parts: list[bytes] = []
        self._rest = b""  # the start of a chunk not complete yet
        self._body: list[bytes] = []  # decoded, not read yet
        self._error: TapError | None = None
        self._last = time.monotonic()
        self.returned = False

    @staticmethod
    def tappable(inner: Any) -> bool:
        """The aiohttp response `inner` can ever be tapped: a chunked body without content
        coding, on an aiohttp that has what the tap uses (decided once, from its headers)."""
        handler = getattr(inner.connection, "protocol", None)
        return (hasattr(inner.content, "_http_chunk_splits")
                and hasattr(inner.content, "total_bytes")
                and hasattr(handler, "_drop_timeout")
                and inner.headers.get("Content-Encoding", "identity").lower() == "identity"
                and "chunked" in inner.headers.get("Transfer-Encoding", "").lower())

    @classmethod
    def take(cls, inner: Any) -> Tap | None:
        """Tap the `tappable` aiohttp response `inner` if it stands between two chunks now,
        else None (try again later)."""
        content = inner.content
        splits = content._http_chunk_splits
        handler: Any = getattr(inner.connection, "protocol", None)
        transport = getattr(handler, "transport", None)
        if (not splits or splits[-1] != content.total_bytes
                or content.exception() is not None or content.is_eof()
                or transport is None or transport.is_closing()):
            return None
        tap = cls(transport, handler, getattr(handler, "read_timeout", None))
        handler._drop_timeout()
        transport.set_protocol(tap)
        try:
            transport.resume_reading()  # aiohttp's flow control may have paused it
        except RuntimeError:
            pass
        return tap

    # asyncio.Protocol
    def data_received(self, data: bytes) -> None:
        self._parts.append(data)
        self._last = time.monotonic()

    def eof_received(self) -> bool | None:
        # The end of the connection is aiohttp's to handle, after the chunks before it.
        self._end()
        return self._handler.eof_received()  # type: ignore[no-any-return]

    def connection_lost(self, exc: BaseException | None) -> None:
        self._end()
        self._handler.connection_lost(exc)

    def _end(self) -> None:
        try:
            self._decode()  # the complete chunks are the tick's, the rest aiohttp's
        except TapError as err:
            self._error = err
        self._give_back()

    # the tick's side
    def read(self) -> bytes:
        """The body bytes of every complete chunk that has arrived. Gives the connection
        back when the last chunk comes."""
        if self._error is not None:
            raise self._error
        if self._parts and not self.returned and self._decode():
            self.give_back()
        elif (not self._body and self._idle_s and not self.returned
              and time.monotonic() - self._last > self._idle_s):
            raise TimeoutError("no data from the provider in time")
        body = b"".join(self._body)
        self._body.clear()
        return body

    def _decode(self) -> bool:
        """Move the complete chunks that arrived to `_body`; True at the body's last chunk."""
        parts = self._parts
        if not parts:
            return False
        buf = self._rest + b"".join(parts) if self._rest else b"".join(parts)
        parts.clear()
        body = self._body
        last = False
        pos, end = 0, len(buf)
        while pos < end:
            nl = buf.find(b"\r\n", pos)
            if nl < 0:
                break
            try:
                size = int(buf[pos:nl].split(b";", 1)[0], 16)
            except ValueError:
                raise TapError("a malformed chunk size in the provider's body") from None
            if size == 0:  # the last chunk: aiohttp reads it (and any trailers)
                last = True
                break
            stop = nl + 2 + size
            if stop + 2 > end:
                break
            if buf[stop:stop + 2] != b"\r\n":
                raise TapError("a chunk of the provider's body does not end where it says")
            body.append(buf[nl + 2:stop])
            pos = stop + 2
        self._rest = buf[pos:]
        return last

    def give_back(self) -> None:
        """aiohttp reads the connection again, from the bytes not decoded here."""
        if not self.returned:
            self._transport.set_protocol(self._handler)
            self._give_back()
            restart = getattr(self._handler, "_reschedule_timeout", None)
            if restart is not None:
                restart()  # aiohttp's read timeout, off while tapped

    def _give_back(self) -> None:
        if self.returned:
            return
        self.returned = True
        rest = self._rest + b"".join(self._parts)
        self._rest = b""
        self._parts.clear()
        if rest:
            self._handler.data_received(rest)
