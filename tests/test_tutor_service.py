"""The Tutor's contract: acks, idempotent resends, per-conversation and global limits, quota,
history in the prompt, shutdown, and users never seeing each other's replies."""

from __future__ import annotations

import asyncio
import gc
import uuid
import weakref
from typing import Any

import pytest
from sqlalchemy import func, select

from chat_server.batch import Batcher
from chat_server.models import Conversation, Message, MessageStatus, Role
from chat_server.settings import Settings
from chat_server.tutor import store
from chat_server.tutor.errors import TutorError
from chat_server.tutor.prompt import CHARS_PER_TOKEN_MAX, Turn, trim_history
from chat_server.tutor.service import STARTING_MAX
from chat_server.tutor.stream import Event, PublishMany
from tests.support.fake_providers import FakeProvider, anthropic_stream
from tests.support.tutor_harness import Harness, tutor_harness
from tests.support.ws import until


def _send(text: str = "What is a chloroplast?", **more: Any) -> dict[str, Any]:
    return {"type": "chat.send", "id": uuid.uuid4().hex, "text": text, **more}


def _anthropic(settings: Settings, url: str, **more: Any) -> Settings:
    return settings.model_copy(update={
        "llm_provider": "anthropic", "anthropic_base_url": url, "anthropic_api_key": "sk-test",
        "anthropic_model": "claude-test", "llm_retries": 0, **more})


async def _answered(h: Harness, uid: uuid.UUID, frame: dict[str, Any]) -> dict[str, Any]:
    """Send, wait for the reply's end; the chat.ack."""
    await h.tutor.send(uid, frame)
    ack = await h.frames.ack(uid, frame["id"])
    await h.frames.end_of(uid, ack["reply_id"])
    return ack


async def _count(h: Harness, *where: Any) -> int:
    async with h.db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(Message).where(*where))
                   or 0)


async def test_offline_default_says_it_has_no_materials_in_the_learners_language(
    settings: Settings,
) -> None:
    assert settings.llm_provider == "auto" and not settings.anthropic_api_key
    async with tutor_harness(settings) as h:
        uid = await h.user()
        en, ru = _send("What is osmosis?"), _send("Что такое осмос?")
        await h.tutor.send(uid, en)
        ack_en = await h.frames.ack(uid, en["id"])
        await h.frames.end_of(uid, ack_en["reply_id"])
        await h.tutor.send(uid, {**ru, "conversation_id": ack_en["conversation_id"]})
        ack_ru = await h.frames.ack(uid, ru["id"])
        end = await h.frames.end_of(uid, ack_ru["reply_id"])
        assert h.frames.text(uid, ack_en["reply_id"]).startswith("I don't have any of your materials")
        assert h.frames.text(uid, ack_ru["reply_id"]).startswith("У меня пока нет ваших материалов")
        assert end["finish_reason"] == "stop" and end["usage"]["output_tokens"] > 0
        assert ack_ru["conversation_id"] == ack_en["conversation_id"]


async def test_repeated_client_id_is_acked_again_not_answered_twice(settings: Settings) -> None:
    async with tutor_harness(settings) as h:
        uid = await h.user()
        frame = _send()
        first = await _answered(h, uid, frame)
        await h.tutor.send(uid, frame)
        again = await h.frames.ack(uid, frame["id"], nth=2)
        for key in ("message_id", "conversation_id", "reply_id"):
            assert again[key] == first[key]
        assert again["duplicate"] is True
        starts = [f for f in h.frames.by_user[str(uid)] if f["type"] == "reply.start"]
        assert len(starts) == 1
        assert await _count(h, Message.user_id == uid) == 2  # one question, one answer
        # Two sockets racing the same id: still one answer.
        racing = _send("Same id from two tabs")
        await asyncio.gather(h.tutor.send(uid, racing), h.tutor.send(uid, racing))
        a = await h.frames.ack(uid, racing["id"], nth=2)
        await h.frames.end_of(uid, a["reply_id"])
        assert await _count(h, Message.user_id == uid) == 4


