"""Redis going away behaves like a shutdown: a reply streaming then ends `interrupted` with its
text kept; a send meanwhile is refused `unavailable` with nothing stored; after the restart
sending works again. And a send whose chat.ack can't be published is undone."""

from __future__ import annotations

import json
import uuid
from typing import Any

import asyncpg
import pytest
from websockets.asyncio.client import ClientConnection

from chat_server.app import create_app
from chat_server.bus import BusUnavailable
from chat_server.db import libpq_url
from chat_server.settings import Settings
from chat_server.tutor.errors import TutorError
from chat_server.tutor.service import STARTING_MAX
from chat_server.tutor.stream import Event, PublishMany
from tests.support.fake_providers import FakeProvider, anthropic_stream
from tests.support.services import RedisServer, serve_app
from tests.support.tutor_harness import tutor_harness
from tests.support.ws import new_user, recv, socket, until

PIECES = [f"слово{i} " for i in range(200)]


async def _rows(database_url: str, uid: str) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(libpq_url(database_url))
    try:
        return [dict(r) for r in await conn.fetch(
            "select role::text, status::text, content from messages where user_id = $1 "
            "order by created_at", uuid.UUID(uid))]
    finally:
        await conn.close()


async def _until_frame(ws: ClientConnection, kind: str, **match: Any) -> dict[str, Any]:
    while True:
        frame = await recv(ws, wait_s=30)
        if frame["type"] == kind and all(frame.get(k) == v for k, v in match.items()):
            return frame


async def test_redis_stopped_mid_reply_then_restarted(
    settings: Settings, redis_url: str, redis_proc: RedisServer, database_url: str,
) -> None:
    async with FakeProvider(anthropic_stream(PIECES, delay_s=0.02)) as fake:
        s = settings.model_copy(update={
            "redis_url": redis_url, "llm_provider": "anthropic", "anthropic_api_key": "sk-test",
            "anthropic_base_url": fake.base_url, "anthropic_model": "claude-test",
            "llm_retries": 0})
        app = create_app(s)
        async with serve_app(app) as base:
            uid, token = await new_user(base)
            async with socket(base, token) as (ws, _):
                await ws.send(json.dumps({"type": "chat.send", "id": "m1", "text": "Расскажи"}))
                ack = await _until_frame(ws, "chat.ack", id="m1")
                seen = ""
                while len(seen) < 20:  # a few deltas reached the learner
                    seen += (await _until_frame(ws, "reply.delta"))["text"]
                redis_proc.stop()
                try:
                    await until(lambda: _ended(database_url, uid))
                    question, reply = await _rows(database_url, uid)
                    assert question["content"] == "Расскажи"
                    assert reply["status"] == "interrupted"
                    assert reply["content"].startswith(seen) and "".join(PIECES).startswith(
                        reply["content"])
                    await until(lambda: _bus_down(app))
                    await ws.send(json.dumps({"type": "chat.send", "id": "m2", "text": "Ещё?",
                                              "conversation_id": ack["conversation_id"]}))
                    error = await _until_frame(ws, "error", id="m2")
                    assert error["code"] == "unavailable"
                    assert len(await _rows(database_url, uid)) == 2  # nothing of m2 stored
                finally:
                    redis_proc.start()
                await until(lambda: _bus_up(app))
                fake.default = anthropic_stream(["Снова ", "работает."])
                await ws.send(json.dumps({"type": "chat.send", "id": "m3", "text": "Ещё?",
                                          "conversation_id": ack["conversation_id"]}))
                ack3 = await _until_frame(ws, "chat.ack", id="m3")
                end = await _until_frame(ws, "reply.end", reply_id=ack3["reply_id"])
                assert end["finish_reason"] == "stop"
            rows = await _rows(database_url, uid)
            assert [(r["role"], r["status"]) for r in rows] == [
                ("user", "complete"), ("assistant", "interrupted"),
                ("user", "complete"), ("assistant", "complete")]
            assert rows[3]["content"] == "Снова работает."


async def _ended(database_url: str, uid: str) -> bool:
    rows = await _rows(database_url, uid)
    return len(rows) == 2 and rows[1]["status"] != "streaming"


async def _bus_down(app: Any) -> bool:
    return not await app.state.bus.ready()


async def _bus_up(app: Any) -> bool:
    return bool(await app.state.bus.ready())


@pytest.mark.parametrize("new_conversation", [True, False], ids=["new", "existing"])
async def test_a_send_whose_ack_cannot_be_published_is_undone(
    settings: Settings, new_conversation: bool,
) -> None:
    failing = True

    def wrap(publish_many: PublishMany) -> PublishMany:
        async def publish(events: list[Event]) -> list[int]:
            if failing and any(isinstance(e, dict) and e.get("type") == "chat.ack"
                               for _, e in events):
                raise BusUnavailable("Bus unavailable: connection refused")
            return await publish_many(events)
        return publish

    async with tutor_harness(settings, publish_many=wrap) as h:
        uid = await h.user()
        conversation: dict[str, Any] = {}
        if not new_conversation:
            failing = False
            await h.tutor.send(uid, {"type": "chat.send", "id": "first", "text": "Привет"})
            ack = await h.frames.ack(uid, "first")
            await h.frames.end_of(uid, ack["reply_id"])
            conversation = {"conversation_id": ack["conversation_id"]}
            failing = True
        async with h.db.pool.acquire() as conn:
            before = await conn.fetchval("select count(*) from messages where user_id = $1", uid)
        with pytest.raises(TutorError) as info:
            await h.tutor.send(uid, {"type": "chat.send", "id": "lost", "text": "Что такое ATP?",
                                     **conversation})
        assert info.value.code == "unavailable"
        async with h.db.pool.acquire() as conn:
            assert await conn.fetchval("select count(*) from messages where user_id = $1",
                                       uid) == before
            assert await conn.fetchval("select count(*) from conversations where user_id = $1",
                                       uid) == (0 if new_conversation else 1)
        assert h.tutor.active == 0 and h.tutor._starting._value == STARTING_MAX
        failing = False  # the same id again, once the bus is back: answered normally
        await h.tutor.send(uid, {"type": "chat.send", "id": "lost", "text": "Что такое ATP?",
                                 **conversation})
        ack = await h.frames.ack(uid, "lost")
        assert "duplicate" not in ack
        assert (await h.frames.end_of(uid, ack["reply_id"]))["finish_reason"] == "stop"
