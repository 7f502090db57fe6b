"""Two server instances sharing one Redis: a user's sockets on both get every event once
and in order; killing and restarting redis-server mid-traffic recovers on its own."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx

from chat_server.app import create_app
from chat_server.bus import BusUnavailable, open_bus
from chat_server.settings import Settings
from tests.support.services import RedisServer, serve_app
from tests.support.ws import new_user, recv, socket, until


async def test_sockets_on_two_instances_get_every_event_once_in_order(settings: Settings, redis_url: str) -> None:
    s = settings.model_copy(update={"redis_url": redis_url})
    app_a, app_b = create_app(s), create_app(s)
    async with serve_app(app_a) as base_a, serve_app(app_b) as base_b, \
            open_bus(redis_url, lambda *_: None) as worker_bus:
        uid, token = await new_user(base_a)
        async with socket(base_a, token) as (a1, _), socket(base_a, token) as (a2, _), \
                socket(base_b, token) as (b1, _), socket(base_b, token) as (b2, _):
            per = 200

            async def publish(bus: Any, tag: str) -> None:
                for n in range(per):
                    await bus.publish(uid, {"type": "material.progress", "material_id": tag, "stage": "чанки", "done": n, "total": per})

            await asyncio.gather(publish(app_a.state.bus, "a"), publish(app_b.state.bus, "b"), publish(worker_bus, "w"))
            for ws in (a1, a2, b1, b2):
                got = [await recv(ws) for _ in range(3 * per)]
                assert [f["o"] for f in got] == list(range(1, 3 * per + 1))
                for tag in "abw":
                    assert [f["done"] for f in got if f["material_id"] == tag] == list(range(per))
                await ws.send(json.dumps({"type": "ping", "id": "after"}))
                assert await recv(ws) == {"type": "pong", "id": "after"}  # and nothing extra before it


async def _is_ready(client: httpx.AsyncClient) -> bool:
    return (await client.get("/readyz")).status_code == 200


async def _ready(client: httpx.AsyncClient) -> tuple[int, dict[str, Any]]:
    r = await client.get("/readyz")
    return r.status_code, r.json()


async def test_redis_restart_mid_traffic_recovers_and_readyz_reflects_it(
    settings: Settings, redis_url: str, redis_proc: RedisServer
) -> None:
    s = settings.model_copy(update={"redis_url": redis_url})
    app_a, app_b = create_app(s), create_app(s)
    async with serve_app(app_a) as base_a, serve_app(app_b), \
            httpx.AsyncClient(base_url=base_a, timeout=10) as http:
        uid, token = await new_user(base_a)
        assert (await _ready(http))[0] == 200
        async with socket(base_a, token) as (ws, welcome):
            sent: list[int] = []
            stop = asyncio.Event()

            async def traffic() -> None:  # a publisher on the other instance, retrying
                n = 0
                while not stop.is_set() and n < 100_000:
                    try:
                        await app_b.state.bus.publish(uid, {"type": "material.progress", "material_id": "m", "stage": "s", "done": n, "total": 0})
                        sent.append(n)
                        n += 1
                    except BusUnavailable:
                        pass
                    await asyncio.sleep(0.005)

            task = asyncio.create_task(traffic())
            got: list[dict[str, Any]] = []
            try:
                while len(got) < 20:
                    got.append(await recv(ws))
                redis_proc.stop()
                status: list[Any] = []

                async def not_ready() -> bool:
                    status[:] = await _ready(http)
                    return bool(status[0] != 200)

                await until(not_ready, 20)
                assert status[0] == 503 and status[1]["checks"]["bus"] == "down"
                redis_proc.start()
                await until(lambda: _is_ready(http), 30)
                mark = len(sent)

                async def more_sent() -> bool:
                    return len(sent) > mark

                await until(more_sent, 30)
                # The socket stayed open: it learns the history was lost, then streams again.
                async with asyncio.timeout(30):
                    while not got or got[-1].get("done", -1) < sent[mark] + 20:
                        got.append(await recv(ws))
            finally:
                stop.set()
                await task
        failed = [f for f in got if f["type"] == "resume.failed"]
        assert len(failed) == 1 and failed[0]["reason"] == "epoch_changed" and failed[0]["epoch"] != welcome["epoch"]
        cut = got.index(failed[0])
        before, after = got[:cut], got[cut + 1:]
        assert [f["o"] for f in before] == list(range(1, len(before) + 1))
        assert [f["o"] for f in after] == list(range(1, len(after) + 1))  # the new epoch, no gap
        done = [f["done"] for f in before + after]
        assert done == sorted(set(done))  # never a duplicate or a reordering
        # Events published after Redis came back all arrived (nothing was lost then).
        assert set(range(sent[mark], done[-1] + 1)) <= set(done)


async def test_cancel_from_another_instance_stops_the_reply_where_it_streams(
        settings: Settings, redis_url: str) -> None:
    from tests.support.fake_providers import FakeProvider, openai_stream

    pieces = [f"w{i} " for i in range(400)]
    async with FakeProvider() as fake:
        fake.script.append(openai_stream(pieces, delay_s=0.05))  # ~20 s if nobody cancels
        s = settings.model_copy(update={
            "redis_url": redis_url, "llm_provider": "openai", "llm_retries": 0,
            "openai_base_url": fake.base_url + "/v1", "openai_api_key": "sk-test"})
        app_a, app_b = create_app(s), create_app(s)
        async with serve_app(app_a) as base_a, serve_app(app_b) as base_b:
            _, token = await new_user(base_a)
            async with socket(base_a, token) as (a, _), socket(base_b, token) as (b, _):
                await a.send(json.dumps({"type": "chat.send", "id": "q1",
                                         "text": "Tell me a long story"}))
                frames: list[dict[str, Any]] = []
                while sum(f["type"] == "reply.delta" for f in frames) < 2:
                    frames.append(await recv(a))
                rid = next(f["reply_id"] for f in frames if f["type"] == "chat.ack")
                # Streaming on A, not on B.
                assert uuid.UUID(rid) in app_a.state.tutor._replies
                assert uuid.UUID(rid) not in app_b.state.tutor._replies

                await b.send(json.dumps({"type": "chat.cancel", "id": "c1", "reply_id": rid}))
                async with asyncio.timeout(10):
                    await fake.closed_event.wait()  # A closed the provider's HTTP stream
                for ws in (a, b):  # every socket of the user sees the end, on both instances
                    end = await recv(ws)
                    while end["type"] != "reply.end":
                        assert end["type"] in ("reply.delta", "reply.citations", "chat.ack",
                                               "reply.start"), end
                        end = await recv(ws)
                    assert end["reply_id"] == rid and end["finish_reason"] == "cancelled"
                async with httpx.AsyncClient(base_url=base_b, timeout=30) as client:
                    headers = {"Authorization": f"Bearer {token}"}
                    conv = (await client.get("/conversations", headers=headers)).json()[0]
                    stored = (await client.get(f"/conversations/{conv['id']}",
                                               headers=headers)).json()["messages"][-1]
                assert stored["status"] == "cancelled" and stored["content"].startswith("w0 w1 ")
                assert len(stored["content"].split()) < len(pieces)
    assert fake.client_closed == 1
