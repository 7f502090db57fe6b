"""HTTP/1.1 by hand, for what httpx hides: a body streamed while the response is read, and
several requests on one keep-alive connection."""

from __future__ import annotations

import asyncio
import json
from contextlib import suppress
from dataclasses import dataclass
from typing import Any


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    sent: int = 0  # body bytes the client got out before the answer (or the close)

    def json(self) -> Any:
        return json.loads(self.body)


async def read_answer(reader: asyncio.StreamReader) -> Answer:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    status = int(head[0].split(" ", 2)[1])
    headers = {k.strip().lower(): v.strip()
               for k, v in (line.split(":", 1) for line in head[1:] if ":" in line)}
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Answer(status, headers, body)


def head(method: str, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "host: 127.0.0.1",
             *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def stream_body(port: int, method: str, path: str, headers: dict[str, str],
                      total: int, chunk: bytes = b"x" * 65536, prefix: bytes = b"") -> Answer:
    """Send `prefix` then filler up to `total` bytes of body (chunked unless headers say
    content-length) while reading the answer; stops sending as soon as the answer came or
    the server closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    chunked = "content-length" not in {k.lower() for k in headers}
    if chunked:
        headers = {**headers, "transfer-encoding": "chunked"}
    writer.write(head(method, path, headers))
    answer = asyncio.create_task(read_answer(reader))
    sent = 0
    try:
        with suppress(ConnectionError, OSError):
            while sent < total and not answer.done():
                piece = prefix if sent == 0 and prefix else chunk[:total - sent]
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
                await writer.drain()
                sent += len(piece)
            if chunked and not answer.done():
                writer.write(b"0\r\n\r\n")
        got = await asyncio.wait_for(answer, 30)
        got.sent = sent
        return got
    finally:
        answer.cancel()
        writer.transport.abort()


async def keep_alive(port: int, requests: list[bytes]) -> list[Answer]:
    """Every request on one connection, one after the other."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answers = []
    try:
        for request in requests:
            writer.write(request)
            await writer.drain()
            answers.append(await asyncio.wait_for(read_answer(reader), 30))
    finally:
        writer.close()
    return answers


def request(method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
            ) -> bytes:
    headers = {"content-type": "application/json", **(headers or {}),
               "content-length": str(len(body))}
    return head(method, path, headers) + body
