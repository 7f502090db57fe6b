"""Delta coalescing: tokens of a reply become fewer reply.delta events, the first one alone,
with gapless seq and exactly the provider's text, flushed before reply.end."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from sqlalchemy import select

from chat_server.hub.bus import open_bus
from chat_server.models import Message
from chat_server.settings import Settings
from chat_server.tutor.stream import Coalescer
from tests.support.fake_providers import FakeProvider, openai_stream
from tests.support.tutor_harness import tutor_harness


async def test_coalescer_first_token_alone_then_batches_across_replies() -> None:
    got: list[tuple[str, dict[str, Any]]] = []
    calls: list[int] = []
    async with open_bus("memory://", lambda u, o, f: got.append((u, json.loads(f)))) as bus:
        await bus.subscribe("a")
        await bus.subscribe("b")

        async def publish_many(events: list[tuple[str, dict[str, Any]]]) -> list[int]:
            calls.append(len(events))
            return await bus.publish_many(events)

        co = Coalescer(publish_many, 0.02)
        ra, rb = co.open("a", uuid.uuid4()), co.open("b", uuid.uuid4())
        tokens = {"a": [f"α{i} " for i in range(50)], "b": [f"b{i} " for i in range(50)]}
        for i in range(50):
            await co.add(ra, tokens["a"][i])
            await co.add(rb, tokens["b"][i])
            if i % 10 == 9:
                await asyncio.sleep(0.03)  # a tick happens: both replies go out together
        await co.drain(ra)
        await co.drain(rb)
        await co.drain(ra)  # nothing left: publishes nothing
        for user, pending in (("a", ra), ("b", rb)):
            deltas = [e for u, e in got if u == user]
            assert deltas[0]["text"] == tokens[user][0]  # the first token is not held back
            assert [d["seq"] for d in deltas] == list(range(1, len(deltas) + 1))
            assert "".join(d["text"] for d in deltas) == "".join(tokens[user])
            assert {d["reply_id"] for d in deltas} == {pending.reply_id}
            assert len(deltas) < 15  # 50 tokens in about 6 deltas, not 50
        assert max(calls) == 2  # a tick publishes both users' deltas in one call


async def test_tutor_coalesces_and_stores_exactly_what_was_streamed(settings: Settings) -> None:
    pieces = [f"слово{i} " for i in range(120)]
    async with FakeProvider() as fake:
        fake.script.append(openai_stream(pieces, delay_s=0.002))
        fake.script.append(openai_stream(pieces[:20]))
        conf = settings.model_copy(update={
            "llm_provider": "openai", "openai_base_url": fake.base_url + "/v1",
            "openai_api_key": "sk-test", "openai_model": "gpt-test", "reply_flush_ms": 25})
        async with tutor_harness(conf) as h:
            uid = await h.user()
            frame = {"type": "chat.send", "id": uuid.uuid4().hex, "text": "Tell me"}
            await h.tutor.send(uid, frame)
            ack = await h.frames.ack(uid, frame["id"])
            await h.frames.end_of(uid, ack["reply_id"])
            frames = h.frames.by_user[str(uid)]
            kinds = [f["type"] for f in frames]
            deltas = h.frames.of(uid, ack["reply_id"], "reply.delta")
            assert kinds[:2] == ["chat.ack", "reply.start"]
            assert kinds[2:] == ["reply.delta"] * len(deltas) + ["reply.citations", "reply.end"]
            assert [d["seq"] for d in deltas] == list(range(1, len(deltas) + 1))
            assert deltas[0]["text"] == pieces[0]
            assert "".join(d["text"] for d in deltas) == "".join(pieces)
            assert 2 < len(deltas) < len(pieces) // 2
            async with h.db.session() as session:
                row = await session.scalar(select(Message).where(
                    Message.id == uuid.UUID(ack["reply_id"])))
            assert row is not None and row.content == "".join(pieces)

        # Flushing off: one delta per token, as before coalescing.
        async with tutor_harness(conf.model_copy(update={"reply_flush_ms": 0})) as h:
            uid = await h.user()
            frame = {"type": "chat.send", "id": uuid.uuid4().hex, "text": "Tell me"}
            await h.tutor.send(uid, frame)
            ack = await h.frames.ack(uid, frame["id"])
            await h.frames.end_of(uid, ack["reply_id"])
            deltas = h.frames.of(uid, ack["reply_id"], "reply.delta")
            assert [d["text"] for d in deltas] == pieces[:20]
            assert [d["seq"] for d in deltas] == list(range(1, 21))