async def test_refusals_have_stable_codes(settings: Settings) -> None:
    async with tutor_harness(settings) as h:
        alice, bob = await h.user(), await h.user()
        bad: list[tuple[dict[str, Any], str]] = [({"id": "", "text": "x"}, "invalid_request"),
               ({"id": "a", "text": "   "}, "invalid_request"),
               ({"id": "b", "text": "x" * 20_000}, "invalid_request"),
               ({"id": "c", "text": "x", "conversation_id": "nope"}, "invalid_request"),
               ({"id": "d", "text": "x", "material_ids": ["nope"]}, "invalid_request"),
               ({"id": "e", "text": "x", "socratic": "yes"}, "invalid_request")]
        for frame, code in bad:
            with pytest.raises(TutorError) as err:
                await h.tutor.send(alice, frame)
            assert err.value.code == code, frame
        # Bob's conversation does not exist for Alice, and its existence does not leak.
        frame = _send()
        await h.tutor.send(bob, frame)
        ack = await h.frames.ack(bob, frame["id"])
        await h.frames.end_of(bob, ack["reply_id"])
        with pytest.raises(TutorError) as err:
            await h.tutor.send(alice, _send(conversation_id=ack["conversation_id"]))
        assert err.value.code == "conversation_not_found"
        with pytest.raises(TutorError) as err:
            await h.tutor.cancel(alice, ack["reply_id"])
        assert err.value.code == "reply_not_found"
        assert not h.frames.by_user[str(alice)]  # refusals are raised, never published


async def test_one_streaming_reply_per_conversation(settings: Settings) -> None:
    async with FakeProvider() as fake:
        fake.script.append(anthropic_stream([f"t{i} " for i in range(400)], delay_s=0.02))
        fake.script.append(anthropic_stream(["done"]))
        async with tutor_harness(_anthropic(settings, fake.base_url)) as h:
            uid = await h.user()
            first = _send()
            await h.tutor.send(uid, first)
            ack = await h.frames.ack(uid, first["id"])
            with pytest.raises(TutorError) as err:
                await h.tutor.send(uid, _send(conversation_id=ack["conversation_id"]))
            assert err.value.code == "reply_in_progress"
            assert err.value.extra["reply_id"] == ack["reply_id"]
            await h.tutor.cancel(uid, ack["reply_id"])
            second = _send(conversation_id=ack["conversation_id"])
            await h.tutor.send(uid, second)
            ack2 = await h.frames.ack(uid, second["id"])
            assert (await h.frames.end_of(uid, ack2["reply_id"]))["finish_reason"] == "stop"


async def test_a_reply_streaming_elsewhere_blocks_its_conversation_until_its_heartbeat_stops(
    settings: Settings,
) -> None:
    """The database's rule, not this process's memory: a `streaming` row whose heartbeat is
    fresh (another instance streams it) refuses a send; once its heartbeat is older than
    stale_after_s its process is dead: the send marks it interrupted and goes ahead."""
    async with tutor_harness(settings) as h:
        assert h.tutor.stale_after_s == 30.0  # 3 missed checkpoints of 5 s, at least 30 s
        uid = await h.user()
        ack = await _answered(h, uid, _send())
        conv, other = uuid.UUID(ack["conversation_id"]), uuid.uuid4()
        await h.db.pool.execute(
            "insert into messages (id, conversation_id, user_id, role, content, status, "
            "created_at, heartbeat_at) values ($1, $2, $3, 'assistant', 'half an ans', "
            "'streaming', now() - interval '10 minutes', now() - interval '5 seconds')",
            other, conv, uid)
        with pytest.raises(TutorError) as err:
            await h.tutor.send(uid, _send(conversation_id=str(conv)))
        assert err.value.code == "reply_in_progress"
        assert err.value.extra["reply_id"] == str(other)

        await h.db.pool.execute("update messages set heartbeat_at = now() - interval '31 seconds' "
                                "where id = $1", other)
        again = _send("And the thylakoid?", conversation_id=str(conv))
        await h.tutor.send(uid, again)
        ack2 = await h.frames.ack(uid, again["id"])
        assert (await h.frames.end_of(uid, ack2["reply_id"]))["finish_reason"] == "stop"
        orphan = await h.db.pool.fetchrow("select status::text, content, error from messages "
                                          "where id = $1", other)
        assert orphan is not None
        assert orphan["status"] == "interrupted" and orphan["content"] == "half an ans"
        assert "stopped" in orphan["error"]


