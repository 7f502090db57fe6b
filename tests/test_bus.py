"""The bus on both engines: offsets, delivery, history and resume rules, bad events, signals;
the memory engine's history TTL; Redis specifics (epochs after FLUSHALL, TTLs, cross-instance
delivery, recovery after a Redis restart, the bounded outbox, TLS and AUTH from the URL)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import pytest
import redis.asyncio as aioredis

from chat_server.bus import Bus, BusFull, BusUnavailable, ResumeFailed, open_bus
from chat_server.bus.memory import MemoryBus
from chat_server.bus.redis import RedisBus
from tests.support.services import RedisServer
from tests.support.tls import loopback_cert_files
from tests.support.ws import until


class Sink:
    """A Deliver callback that records what it got, with a way to wait for N events."""

    def __init__(self) -> None:
        self.got: list[tuple[str, int, dict[str, Any]]] = []
        self.epochs: list[tuple[str, str]] = []
        self._changed = asyncio.Event()

    def __call__(self, user_id: str, offset: int, frame: str, kind: str) -> None:
        event = json.loads(frame)
        assert event["o"] == offset and event["type"] == kind
        self.got.append((user_id, offset, event))
        self._changed.set()

    def on_epoch(self, user_id: str, epoch: str) -> None:
        self.epochs.append((user_id, epoch))

    async def wait_for(self, n: int) -> None:
        async with asyncio.timeout(20):
            while len(self.got) < n:
                self._changed.clear()
                await self._changed.wait()


OpenBus = Callable[..., AbstractAsyncContextManager[tuple[Bus, Sink]]]


@pytest.fixture(params=["memory", "redis"])
def open_test_bus(request: pytest.FixtureRequest, redis_url: str) -> OpenBus:
    url = redis_url if request.param == "redis" else "memory://"

    @asynccontextmanager
    async def opener(max_events: int = 100) -> AsyncIterator[tuple[Bus, Sink]]:
        sink = Sink()
        async with open_bus(url, sink, max_events=max_events, ttl_s=60, on_epoch=sink.on_epoch) as bus:
            yield bus, sink

    return opener


async def test_publish_assigns_offsets_and_delivers_to_subscribed_users_only(open_test_bus: OpenBus) -> None:
    async with open_test_bus() as (bus, sink):
        assert await bus.publish("u1", {"type": "x", "n": 0}) == 1  # not subscribed: history only
        await bus.subscribe("u1")
        await bus.subscribe("u1")  # reference counted
        for n in range(1, 4):
            assert await bus.publish("u1", {"type": "x", "n": n, "text": "Привет"}) == n + 1
        await bus.publish("u2", {"type": "x"})
        await sink.wait_for(3)
        assert [(u, o, e["n"], e["text"]) for u, o, e in sink.got] == [("u1", o, o - 1, "Привет") for o in (2, 3, 4)]
        await bus.unsubscribe("u1")
        await bus.publish("u1", {"type": "x", "n": 4, "text": "still"})
        await sink.wait_for(4)
        await bus.unsubscribe("u1")
        await bus.publish("u1", {"type": "x", "n": 5, "text": "gone"})
        await bus.subscribe("u1")
        await bus.publish("u1", {"type": "x", "n": 6, "text": "back"})
        await sink.wait_for(5)
        assert [e["n"] for _, _, e in sink.got] == [1, 2, 3, 4, 6]
        head = await bus.head("u1")
        assert head.offset == 7 and head.epoch
        with pytest.raises(ValueError):
            await bus.publish("u1", {"no": "type"})


async def test_since_replays_and_refuses_what_history_cannot_cover(open_test_bus: OpenBus) -> None:
    async with open_test_bus(max_events=5) as (bus, _):
        empty = await bus.head("u1")
        assert empty.offset == 0
        assert await bus.since("u1", 0, empty.epoch) == []
        for n in range(1, 11):
            await bus.publish("u1", {"type": "x", "n": n})
        head = await bus.head("u1")
        assert head == type(head)(empty.epoch, 10)
        assert [json.loads(f)["o"] for f in await bus.since("u1", 5, head.epoch)] == [6, 7, 8, 9, 10]
        assert await bus.since("u1", 10, head.epoch) == []
        for offset, epoch, reason in [(4, head.epoch, "history_trimmed"), (0, head.epoch, "history_trimmed"),
                                      (5, "nope", "epoch_changed"), (11, head.epoch, "offset_ahead"),
                                      # no stream ID on Redis (was BusUnavailable → 1013)
                                      (-1, head.epoch, "offset_ahead"), (-2, head.epoch, "offset_ahead"),
                                      (-2**80, head.epoch, "offset_ahead"),
                                      (2**80, head.epoch, "offset_ahead")]:
            with pytest.raises(ResumeFailed) as info:
                await bus.since("u1", offset, epoch)
            assert info.value.reason == reason


async def test_redis_flush_changes_the_epoch_and_keys_expire(redis_url: str) -> None:
    sink = Sink()
    async with open_bus(redis_url, sink, max_events=10, ttl_s=30, on_epoch=sink.on_epoch) as bus:
        await bus.subscribe("u1")
        await bus.publish("u1", {"type": "x"})
        await sink.wait_for(1)
        before = await bus.head("u1")
        client = aioredis.from_url(redis_url)
        try:
            keys = ("th:{u1}:s", "th:{u1}:n", "th:{u1}:e")
            ttls = [await client.ttl(k) for k in keys]
            assert all(0 < t <= 30 for t in ttls), ttls
            # A publish renews the TTLs once less than 99% of them is left.
            for k in keys:
                await client.expire(k, 5)
            await bus.publish("u1", {"type": "x"})
            ttls = [await client.ttl(k) for k in keys]
            assert all(25 < t <= 30 for t in ttls), ttls
            await client.flushall()
        finally:
            await client.aclose()
        assert await bus.publish("u1", {"type": "x"}) == 1
        await sink.wait_for(3)
        after = await bus.head("u1")
        assert after.epoch != before.epoch and after.offset == 1
        assert sink.epochs[-1] == ("u1", after.epoch)  # subscribers are told before the event
        with pytest.raises(ResumeFailed):
            await bus.since("u1", 1, before.epoch)


async def test_redis_delivers_across_instances_once_and_in_order(redis_url: str) -> None:
    a_sink, b_sink = Sink(), Sink()
    async with open_bus(redis_url, a_sink) as a, open_bus(redis_url, b_sink) as b, \
            open_bus(redis_url, lambda *_: None) as publisher_only:
        await a.subscribe("u1")
        await b.subscribe("u1")  # live on return: nothing published from now on is missed

        async def publish(bus: Bus, tag: str) -> None:
            for n in range(100):
                await bus.publish("u1", {"type": "x", "tag": tag, "n": n})

        await asyncio.gather(publish(a, "a"), publish(b, "b"), publish(publisher_only, "p"))
        await a_sink.wait_for(300)
        await b_sink.wait_for(300)
        for sink in (a_sink, b_sink):
            assert [o for _, o, _ in sink.got] == list(range(1, 301))
            for tag in "abp":
                assert [e["n"] for _, _, e in sink.got if e["tag"] == tag] == list(range(100))


def _tutor_event(n: int) -> dict[str, Any]:
    """A reply.delta or a material.progress event, tagged with n."""
    if n % 2:
        return {"type": "material.progress", "material_id": "m", "stage": "embed", "done": n, "total": 9, "n": n}
    return {"type": "reply.delta", "reply_id": "r1", "seq": n, "text": f"слово {n} ", "n": n}


async def test_redis_restart_recovers_resubscribes_and_catches_up(redis_proc: RedisServer, redis_url: str) -> None:
    """Redis restarted without persistence under a subscribed bus: it reconnects, events keep
    flowing in a new epoch from o = 1, and a resume from the old epoch fails as documented."""
    sink = Sink()
    async with open_bus(redis_url, sink, on_epoch=sink.on_epoch) as bus, \
            open_bus(redis_url, lambda *_: None) as publisher:
        assert isinstance(bus, RedisBus)
        await bus.subscribe("u1")
        await publisher.publish("u1", _tutor_event(0))
        await sink.wait_for(1)
        before = await bus.head("u1")
        redis_proc.stop()
        async def down() -> bool:
            return not await bus.ready()

        await until(down, 20)
        with pytest.raises(BusUnavailable):
            await publisher.publish("u1", _tutor_event(-1))
        redis_proc.start()
        # Published as soon as Redis is back, likely before the reader has resubscribed:
        # the reader replays them from history; either way each arrives once, in order.
        for n in range(1, 6):
            await publisher.publish("u1", _tutor_event(n))
        assert await bus.wait_ready(20)
        await publisher.publish("u1", _tutor_event(6))
        await sink.wait_for(7)
        assert [e["n"] for _, _, e in sink.got] == list(range(7))
        assert [o for _, o, _ in sink.got[1:]] == list(range(1, 7))  # a new epoch, from 1
        assert len(sink.epochs) == 2 and sink.epochs[0][1] != sink.epochs[1][1]
        assert [e["type"] for _, _, e in sink.got[1:3]] == ["material.progress", "reply.delta"]
        # A client that resumes from the old epoch is told to reload; from the new one it
        # gets exactly the events after its offset.
        after = await bus.head("u1")
        assert after.epoch == sink.epochs[1][1] != before.epoch and after.offset == 6
        with pytest.raises(ResumeFailed) as info:
            await bus.since("u1", before.offset, before.epoch)
        assert info.value.reason == "epoch_changed"
        assert [json.loads(f) for f in await bus.since("u1", 4, after.epoch)] == [
            {**_tutor_event(n), "o": n} for n in (5, 6)]


async def test_redis_pubsub_connection_killed_replays_what_was_missed(redis_url: str) -> None:
    from chat_server import metrics

    sink = Sink()
    reconnects = metrics.bus_reconnects._value.get()
    async with open_bus(redis_url, sink, on_epoch=sink.on_epoch) as bus, \
            open_bus(redis_url, lambda *_: None) as publisher:
        assert isinstance(bus, RedisBus)
        await bus.subscribe("u1")
        await bus.subscribe("u2")
        await publisher.publish("u1", {"type": "x", "n": 0})
        await sink.wait_for(1)
        client = aioredis.from_url(redis_url)
        try:
            assert await client.client_kill_filter(_type="pubsub") >= 1
        finally:
            await client.aclose()
        # Redis keeps running: these land in history while the reader reconnects (backoff),
        # and reach the subscriber through the catch-up, then live — once each, in order.
        for n in range(1, 51):
            await publisher.publish("u1", {"type": "x", "n": n})
            await publisher.publish("u2", {"type": "x", "n": n})
        await sink.wait_for(101)
        assert [e["n"] for u, _, e in sink.got if u == "u1"] == list(range(51))
        assert [e["n"] for u, _, e in sink.got if u == "u2"] == list(range(1, 51))
        assert len({e for _, e in sink.epochs}) == 2  # one epoch per user, never changed
        assert metrics.bus_reconnects._value.get() > reconnects
        assert await bus.wait_ready(10)


async def test_concurrent_publishes_get_offsets_in_call_order(open_test_bus: OpenBus) -> None:
    async with open_test_bus(max_events=1000) as (bus, sink):
        await bus.subscribe("u1")
        offsets = await asyncio.gather(*(bus.publish("u1", {"type": "x", "n": n}) for n in range(300)))
        assert offsets == list(range(1, 301))
        await sink.wait_for(300)
        assert [(o, e["n"]) for _, o, e in sink.got] == [(n + 1, n) for n in range(300)]
        head = await bus.head("u1")
        assert len(await bus.since("u1", 0, head.epoch)) == 300


async def test_publish_many_keeps_list_order_across_users_and_before_later_publishes(
        open_test_bus: OpenBus) -> None:
    async with open_test_bus(max_events=1000) as (bus, sink):
        await bus.subscribe("u1")
        await bus.subscribe("u2")
        events = [(f"u{1 + n % 2}", {"type": "x", "n": n}) for n in range(10)]
        many = asyncio.ensure_future(bus.publish_many(events))
        await asyncio.sleep(0)  # publish_many has queued its events; a later publish follows
        after = await bus.publish("u1", {"type": "x", "n": 10})
        assert await many == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
        assert after == 6
        assert await bus.publish_many([]) == []
        await sink.wait_for(11)
        for user in ("u1", "u2"):
            got = [(o, e["n"]) for u, o, e in sink.got if u == user]
            want = [n for n in range(11) if f"u{1 + n % 2}" == user]
            assert got == list(zip(range(1, len(want) + 1), want, strict=True))


async def test_redis_batch_publish_survives_a_script_cache_flush(redis_url: str) -> None:
    """Batches go out as EVALSHA in one pipeline; a Redis that lost its scripts (a restart,
    SCRIPT FLUSH) answers NOSCRIPT, and the batch is sent again with the script loaded."""
    sink = Sink()
    async with open_bus(redis_url, sink, max_events=100, ttl_s=30) as bus:
        await bus.subscribe("u1")
        assert await bus.publish_many([("u1", {"type": "x", "n": n}) for n in range(3)]) == [1, 2, 3]
        client = aioredis.from_url(redis_url)
        try:
            await client.script_flush()
        finally:
            await client.aclose()
        assert await bus.publish_many([("u1", {"type": "x", "n": n}) for n in range(3, 6)]) == [
            4, 5, 6]
        await sink.wait_for(6)
        assert [e["n"] for _, _, e in sink.got] == list(range(6))


async def test_redis_publishes_go_to_the_database_of_the_url(redis_url: str) -> None:
    """Publishes have a connection of their own: it selects the URL's database too."""
    db3 = redis_url.rsplit("/", 1)[0] + "/3"
    sink = Sink()
    async with open_bus(db3, sink, max_events=100, ttl_s=30) as bus:
        await bus.subscribe("u1")
        assert await bus.publish_many([("u1", {"type": "x", "n": n}) for n in range(3)]) == [
            1, 2, 3]
        assert len(await bus.since("u1", 0, (await bus.head("u1")).epoch)) == 3
        await sink.wait_for(3)
    for url, want in ((db3, b"3"), (redis_url, None)):
        client = aioredis.from_url(url)
        try:
            assert await client.get("th:{u1}:n") == want
        finally:
            await client.aclose()


