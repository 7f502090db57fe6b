"""The bridge as a Tutorhub client: REST and one /ws/v1 socket per active linked user.

The bridge acts for a user with short-lived access tokens it mints itself
(`chat_server.auth.create_token`, with the shared secret key), exactly the tokens a browser
gets from `POST /auth/token`. So every rule of the server (validation, quotas, one streaming
reply per conversation, scoping to the user) applies to Telegram as to any other client, in
the embedded mode and with Redis and many instances alike.

A socket reconnects with backoff and `resume {since, epoch}`, so no event is lost across a
drop; it answers the server's pings, and refreshes its token on `auth.expiring`. Every event
goes to `on_event` synchronously from the reader (cheap: the bridge only records it and wakes
its own tasks), so a slow Bot API never holds up the socket.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from chat_server.auth import create_token
from chat_server.protocol import codec
from chat_server.protocol.codes import Close, ErrorCode
from chat_server.settings import Settings

log = logging.getLogger(__name__)

OnEvent = Callable[[uuid.UUID, dict[str, Any]], None]
Generation = Callable[[uuid.UUID], Awaitable[int]]
CONNECT_WAIT_S = 10.0
REQUEST_WAIT_S = 30.0
TOKEN_MARGIN_S = 60.0
BACKOFF_MIN_S = 0.25
BACKOFF_MAX_S = 15.0


class Unavailable(Exception):
    """The Tutorhub server cannot be reached (or refuses this user) right now."""


def server_url(settings: Settings) -> str:
    return (settings.telegram_server_url or f"http://127.0.0.1:{settings.port}").rstrip("/")


class TutorhubClient:
    def __init__(self, settings: Settings, on_event: OnEvent, generation: Generation) -> None:
        self.settings = settings
        self.generation = generation  # the user's token generation (a password change bumps it)
        self.base_url = server_url(settings)
        self.ws_url = self.base_url.replace("http", "ws", 1) + "/ws/v1"
        self.on_event = on_event
        self.http = httpx.AsyncClient(base_url=self.base_url, timeout=60)
        self.sockets: dict[uuid.UUID, UserSocket] = {}
        self._tokens: dict[uuid.UUID, tuple[str, float]] = {}

    async def token(self, user_id: uuid.UUID) -> str:
        """An access token of `user_id`, minted afresh when the last one is near its end (at
        the user's current token generation, so a password change revokes it as any other)."""
        cached = self._tokens.get(user_id)
        if cached is None or cached[1] - time.time() < TOKEN_MARGIN_S:
            generation = await self.generation(user_id)
            cached = (create_token(self.settings, user_id, "access", generation=generation),
                      time.time() + self.settings.access_token_ttl_s)
            self._tokens[user_id] = cached
        return cached[0]

    def forget_tokens(self, keep: set[uuid.UUID]) -> None:
        for user_id in [u for u in self._tokens if u not in keep]:
            del self._tokens[user_id]

    async def rest(self, user_id: uuid.UUID, method: str, path: str, **kwargs: Any
                   ) -> httpx.Response:
        r = await self._request(user_id, method, path, **kwargs)
        if r.status_code == 401:  # revoked meanwhile: once more with a token minted anew
            self._tokens.pop(user_id, None)
            r = await self._request(user_id, method, path, **kwargs)
        return r

    async def _request(self, user_id: uuid.UUID, method: str, path: str, **kwargs: Any
                       ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {await self.token(user_id)}"}
        try:
            return await self.http.request(method, path, headers=headers, **kwargs)
        except httpx.TransportError as exc:
            raise Unavailable(f"{method} {path}: {type(exc).__name__}") from exc

    def socket(self, user_id: uuid.UUID) -> UserSocket:
        sock = self.sockets.get(user_id)
        if sock is None or sock.refused:  # refused once: a new socket, a new token
            if sock is not None:
                self._tokens.pop(user_id, None)
            sock = self.sockets[user_id] = UserSocket(self, user_id)
        sock.last_used = time.monotonic()
        return sock

    async def close_socket(self, user_id: uuid.UUID) -> None:
        sock = self.sockets.pop(user_id, None)
        self._tokens.pop(user_id, None)
        if sock is not None:
            await sock.close()

    async def aclose(self) -> None:
        for user_id in list(self.sockets):
            await self.close_socket(user_id)
        await self.http.aclose()


class UserSocket:
    """One user's socket: opened on demand, kept with resume, closed when idle."""

    def __init__(self, client: TutorhubClient, user_id: uuid.UUID) -> None:
        self.client = client
        self.user_id = user_id
        self.last_used = time.monotonic()
        self.epoch: str | None = None
        self.offset = 0
        self._ws: ClientConnection | None = None
        self._connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._refused: str | None = None
        # chat.send / chat.cancel frames waiting for their answer (chat.ack or error), by id:
        # sent again after a reconnect (the server answers a known id with the same ack).
        self._pending: dict[str, tuple[dict[str, Any], asyncio.Future[dict[str, Any]]]] = {}

    async def open(self) -> None:
        if self._refused is not None:
            raise Unavailable(self._refused)
        if self._task is None or self._task.done():
            self._closing = False
            self._task = asyncio.create_task(self._run(), name=f"tg-socket-{self.user_id}")
        try:
            await asyncio.wait_for(self._connected.wait(), CONNECT_WAIT_S)
        except TimeoutError:
            raise Unavailable(self._refused or "the server did not answer") from None

    async def send(self, frame: dict[str, Any]) -> None:
        await self.open()
        assert self._ws is not None
        try:
            await self._ws.send(codec.dumps(frame))
        except ConnectionClosed as exc:
            raise Unavailable("the socket closed") from exc

    async def request(self, frame: dict[str, Any], wait_s: float = REQUEST_WAIT_S
                      ) -> dict[str, Any]:
        """Send a frame with an `id`; its chat.ack or error frame (resent across reconnects)."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[frame["id"]] = (frame, future)
        try:
            with suppress(Unavailable):  # a reconnect sends it again
                await self.send(frame)
            return await asyncio.wait_for(future, wait_s)
        except TimeoutError:
            raise Unavailable(self._refused or "no answer from the server") from None
        finally:
            self._pending.pop(frame["id"], None)

    @property
    def refused(self) -> bool:
        return self._refused is not None

    @property
    def busy(self) -> bool:
        return bool(self._pending)

    async def close(self) -> None:
        self._closing = True
        if self._ws is not None:
            with suppress(Exception):
                await self._ws.close()
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError, Exception):
                await self._task
        for _, future in self._pending.values():
            if not future.done():
                future.set_exception(Unavailable("the bridge is closing"))

    async def _run(self) -> None:
        delay = BACKOFF_MIN_S
        while not self._closing:
            try:
                async with connect(self.client.ws_url, open_timeout=CONNECT_WAIT_S,
                                   ping_interval=None, compression=None,
                                   max_size=2**22) as ws:
                    await self._authenticate(ws)
                    delay = BACKOFF_MIN_S
                    await self._read(ws)
            except asyncio.CancelledError:
                raise
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd is not None else None
                if code == Close.AUTH_FAILED:
                    # The user is gone or the secret differs: retrying would not help.
                    self._refused = f"the server refused the bridge's token ({exc.rcvd})"
                    log.warning("socket of %s: %s", self.user_id, self._refused)
                    self._fail_pending()
                    return
            except (OSError, InvalidHandshake, InvalidURI, TimeoutError, ValueError) as exc:
                log.info("socket of %s: cannot connect (%s)", self.user_id, type(exc).__name__)
            finally:
                self._ws = None
                self._connected.clear()
            if self._closing:
                return
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, BACKOFF_MAX_S)

    def _fail_pending(self) -> None:
        for _, future in self._pending.values():
            if not future.done():
                future.set_exception(Unavailable(self._refused or "refused"))

    async def _authenticate(self, ws: ClientConnection) -> None:
        auth: dict[str, Any] = {"type": "auth", "token": await self.client.token(self.user_id)}
        if self.epoch is not None:
            auth["resume"] = {"since": self.offset, "epoch": self.epoch}
        await ws.send(codec.dumps(auth))
        welcome = codec.loads_server(await asyncio.wait_for(ws.recv(), CONNECT_WAIT_S))
        if welcome.get("type") != "welcome":
            raise ValueError(f"expected welcome, got {welcome.get('type')!r}")
        if self.epoch is None:
            self.offset = int(welcome["offset"])
        self.epoch = str(welcome["epoch"])
        self._ws = ws
        self._connected.set()
        for frame, future in list(self._pending.values()):
            if not future.done():
                await ws.send(codec.dumps(frame))

    async def _read(self, ws: ClientConnection) -> None:
        async for raw in ws:
            frame = codec.loads_server(raw)
            kind = frame.get("type")
            if kind == "ping":
                await ws.send(codec.dumps({"type": "pong"}))
            elif kind == "auth.expiring":
                await ws.send(codec.dumps({"type": "auth.refresh",
                                          "token": await self.client.token(self.user_id)}))
            elif kind == "resume.failed":
                self.epoch, self.offset = str(frame["epoch"]), int(frame["offset"])
                self.client.on_event(self.user_id, frame)
            elif kind == "error":
                waiting = self._pending.get(str(frame.get("id")))
                if waiting is not None and not waiting[1].done():
                    waiting[1].set_result(frame)
                elif frame.get("code") != ErrorCode.RATE_LIMITED:
                    log.info("socket of %s: error %s", self.user_id, frame.get("code"))
            elif "o" in frame:
                offset = int(frame["o"])
                if offset <= self.offset:
                    continue  # already seen (replayed by a resume)
                self.offset = offset
                try:
                    self.client.on_event(self.user_id, frame)
                except Exception:  # a bad event must not take the socket down
                    log.exception("event %s of %s not handled", kind, self.user_id)
                if kind == "chat.ack":
                    waiting = self._pending.get(str(frame.get("id")))
                    if waiting is not None and not waiting[1].done():
                        waiting[1].set_result(frame)
