"""Protocol abuse and keepalive on /ws/v1: bad frames get error frames or documented closes,
never a crash; ping/pong; idle timeout; token expiry warning, in-band refresh and close."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from chat_server.app import create_app
from chat_server.auth import create_token
from chat_server.settings import Settings
from tests.support.services import serve_app
from tests.support.ws import new_user, recv, socket


async def closed_with(ws: Any) -> int:
    with pytest.raises(ConnectionClosed) as info:
        while True:
            await asyncio.wait_for(ws.recv(), 10)
    assert info.value.rcvd is not None
    return int(info.value.rcvd.code)


@pytest.fixture
async def base(settings: Settings) -> AsyncIterator[str]:
    s = settings.model_copy(update={"ws_max_frame_bytes": 4096})
    # uvicorn enforces the frame size limit (as `tutorhub serve` configures it).
    async with serve_app(create_app(s), ws_max_size=s.ws_max_frame_bytes) as url:
        yield url


async def test_bad_frames_get_error_frames_and_the_socket_stays_usable(base: str) -> None:
    _, token = await new_user(base)
    async with socket(base, token) as (ws, _):
        cases: list[tuple[str, str]] = [
            ("{not json", "bad_json"),
            ("[1, 2]", "bad_frame"),
            (json.dumps({"no": "type"}), "bad_frame"),
            (json.dumps({"type": 5}), "bad_frame"),
            (json.dumps({"type": "chat.nonsense", "id": "x1"}), "unknown_type"),
            (json.dumps({"type": "chat.send", "id": "x2"}), "bad_frame"),
            (json.dumps({"type": "chat.send", "text": "без id"}), "bad_frame"),
            (json.dumps({"type": "chat.cancel", "id": "x3"}), "bad_frame"),
            (json.dumps({"type": "auth", "token": token}), "bad_frame"),
            (json.dumps({"type": "auth.refresh"}), "bad_frame"),
            (json.dumps({"type": "auth.refresh", "token": "garbage"}), "auth_failed"),
        ]
        for text, code in cases:
            await ws.send(text)
            err = await recv(ws)
            assert err["type"] == "error" and err["code"] == code, (text, err)
            assert err["message"]
        assert err.get("id") is None
        await ws.send(json.dumps({"type": "chat.nonsense", "id": "x1"}))
        assert (await recv(ws))["id"] == "x1"
        await ws.send(json.dumps({"type": "ping", "id": "p1"}))
        assert await recv(ws) == {"type": "pong", "id": "p1"}


async def test_binary_frame_closes_1003(base: str) -> None:
    _, token = await new_user(base)
    async with socket(base, token) as (ws, _):
        await ws.send(b"\x00\x01binary")
        assert await closed_with(ws) == 1003


async def test_oversized_frame_closes_1009_and_server_keeps_serving(base: str) -> None:
    _, token = await new_user(base)
    async with socket(base, token) as (ws, _):
        await ws.send(json.dumps({"type": "chat.send", "id": "big", "text": "я" * 5000}))
        assert await closed_with(ws) == 1009
    async with socket(base, token) as (ws, _):
        await ws.send(json.dumps({"type": "ping"}))
        assert await recv(ws) == {"type": "pong"}


async def test_flood_is_rate_limited_then_closed_4429(settings: Settings) -> None:
    s = settings.model_copy(update={"ws_rate_limit_per_s": 5.0, "ws_rate_limit_burst": 10})
    async with serve_app(create_app(s)) as base:
        await _flood(base)


async def _flood(base: str) -> None:
    _, token = await new_user(base)
    async with socket(base, token) as (ws, _), socket(base, token) as (other, _):
        # The bucket is per user: both sockets draw from it.
        for _ in range(5):
            await other.send(json.dumps({"type": "ping"}))
        for _ in range(5):
            await ws.send(json.dumps({"type": "ping"}))
        await ws.send(json.dumps({"type": "ping"}))
        frames = [await recv(ws) for _ in range(6)]
        limited = [f for f in frames if f["type"] == "error"]
        assert limited and limited[0]["code"] == "rate_limited" and 0 < limited[0]["retry_after"] <= 1
        for _ in range(40):
            await ws.send(json.dumps({"type": "ping"}))
        assert await closed_with(ws) == 4429


async def test_server_pings_and_idle_socket_is_closed_4409(settings: Settings) -> None:
    s = settings.model_copy(update={"ws_ping_interval_s": 0.2, "ws_idle_timeout_s": 1.0})
    async with serve_app(create_app(s)) as base:
        _, token = await new_user(base)
        async with socket(base, token) as (idle, welcome), socket(base, token) as (alive, _):
            assert welcome["ping_interval_s"] == 0.2 and welcome["idle_timeout_s"] == 1.0
            pings = 0
            while pings < 10:  # ~2 s: twice the idle timeout, answered each time
                frame = json.loads(await asyncio.wait_for(alive.recv(), 10))
                if frame["type"] == "ping":
                    pings += 1
                    await alive.send(json.dumps({"type": "pong"}))
            assert await closed_with(idle) == 4409
            await alive.send(json.dumps({"type": "ping", "t": "still here"}))
            assert await recv(alive) == {"type": "pong", "t": "still here"}


async def test_token_expiry_warning_refresh_and_close_4403(settings: Settings) -> None:
    s = settings.model_copy(update={"ws_token_warning_s": 2.0, "ws_ping_interval_s": 0.5})
    async with serve_app(create_app(s)) as base:
        uid, long_token = await new_user(base)
        short = create_token(s.model_copy(update={"access_token_ttl_s": 3}), uuid.UUID(uid), "access")
        async with socket(base, short) as (ws, welcome):
            warn = await recv(ws)
            assert warn["type"] == "auth.expiring" and warn["expires_at"] == welcome["expires_at"] and warn["in_s"] <= 2.0
            other_uid, other_token = await new_user(base)
            await ws.send(json.dumps({"type": "auth.refresh", "token": other_token, "id": "r0"}))
            assert (await recv(ws))["code"] == "auth_failed"
            await ws.send(json.dumps({"type": "auth.refresh", "token": long_token, "id": "r1"}))
            ok = await recv(ws)
            assert ok["type"] == "auth.refreshed" and ok["id"] == "r1" and ok["expires_at"] > welcome["expires_at"]
            await ws.send(json.dumps({"type": "pong"}))
        async with socket(base, short) as (ws, _):
            assert (await recv(ws))["type"] == "auth.expiring"
            while True:  # keep answering pings, refresh nothing: closed at expiry
                try:
                    frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
                except ConnectionClosed as exc:
                    assert exc.rcvd is not None and exc.rcvd.code == 4403
                    break
                if frame["type"] == "ping":
                    await ws.send(json.dumps({"type": "pong"}))