async def test_one_event_that_cannot_be_encoded_fails_alone(open_test_bus: OpenBus) -> None:
    async with open_test_bus() as (bus, sink):
        await bus.subscribe("u1")
        results = await asyncio.gather(
            bus.publish("u1", {"type": "x", "n": 0}),
            bus.publish("u1", {"type": "x", "n": 1, "bad": "\ud800"}),  # not encodable
            bus.publish("u1", {"type": "x", "n": 2}), return_exceptions=True)
        assert results[0] == 1 and results[2] == 2
        assert isinstance(results[1], UnicodeEncodeError)
        await sink.wait_for(2)
        assert [e["n"] for _, _, e in sink.got] == [0, 2]


async def test_publish_many_fails_with_its_bad_event_and_publishes_the_rest(
        open_test_bus: OpenBus) -> None:
    async with open_test_bus() as (bus, sink):
        await bus.subscribe("u1")
        events: list[tuple[str, dict[str, Any]]] = [
            ("u1", {"type": "x", "n": 0}), ("u1", {"type": "x", "n": 1, "bad": "\ud800"}),
            ("u1", {"type": "x", "n": 2})]
        with pytest.raises(UnicodeEncodeError):
            await bus.publish_many(events)
        assert await bus.publish("u1", {"type": "x", "n": 3}) == 3
        await sink.wait_for(3)
        assert [(o, e["n"]) for _, o, e in sink.got] == [(1, 0), (2, 2), (3, 3)]


