"""The Redis engine (`redis://`, `rediss://`, `unix://`): redis-py's asyncio client with hiredis.

One client library for everything: `BlockingConnectionPool.from_url` reads the URL (database,
AUTH user and password, TLS with its `ssl_cert_reqs` / `ssl_ca_certs` / … query options);
publishes go out as EVALSHA in redis-py pipelines; live events arrive through redis-py's
PubSub; a connection that fails is reconnected by the pool on its next use.

Redis layout per user (the `{uid}` hash tag keeps a user's keys in one cluster slot):
`th:{uid}:s` capped stream whose entry IDs are `<offset>-0` and whose field `e` is the event
JSON without its offset (`codec.event_json`), `th:{uid}:n` offset counter, `th:{uid}:e`
epoch, channel `th:{uid}`. All three keys expire `ttl_s` after the last event (their TTLs are
renewed when less than 99% is left: one TTL check per publish instead of three EXPIREs; a
history may end 1% early). The epoch is random and recreated (with counter and stream)
whenever it is gone, so a flushed or expired history is never mistaken for the old one.
A pub/sub message is `<offset> <epoch> <event JSON>`: the event exactly as stored, after a
header the subscriber splits off; `codec.frame_from_json` makes the wire frame.

Bounded buffers and what happens when one is full:
- the outbox (publish calls waiting for the flusher): at most OUTBOX_MAX events; a call that
  would go past it fails at once with BusFull and queues nothing (a call alone is always
  taken). Full means Redis is slower than the publishers: failing fast is the backpressure.
- held messages (live events read while a reconnect waits for its SUBSCRIBE confirmations):
  at most HELD_MAX; past it that reconnect attempt fails with BusFull and is retried with
  backoff — the next attempt's catch-up reads what was dropped from history.
- no per-subscriber queue: messages go to `Deliver` synchronously as they are read (the hub
  bounds each socket's queue). What waits unread is bounded by Redis's
  `client-output-buffer-limit pubsub` (32 MB by default): past it Redis drops the
  connection, and the reader reconnects and catches up from history.
- connections: a pool of POOL_MAX; a caller waits up to POOL_WAIT_S for one, then fails with
  BusUnavailable.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from chat_server.bus.base import (
    Bus,
    BusFull,
    BusUnavailable,
    Deliver,
    Event,
    OnEpoch,
    StreamHead,
    check_since,
    new_epoch,
    observe_publish,
    trimmed,
)
from chat_server.protocol import codec

if TYPE_CHECKING:
    from redis.asyncio.client import PubSub

log = logging.getLogger("chat_server.bus")
T = TypeVar("T")

# KEYS: stream, counter, epoch. ARGV: event JSON, epoch candidate, maxlen, ttl, channel.
_PUBLISH = """
local e = redis.call('GET', KEYS[3])
if not e then
  e = ARGV[2]
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('SET', KEYS[3], e)
end
local o = redis.call('INCR', KEYS[2])
redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[3], o .. '-0', 'e', ARGV[1])
local ttl = tonumber(ARGV[4])
if redis.call('TTL', KEYS[3]) < ttl * 0.99 then
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[2], ttl)
  redis.call('EXPIRE', KEYS[3], ttl)
end
redis.call('PUBLISH', ARGV[5], o .. ' ' .. e .. ' ' .. ARGV[1])
return o
"""

# KEYS: stream, counter, epoch. ARGV: epoch candidate, ttl. Returns {epoch, offset}.
_HEAD = """
local e = redis.call('GET', KEYS[3])
if not e then
  e = ARGV[1]
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('SET', KEYS[3], e, 'EX', tonumber(ARGV[2]))
end
local n = tonumber(redis.call('GET', KEYS[2]) or '0')
return {e, n}
"""

# KEYS: stream, counter, epoch. ARGV: offset. Returns {epoch or '', head offset, then entry
# ID and event JSON of each event after the offset} — the events only when the stream still
# holds every one of them; else the head offset is -(head + 1). An offset outside 0..head
# returns no events (check_since refuses it): below -1 it would be no stream ID, and XRANGE's
# error would pass for Redis being unreachable.
_SINCE = """
local e = redis.call('GET', KEYS[3]) or ''
local n = tonumber(redis.call('GET', KEYS[2]) or '0')
local since = tonumber(ARGV[1])
local out = {e, n}
if e == '' or since >= n or since < 0 then return out end
local entries = redis.call('XRANGE', KEYS[1], (since + 1) .. '-0', '+')
if #entries == 0 or entries[1][1] ~= ((since + 1) .. '-0') then
  out[2] = -n - 1
  return out
