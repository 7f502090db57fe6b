"""The lean load generator for bench_hub.py: raw-asyncio WebSocket clients and a publisher.

Runs in separate processes (multiprocessing, spawn) driven over a Pipe by bench_hub.py.
The client (load_tests/wsclient.py: just enough RFC 6455) speaks two dialects: Tutorhub's
/ws/v1 and Socket.IO (Engine.IO v4) for the comparison. Per frame it only finds `"ts":` and the sequence number with bytes.find — no JSON parsing — so
the generator's own CPU stays small next to the server's.
"""

from __future__ import annotations

import asyncio
import resource
import time
from typing import Any

from load_tests.wsclient import RawWebSocket

HIST_MAX = 100_000  # latency histogram buckets of 0.1 ms (10 s)


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Stats:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.delivered = 0
        self.gaps = 0
        self.dups = 0
        self.hist = [0] * (HIST_MAX + 1)
        self.timeline: dict[int, float] = {}  # quarter-second → worst latency seen (s)


class Client(RawWebSocket):
    """One socket. dialect: "hub" (auth frame, JSON events with "o") or "sio"."""

    def __init__(self, dialect: str, path: str, host: str, hello: bytes, stats: Stats,
                 opened: asyncio.Future[Any]) -> None:
        super().__init__(path, host, opened)
        self.dialect = dialect
        self.hello = hello  # the auth frame (hub) or the namespace connect packet (sio)
        self.stats = stats
        self.last = 0  # last sequence number seen (o for hub, n for sio)
        self.user: str | None = None

    def on_open(self) -> None:
        if self.dialect == "hub":
            self.send_text(self.hello)

    def on_text(self, p: bytes) -> None:
        i = p.find(b'"ts":')
        if i >= 0:
            now = time.time()
            j = p.find(b",", i)
            ts = float(p[i + 5:j])
            stats = self.stats
            b = int((now - ts) * 10_000)
            stats.hist[b if b < HIST_MAX else HIST_MAX] += 1
            q = int(now * 4)
            if now - ts > stats.timeline.get(q, 0.0):
                stats.timeline[q] = now - ts
            stats.delivered += 1
            if self.dialect == "hub":
                k = p.rfind(b'"o":')
                seq = int(p[k + 4:-1])
            else:
                k = p.find(b'"n":')
                seq = int(p[k + 4:p.find(b",", k)])
            if seq == self.last + 1 or self.last == 0:
                pass
            elif seq <= self.last:
                stats.dups += 1
            else:
                stats.gaps += seq - self.last - 1
            self.last = seq
            return
        if self.dialect == "hub":
            if p.startswith(b'{"type":"ping"'):
                self.send_text(b'{"type":"pong"}')
            elif p.startswith(b'{"type":"welcome"'):
                i = p.find(b'"user_id":"') + 11
                self.user = p[i:p.find(b'"', i)].decode()
                if not self.opened.done():
                    self.opened.set_result(self)
        else:
            if p == b"2":
                self.send_text(b"3")
            elif p.startswith(b"0{"):
                self.send_text(self.hello)
            elif p.startswith(b"40"):
                if not self.opened.done():
                    self.opened.set_result(self)


async def open_clients(dialect: str, host: str, port: int, hellos: list[tuple[str, bytes]],
                       stats: Stats, concurrency: int = 100) -> tuple[list[Client], int]:
    """Open one socket per (user label, hello); returns (clients, failures)."""
    loop = asyncio.get_running_loop()
    path = "/ws/v1" if dialect == "hub" else "/socket.io/?EIO=4&transport=websocket"
    sem = asyncio.Semaphore(concurrency)
    clients: list[Client] = []
    failures = 0

    async def one(label: str, hello: bytes) -> None:
        nonlocal failures
        async with sem:
            opened: asyncio.Future[Any] = loop.create_future()
            try:
                await loop.create_connection(
                    lambda: Client(dialect, path, f"{host}:{port}", hello, stats, opened),
                    host, port)
                client = await asyncio.wait_for(opened, 60)
                if dialect == "sio":
                    client.user = label
                clients.append(client)
            except Exception:
                failures += 1

    await asyncio.gather(*(one(label, hello) for label, hello in hellos))
    return clients, failures


