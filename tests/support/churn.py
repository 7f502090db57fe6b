"""Socket churn: open → auth → welcome → end, in the ways a socket really ends."""

from __future__ import annotations

import asyncio
import json
from contextlib import suppress
from typing import Literal

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.support.ws import ws_url

Flavour = Literal["client", "server", "drop", "refused"]
FLAVOURS: tuple[Flavour, ...] = ("client", "server", "drop")


async def cycle(base_url: str, token: str, flavour: Flavour) -> None:
    """One socket's life. client: the client closes (1000); server: the server closes (a binary
    frame → 1003); drop: the TCP connection is aborted (RST, no close frame); refused: a bad
    token (4401, never registered)."""
    async with connect(ws_url(base_url), open_timeout=10, close_timeout=5,
                       compression=None) as ws:
        await ws.send(json.dumps({"type": "auth", "token": "x" if flavour == "refused"
                                  else token}))
        if flavour == "refused":
            with suppress(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)
            return
        welcome = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert welcome["type"] == "welcome", welcome
        if flavour == "client":
            await ws.close()
        elif flavour == "server":
            await ws.send(b"\x00")
            with suppress(ConnectionClosed):
                while True:
                    await asyncio.wait_for(ws.recv(), 10)
        else:
            ws.transport.abort()
            await asyncio.wait_for(ws.wait_closed(), 10)


async def churn(base_url: str, token: str, flavour: Flavour, cycles: int,
                concurrency: int = 8) -> None:
    """`cycles` sockets, `concurrency` at a time."""
    left = iter(range(cycles))

    async def client() -> None:
        for _ in left:
            await cycle(base_url, token, flavour)

    await asyncio.gather(*(client() for _ in range(concurrency)))


async def gauges(base_url: str) -> tuple[float, float]:
    """(tutorhub_ws_open_sockets, tutorhub_ws_users_online) from /metrics."""
    async with httpx.AsyncClient(base_url=base_url) as c:
        text = (await c.get("/metrics")).text
    values = {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
              if line.startswith(("tutorhub_ws_open_sockets ", "tutorhub_ws_users_online "))}
    return values["tutorhub_ws_open_sockets"], values["tutorhub_ws_users_online"]
