"""The /ws/v1 endpoint on one instance, on both bus engines: auth, fan-out to a user's
sockets, resume (200 randomized drop points), resume.failed, tutor dispatch, shutdown. The
whole module runs a third time on uvicorn's public ASGI write path ("public": the hub's fast
path off, as when uvicorn's internals changed: chat_server/hub/fastpath.py)."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from chat_server.app import create_app
from chat_server.settings import Settings
from tests.support.services import serve_app
from tests.support.ws import new_user, recv, socket, ws_url


@pytest.fixture(params=["memory", "redis", "public"])
def engine(request: pytest.FixtureRequest) -> str:
    """The bus engine ("public": the memory engine, sockets on the public write path)."""
    return str(request.param)


@pytest.fixture
def hub_settings(settings: Settings, redis_url: str, engine: str) -> Settings:
    return settings.model_copy(update={"redis_url": redis_url if engine == "redis" else None,
                                       "history_max_events": 5000,
                                       "ws_fast_path": engine != "public"})


@pytest.fixture
async def hub_server(hub_settings: Settings) -> AsyncIterator[tuple[str, Any]]:
    """The app with the hub on either bus engine; yields (base URL, app)."""
    app = create_app(hub_settings)
    async with serve_app(app) as base:
        yield base, app


async def test_welcome_then_events_reach_every_socket_of_the_user(hub_server: tuple[str, Any]) -> None:
    base, app = hub_server
    uid, token = await new_user(base)
    other_uid, _ = await new_user(base)
    async with socket(base, token) as (a, wa), socket(base, token) as (b, wb):
        assert wa["user_id"] == uid and wa["offset"] == wb["offset"] == 0
        assert wa["epoch"] == wb["epoch"] and wa["session_id"] != wb["session_id"]
        bus = app.state.bus
        await bus.publish(other_uid, {"type": "material.ready", "material_id": "x"})
        for i in range(1, 6):
            assert await bus.publish(uid, {"type": "material.progress", "material_id": "m", "done": i, "total": 5, "stage": "этап"}) == i
        for ws in (a, b):
            got = [await recv(ws) for _ in range(5)]
            assert [f["o"] for f in got] == [1, 2, 3, 4, 5]
            assert got[0]["stage"] == "этап" and got[0]["type"] == "material.progress"
    # A new socket starts at the current offset and gets only what comes next.
    async with socket(base, token) as (c, wc):
        assert wc["offset"] == 5
        await bus.publish(uid, {"type": "material.ready", "material_id": "m"})
        assert (await recv(c))["o"] == 6


async def test_resume_across_200_random_drop_points_has_no_gap_and_no_duplicate(hub_server: tuple[str, Any]) -> None:
    base, app = hub_server
    uid, token = await new_user(base)
    bus = app.state.bus
    rng = random.Random(1234)
    stop = asyncio.Event()
    published = 0

    async def publisher() -> None:
        # Mixed events; runs of reply.delta may be coalesced for a socket that is behind.
        nonlocal published
        while not stop.is_set() and published < 20000:
            i = published + 1
            if i % 3:
                await bus.publish(uid, {"type": "reply.delta", "reply_id": "r1", "seq": i, "text": f"т{i} "})
            else:
                await bus.publish(uid, {"type": "material.progress", "material_id": "m", "stage": "embed", "done": i, "total": 0})
            published = i
            await asyncio.sleep(0.002)

    def take(frame: dict[str, Any]) -> None:
        parts = frame.get("parts", 1)
        first = frame["o"] - parts + 1
        if frame["type"] == "reply.delta":
            assert frame["text"] == "".join(f"т{i} " for i in range(first, frame["o"] + 1))
            assert frame["seq"] == frame["o"]
        else:
            assert parts == 1 and frame["done"] == frame["o"]
        seen.extend(range(first, frame["o"] + 1))

    async with socket(base, token) as (_, welcome):
        assert welcome["offset"] == 0
    epoch = welcome["epoch"]
    seen: list[int] = []
    task = asyncio.create_task(publisher())
    try:
        for _ in range(200):  # 200 drop points: a random number of frames, then drop
            async with socket(base, token, resume={"since": seen[-1] if seen else 0, "epoch": epoch}) as (ws, welcome):
                assert welcome["epoch"] == epoch
                for _ in range(rng.randint(0, 12)):
                    take(await recv(ws))
    finally:
        stop.set()
        await task
    async with socket(base, token, resume={"since": seen[-1] if seen else 0, "epoch": epoch}) as (ws, welcome):
        while not seen or seen[-1] < published:
            take(await recv(ws))
    assert published > 200
    assert seen == list(range(1, published + 1))


async def test_resume_failed_when_trimmed_or_epoch_changed_then_live(hub_settings: Settings) -> None:
    app = create_app(hub_settings.model_copy(update={"history_max_events": 5}))
    async with serve_app(app) as base:
        _, token = await new_user(base)
        uid = (await _me(base, token))
        bus = app.state.bus
        async with socket(base, token) as (_, w):
            epoch = w["epoch"]
        for i in range(12):
            await bus.publish(uid, {"type": "material.progress", "material_id": "m", "done": i, "total": 12, "stage": "embed"})
        cases = [({"since": 2, "epoch": epoch}, "history_trimmed"),
                 ({"since": 3, "epoch": "other-epoch"}, "epoch_changed"),
                 ({"since": 99, "epoch": epoch}, "offset_ahead")]
        for resume, reason in cases:
            async with socket(base, token, resume=resume) as (ws, welcome):
                failed = await recv(ws)
                assert failed["type"] == "resume.failed" and failed["reason"] == reason
                assert failed["epoch"] == welcome["epoch"] == epoch and failed["offset"] == welcome["offset"] >= 12
                await bus.publish(uid, {"type": "material.ready", "material_id": "m"})
                live = await recv(ws)
                assert live["type"] == "material.ready" and live["o"] == welcome["offset"] + 1
        # Still within the window: exactly the missed events.
        async with socket(base, token, resume={"since": 12, "epoch": epoch}) as (ws, _):
            assert [(await recv(ws))["o"] for _ in range(3)] == [13, 14, 15]


async def _me(base: str, token: str) -> str:
    async with httpx.AsyncClient(base_url=base) as c:
        return str((await c.get("/me", headers={"Authorization": f"Bearer {token}"})).json()["id"])


async def test_tutor_frames_are_dispatched_and_refusals_answer_that_socket_only(hub_server: tuple[str, Any]) -> None:
    base, app = hub_server
    _, token = await new_user(base)
    async with socket(base, token) as (a, _), socket(base, token) as (b, _):
        rid = str(uuid.uuid4())
        await a.send(json.dumps({"type": "chat.cancel", "id": "c1", "reply_id": rid}))
        err = await recv(a)
        assert err == {"type": "error", "code": "reply_not_found", "message": err["message"], "id": "c1", "reply_id": rid}
        await a.send(json.dumps({"type": "chat.send", "id": "m1", "text": "Привет, что такое энтропия?"}))
        ack_a, ack_b = await recv(a), await recv(b)  # the ack is a bus event: every socket sees it
        assert ack_a["type"] == "chat.ack" and ack_a == ack_b and ack_a["id"] == "m1"
        tutor = app.state.tutor
        del app.state.tutor
        try:
            await b.send(json.dumps({"type": "chat.send", "id": "m2", "text": "hi"}))
            while (frame := await recv(b))["type"] != "error":
                pass
            assert frame["code"] == "unavailable" and frame["id"] == "m2"
        finally:
            app.state.tutor = tutor


async def test_auth_refused_timeout_and_bad_first_frames(hub_settings: Settings) -> None:
    app = create_app(hub_settings.model_copy(update={"ws_auth_timeout_s": 0.5}))
    async with serve_app(app) as base:
        bad = [None, "not json", json.dumps({"type": "ping"}), json.dumps({"type": "auth"}),
               json.dumps({"type": "auth", "token": "nope"}),
               json.dumps({"type": "auth", "token": "x", "resume": {"since": "1"}})]
        for first in bad:
            async with connect(ws_url(base)) as ws:
                if first is not None:
                    await ws.send(first)
                with pytest.raises(ConnectionClosed) as info:
                    await asyncio.wait_for(ws.recv(), 10)
                assert info.value.rcvd is not None and info.value.rcvd.code == 4401, first


async def test_graceful_shutdown_closes_sockets_with_1012(hub_settings: Settings) -> None:
    app = create_app(hub_settings)
    async with serve_app(app) as base:
        _, token = await new_user(base)
        cm = socket(base, token)
        ws, _ = await cm.__aenter__()
    try:
        with pytest.raises(ConnectionClosed) as info:
            while True:
                await asyncio.wait_for(ws.recv(), 10)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1012
    finally:
        await cm.__aexit__(None, None, None)


async def test_metrics_count_sockets_and_frames(hub_server: tuple[str, Any]) -> None:
    base, app = hub_server
    uid, token = await new_user(base)
    async with socket(base, token) as (ws, _):
        await app.state.bus.publish(uid, {"type": "material.ready", "material_id": "m"})
        await recv(ws)
        await ws.send(json.dumps({"type": "ping", "t": 7}))
        assert await recv(ws) == {"type": "pong", "t": 7}
        app.state.hub.tick()
        async with httpx.AsyncClient(base_url=base) as c:
            text = (await c.get("/metrics")).text
    for name in ("tutorhub_ws_open_sockets", "tutorhub_ws_users_online", 'tutorhub_ws_frames_total{direction="out"}',
                 'tutorhub_ws_frames_total{direction="in"}', 'tutorhub_ws_bytes_total{direction="out"}',
                 "tutorhub_bus_publish_seconds_count", "tutorhub_ws_send_queue_overflows_total",
                 "tutorhub_bus_reconnects_total"):
        assert name in text, name
    opened = [line for line in text.splitlines() if line.startswith("tutorhub_ws_open_sockets ")]
    assert float(opened[0].split()[1]) >= 1


@pytest.mark.parametrize("engine", ["memory", "redis"])
@pytest.mark.parametrize("server_options", [{"ws": "websockets-sansio"}, {"ws_per_message_deflate": True}],
                         ids=["plain-sansio", "deflate"])
async def test_plain_websocket_send_is_used_without_the_framing_extension(hub_settings: Settings, server_options: dict[str, Any]) -> None:
    """Plain uvicorn websockets-sansio, or permessage-deflate negotiated: no pre-framed writes."""
    app = create_app(hub_settings)
    async with serve_app(app, **server_options) as base:
        uid, token = await new_user(base)
        async with socket(base, token) as (ws, _):
            assert [c.raw for c in app.state.hub.conns()] == [False]
            for i in range(3):
                await app.state.bus.publish(uid, {"type": "reply.delta", "reply_id": "r", "seq": i + 1, "text": "слово "})
            got: list[dict[str, Any]] = []
            while sum(f.get("parts", 1) for f in got) < 3:
                got.append(await recv(ws))
            assert "".join(f["text"] for f in got) == "слово " * 3 and got[-1]["o"] == 3


@pytest.mark.parametrize("engine", ["memory", "redis"])
async def test_pre_framed_writes_are_used_by_default(hub_server: tuple[str, Any]) -> None:
    base, app = hub_server
    _, token = await new_user(base)
    async with socket(base, token, compression=None) as (ws, _):
        assert [c.raw for c in app.state.hub.conns()] == [True]
        await ws.send(json.dumps({"type": "ping", "t": "Ё" * 200}))  # a 16-bit length frame
        assert await recv(ws) == {"type": "pong", "t": "Ё" * 200}
        big = {"type": "material.failed", "material_id": "m", "reason": "я" * 40000}  # 64-bit length
        await app.state.bus.publish((await recv_welcome_user(app)), big)
        assert (await recv(ws))["reason"] == big["reason"]


async def recv_welcome_user(app: Any) -> str:
    return str(app.state.hub.conns()[0].user_id)