async def test_orphans_of_dead_servers_are_interrupted_and_live_replies_left_alone(
    settings: Settings,
) -> None:
    """What runs at start and with every checkpoint: only replies whose heartbeat stopped (or
    that never had one and began long ago) are marked interrupted, with their text kept."""
    async with tutor_harness(settings) as h:
        uid = await h.user()
        rows = {"dead": ("now() - interval '10 minutes'", "now() - interval '2 minutes'"),
                "live": ("now() - interval '10 minutes'", "now()"),
                "young": ("now() - interval '3 seconds'", "null"),
                "old": ("now() - interval '20 minutes'", "null")}
        for name, (created, beat) in rows.items():
            conv = await h.db.pool.fetchval(
                "insert into conversations (id, user_id, title) values (gen_random_uuid(), $1, "
                "'t') returning id", uid)
            await h.db.pool.execute(
                "insert into messages (id, conversation_id, user_id, role, content, status, "
                f"created_at, heartbeat_at) values (gen_random_uuid(), $1, $2, 'assistant', $3, "
                f"'streaming', {created}, {beat})", conv, uid, name)
        assert await h.tutor.interrupt_orphans() == 2
        got = {r["content"]: r["status"] for r in await h.db.pool.fetch(
            "select content, status::text from messages where user_id = $1", uid)}
        assert got == {"dead": "interrupted", "live": "streaming", "young": "streaming",
                       "old": "interrupted"}
        assert await h.tutor.interrupt_orphans() == 0


async def test_the_next_send_may_follow_reply_end_at_once(settings: Settings) -> None:
    """Subscribers can get reply.end before the publisher's own publish returns (Redis answers
    the publishing connection and the pub/sub one separately): a client that sends its next
    message the moment it sees reply.end must not be told a reply is still in progress."""
    def slow_return(publish_many: PublishMany) -> PublishMany:
        async def slow_ack(events: list[Event]) -> list[int]:
            offsets = await publish_many(events)  # delivered to the subscribers here
            await asyncio.sleep(0.2)
            return offsets
        return slow_ack

    async with tutor_harness(settings, publish_many=slow_return) as h:
        uid = await h.user()
        ack = await _answered(h, uid, _send())
        again = _send("And then?", conversation_id=ack["conversation_id"])
        await h.tutor.send(uid, again)  # raised reply_in_progress before
        ack2 = await h.frames.ack(uid, again["id"])
        assert (await h.frames.end_of(uid, ack2["reply_id"]))["finish_reason"] == "stop"


async def test_the_reply_starts_while_its_ack_goes_out_and_never_overtakes_it(
    settings: Settings,
) -> None:
    """The prompt and the provider request don't wait for the bus to take chat.ack, but no
    event of the reply is published before it: a slow ack publish keeps the order."""
    def slow_ack(publish_many: PublishMany) -> PublishMany:
        async def slow_first(events: list[Event]) -> list[int]:
            if any("chat.ack" in (e if isinstance(e, str) else str(e.get("type")))
                   for _, e in events):
                await asyncio.sleep(0.3)  # the offline answer is ready long before
            return await publish_many(events)
        return slow_first

    async with tutor_harness(settings, publish_many=slow_ack) as h:
        uid = await h.user()
        await _answered(h, uid, _send("What is osmosis?"))
        kinds = [f["type"] for f in h.frames.by_user[str(uid)]]
        assert kinds[:3] == ["chat.ack", "reply.start", "reply.delta"], kinds
        assert kinds[-2:] == ["reply.citations", "reply.end"]


