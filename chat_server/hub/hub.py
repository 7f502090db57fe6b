"""The hub: every socket of every user on this instance, fan-out, keepalive and expiry.

One `Hub` per process. `deliver` is the bus's callback: it runs once per event and puts
the already-encoded frame on each of the user's sockets' queues without awaiting
anything. One ticker task (owned here) sends pings, closes idle and expired sockets,
warns before token expiry and publishes the counters to Prometheus.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

from chat_server import metrics
from chat_server.bus import Bus
from chat_server.hub.connection import Conn, State
from chat_server.hub.fastpath import text_frame
from chat_server.protocol import codec
from chat_server.protocol.codes import Close
from chat_server.protocol.frames import AuthExpiring, PingFrame
from chat_server.settings import Settings

log = logging.getLogger(__name__)

PING: PingFrame = {"type": "ping"}
PING_TEXT = codec.dumps(PING)  # the same text for every socket: encoded once


@dataclass
class Bucket:
    """Token bucket for one user's client frames (shared by the user's sockets here)."""

    rate: float
    burst: float
    tokens: float
    stamp: float
    refused: int = 0  # frames refused in a row

    def take(self, now: float) -> float:
        """0 when a token was taken, else the seconds until one is available."""
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            self.refused = 0
            return 0.0
        self.refused += 1
        return (1.0 - self.tokens) / self.rate


@dataclass
class User:
    conns: list[Conn] = field(default_factory=list)
    bucket: Bucket | None = None


class Hub:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.bus: Bus | None = None
        self.users: dict[str, User] = {}
        self.max_frames = settings.ws_send_queue_max_frames
        self.max_bytes = settings.ws_send_queue_max_bytes
        self.stopping = False
        self.open_sockets = 0
        # Hot-path counters, flushed into Prometheus by the ticker.
        self.frames_out = self.bytes_out = self.frames_in = self.bytes_in = 0
        self.coalesced = 0
        self._flushed = [0, 0, 0, 0, 0]
        self._ticker: asyncio.Task[None] | None = None

    # --- the bus callbacks -------------------------------------------------------------
    def deliver(self, user_id: str, offset: int, frame: str, kind: str | None = None) -> None:
        """The bus's Deliver: an event's wire frame and its type (decoded when not given)."""
        user = self.users.get(user_id)
        if user is None:
            return
        data = frame.encode()  # once per event, whatever the number of sockets
        ready = None
        size = len(data)
        if kind is None:
            kind = str(codec.decode_event(frame)["type"])
        for conn in user.conns:
            if conn.raw and ready is None:
                ready = text_frame(data)  # framed once, for the sockets that take it so
            conn.push(offset, frame, size, ready if conn.raw else None, kind)

    def on_epoch(self, user_id: str, epoch: str) -> None:
        user = self.users.get(user_id)
        if user is not None:
            for conn in list(user.conns):
                conn.new_epoch(epoch)

    def on_signal(self, message: dict[str, Any]) -> None:
        """Bus.signal from any instance: `tokens.revoked {user_id, generation}` (the password
        changed) closes the user's sockets authenticated before it with 4401."""
        if message.get("type") != "tokens.revoked":
            return
        user = self.users.get(str(message.get("user_id")))
        generation = message.get("generation")
        if user is None or not isinstance(generation, int):
            return
        for conn in list(user.conns):
            if conn.generation < generation:
                conn.close(Close.AUTH_FAILED, "credentials changed")

    # --- registry ------------------------------------------------------------------------
    def attach(self, conn: Conn) -> None:
        user = self.users.get(conn.user_id)
        if user is None:
            user = self.users[conn.user_id] = User()
            metrics.ws_users_online.set(len(self.users))
        user.conns.append(conn)
        self.open_sockets += 1
        metrics.ws_open_sockets.inc()

    def detach(self, conn: Conn) -> None:
        user = self.users.get(conn.user_id)
        if user is None or conn not in user.conns:
            return
        user.conns.remove(conn)
        self.open_sockets -= 1
        metrics.ws_open_sockets.dec()
        if not user.conns:
            del self.users[conn.user_id]
            metrics.ws_users_online.set(len(self.users))

    def bucket(self, user_id: str) -> Bucket | None:
        user = self.users.get(user_id)
        if user is None:
            return None
        if user.bucket is None:
            s = self.settings
            user.bucket = Bucket(s.ws_rate_limit_per_s, float(s.ws_rate_limit_burst),
                                 float(s.ws_rate_limit_burst), time.monotonic())
        return user.bucket

    def count_close(self, code: int, *, overflow: bool = False) -> None:
        metrics.ws_closes.labels(str(int(code))).inc()
        if overflow:
            metrics.ws_send_queue_overflows.inc()

    def conns(self) -> list[Conn]:
        return [c for u in self.users.values() for c in u.conns]

    def queued_bytes(self) -> int:
        return sum(c.nbytes for c in self.conns())

    # --- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        self._ticker = asyncio.create_task(self._tick_forever(), name="hub-ticker")

    async def stop(self) -> None:
        """Close every socket with 1012 (clients reconnect elsewhere and resume)."""
        self.stopping = True
        conns = self.conns()
        for conn in conns:
            conn.close(Close.SERVICE_RESTART, "server restarting")
        closers = [c.closer for c in conns if c.closer is not None]
        if closers:
            await asyncio.wait(closers, timeout=self.settings.shutdown_timeout_s)
        if self._ticker is not None:
            self._ticker.cancel()
            with suppress(asyncio.CancelledError):
                await self._ticker
        self._flush_metrics()

    def _tick_interval(self) -> float:
        s = self.settings
        return max(0.05, min(1.0, s.ws_ping_interval_s / 2, s.ws_idle_timeout_s / 4))

    async def _tick_forever(self) -> None:
        interval = self._tick_interval()
        while True:
            await asyncio.sleep(interval)
            try:
                self.tick()
            except Exception:  # a bug here must not end keepalive for everyone
                log.exception("hub tick failed")

    def tick(self) -> None:
        s = self.settings
        mono, wall = time.monotonic(), time.time()
        for conn in self.conns():
            if conn.state is not State.LIVE:
                continue
            if mono - conn.last_recv > s.ws_idle_timeout_s:
                conn.close(Close.IDLE_TIMEOUT, "idle timeout")
            elif wall >= conn.expires_at:
                conn.close(Close.TOKEN_EXPIRED, "token expired")
            else:
                if not conn.warned and conn.expires_at - wall <= s.ws_token_warning_s:
                    conn.warned = True
                    expiring: AuthExpiring = {
                        "type": "auth.expiring", "expires_at": int(conn.expires_at),
                        "in_s": round(conn.expires_at - wall, 1)}
                    conn.send_frame(expiring)
                if mono - conn.last_ping >= s.ws_ping_interval_s:
                    conn.last_ping = mono
                    conn.send_frame(PING_TEXT)
        self._flush_metrics()

    def _flush_metrics(self) -> None:
        now = [self.frames_out, self.bytes_out, self.frames_in, self.bytes_in, self.coalesced]
        d = [a - b for a, b in zip(now, self._flushed, strict=True)]
        if d[0]:
            metrics.ws_frames.labels("out").inc(d[0])
            metrics.ws_bytes.labels("out").inc(d[1])
        if d[2]:
            metrics.ws_frames.labels("in").inc(d[2])
            metrics.ws_bytes.labels("in").inc(d[3])
        if d[4]:
            metrics.ws_coalesced.inc(d[4])
        self._flushed = now
