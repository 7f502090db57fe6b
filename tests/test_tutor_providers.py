"""Both provider SDKs, for real, against loopback servers speaking their streaming formats."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from chat_server.models import Message, MessageStatus
from chat_server.settings import Settings
from chat_server.tutor.errors import TutorError
from tests.support.fake_providers import (
    FakeProvider,
    Recorded,
    Scripted,
    anthropic_error,
    anthropic_stream,
    anthropic_stream_error,
    openai_error,
    openai_stream,
)
from tests.support.sdk_streams import TRANSPORTS, expected, outcomes
from tests.support.tutor_harness import Harness, tutor_harness

PIECES = ["Light ", "is ", "turned ", "into ", "sugar", "."]


@dataclass
class Flavour:
    name: str
    stream: Callable[..., Scripted]
    error: Callable[[int, float | None], Scripted]

    def settings(self, base: Settings, url: str, **more: Any) -> Settings:
        if self.name == "anthropic":
            update = {"llm_provider": "anthropic", "anthropic_base_url": url,
                      "anthropic_api_key": "sk-test", "anthropic_model": "claude-test"}
        else:
            update = {"llm_provider": "openai", "openai_base_url": url + "/v1",
                      "openai_api_key": "sk-test", "openai_model": "gpt-test"}
        return base.model_copy(update={"llm_retries": 2, **update, **more})

    def input_tokens(self) -> int:
        return 12 if self.name == "anthropic" else 15


FLAVOURS = [
    Flavour("anthropic", anthropic_stream,
            lambda status, ra: anthropic_error(
                status, "rate_limit_error" if status == 429 else "api_error", "busy", ra)),
    Flavour("openai", openai_stream,
            lambda status, ra: openai_error(status, "busy", retry_after=ra)),
]


@pytest.fixture(params=FLAVOURS, ids=lambda f: f.name)
def flavour(request: pytest.FixtureRequest) -> Flavour:
    return request.param  # type: ignore[no-any-return]


async def _row(h: Harness, reply_id: str) -> Message:
    async with h.db.session() as session:
        row = await session.scalar(select(Message).where(Message.id == uuid.UUID(reply_id)))
    assert row is not None
    return row


def _send(text: str = "How does photosynthesis make sugar?", **more: Any) -> dict[str, Any]:
    return {"type": "chat.send", "id": uuid.uuid4().hex, "text": text, **more}


async def _ask(h: Harness) -> tuple[uuid.UUID, dict[str, Any], dict[str, Any], dict[str, Any]]:
    """A new user asks the default question; returns (user id, frame, chat.ack, reply.end)."""
    uid = await h.user()
    frame = _send()
    await h.tutor.send(uid, frame)
    ack = await h.frames.ack(uid, frame["id"])
    return uid, frame, ack, await h.frames.end_of(uid, ack["reply_id"])


async def test_normal_stream(settings: Settings, flavour: Flavour) -> None:
    async with FakeProvider() as fake:
        fake.script.append(flavour.stream(PIECES, output_tokens=7))
        async with tutor_harness(flavour.settings(settings, fake.base_url)) as h:
            uid, frame, ack, end = await _ask(h)
            frames = h.frames.by_user[str(uid)]
            kinds = [f["type"] for f in frames]
            deltas = [f for f in frames if f["type"] == "reply.delta"]
            # Tokens are coalesced (the first read goes out at once, as one delta: tokens that
            # arrive together leave together), order and text kept.
            assert kinds == ["chat.ack", "reply.start"] + ["reply.delta"] * len(deltas) + [
                "reply.citations", "reply.end"]
            assert [f["seq"] for f in deltas] == list(range(1, len(deltas) + 1))
            assert deltas[0]["text"].startswith(PIECES[0])
            assert len(deltas) < len(PIECES)
            assert "".join(f["text"] for f in deltas) == "".join(PIECES)
            assert end["finish_reason"] == "stop"
            assert end["usage"] == {"input_tokens": flavour.input_tokens(), "output_tokens": 7}
            row = await _row(h, ack["reply_id"])
            assert row.status == MessageStatus.complete
            assert row.content == "".join(PIECES)
            assert (row.input_tokens, row.output_tokens) == (flavour.input_tokens(), 7)
            assert row.provider == flavour.name
    (req,) = fake.requests
    assert req.body["stream"] is True
    # The whole prompt and the sampling settings reach the wire (the body is sent as is).
    assert req.body["max_tokens"] == settings.llm_max_tokens
    assert req.body["temperature"] == settings.llm_temperature
    assert req.body["model"] == ("claude-test" if flavour.name == "anthropic" else "gpt-test")
    # The SDK's own auth and headers go with it.
    assert req.headers["user-agent"].startswith(("AsyncAnthropic/", "AsyncOpenAI/"))
    assert req.headers["authorization"] == "Bearer sk-test"
    if flavour.name == "anthropic":
        assert req.headers["anthropic-version"]
        assert req.path == "/v1/messages"
        assert "Cite the passages" in req.body["system"]
        assert req.body["messages"][-1]["content"].endswith(frame["text"])
    else:
        assert req.path == "/v1/chat/completions"
        assert req.body["stream_options"] == {"include_usage": True}
        assert req.body["messages"][0]["role"] == "system"
        assert req.body["messages"][-1]["content"].endswith(frame["text"])


async def test_consecutive_replies_reuse_the_provider_connection(
    settings: Settings, flavour: Flavour,
) -> None:
    """A finished stream hands its connection back to the SDK's pool: no new TCP (and, with a
    real provider, TLS) handshake per reply."""
    async with FakeProvider() as fake:
        fake.script.extend([flavour.stream(PIECES), flavour.stream(["Again", "."])])
        async with tutor_harness(flavour.settings(settings, fake.base_url)) as h:
            for _ in range(2):
                *_, end = await _ask(h)
                assert end["finish_reason"] == "stop"
    assert len(fake.requests) == 2
    assert fake.connections == 1
    assert fake.client_closed == 0


async def test_a_whole_answer_in_one_read_streams_and_reuses_the_connection(
    settings: Settings, flavour: Flavour,
) -> None:
    """A provider that sends the head, every event and the end of the body in one write (the
    benchmark's zero-latency provider): the text, usage and end come through exactly, as one
    reply.delta (tokens that arrive together leave together), and the connection goes back to
    the pool."""
    async with FakeProvider() as fake:
        fake.script.extend([replace(flavour.stream(PIECES, output_tokens=7), at_once=True)
                            for _ in range(2)])
        async with tutor_harness(flavour.settings(settings, fake.base_url)) as h:
            for _ in range(2):
                uid, _, ack, end = await _ask(h)
                deltas = h.frames.of(uid, ack["reply_id"], "reply.delta")
                assert [(d["seq"], d["text"]) for d in deltas] == [(1, "".join(PIECES))]
                assert end["finish_reason"] == "stop"
                assert end["usage"] == {"input_tokens": flavour.input_tokens(), "output_tokens": 7}
    assert (len(fake.requests), fake.connections, fake.client_closed) == (2, 1, 0)


async def test_429_with_retry_after_then_success(settings: Settings, flavour: Flavour) -> None:
    async with FakeProvider() as fake:
        fake.script.extend([flavour.error(429, 0.3), flavour.stream(PIECES)])
        arrivals: list[float] = []
        fake_next = fake._next

        def timed(rec: Recorded) -> Scripted:
            arrivals.append(time.monotonic())
            return fake_next(rec)

        fake._next = timed  # type: ignore[method-assign,assignment]
        async with tutor_harness(flavour.settings(settings, fake.base_url)) as h:
            uid, frame, ack, end = await _ask(h)
            assert end["finish_reason"] == "stop"
            assert h.frames.text(uid, ack["reply_id"]) == "".join(PIECES)
            assert not h.frames.of(uid, ack["reply_id"], "reply.error")
    assert len(fake.requests) == 2
    # retry-after: 0.3 was honoured (a lower bound, so this cannot flake).
    assert arrivals[1] - arrivals[0] >= 0.29


async def test_500_before_first_token_is_retried_then_reply_error(
    settings: Settings, flavour: Flavour
) -> None:
    async with FakeProvider(default=flavour.error(500, 0)) as fake:
        async with tutor_harness(flavour.settings(settings, fake.base_url)) as h:
            uid, frame, ack, end = await _ask(h)
            (error,) = h.frames.of(uid, ack["reply_id"], "reply.error")
            assert error["code"] == "provider_overloaded"
            assert flavour.name in error["message"] and "500" in error["message"]
            assert end["finish_reason"] == "failed"
            row = await _row(h, ack["reply_id"])
            assert row.status == MessageStatus.failed
            assert row.error and row.error.startswith("provider_overloaded")
    assert len(fake.requests) == 3  # first try + llm_retries=2


async def test_anthropic_overloaded_529_and_sse_error_event_are_retried(
    settings: Settings,
) -> None:
    flavour = FLAVOURS[0]
    async with FakeProvider() as fake:
        fake.script.extend([anthropic_error(529, "overloaded_error", "Overloaded", 0),
                            anthropic_stream_error("overloaded_error"),
                            anthropic_stream(PIECES)])
        async with tutor_harness(flavour.settings(settings, fake.base_url)) as h:
            uid, frame, ack, end = await _ask(h)
            assert end["finish_reason"] == "stop"
            assert h.frames.text(uid, ack["reply_id"]) == "".join(PIECES)
    assert len(fake.requests) == 3


@pytest.mark.parametrize("slow", [False, True], ids=["at-once", "slow"])
async def test_stream_cut_midway_fails_and_keeps_every_token_before_the_cut(
    settings: Settings, flavour: Flavour, slow: bool
) -> None:
    """The reply ends failed with the text before the cut delivered and stored, and is not
    retried; slow, the cut comes after the flush tick has published several deltas."""
    pieces, cut = ([f"слово{i} " for i in range(60)], 40) if slow else (PIECES, 3)
    async with FakeProvider() as fake:
        fake.script.append(flavour.stream(pieces, delay_s=0.01 if slow else 0.0,
                                          cut_after_pieces=cut))
        async with tutor_harness(flavour.settings(settings, fake.base_url)) as h:
            uid, frame, ack, end = await _ask(h)
            assert end["finish_reason"] == "failed"
            (error,) = h.frames.of(uid, ack["reply_id"], "reply.error")
            assert error["code"] == "provider_stream_cut"
            partial = "".join(pieces[:cut])
            assert h.frames.text(uid, ack["reply_id"]) == partial
            if slow:
                assert len(h.frames.of(uid, ack["reply_id"], "reply.delta")) > 2  # ticks sent them
            row = await _row(h, ack["reply_id"])
            assert row.status == MessageStatus.failed
            assert row.content == partial
    assert len(fake.requests) == 1  # no retry once the learner has seen tokens


async def test_slow_stream_cancel_closes_the_provider_connection(
    settings: Settings, flavour: Flavour
) -> None:
    pieces = [f"w{i} " for i in range(200)]
    async with FakeProvider() as fake:
        fake.script.append(flavour.stream(pieces, delay_s=0.05))
        async with tutor_harness(flavour.settings(settings, fake.base_url)) as h:
            uid = await h.user()
            frame = _send()
            await h.tutor.send(uid, frame)
            ack = await h.frames.ack(uid, frame["id"])
            rid = ack["reply_id"]
            await h.frames.wait(uid, lambda fs: len(h.frames.of(uid, rid, "reply.delta")) >= 2)
            await h.tutor.cancel(uid, rid)
            # cancel returns once the reply has ended and been stored.
            end = next(f for f in h.frames.by_user[str(uid)] if f["type"] == "reply.end")
            assert end["finish_reason"] == "cancelled"
            async with asyncio.timeout(10):
                await fake.closed_event.wait()
            assert fake.client_closed == 1
            row = await _row(h, rid)
            assert row.status == MessageStatus.cancelled
            seen = h.frames.text(uid, rid)
            assert row.content == seen and seen.startswith("w0 w1 ")
            assert len(seen.split()) < len(pieces)
            # Cancelling a finished reply again is a no-op; an unknown one is refused.
            await h.tutor.cancel(uid, rid)
            with pytest.raises(TutorError) as err:
                await h.tutor.cancel(uid, str(uuid.uuid4()))
            assert err.value.code == "reply_not_found"


async def test_fallback_to_offline_when_provider_rejects(settings: Settings) -> None:
    flavour = FLAVOURS[1]
    async with FakeProvider(default=openai_error(401, "bad key", "invalid_request_error")) as fake:
        s = flavour.settings(settings, fake.base_url, llm_fallback=["offline"])
        async with tutor_harness(s) as h:
            uid = await h.user()
            frame = _send("What is osmosis?")
            await h.tutor.send(uid, frame)
            ack = await h.frames.ack(uid, frame["id"])
            end = await h.frames.end_of(uid, ack["reply_id"])
            assert end["finish_reason"] == "stop"
            assert "don't have any of your materials" in h.frames.text(uid, ack["reply_id"])
            row = await _row(h, ack["reply_id"])
            assert row.provider == "offline" and row.status == MessageStatus.complete
    assert len(fake.requests) == 1  # 401 is not retried


async def test_text_so_far_is_stored_while_the_reply_streams(settings: Settings,
                                                             flavour: Flavour) -> None:
    """Checkpoints: a process that dies mid-reply loses at most TUTORHUB_REPLY_CHECKPOINT_S."""
    pieces = [f"слово{i} " for i in range(200)]
    async with FakeProvider() as fake:
        fake.script.append(flavour.stream(pieces, delay_s=0.05))  # ~10 s in all
        async with tutor_harness(flavour.settings(settings, fake.base_url,
                                                  reply_checkpoint_s=0.2)) as h:
            uid = await h.user()
            frame = _send()
            await h.tutor.send(uid, frame)
            rid = (await h.frames.ack(uid, frame["id"]))["reply_id"]
            await h.frames.wait(uid, lambda fs: len(h.frames.of(uid, rid, "reply.delta")) >= 3)
            row = await _row(h, rid)
            async with asyncio.timeout(10):
                while len(row.content.split()) < 2:  # a checkpoint tick stores it
                    await asyncio.sleep(0.05)
                    row = await _row(h, rid)
            assert row.status == MessageStatus.streaming
            assert row.content.startswith("слово0 слово1 ")
            assert len(row.content.split()) < len(pieces)
            # Each checkpoint is also the reply's heartbeat (other instances see it alive).
            assert row.heartbeat_at is not None
            later = row
            async with asyncio.timeout(10):
                while later.heartbeat_at == row.heartbeat_at:
                    await asyncio.sleep(0.05)
                    later = await _row(h, rid)
            await h.tutor.cancel(uid, rid)
            row = await _row(h, rid)
            assert row.status == MessageStatus.cancelled and row.content == h.frames.text(uid, rid)
            # Nothing streams any more: a checkpoint stores nothing and keeps the final text.
            assert await h.tutor.checkpoint() == 0
            assert (await _row(h, rid)).content == row.content


# --- the providers alone: both SDKs, their transports, TLS, aiohttp's pure-Python parser -------

@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_sdk_streams_decode_every_scripted_answer_exactly(transport: str) -> None:
    """Both SDKs through both of their transports (aiohttp, which the tutor uses, and
    httpx2): text split across reads and lines, CR and CRLF line ends, data over two lines,
    comments and data-less events decode exactly; usage and finish are read; a cut mid-way
    (the text before it kept), a 429 with retry-after and an error event inside the stream are
    their errors; complete answers leave the connection in the SDK's pool."""
    assert await outcomes(transport) == expected()


async def test_sdk_streams_over_tls() -> None:
    """As real providers are reached: the same answers over https (a throwaway loopback
    certificate trusted by the SDK's client), the connection pooled too."""
    assert await outcomes("aiohttp", tls=True) == expected()


async def test_sdk_streams_with_aiohttps_pure_python_parser() -> None:
    """AIOHTTP_NO_EXTENSIONS=1 (aiohttp reads it at import, so in a subprocess): its
    pure-Python HTTP parser gives the same answers as the C one above."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.support.sdk_streams",
        env={**os.environ, "AIOHTTP_NO_EXTENSIONS": "1"}, cwd=Path(__file__).parent.parent,
        stdout=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0
    got = json.loads(out)
    assert got.pop("aiohttp parser") == "aiohttp.http_parser"  # not aiohttp._http_parser (C)
    assert got == expected()