async def test_global_stream_cap_queues_and_tells_the_waiter(settings: Settings) -> None:
    async with FakeProvider() as fake:
        fake.script.append(anthropic_stream([f"t{i} " for i in range(400)], delay_s=0.02))
        fake.script.append(anthropic_stream(["second ", "answer"]))
        async with tutor_harness(_anthropic(settings, fake.base_url,
                                            llm_max_concurrent_streams=1)) as h:
            uid = await h.user()
            one, two = _send(), _send("Another conversation")
            await h.tutor.send(uid, one)
            ack1 = await h.frames.ack(uid, one["id"])
            await h.frames.wait(uid, lambda fs: bool(h.frames.of(uid, ack1["reply_id"],
                                                                 "reply.delta")))
            await h.tutor.send(uid, two)
            ack2 = await h.frames.ack(uid, two["id"])
            await h.frames.wait(uid, lambda fs: bool(h.frames.of(uid, ack2["reply_id"],
                                                                 "reply.queued")))
            (queued,) = h.frames.of(uid, ack2["reply_id"], "reply.queued")
            assert queued["position"] == 1
            assert not h.frames.of(uid, ack2["reply_id"], "reply.delta")
            await h.tutor.cancel(uid, ack1["reply_id"])
            end = await h.frames.end_of(uid, ack2["reply_id"])
            assert end["finish_reason"] == "stop"
            assert h.frames.text(uid, ack2["reply_id"]) == "second answer"


async def test_sends_beyond_the_start_permits_are_all_answered(settings: Settings) -> None:
    """Only STARTING_MAX replies start at once; refused sends and replies waiting for a provider
    slot give their permit back, so a burst larger than that still gets every answer."""
    burst = STARTING_MAX + 4
    async with FakeProvider(default=anthropic_stream(["ok"])) as fake:
        # Streams far longer than the test waits: only a cancel ends it.
        fake.script.append(anthropic_stream([f"t{i} " for i in range(3000)], delay_s=0.02))
        async with tutor_harness(_anthropic(settings, fake.base_url,
                                            llm_max_concurrent_streams=1)) as h:
            uid = await h.user()
            for _ in range(STARTING_MAX + 1):
                with pytest.raises(TutorError):
                    await h.tutor.send(uid, _send(conversation_id=str(uuid.uuid4())))
            slow = _send()
            await h.tutor.send(uid, slow)
            ack = await h.frames.ack(uid, slow["id"])
            await h.frames.wait(uid, lambda fs: bool(h.frames.of(uid, ack["reply_id"],
                                                                 "reply.delta")))
            frames = [_send(f"Question {n}") for n in range(burst)]
            async with asyncio.timeout(15):
                await asyncio.gather(*(h.tutor.send(uid, f) for f in frames))
                acks = [await h.frames.ack(uid, f["id"]) for f in frames]
            assert all(h.frames.of(uid, a["reply_id"], "reply.queued") for a in acks)
            await h.tutor.cancel(uid, ack["reply_id"])
            ends = [await h.frames.end_of(uid, a["reply_id"]) for a in acks]
            assert [e["finish_reason"] for e in ends] == ["stop"] * burst


