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
    async with open_bus("memory://", lambda u, o, f: got.append((u, json.loads(f)))) as bus:
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
            rest = co.take_rest(pending)
            assert rest is not None and rest[0] == user
            await publish_many([rest])
        assert co.take_rest(ra) is None  # nothing left
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


# --- the provider side: events whose text is taken without json.loads -----------------------

TRICKY = ["plain ", "", "é ü 中文 ", "emoji 🧪 ", 'a "quoted" word', "back\\slash",
          "tab\there", "new\nline", "\u2028", "lone \ud800 surrogate", "</script>", "{}", ","]


def _openai_event(text: str, *, ascii_only: bool, tight: bool, **more: Any) -> bytes:
    chunk = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 7,
             "model": "m", "choices": [{"index": 0, "delta": {"content": text},
                                        "finish_reason": None}], **more}
    return json.dumps(chunk, ensure_ascii=ascii_only,
                      separators=(",", ":") if tight else None).encode("utf-8", "surrogatepass")


def test_text_template_matches_only_what_json_loads_would_read_the_same() -> None:
    from chat_server.tutor.providers import TextTemplate

    for ascii_only in (False, True):
        for tight in (False, True):
            template = TextTemplate("content")
            template.learn(_openai_event("first ", ascii_only=ascii_only, tight=tight), "first ")
            fast = 0
            for text in TRICKY + [f"w{i} " for i in range(20)]:
                data = _openai_event(text, ascii_only=ascii_only, tight=tight)
                got = template.match(data)
                assert got is None or got == json.loads(data)["choices"][0]["delta"]["content"]
                fast += got is not None
            assert fast >= 22  # the usual tokens take the fast path

            # Anything else that differs is parsed: finish, usage, another id, an extra key.
            for other in (
                _openai_event("x", ascii_only=ascii_only, tight=tight, usage={"a": 1}),
                _openai_event("x", ascii_only=ascii_only, tight=tight, id="chatcmpl-2"),
                _openai_event("x", ascii_only=ascii_only, tight=tight).replace(
                    b"null", b'"stop"'),
                b"[DONE]", b"", b"{}",
            ):
                assert template.match(other) is None, other


def test_text_template_reads_a_block_only_when_every_event_in_it_is_a_text_event() -> None:
    from chat_server.tutor.providers import SSEParser, TextTemplate

    def sse(data: bytes) -> bytes:
        return b"data: " + data + b"\n\n"

    template = TextTemplate("content")
    template.learn(_openai_event("x", ascii_only=False, tight=True), "x")
    words = ["one ", "", "dos ", "三 ", "🧪"]
    plain = b"".join(sse(_openai_event(w, ascii_only=False, tight=True)) for w in words)
    assert template.texts(plain) == [w for w in words if w]
    others = [
        _openai_event('a "q"', ascii_only=False, tight=True),  # an escape: parsed
        _openai_event("x", ascii_only=True, tight=False),  # another shape
        _openai_event("x", ascii_only=False, tight=True).replace(b"null", b'"stop"'),
        b"[DONE]",
    ]
    for other in others:
        for at in range(len(words) + 1):
            events = [sse(_openai_event(w, ascii_only=False, tight=True)) for w in words]
            events.insert(at, sse(other))
            block = b"".join(events)
            assert template.texts(block) is None, (other, at)
            # The parser hands the same block to the per-event path, which sees every event.
            parser = SSEParser()
            assert parser.feed_block(block + b"data: partial") == block
            assert [d for _, d in parser.events(block)][at] == other
    # An event split across reads: the block holds only the complete ones.
    parser = SSEParser()
    assert parser.feed_block(plain[:-5]) == plain[:plain.rindex(b"data: ")]
    assert template.texts(parser.feed_block(plain[-5:])) == [words[-1]]


def test_text_template_refuses_to_learn_ambiguous_events() -> None:
    from chat_server.tutor.providers import TextTemplate

    template = TextTemplate("content")
    # The key twice (another object has it too), or escapes in the event: never learnt.
    for data, text in (
        (b'{"a":{"content":"x"},"choices":[{"delta":{"content":"x"}}]}', "x"),
        (b'{"model":"\\"q","choices":[{"delta":{"content":"x"}}]}', "x"),
        (b'{"choices":[{"delta":{"content":"x\\n"}}]}', "x\n"),
        (b'{"choices":[{"delta":{"content":"x"}}]}', "y"),  # not the text that was parsed
    ):
        template.learn(data, text)
        assert template.match(data) is None, data
    template.learn(b'{"choices":[{"delta":{"content" : "x"}}]}', "x")
    assert template.match(b'{"choices":[{"delta":{"content" : "hello"}}]}') == "hello"
    assert template.match(b'{"choices":[{"delta":{"content" : "a"b"}}]}') is None


async def test_tricky_texts_stream_exactly_through_both_paths(settings: Settings) -> None:
    """Texts with escapes, quotes and non-ASCII (raw and \\u-escaped) arrive exactly, whether
    an event is read by the template or by json.loads, paced or not."""
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
    from chat_server.bus import codec

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