end
for _, entry in ipairs(entries) do
  out[#out + 1] = entry[1]
  out[#out + 1] = entry[2][2]
end
return out
"""

# Control messages between instances (e.g. cancel a reply streaming elsewhere). Not a user
# channel: user channels are th:{uid}.
SIGNAL_CHANNEL = "th:signal"
_SIGNAL_CHANNEL_B = SIGNAL_CHANNEL.encode()


def _keys(user: bytes) -> tuple[bytes, bytes, bytes]:
    return b"th:{%s}:s" % user, b"th:{%s}:n" % user, b"th:{%s}:e" % user


def _channel(user_id: str) -> bytes:
    return b"th:{%s}" % user_id.encode()


def _user_of(channel: bytes) -> str:
    return channel[4:-1].decode()  # th:{<user>}


def _offset_of(entry_id: bytes) -> int:
    return int(entry_id.partition(b"-")[0])  # stream entry IDs are <offset>-0


@dataclass
class _Sub:
    refs: int
    epoch: str | None = None  # epoch of the last delivered event (None: none yet)
    last: int = 0  # offset of the last delivered event
    live: asyncio.Future[None] | None = None  # resolved on the SUBSCRIBE confirmation


@dataclass(slots=True)
class _Outgoing:
    """One publish / publish_many call waiting in the outbox: each event encoded, or the
    error that kept it from being encoded."""

    events: list[tuple[bytes, bytes] | Exception]  # (user id, event JSON)
    epoch: bytes  # the candidate for a user whose history is gone (see _PUBLISH)
    fut: asyncio.Future[list[int]]


class RedisBus(Bus):
    """Publishes through a Lua script; one PubSub per instance, read by one reader task.

    The reader owns the PubSub: on any failure it logs loudly, reports not-ready,
    reconnects with exponential backoff (reset after a success), resubscribes every user
    and replays from history what each user missed while it was deaf.
    """

    # Publishes per pipeline. One flush tick of 500 streaming replies fits in one: split in
    # two, the second half waits for the first half's replies before it is sent.
    BATCH_MAX = 1024
    OUTBOX_MAX = 8 * 1024  # events waiting for the flusher (BusFull beyond)
    HELD_MAX = 10_000  # live messages held during a reconnect (that attempt fails beyond)
    POOL_MAX = 64
    POOL_WAIT_S = 5.0
    SOCKET_TIMEOUT_S = 5.0
    PING_EVERY_S = 5.0  # a silent pub/sub connection is pinged; no answer in time → reconnect
    BACKOFF_MIN_S = 0.05
    BACKOFF_MAX_S = 5.0

    def __init__(self, url: str, deliver: Deliver, *, max_events: int, ttl_s: int,
                 on_epoch: OnEpoch | None = None) -> None:
        super().__init__()
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        self._deliver = deliver
        self._on_epoch = on_epoch
        self._ttl = ttl_s
        # No silent retries (Retry with 0 retries): a retried script could publish twice, and
        # a silently reconnected PubSub would skip what was published meanwhile. A blocking
        # pool: under a burst, callers wait for a connection instead of failing at once. No
        # socket timeout: redis-py would arm a timer for every reply read (500 for a pipeline
        # of 500 publishes); each call is bounded as a whole by SOCKET_TIMEOUT_S instead.
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=self.POOL_MAX, timeout=self.POOL_WAIT_S,
            socket_connect_timeout=2, socket_timeout=None, retry=Retry(NoBackoff(), 0),
        )
        self._redis = aioredis.Redis(connection_pool=pool)
        self._publish = self._redis.register_script(_PUBLISH)
        self._head = self._redis.register_script(_HEAD)
        self._since = self._redis.register_script(_SINCE)
        self._fixed = (b"%d" % max_events, b"%d" % ttl_s)  # maxlen, ttl of every publish
        self._subs: dict[str, _Sub] = {}
        self._pubsub: PubSub | None = None  # set while connected
        # One entry per publish / publish_many call, with one future: a flush tick of 500
        # replies waits on one future, not on 500 gathered ones.
        self._outbox: list[_Outgoing] = []
        self._queued = 0  # events in the outbox
        self._flusher: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._ever_connected = False

    # lifecycle
    async def start(self) -> None:
        self._reader = asyncio.create_task(self._read_forever(), name="bus-reader")

    async def close(self) -> None:
        if self._flusher is not None:
            with suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._flusher, 5)
        for out in self._outbox:
            if not out.fut.done():
                out.fut.set_exception(BusUnavailable("The bus is closed."))
        self._outbox, self._queued = [], 0
        if self._reader is not None:
            self._reader.cancel()
            with suppress(asyncio.CancelledError):
                await self._reader
        await self._redis.aclose()
        # A pool passed in explicitly is not closed by aclose().
        await self._redis.connection_pool.disconnect()

    async def ready(self) -> bool:
        return self._connected.is_set()

    async def wait_ready(self, wait_s: float) -> bool:
        with suppress(TimeoutError):
            await asyncio.wait_for(self._connected.wait(), wait_s)
        return self._connected.is_set()

    async def signal(self, message: dict[str, Any]) -> None:
        await self._call(self._redis.publish(SIGNAL_CHANNEL, codec.signal_json(message)))

    async def _call(self, call: Awaitable[T]) -> T:
        """One call to Redis, bounded by SOCKET_TIMEOUT_S; its failure is BusUnavailable."""
        from redis.exceptions import RedisError

        try:
            async with asyncio.timeout(self.SOCKET_TIMEOUT_S):
                return await call
        except (RedisError, OSError) as exc:  # TimeoutError is an OSError
            raise BusUnavailable(f"Redis is unreachable ({type(exc).__name__}: {exc})") from exc

    # publishing
    async def publish(self, user_id: str, event: Event) -> int:
        # Concurrent publishes of this process go out together in one pipeline (one round
        # trip), one batch at a time: fewer syscalls, and publish order is kept per process.
        return (await self._enqueue([(user_id, event)]))[0]

    async def publish_many(self, events: Sequence[tuple[str, Event]]) -> list[int]:
        return await self._enqueue(events) if events else []

    def _enqueue(self, events: Sequence[tuple[str, Event]]) -> asyncio.Future[list[int]]:
        if self._queued and self._queued + len(events) > self.OUTBOX_MAX:
            raise BusFull(f"The bus outbox is full ({self._queued} events wait for Redis); "
                          "try again later.")
        encoded: list[tuple[bytes, bytes] | Exception] = []
        for user_id, event in events:
            try:
                encoded.append((user_id.encode(), codec.event_json(event)))
            except (ValueError, TypeError) as exc:  # this event fails; the others go out
                encoded.append(exc)
        fut: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        # One epoch candidate per call: it only matters to a user whose history is gone, and
        # a user's epoch need not differ from other users'.
        self._outbox.append(_Outgoing(encoded, new_epoch().encode(), fut))
        self._queued += len(encoded)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return fut

    def _next_batch(self) -> list[_Outgoing]:
        """The oldest calls, up to BATCH_MAX events (a larger call goes alone, whole)."""
        take, count = 0, 0
        for out in self._outbox:
            if take and count + len(out.events) > self.BATCH_MAX:
                break
            take, count = take + 1, count + len(out.events)
        batch, self._outbox = self._outbox[:take], self._outbox[take:]
        self._queued -= count
        return batch

    async def _flush(self) -> None:
        from redis.exceptions import RedisError

        while self._outbox:
            batch = self._next_batch()
            started = time.perf_counter()
            try:
                async with asyncio.timeout(self.SOCKET_TIMEOUT_S):
                    results = await self._publish_batch(batch)
            except (RedisError, OSError) as exc:  # TimeoutError is an OSError
                for out in batch:
                    if not out.fut.done():
                        out.fut.set_exception(BusUnavailable(
                            f"Redis is unreachable ({type(exc).__name__}: {exc})"))
                continue
            except Exception as exc:
                for out in batch:
                    if not out.fut.done():
                        out.fut.set_exception(exc)
                continue
            observe_publish(time.perf_counter() - started)  # once per round trip, not per event
            at = 0
            for out in batch:
                mine = results[at:at + len(out.events)]
                at += len(out.events)
                if out.fut.done():
                    continue
                # A call fails with its first failed event (the others are published).
                failed = next((r for r in mine if isinstance(r, Exception)), None)
                if failed is not None:
                    out.fut.set_exception(failed)
                else:
                    out.fut.set_result([int(r) for r in mine])

    async def _publish_batch(self, batch: list[_Outgoing]) -> list[Any]:
        """Each event's offset, or the exception for that one event, in the batch's order."""
        from redis.exceptions import NoScriptError, ResponseError

        results: list[Any] = []
        commands: list[tuple[int, tuple[bytes, ...]]] = []  # (index in results, arguments)
        maxlen, ttl = self._fixed
        for out in batch:
            for item in out.events:
                if isinstance(item, Exception):
                    results.append(item)
                    continue
                user, event = item
                commands.append((len(results), (*_keys(user), event, out.epoch, maxlen, ttl,
                                                b"th:{%s}" % user)))
                results.append(None)
        if not commands:
            return results
        # EVALSHA of the registered script's SHA, not the Script object: called on a pipeline
        # it would add a SCRIPT EXISTS round trip to every batch. A Redis that lost its
        # scripts (a restart, SCRIPT FLUSH) answers NOSCRIPT without running anything: those
        # are sent again, in order, once the script is loaded.
        replies = await self._pipeline(commands)
        again = [k for k, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if again:
            await self._redis.script_load(_PUBLISH)
            for k, reply in zip(again, await self._pipeline([commands[k] for k in again]),
                                strict=True):
                replies[k] = reply
        for (i, _), reply in zip(commands, replies, strict=True):
            results[i] = (BusUnavailable(f"Redis refused the event: {reply}")
                          if isinstance(reply, ResponseError) else reply)
        return results

    async def _pipeline(self, commands: list[tuple[int, tuple[bytes, ...]]]) -> list[Any]:
        pipe = self._redis.pipeline(transaction=False)
        sha = self._publish.sha
        for _, args in commands:
            pipe.evalsha(sha, 3, *args)
        return await pipe.execute(raise_on_error=False)

    # history
    async def head(self, user_id: str) -> StreamHead:
        epoch, offset = await self._call(self._head(keys=_keys(user_id.encode()),
                                                    args=[new_epoch(), self._ttl]))
        return StreamHead(epoch.decode(), int(offset))

    async def _range(self, user_id: str, offset: int) -> tuple[str, int, list[tuple[int, bytes]]]:
        """(epoch or '', head offset or -(head+1) when trimmed, (offset, event JSON) of the
        events after offset)."""
        out = await self._call(self._since(keys=_keys(user_id.encode()), args=[offset]))
        events = [(_offset_of(out[i]), out[i + 1]) for i in range(2, len(out), 2)]
        return out[0].decode(), int(out[1]), events

    async def since(self, user_id: str, offset: int, epoch: str) -> list[str]:
        current, head, events = await self._range(user_id, offset)
        if head < 0:
            check_since(epoch, StreamHead(current, -head - 1), offset)
            raise trimmed()
        check_since(epoch, StreamHead(current, head), offset)
        return [codec.frame_from_json(event, o) for o, event in events]

    # subscriptions
    async def subscribe(self, user_id: str) -> None:
        sub = self._subs.get(user_id)
        if sub is not None:
            sub.refs += 1
        else:
            sub = self._subs[user_id] = _Sub(refs=1)
            sub.live = asyncio.get_running_loop().create_future()
            if self._connected.is_set() and self._pubsub is not None:
                await self._send(self._pubsub.subscribe(_channel(user_id)))
            # else: the reader subscribes every user in self._subs when it (re)connects
        live = sub.live
        if live is not None and not live.done():
            # Outage: wait for the reader to resubscribe; a caller gives up by cancelling.
            await asyncio.shield(live)

    async def unsubscribe(self, user_id: str) -> None:
        sub = self._subs.get(user_id)
        if sub is None:
            return
        sub.refs -= 1
        if sub.refs > 0:
            return
        del self._subs[user_id]
        if sub.live is not None and not sub.live.done():
            sub.live.cancel()
        if self._connected.is_set() and self._pubsub is not None:
            await self._send(self._pubsub.unsubscribe(_channel(user_id)))

    async def _send(self, command: Any) -> None:
        """A (un)subscribe on the reader's PubSub. If the connection fails meanwhile, the
        reader notices and resubscribes everyone; the caller need not know."""
        from redis.exceptions import RedisError

        with suppress(RedisError, OSError):
            await command

    # the reader
    async def _read_forever(self) -> None:
        from chat_server.metrics import bus_reconnects

        backoff = self.BACKOFF_MIN_S
        while True:
            pubsub = self._redis.pubsub()
            try:
                await self._run(pubsub)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                was_up = self._connected.is_set()
                self._connected.clear()
                self._pubsub = None
                if was_up or not self._ever_connected:
                    log.error("BUS DOWN: lost the Redis pub/sub connection (%s: %s); this "
                              "instance is NOT READY and reconnects with backoff",
                              type(exc).__name__, exc)
                else:
                    log.warning("bus: reconnect failed (%s: %s); retrying in %.2fs",
                                type(exc).__name__, exc, backoff)
                bus_reconnects.inc()
                if was_up:
                    backoff = self.BACKOFF_MIN_S  # a connection that worked resets the backoff
                with suppress(Exception):
                    await pubsub.aclose()
                await asyncio.sleep(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, self.BACKOFF_MAX_S)
            finally:
                self._connected.clear()
                self._pubsub = None
                with suppress(Exception):
                    await pubsub.aclose()

    async def _run(self, pubsub: PubSub) -> None:
        deaf = list(self._subs)  # subscribed before: may have missed events
        sent = set(deaf)
        # After a loss, live messages are held while we catch up, then released in order
        # (deduped by offset).
        holding = self._ever_connected
        held: list[dict[str, Any]] = []
        # Connecting (and its AUTH/HELLO) and the confirmations, bounded as a whole.
        async with asyncio.timeout(self.SOCKET_TIMEOUT_S):
            await pubsub.subscribe(SIGNAL_CHANNEL, *[_channel(u) for u in deaf])
            waiting = 1 + len(deaf)
            while waiting:  # every SUBSCRIBE above confirmed: no event after this is missed
                msg = await pubsub.get_message(timeout=None)
                if msg is None:
                    continue
                if msg["type"] == "subscribe":
                    waiting -= 1
                if (holding and msg["type"] == "message"
                        and msg["channel"] != _SIGNAL_CHANNEL_B):
                    if len(held) >= self.HELD_MAX:
                        raise BusFull(f"More than {self.HELD_MAX} live events arrived while "
                                      "resubscribing; catching up from history instead")
                    held.append(msg)
                else:
                    self._on_message(msg)
        if self._ever_connected:
            await self._catch_up(deaf)
        while missing := [u for u in self._subs if u not in sent]:  # subscribed meanwhile
            sent.update(missing)
            await pubsub.subscribe(*[_channel(u) for u in missing])
        self._pubsub = pubsub
        self._connected.set()  # no await since the last check: no subscriber slips through
        for msg in held:
            self._on_message(msg)
        del held
        if self._ever_connected:
            log.warning("BUS UP: Redis pub/sub reconnected, %d users resubscribed",
                        len(self._subs))
        self._ever_connected = True
        await self._listen(pubsub)

    async def _listen(self, pubsub: PubSub) -> None:
        """Return never; raise when the connection is lost or stops answering.

        Messages are read without a timeout (a timeout armed per read costs more than the
        rest of a message's handling); a watchdog beside the reader pings a connection silent
        for PING_EVERY_S and gives up on it when nothing came back PING_EVERY_S later."""
        heard = time.monotonic()

        async def read() -> None:
            nonlocal heard
            while True:
                msg = await pubsub.get_message(timeout=None)
                heard = time.monotonic()
                if msg is not None:
                    self._on_message(msg)

        async def watch() -> None:
            while True:
                await asyncio.sleep(self.PING_EVERY_S)
                if time.monotonic() - heard < self.PING_EVERY_S:
                    continue  # messages arrive: the connection answers
                asked = time.monotonic()
                async with asyncio.timeout(self.PING_EVERY_S):  # a write that hangs, too
                    await pubsub.ping()
                await asyncio.sleep(self.PING_EVERY_S)
                if heard < asked:  # given up only on a PING left unanswered
                    raise TimeoutError("Redis did not answer a PING on the pub/sub connection")

        tasks = [asyncio.create_task(read(), name="bus-read"),
                 asyncio.create_task(watch(), name="bus-watch")]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # raises what ended it
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _catch_up(self, users: list[str]) -> None:
        for user_id in users:
            sub = self._subs.get(user_id)
            if sub is None:
                continue
            epoch, head, events = await self._range(user_id, sub.last)
            if head < 0 or (epoch and epoch != sub.epoch):
                # Trimmed or a new epoch: deliver what history holds (the hub dedupes).
                epoch, head, events = await self._range(user_id, 0)
            for offset, event in events:
                self._dispatch(user_id, offset, epoch, event)

    def _on_message(self, msg: dict[str, Any]) -> None:
        try:
            kind = msg["type"]
            if kind == "message":
                channel = msg["channel"]
                if channel == _SIGNAL_CHANNEL_B:
                    message = codec.signal_from_json(msg["data"])
                    if message is None:
                        log.warning("bus: a signal that is not a JSON object was ignored")
                    else:
                        self._signalled(message)
                    return
                offset, epoch, event = msg["data"].split(b" ", 2)
                self._dispatch(_user_of(channel), int(offset), epoch.decode(), event)
            elif kind == "subscribe" and msg["channel"] != _SIGNAL_CHANNEL_B:
                sub = self._subs.get(_user_of(msg["channel"]))
                if sub is not None and sub.live is not None and not sub.live.done():
                    sub.live.set_result(None)
        except Exception:  # a bad message must not kill the reader
            log.exception("bus: failed to dispatch a pub/sub message")

    def _dispatch(self, user_id: str, offset: int, epoch: str, event: bytes) -> None:
        sub = self._subs.get(user_id)
        if sub is None:
            return
        if sub.epoch != epoch:
            if self._on_epoch is not None:
                self._on_epoch(user_id, epoch)
            sub.epoch, sub.last = epoch, 0
        elif offset <= sub.last:
            return  # already delivered (catch-up and live overlap)
        sub.last = offset
        decoded = codec.decode_event(event)
        self._deliver(user_id, offset, codec.frame_of(decoded, offset), decoded["type"])