async def test_redis_calls_larger_than_a_batch_keep_their_order(redis_url: str) -> None:
    """Calls are batched whole, up to BATCH_MAX events (a larger call goes alone): each gets
    its own offsets, in the order the calls were made."""
    sink = Sink()
    async with open_bus(redis_url, sink, max_events=100, ttl_s=30) as bus:
        bus.BATCH_MAX = 3  # type: ignore[attr-defined]
        await bus.subscribe("u1")
        calls = [bus.publish_many([("u1", {"type": "x", "n": n}) for n in range(5)]),
                 bus.publish("u1", {"type": "x", "n": 5}),
                 bus.publish("u1", {"type": "x", "n": 6}),
                 bus.publish_many([("u1", {"type": "x", "n": n}) for n in (7, 8)]),
                 bus.publish_many([("u1", {"type": "x", "n": n}) for n in range(9, 13)])]
        assert await asyncio.gather(*calls) == [
            [1, 2, 3, 4, 5], 6, 7, [8, 9], [10, 11, 12, 13]]
        await sink.wait_for(13)
        assert [(o, e["n"]) for _, o, e in sink.got] == [(n + 1, n) for n in range(13)]


async def test_signals_reach_every_handler_and_are_not_user_events(open_test_bus: OpenBus) -> None:
    async with open_test_bus() as (bus, sink):
        got: list[dict[str, Any]] = []
        arrived = asyncio.Event()

        def handler(message: dict[str, Any]) -> None:
            got.append(message)
            arrived.set()

        def broken(message: dict[str, Any]) -> None:
            raise ZeroDivisionError  # a failing handler does not stop the others

        bus.on_signal(broken)
        bus.on_signal(handler)
        assert await bus.wait_ready(10)
        await bus.subscribe("u1")
        await bus.signal({"type": "reply.cancel", "reply_id": "r1", "user_id": "u1", "t": "ё"})
        async with asyncio.timeout(10):
            await arrived.wait()
        assert got == [{"type": "reply.cancel", "reply_id": "r1", "user_id": "u1", "t": "ё"}]
        assert sink.got == []  # no user saw it, nothing went into any history
        assert (await bus.head("u1")).offset == 0