async def test_daily_token_quota(settings: Settings) -> None:
    async with tutor_harness(settings.model_copy(update={"daily_token_quota": 5})) as h:
        uid = await h.user()
        frame = _send()
        await h.tutor.send(uid, frame)
        ack = await h.frames.ack(uid, frame["id"])
        await h.frames.end_of(uid, ack["reply_id"])
        with pytest.raises(TutorError) as err:
            await h.tutor.send(uid, _send("And another?"))
        assert err.value.code == "quota_exceeded"
        assert err.value.extra["quota"] == 5 and err.value.extra["used"] >= 5
        # A resend of an answered message is still acked: it costs nothing.
        await h.tutor.send(uid, frame)
        assert (await h.frames.ack(uid, frame["id"], nth=2))["duplicate"] is True


async def test_history_and_socratic_mode_reach_the_prompt(settings: Settings) -> None:
    async with FakeProvider() as fake:
        fake.script.extend([anthropic_stream(["Chlorophyll ", "absorbs ", "light."]),
                            anthropic_stream(["Think ", "about ", "it."])])
        async with tutor_harness(_anthropic(settings, fake.base_url)) as h:
            uid = await h.user()
            first = _send("What does chlorophyll do?")
            await h.tutor.send(uid, first)
            ack = await h.frames.ack(uid, first["id"])
            await h.frames.end_of(uid, ack["reply_id"])
            second = _send("Почему листья зелёные?", conversation_id=ack["conversation_id"],
                           socratic=True)
            await h.tutor.send(uid, second)
            ack2 = await h.frames.ack(uid, second["id"])
            await h.frames.end_of(uid, ack2["reply_id"])
        async with h.db.session() as session:
            conv = await session.get(Conversation, uuid.UUID(ack["conversation_id"]))
            assert conv is not None and conv.socratic is True
    first_req, second_req = fake.requests
    assert "Socratic" not in first_req.body["system"]
    assert "Socratic mode is on" in second_req.body["system"]
    assert "Russian" in second_req.body["system"]
    msgs = second_req.body["messages"]
    assert [m["role"] for m in msgs] == ["user", "assistant", "user"]
    assert msgs[0]["content"] == "What does chlorophyll do?"
    assert msgs[1]["content"] == "Chlorophyll absorbs light."
    assert msgs[2]["content"].endswith("Почему листья зелёные?")


async def test_history_is_trimmed_to_the_token_budget(settings: Settings) -> None:
    async with FakeProvider() as fake:
        fake.default = anthropic_stream(["ok " * 50])
        async with tutor_harness(_anthropic(settings, fake.base_url,
                                            history_token_budget=120)) as h:
            uid = await h.user()
            conv: str | None = None
            for i in range(6):
                frame = _send(f"Question number {i}: " + "word " * 30,
                              **({"conversation_id": conv} if conv else {}))
                await h.tutor.send(uid, frame)
                ack = await h.frames.ack(uid, frame["id"])
                conv = ack["conversation_id"]
                await h.frames.end_of(uid, ack["reply_id"])
    last = fake.requests[-1].body["messages"]
    history = last[:-1]
    assert 0 < len(history) < 10  # 5 earlier exchanges would be 10 turns
    assert history[0]["role"] == "user"
    assert "Question number 0" not in str(last)
    assert "Question number 4" in history[-2]["content"]