def loadgen_main(conn: Any) -> None:
    """A load generator process: commands over a multiprocessing Pipe."""
    import uvloop

    raise_fd_limit()
    uvloop.run(_loadgen(conn))


async def _loadgen(conn: Any) -> None:
    loop = asyncio.get_running_loop()
    stats = Stats()
    clients: list[Client] = []
    while True:
        cmd, arg = await loop.run_in_executor(None, conn.recv)
        if cmd == "open":
            new, failures = await open_clients(arg["dialect"], arg["host"], arg["port"],
                                               arg["hellos"], stats, arg.get("concurrency", 100))
            clients += new
            users: dict[str, int] = {}
            for c in new:
                users[c.user or "?"] = users.get(c.user or "?", 0) + 1
            conn.send({"opened": len(new), "failures": failures, "users": users})
        elif cmd == "reset":
            stats.reset()
            for c in clients:
                c.last = 0
            conn.send({"ok": True})
        elif cmd == "report":
            closed: dict[str, int] = {}
            for c in clients:
                if c.closed_code is not None:
                    closed[str(c.closed_code)] = closed.get(str(c.closed_code), 0) + 1
            conn.send({"delivered": stats.delivered, "gaps": stats.gaps, "dups": stats.dups,
                       "hist": stats.hist, "closed": closed,
                       "timeline": stats.timeline})
        elif cmd == "close":
            for c in clients:
                if c.transport is not None:
                    c.transport.close()
            clients = []
            await asyncio.sleep(0.5)
            conn.send({"ok": True})
        elif cmd == "exit":
            conn.send({"ok": True})
            return


def publisher_main(conn: Any) -> None:
    """The publisher process: our RedisBus (publish-only) or Socket.IO's AsyncRedisManager."""
    import uvloop

    uvloop.run(_publisher(conn))


async def _publisher(conn: Any) -> None:
    from contextlib import AsyncExitStack

    loop = asyncio.get_running_loop()
    senders: dict[str, Any] = {}
    async with AsyncExitStack() as stack:
        while True:
            cmd, arg = await loop.run_in_executor(None, conn.recv)
            if cmd == "exit":
                conn.send({"ok": True})
                return
            key = arg["dialect"]
            if key not in senders:
                senders[key] = await _sender(stack, arg["dialect"], arg["redis_url"])
            conn.send(await _publish_step(senders[key], **arg))


async def _sender(stack: Any, dialect: str, redis_url: str) -> Any:
    """A publish function kept for the whole run (connections stay warm between steps)."""
    if dialect == "hub":
        from chat_server.bus import open_bus

        bus = await stack.enter_async_context(open_bus(redis_url, lambda *_: None))

        async def send(user: str, n: int) -> None:
            await bus.publish(user, {"type": "bench", "ts": time.time(), "n": n})

        return send
    import socketio

    mgr = socketio.AsyncRedisManager(redis_url, write_only=True)

    async def emit(user: str, n: int) -> None:
        await mgr.emit("bench", {"n": n, "ts": time.time(), "z": 0}, room=user, namespace="/")

    return emit


async def _publish_step(send: Any, dialect: str, redis_url: str, users: list[str], rate: float,
                        seconds: float, tasks: int = 16) -> dict[str, Any]:
    # Warm every connection of the pool first (to a user nobody listens to).
    await asyncio.gather(*(send("warm-up", 0) for _ in range(tasks * 4)))
    counts = dict.fromkeys(users, 0)
    return await _pace(send, users, counts, rate, seconds, tasks)


async def _pace(send: Any, users: list[str], counts: dict[str, int], rate: float,
                seconds: float, tasks: int) -> dict[str, Any]:
    start = time.perf_counter() + 0.05
    total = int(rate * seconds)
    next_i = 0
    cpu0 = time.process_time()

    async def worker() -> None:
        nonlocal next_i
        while next_i < total:
            i = next_i
            next_i += 1
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            user = users[i % len(users)]
            counts[user] += 1
            await send(user, counts[user])

    await asyncio.gather(*(worker() for _ in range(tasks)))
    elapsed = time.perf_counter() - start
    return {"published": total, "elapsed": elapsed, "counts": counts,
            "cpu_s": time.process_time() - cpu0}
