"""WebSocket test helpers: users with tokens, authenticated sockets, reading frames."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect


def ws_url(base_url: str) -> str:
    return base_url.replace("http://", "ws://", 1) + "/ws/v1"


async def new_user(base_url: str, email: str | None = None) -> tuple[str, str]:
    """Register a user over REST; return (user id, access token)."""
    email = email or f"u{uuid.uuid4().hex[:10]}@example.com"
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as c:
        r = await c.post("/auth/register", json={"email": email, "password": "password-123"})
        assert r.status_code == 201, r.text
        r = await c.post("/auth/token", data={"username": email, "password": "password-123"})
        assert r.status_code == 200, r.text
        token = str(r.json()["access_token"])
        me = await c.get("/me", headers={"Authorization": f"Bearer {token}"})
        return str(me.json()["id"]), token


async def recv(ws: ClientConnection, wait_s: float = 10.0) -> dict[str, Any]:
    """Next frame that is not a keepalive ping."""
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), wait_s))
        if frame.get("type") != "ping":
            return frame  # type: ignore[no-any-return]


@asynccontextmanager
async def socket(base_url: str, token: str, resume: dict[str, Any] | None = None,
                 **kwargs: Any) -> AsyncIterator[tuple[ClientConnection, dict[str, Any]]]:
    """An authenticated socket and its welcome frame."""
    async with connect(ws_url(base_url), open_timeout=10, close_timeout=5, **kwargs) as ws:
        auth: dict[str, Any] = {"type": "auth", "token": token}
        if resume is not None:
            auth["resume"] = resume
        await ws.send(json.dumps(auth))
        welcome = await recv(ws)
        assert welcome["type"] == "welcome", welcome
        yield ws, welcome


async def until(predicate: Callable[[], Awaitable[bool]], wait_s: float = 30.0,
                step_s: float = 0.05) -> None:
    """Poll `predicate` until it holds (bounded); TimeoutError otherwise."""
    async with asyncio.timeout(wait_s):
        for _ in range(1_000_000):
            if await predicate():
                return
            await asyncio.sleep(step_s)