async def test_a_long_conversation_reads_back_only_the_history_its_prompt_can_use(
    settings: Settings,
) -> None:
    """store.send stops reading history once the newer turns hold more characters than the
    budget's tokens can stand for; the prompt's history is the same as from every turn."""
    budget = 300  # tokens: at most 1,200 characters of history
    async with tutor_harness(settings) as h:
        uid, pool = await h.user(), h.db.pool

        async def send(i: int, conv: uuid.UUID | None, chars: int) -> store.Sent:
            sent = await store.send(
                pool, user_id=uid, client_id=f"c{i}", text=f"Вопрос {i}: " + "почему " * 12,
                message_id=uuid.uuid4(), reply_id=(reply := uuid.uuid4()), provider="offline",
                model=None, material_ids=None, conversation_id=conv, socratic=None, title="t",
                history_chars=chars)
            assert sent is not None
            await store.finish_many(pool, [store.Finished(
                reply_id=reply, text=f"Answer {i}. " + "because " * 20, status="complete",
                citations=[], usage={}, input_tokens=0, output_tokens=0, provider="offline",
                model=None, error=None)])
            return sent

        conv = (await send(0, None, 10**9)).conversation_id
        for i in range(1, 31):
            await send(i, conv, 10**9)
        limit = CHARS_PER_TOKEN_MAX * budget
        cut = (await send(31, conv, limit)).history  # oldest first
        everything = (await send(32, conv, 10**9)).history[:-2]  # what send 31 had before it
    assert len(everything) == 62
    assert 0 < len(cut) < 20
    assert cut == everything[-len(cut):]
    # The oldest turn read back is the first whose newer turns hold no more than the limit.
    assert sum(len(c) for _, c in cut[1:]) <= limit < sum(len(c) for _, c in cut)
    full = [Turn(role=r, content=c) for r, c in everything]  # type: ignore[arg-type]
    kept = [Turn(role=r, content=c) for r, c in cut]  # type: ignore[arg-type]
    assert trim_history(kept, budget) == trim_history(full, budget)
    assert trim_history(kept, budget)  # the budget holds some history


async def test_shutdown_interrupts_and_stores_inflight_replies(settings: Settings) -> None:
    async with FakeProvider() as fake:
        fake.default = anthropic_stream([f"t{i} " for i in range(400)], delay_s=0.02)
        async with tutor_harness(_anthropic(settings, fake.base_url)) as h:
            uid = await h.user()
            frame = _send()
            await h.tutor.send(uid, frame)
            ack = await h.frames.ack(uid, frame["id"])
            rid = ack["reply_id"]
            await h.frames.wait(uid, lambda fs: bool(h.frames.of(uid, rid, "reply.delta")))
            await h.tutor.aclose(0.1)
            (end,) = h.frames.of(uid, rid, "reply.end")
            assert end["finish_reason"] == "interrupted"
            with pytest.raises(TutorError) as err:
                await h.tutor.send(uid, _send())
            assert err.value.code == "unavailable"
            async with h.db.session() as session:
                row = await session.get(Message, uuid.UUID(rid))
            assert row is not None and row.status == MessageStatus.interrupted
            assert row.content and row.content == h.frames.text(uid, rid)
            assert h.tutor.active == 0


async def test_concurrent_users_only_see_their_own_replies(settings: Settings) -> None:
    async with FakeProvider() as fake:
        fake.default = lambda rec: anthropic_stream(
            ["Answer ", "for: ", rec.body["messages"][-1]["content"].rsplit(": ", 1)[-1]])
        async with tutor_harness(_anthropic(settings, fake.base_url)) as h:
            users = [await h.user() for _ in range(8)]
            frames = {u: [_send(f"user {u} question {i}") for i in range(3)] for u in users}
            await asyncio.gather(*(h.tutor.send(u, f) for u in users for f in frames[u]))
            for u in users:
                acks = [await h.frames.ack(u, f["id"]) for f in frames[u]]
                for f, ack in zip(frames[u], acks, strict=True):
                    await h.frames.end_of(u, ack["reply_id"])
                    assert h.frames.text(u, ack["reply_id"]) == f"Answer for: {f['text']}"
                mine = {a["reply_id"] for a in acks}
                seen = {f.get("reply_id") for f in h.frames.by_user[str(u)]}
                assert seen == mine
                assert all(str(u) in f["text"] for f in h.frames.by_user[str(u)]
                           if f["type"] == "reply.delta" and f["seq"] >= 2)
            async with h.db.session() as session:
                owners = (await session.execute(select(Message.user_id, Message.role, func.count())
                                                .group_by(Message.user_id, Message.role))).all()
            assert sorted(c for _, _, c in owners) == [3] * 16
            assert {r for _, r, _ in owners} == {Role.user, Role.assistant}