async def test_redis_full_outbox_refuses_at_once_with_bus_unavailable(redis_url: str) -> None:
    """Publishes wait in a bounded outbox for the flusher; a call that would overfill it fails
    at once (BusFull, a BusUnavailable) and queues nothing; the calls before it publish."""
    sink = Sink()
    async with open_bus(redis_url, sink, max_events=100, ttl_s=30) as bus:
        assert isinstance(bus, RedisBus)
        bus.OUTBOX_MAX = 3
        await bus.subscribe("u1")
        # Scheduled in this order, all three run before the flusher they start can send
        # anything: the outbox holds 2, then 3 events, and the third call would make it 4.
        calls = [asyncio.ensure_future(bus.publish_many([("u1", {"type": "x", "n": n}) for n in (0, 1)])),
                 asyncio.ensure_future(bus.publish("u1", {"type": "x", "n": 2})),
                 asyncio.ensure_future(bus.publish("u1", {"type": "x", "n": -1}))]
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert results[:2] == [[1, 2], 3]
        assert isinstance(results[2], BusFull) and isinstance(results[2], BusUnavailable)
        assert "outbox is full" in str(results[2])
        assert await bus.publish("u1", {"type": "x", "n": 3}) == 4  # drained: taken again
        await sink.wait_for(4)
        assert [(o, e["n"]) for _, o, e in sink.got] == [(1, 0), (2, 1), (3, 2), (4, 3)]


