"""Delta coalescing: tokens of a reply become fewer reply.delta events, the first one alone,
with gapless seq and exactly the provider's text, flushed before reply.end."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from sqlalchemy import select

from chat_server.bus import open_bus
from chat_server.metrics import REGISTRY
from chat_server.models import Message
from chat_server.settings import Settings
from chat_server.tutor.stream import Coalescer, Event
from tests.support.fake_providers import FakeProvider, Scripted, openai_stream
from tests.support.tutor_harness import tutor_harness


def _ticks_observed() -> float:
    return REGISTRY.get_sample_value("tutorhub_tutor_flush_tick_seconds_count") or 0.0


async def test_coalescer_first_token_alone_then_batches_across_replies() -> None:
    got: list[tuple[str, dict[str, Any]]] = []
    calls: list[int] = []
    ticks_before = _ticks_observed()
    async with open_bus("memory://", lambda u, o, f, k: got.append((u, json.loads(f)))) as bus:
        await bus.subscribe("a")
        await bus.subscribe("b")

        async def publish_many(events: list[Event]) -> list[int]:
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
        for user, pending in (("a", ra), ("b", rb)):  # the rest goes out with the reply's end
            tokens[user].append(f"{user} tail")
            await co.add(pending, tokens[user][-1])
            rest = await co.take_rest(pending)
            assert rest is not None and rest[0] == user
            await publish_many([rest])
        assert await co.take_rest(ra) is None  # nothing left
        for user, pending in (("a", ra), ("b", rb)):
            deltas = [e for u, e in got if u == user]
            assert deltas[0]["text"] == tokens[user][0]  # the first token is not held back
            assert [d["seq"] for d in deltas] == list(range(1, len(deltas) + 1))
            assert "".join(d["text"] for d in deltas) == "".join(tokens[user])
            assert {d["reply_id"] for d in deltas} == {pending.reply_id}
            assert len(deltas) < 15  # 50 tokens in about 6 deltas, not 50
        assert max(calls) == 2  # a tick publishes both users' deltas in one call
        # Each tick that published is timed for /metrics (the saturation signal).
        assert _ticks_observed() - ticks_before == sum(1 for n in calls if n == 2)


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
            assert deltas[0]["text"].startswith(pieces[0])  # the first read, not held back
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


# --- texts that need escaping, streamed through the SDK and out as deltas -------------------

TRICKY = ["plain ", "", "é ü 中文 ", "emoji 🧪 ", 'a "quoted" word', "back\\slash",
          "tab\there", "new\nline", "\u2028", "lone \ud800 surrogate", "</script>", "{}", ","]


def _openai_event(text: str, *, ascii_only: bool, tight: bool, **more: Any) -> bytes:
    chunk = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 7,
             "model": "m", "choices": [{"index": 0, "delta": {"content": text},
                                        "finish_reason": None}], **more}
    return json.dumps(chunk, ensure_ascii=ascii_only,
                      separators=(",", ":") if tight else None).encode("utf-8", "surrogatepass")


async def test_tricky_texts_stream_exactly_paced_or_not(settings: Settings) -> None:
    """Texts with escapes, quotes and non-ASCII (raw and \\u-escaped), in events of either
    JSON spacing, arrive exactly, paced or not."""
    pieces = [p for p in TRICKY if "\ud800" not in p] + [f"w{i} " for i in range(30)]
    head = b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n'
    chunks = [head] + [
        b"data: " + _openai_event(p, ascii_only=i % 3 == 0, tight=i % 2 == 0) + b"\n\n"
        for i, p in enumerate(pieces)
    ] + [b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n',
         b"data: [DONE]\n\n"]
    for flush_ms in (25, 0):
        async with FakeProvider() as fake:
            fake.script.append(Scripted(chunks=chunks, delay_s=0.001))
            conf = settings.model_copy(update={
                "llm_provider": "openai", "openai_base_url": fake.base_url + "/v1",
                "openai_api_key": "sk-test", "openai_model": "gpt-test",
                "reply_flush_ms": flush_ms})
            async with tutor_harness(conf) as h:
                uid = await h.user()
                frame = {"type": "chat.send", "id": uuid.uuid4().hex, "text": "Tell me"}
                await h.tutor.send(uid, frame)
                ack = await h.frames.ack(uid, frame["id"])
                end = await h.frames.end_of(uid, ack["reply_id"])
                assert end["finish_reason"] == "stop"
                assert h.frames.text(uid, ack["reply_id"]) == "".join(pieces)


def test_a_coalesced_delta_is_an_event_the_bus_encodes_exactly() -> None:
    from chat_server.protocol import codec

    pending = Coalescer(publish_many=None, flush_s=0.03).open("u", uuid.uuid4())  # type: ignore[arg-type]
    for seq, text in enumerate(TRICKY + ["\x00\x1f\x7f", "\\u0041"], start=1):
        pending.parts = [text[:2], text[2:]]
        user, event = pending.take()
        assert user == "u"
        assert event == {"type": "reply.delta", "reply_id": pending.reply_id, "seq": seq, "text": text}
        if "\ud800" in text:  # not Unicode: the bus refuses the event (the reply fails)
            with pytest.raises(UnicodeEncodeError):
                codec.frame(event, seq)
        else:
            assert json.loads(codec.frame(event, seq)) == {**event, "o": seq}
