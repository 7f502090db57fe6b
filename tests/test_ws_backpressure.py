"""Backpressure: a reader that stops reading is closed with 4408 while the user's other
sockets keep streaming and memory stays bounded; coalescing of queued reply.delta."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import psutil
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from chat_server import metrics
from chat_server.app import create_app
from chat_server.hub.connection import Conn, State
from chat_server.hub.hub import Hub
from chat_server.protocol import codec
from chat_server.settings import Settings
from tests.support.services import serve_app
from tests.support.ws import new_user, recv, socket, ws_url


@pytest.mark.parametrize("engine", ["memory", "redis"])
async def test_slow_reader_is_closed_4408_others_keep_streaming_memory_bounded(
    settings: Settings, redis_url: str, engine: str
) -> None:
    max_bytes = 65_536
    s = settings.model_copy(update={
        "redis_url": redis_url if engine == "redis" else None, "history_max_events": 100,
        "ws_send_queue_max_bytes": max_bytes, "ws_send_queue_max_frames": 200,
    })
    app = create_app(s)
    async with serve_app(app) as base:
        uid, token = await new_user(base)
        hub: Hub = app.state.hub
        bus = app.state.bus
        overflows_before = metrics.ws_send_queue_overflows._value.get()
        # The slow reader never calls recv() (until the end): its kernel buffers fill up.
        async with connect(ws_url(base), max_queue=1, close_timeout=5) as slow, socket(base, token) as (fast, _):
            await slow.send(json.dumps({"type": "auth", "token": token}))
            total, chunk = 6000, "ж" * 1000  # 2 KB per event, 12 MB in all
            received: list[int] = []

            async def reader() -> None:
                while len(received) < total:
                    received.append((await recv(fast))["o"])

            reading = asyncio.create_task(reader())
            proc = psutil.Process()
            rss_before = proc.memory_info().rss
            peak_queued = 0
            for i in range(1, total + 1):
                await bus.publish(uid, {"type": "material.progress", "material_id": "m", "stage": chunk, "done": i, "total": total})
                peak_queued = max(peak_queued, hub.queued_bytes())
                if i % 20 == 0:
                    await asyncio.sleep(0.002)
            await asyncio.wait_for(reading, 60)
            rss_growth = proc.memory_info().rss - rss_before
            assert received == list(range(1, total + 1))  # the fast socket missed nothing
            assert metrics.ws_send_queue_overflows._value.get() == overflows_before + 1
            assert peak_queued <= 2 * (max_bytes + 4096)
            assert rss_growth < 8_000_000, rss_growth  # vs 12 MB pushed at the slow socket
            assert len(hub.users[uid].conns) == 1  # only the fast socket is left
            # When the slow reader finally reads: what was in flight, then close 4408.
            with pytest.raises(ConnectionClosed) as info:
                while True:
                    await asyncio.wait_for(slow.recv(), 10)
            assert info.value.rcvd is not None and info.value.rcvd.code == 4408


def _delta(reply: str, seq: int, offset: int) -> str:
    return codec.frame({"type": "reply.delta", "reply_id": reply, "seq": seq, "text": f"ч{seq} "}, offset)


async def test_queued_deltas_of_one_reply_are_coalesced(settings: Settings) -> None:
    hub = Hub(settings)
    sent: list[dict[str, Any]] = []
    gate, four = asyncio.Event(), asyncio.Event()

    async def send(message: dict[str, Any]) -> None:
        await gate.wait()  # a transport that is not writable yet
        sent.append(json.loads(message["text"]))
        if len(sent) == 4:
            four.set()

    conn = Conn(hub, send, "u1", "s1", expires_at=2e9)
    hub.attach(conn)
    conn.activate("e1", 0, [], [])
    conn.start()
    offset = 0
    for seq in range(1, 21):  # the first is taken by the blocked writer, the rest merge
        offset += 1
        frame = _delta("r1", seq, offset)
        conn.push(offset, frame, len(frame.encode()))
        await asyncio.sleep(0)
    offset += 1
    other = codec.frame({"type": "reply.end", "reply_id": "r1", "finish_reason": "stop"}, offset)
    conn.push(offset, other, len(other))
    for seq in (1, 2):  # a different reply after a non-delta: not merged across it
        offset += 1
        frame = _delta("r2", seq, offset)
        conn.push(offset, frame, len(frame.encode()))
    assert len(conn.queue) == 3
    gate.set()
    await asyncio.wait_for(four.wait(), 10)
    assert sent[0] == {"type": "reply.delta", "reply_id": "r1", "seq": 1, "text": "ч1 ", "o": 1}
    assert sent[1] == {"type": "reply.delta", "reply_id": "r1", "seq": 20, "parts": 19, "o": 20,
                       "text": "".join(f"ч{i} " for i in range(2, 21))}
    assert sent[2]["type"] == "reply.end" and sent[2]["o"] == 21
    assert sent[3]["parts"] == 2 and sent[3]["text"] == "ч1 ч2 " and sent[3]["o"] == 23
    await conn.finish()


async def test_queue_over_its_frame_limit_is_dropped_and_closed(settings: Settings) -> None:
    hub = Hub(settings.model_copy(update={"ws_send_queue_max_frames": 5}))
    closes: list[int] = []
    gate = asyncio.Event()

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "websocket.close":
            closes.append(message["code"])
            return
        await gate.wait()

    conn = Conn(hub, send, "u1", "s1", expires_at=2e9)
    hub.attach(conn)
    conn.activate("e1", 0, [], [])
    conn.start()
    for offset in range(1, 10):
        frame = codec.frame({"type": "material.ready", "material_id": str(offset)}, offset)
        conn.push(offset, frame, len(frame))
        await asyncio.sleep(0)
    assert conn.state is State.CLOSING and not conn.queue and conn.nbytes == 0
    assert "u1" not in hub.users
    assert conn.closer is not None
    await conn.closer
    assert closes == [4408]
    await conn.finish()


async def test_overflow_during_fan_out_does_not_skip_the_next_socket(settings: Settings) -> None:
    """The socket that overflows is closed inside the fan-out loop; its neighbour still gets the event."""
    hub = Hub(settings.model_copy(update={"ws_send_queue_max_frames": 3}))
    blocked = asyncio.Event()
    got: list[int] = []

    async def stuck(message: dict[str, Any]) -> None:
        if message["type"] == "websocket.send":
            await blocked.wait()

    async def fine(message: dict[str, Any]) -> None:
        if message["type"] == "websocket.send":
            got.append(json.loads(message["text"])["o"])

    slow = Conn(hub, stuck, "u1", "slow", expires_at=2e9)
    fast = Conn(hub, fine, "u1", "fast", expires_at=2e9)
    for conn in (slow, fast):
        hub.attach(conn)
        conn.activate("e1", 0, [], [])
        conn.start()
    for offset in range(1, 8):
        hub.deliver("u1", offset, codec.frame({"type": "material.ready", "material_id": "m"}, offset))
        for _ in range(3):
            await asyncio.sleep(0)  # the fast socket's writer keeps up; the slow one is stuck
    assert slow.state is State.CLOSING and slow.close_code == 4408
    assert got == list(range(1, 8))
    assert [c.session_id for c in hub.users["u1"].conns] == ["fast"]
    for conn in (slow, fast):
        await conn.finish()


async def test_an_idle_socket_gets_frames_written_at_once_and_in_order(settings: Settings) -> None:
    """Pre-framed sockets: with nothing queued, fan-out writes the frame itself (no writer
    task wakeup); when the socket cannot take it, it queues, and what follows queues behind
    it — the order on the wire is the order of the events."""
    from chat_server.hub.fastpath import EXTENSION, text_frame

    hub = Hub(settings)
    wire: list[bytes] = []
    writable = True

    def write_now(data: bytes) -> bool:
        if writable:
            wire.append(data)
        return writable

    gate, wrote = asyncio.Event(), asyncio.Event()

    async def send(message: dict[str, Any]) -> None:  # the writer task's way, when queued
        assert message["type"] == EXTENSION
        await gate.wait()
        wire.append(message["data"])
        wrote.set()

    conn = Conn(hub, send, "u1", "s1", expires_at=2e9, raw=True, write_now=write_now)
    hub.attach(conn)
    conn.activate("e1", 0, [], [])
    conn.start()
    await asyncio.sleep(0)  # the writer waits for frames

    def push(offset: int) -> bytes:
        text = codec.frame({"type": "x", "n": offset}, offset)
        frame = text_frame(text.encode())
        conn.push(offset, text, len(text.encode()), frame)
        return frame

    first = push(1)
    assert wire == [first] and not conn.queue  # written in the fan-out's turn
    writable = False
    queued = [push(2), push(3)]
    writable = True
    queued.append(push(4))  # writable again, but behind queued frames: queued too
    assert wire == [first] and len(conn.queue) == 3
    gate.set()
    await asyncio.wait_for(wrote.wait(), 10)
    assert wire[1:] == [b"".join(queued)]  # the writer sends the backlog in one write
    await asyncio.sleep(0)
    last = push(5)  # idle again: at once
    assert wire[-1] == last and hub.frames_out == 5
    await conn.finish()