async def test_replies_ending_together_are_stored_in_one_statement_and_a_bad_one_alone_fails(
    settings: Settings,
) -> None:
    """store.finish_many through a Batcher on the real database: four replies end at once;
    Postgres refuses one (a NUL character cannot be stored in text), so that batch is written
    again reply by reply: the other three are stored with their own fields, the bad one fails
    alone and stays streaming (the orphan sweep interrupts it later)."""
    async with tutor_harness(settings) as h:
        uid, pool = await h.user(), h.db.pool
        replies = []
        for i in range(4):
            reply = uuid.uuid4()
            assert await store.send(
                pool, user_id=uid, client_id=f"end{i}", text=f"Вопрос {i}",
                message_id=uuid.uuid4(), reply_id=reply, provider="openai", model="m",
                material_ids=None, conversation_id=None, socratic=None, title="t",
                history_chars=1000) is not None
            replies.append(reply)
        statements: list[int] = []

        async def write(ends: list[store.Finished]) -> None:
            statements.append(len(ends))
            await store.finish_many(pool, ends)

        batcher: Batcher[store.Finished] = Batcher(write, refused=store.refused)

        def end(i: int, text: str, status: str = "complete") -> store.Finished:
            return store.Finished(
                reply_id=replies[i], text=text, status=status,
                citations=[{"n": 1, "title": f"Глава {i}"}], usage={"finish_reason": "stop"},
                input_tokens=10 + i, output_tokens=20 + i, provider="openai", model="m",
                error="provider_error: сбой" if status == "failed" else None)

        results = await asyncio.gather(
            batcher.submit(end(0, "Ответ ноль")),
            batcher.submit(end(1, "Ответ один [1]")),
            batcher.submit(end(2, "bad \x00 text")),
            batcher.submit(end(3, "Частичный ответ", "failed")),
            return_exceptions=True)
        assert results[:2] == [None, None] and results[3] is None
        assert isinstance(results[2], Exception)
        assert statements == [4, 1, 1, 1, 1]  # all four in one statement; refused: one by one
        async with h.db.session() as session:
            rows = {m.id: m for m in (await session.scalars(
                select(Message).where(Message.id.in_(replies)))).all()}
    assert rows[replies[0]].content == "Ответ ноль"
    assert rows[replies[1]].status == MessageStatus.complete
    assert rows[replies[1]].citations == [{"n": 1, "title": "Глава 1"}]
    assert (rows[replies[1]].input_tokens, rows[replies[1]].output_tokens) == (11, 21)
    assert rows[replies[2]].status == MessageStatus.streaming
    assert rows[replies[3]].status == MessageStatus.failed
    assert rows[replies[3]].error == "provider_error: сбой"
    assert rows[replies[3]].usage == {"finish_reason": "stop"}
    assert all(rows[r].finished_at is not None for r in (replies[0], replies[1], replies[3]))


async def test_an_ended_reply_is_freed_without_the_cyclic_collector(settings: Settings) -> None:
    """No reference cycle keeps an ended reply (its text, retrieval hits, tasks) alive: the
    server runs full cyclic collections minutes apart (app._long_lived_heap), and the soak's
    RSS crept up 14% in 10 minutes while they waited (load_tests/reports/soak.md)."""
    async with tutor_harness(settings) as h:
        uid = await h.user()
        frame = _send()
        gc.disable()
        try:
            await h.tutor.send(uid, frame)
            ack = await h.frames.ack(uid, frame["id"])
            reply = weakref.ref(h.tutor._replies[uuid.UUID(ack["reply_id"])])
            end = await h.frames.end_of(uid, ack["reply_id"])
            assert end["finish_reason"] == "stop" and h.frames.of(uid, ack["reply_id"], "reply.delta")

            async def freed() -> bool:
                return reply() is None

            await until(freed, 5)
        finally:
            gc.enable()