async def test_memory_history_expires_ttl_after_the_last_event() -> None:
    sink = Sink()
    bus = MemoryBus(sink, max_events=10, ttl_s=0.2, on_epoch=sink.on_epoch)
    await bus.subscribe("u1")
    first = await bus.head("u1")
    assert await bus.publish("u1", {"type": "x", "n": 0}) == 1
    await bus.publish("u2", {"type": "x"})
    await asyncio.sleep(0.3)
    assert await bus.publish("u1", {"type": "x", "n": 1}) == 1  # a new history
    assert sink.epochs == [("u1", (await bus.head("u1")).epoch)] != [("u1", first.epoch)]
    assert [(o, e["n"]) for _, o, e in sink.got] == [(1, 0), (1, 1)]
    with pytest.raises(ResumeFailed) as info:
        await bus.since("u1", 1, first.epoch)
    assert info.value.reason == "epoch_changed"
    assert "u2" not in bus._histories  # idle users cost nothing


async def test_an_unknown_bus_url_scheme_is_refused() -> None:
    with pytest.raises(ValueError, match="Unsupported bus URL scheme 'http'"):
        async with open_bus("http://127.0.0.1:1/0", lambda *_: None):
            pass


async def test_rediss_url_with_certificate_options_and_auth_reaches_a_tls_redis(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """TLS and AUTH come from the URL: its ssl_ca_certs is the only CA trusted, so the right
    certificate connects (publish, history, pub/sub) and another CA's is refused."""
    folder = tmp_path_factory.mktemp("redis-tls")
    cert, key = loopback_cert_files(folder)
    other_ca, _ = loopback_cert_files(folder, "other")
    server = RedisServer(folder / "data", tls=(cert, key), password="s3cret/пароль")
    server.start()
    try:
        base = server.url.replace("s3cret/пароль", "s3cret%2F%D0%BF%D0%B0%D1%80%D0%BE%D0%BB%D1%8C")
        sink = Sink()
        async with open_bus(f"{base}?ssl_cert_reqs=required&ssl_ca_certs={cert}", sink) as bus:
            assert await bus.wait_ready(10)
            await bus.subscribe("u1")
            assert await bus.publish("u1", {"type": "material.ready", "material_id": "m"}) == 1
            await sink.wait_for(1)
            assert [json.loads(f)["o"] for f in await bus.since("u1", 0, (await bus.head("u1")).epoch)] == [1]
        async with open_bus(f"{base}?ssl_cert_reqs=required&ssl_ca_certs={other_ca}", Sink()) as bus:
            with pytest.raises(BusUnavailable, match="certificate verify failed"):
                await bus.publish("u1", {"type": "material.ready", "material_id": "m"})
            assert not await bus.wait_ready(0.3)
    finally:
        server.stop()


async def test_redis_pubsub_connection_that_stops_answering_is_replaced(redis_url: str) -> None:
    """A pub/sub connection that is open but silent (Redis paused) is pinged, given up after
    twice the ping interval, and replaced; nothing published meanwhile is lost."""
    from chat_server import metrics

    sink = Sink()
    reconnects = metrics.bus_reconnects._value.get()
    async with open_bus(redis_url, sink, on_epoch=sink.on_epoch) as bus, \
            open_bus(redis_url, lambda *_: None) as publisher:
        assert isinstance(bus, RedisBus)
        bus.PING_EVERY_S = 0.2
        await bus.subscribe("u1")
        await publisher.publish("u1", {"type": "x", "n": 0})
        await sink.wait_for(1)
        client = aioredis.from_url(redis_url)
        try:
            await client.client_pause(1000)  # every client's commands wait, PING too
        finally:
            await client.aclose()

        async def gave_up() -> bool:
            return metrics.bus_reconnects._value.get() > reconnects

        await until(gave_up, 10, 0.02)
        await publisher.publish("u1", {"type": "x", "n": 1})  # waits out the pause
        assert await bus.wait_ready(20)
        await publisher.publish("u1", {"type": "x", "n": 2})
        await sink.wait_for(3)
        assert [(o, e["n"]) for _, o, e in sink.got] == [(1, 0), (2, 1), (3, 2)]


async def test_redis_idle_pubsub_connection_that_answers_its_pings_is_kept(redis_url: str) -> None:
    """Pinged while silent (this bus publishes but subscribes to nobody), it answers every
    time: never given up, however the watchdog's wakeups fall."""
    from chat_server import metrics

    reconnects = metrics.bus_reconnects._value.get()
    async with open_bus(redis_url, lambda *_: None) as bus:
        assert isinstance(bus, RedisBus)
        bus.PING_EVERY_S = 0.03
        assert await bus.wait_ready(10)
        loop = asyncio.get_running_loop()
        until_t = loop.time() + 1.0
        n = 0
        while loop.time() < until_t:  # a busy loop: the watchdog wakes late, by varying amounts
            n += 1
            await bus.publish("nobody", {"type": "x", "n": n})
        assert metrics.bus_reconnects._value.get() == reconnects
        assert await bus.ready()
