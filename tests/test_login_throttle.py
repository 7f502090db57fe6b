"""Login throttling (per account and per client address, memory or Redis) and password hashing
off the event loop."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from chat_server.app import create_app
from chat_server.settings import Settings
from tests.support.services import serve_app
from tests.support.ws import recv, socket

PASSWORD = "correct horse battery"


@pytest.mark.parametrize("engine", ["memory", "redis"])
async def test_failed_logins_past_the_limit_get_429_even_with_the_right_password(
    settings: Settings, redis_url: str, engine: str,
) -> None:
    settings = settings.model_copy(update={
        "login_rate_limit_account": "3/minute", "login_rate_limit_address": "8/minute",
        "redis_url": redis_url if engine == "redis" else None})
    async with serve_app(create_app(settings)) as base, httpx.AsyncClient(base_url=base) as c:
        for email in ("a@example.com", "b@example.com"):
            r = await c.post("/auth/register", json={"email": email, "password": PASSWORD})
            assert r.status_code == 201
        for _ in range(3):
            r = await c.post("/auth/token", data={"username": "A@example.com", "password": "wrong-one"})
            assert r.status_code == 401
        r = await c.post("/auth/token", data={"username": "a@example.com", "password": PASSWORD})
        assert r.status_code == 429, r.text
        assert r.json()["error"] == "rate_limited" and "account" in r.json()["message"]
        assert 1 <= int(r.headers["retry-after"]) <= 60
        # Another account from the same address is not locked out by it…
        r = await c.post("/auth/token", data={"username": "b@example.com", "password": PASSWORD})
        assert r.status_code == 200
        # …until the address has failed too often, whatever the accounts.
        for i in range(5):
            r = await c.post("/auth/token", data={"username": f"nobody{i}@example.com", "password": "x"})
            assert r.status_code == 401
        r = await c.post("/auth/token", data={"username": "b@example.com", "password": PASSWORD})
        assert r.status_code == 429 and "address" in r.json()["message"]
        assert int(r.headers["retry-after"]) >= 1
    if engine == "redis":  # kept in Redis: a second instance sees the same counts
        async with serve_app(create_app(settings)) as base, httpx.AsyncClient(base_url=base) as c:
            r = await c.post("/auth/token", data={"username": "a@example.com", "password": PASSWORD})
            assert r.status_code == 429


async def test_a_live_socket_answers_pings_while_logins_hammer(settings: Settings) -> None:
    settings = settings.model_copy(update={"login_rate_limit_account": "1000/minute",
                                           "login_rate_limit_address": "1000/minute"})
    async with serve_app(create_app(settings)) as base, httpx.AsyncClient(base_url=base) as c:
        r = await c.post("/auth/register", json={"email": "h@example.com", "password": PASSWORD})
        token = (await c.post("/auth/token", data={"username": "h@example.com",
                                                    "password": PASSWORD})).json()["access_token"]
        stop = asyncio.Event()
        tried = 0

        async def hammer() -> None:
            nonlocal tried
            async with httpx.AsyncClient(base_url=base, timeout=60) as h:
                while not stop.is_set():
                    r = await h.post("/auth/token", data={"username": "h@example.com",
                                                          "password": "wrong password"})
                    assert r.status_code == 401
                    tried += 1

        async with socket(base, token) as (ws, _):
            hammers = [asyncio.create_task(hammer()) for _ in range(6)]
            try:
                await asyncio.sleep(0.3)  # every hammer has a login in flight
                for i in range(15):
                    await ws.send(json.dumps({"type": "ping", "t": i}))
                    # Answered, not stuck behind the hashing (no timing asserted: the bound
                    # is only there so a stuck loop fails instead of hanging).
                    assert await recv(ws, wait_s=10) == {"type": "pong", "t": i}
                    await asyncio.sleep(0.05)
            finally:
                stop.set()
                await asyncio.gather(*hammers)
        assert tried >= 6  # logins were really being verified meanwhile
        r = await c.post("/auth/token", data={"username": "h@example.com", "password": PASSWORD})
        assert r.status_code == 200
