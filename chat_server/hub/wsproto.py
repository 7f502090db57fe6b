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


class HubWebSocketProtocol(WebSocketsSansIOProtocol):
    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        response = getattr(self, "response", None)
        if (response is not None and response.status_code == 101
                and "Sec-WebSocket-Extensions" not in response.headers):
            self.scope["extensions"][EXTENSION] = {}  # type: ignore[index]

    async def send(self, message: Any) -> None:
        if message["type"] != EXTENSION:
            await super().send(message)
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
