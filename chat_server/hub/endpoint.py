"""`GET /ws/v1`: one raw ASGI handler per socket — auth, resume, then the read loop.

Raw ASGI rather than Starlette's WebSocket wrapper: the writer sends through the
server's `send` directly, which keeps per-frame work on the fan-out path minimal.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from contextlib import suppress
from typing import Any

from chat_server.auth import AuthError, authenticate_socket
from chat_server.bus import ResumeFailed
from chat_server.errors import is_unavailable
from chat_server.hub.connection import Conn, Send, State
from chat_server.hub.fastpath import EXTENSION
from chat_server.hub.hub import Hub
from chat_server.protocol import codec, frames
from chat_server.protocol.codec import FrameError
from chat_server.protocol.codes import Close, ErrorCode, ResumeReason
from chat_server.protocol.frames import error

log = logging.getLogger(__name__)

SUBSCRIBE_TIMEOUT_S = 5.0


class Refused(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


async def _close_now(send: Send, hub: Hub, code: int, reason: str) -> None:
    hub.count_close(code)
    with suppress(Exception):
        await send({"type": "websocket.close", "code": int(code), "reason": reason})


class HubEndpoint:
    """The ASGI app mounted at /ws/v1."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Send) -> None:
        app = scope["app"]
        hub: Hub = app.state.hub
        if (await receive())["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        if hub.stopping:
            await _close_now(send, hub, Close.SERVICE_RESTART, "server restarting")
            return
        try:
            conn, resume = await self._authenticate(app, hub, receive, send,
                                                    scope.get("extensions"))
        except Refused as exc:
            await _close_now(send, hub, exc.code, exc.reason)
            await _drain(receive)
            return
        except _Disconnected:
            return
        except Exception as exc:  # e.g. the database is unreachable: no socket was registered
            unavailable = is_unavailable(exc)
            log.log(logging.WARNING if unavailable else logging.ERROR,
                    "socket authentication failed: %s", type(exc).__name__,
                    exc_info=not unavailable)
            await _close_now(send, hub, Close.TRY_AGAIN_LATER if unavailable
                             else Close.INTERNAL_ERROR, "try again later")
            await _drain(receive)
            return
        # Held by this coroutine for the socket's whole life; nothing reads them from here on.
        scope["headers"] = []
        if hub.stopping:  # stop() closed the sockets it knew; this one would be missed
            await _close_now(send, hub, Close.SERVICE_RESTART, "server restarting")
            return
        # Registered from here; every way out (client close, server close, a dropped
        # connection, an exception, a forced close) goes through finish() in `finally`.
        hub.attach(conn)
        try:
            await self._serve(app, hub, conn, resume, receive)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not conn.forced or task is None:
                raise
            task.uncancel()  # our own forced close of a socket that reads nothing
        except Exception:
            log.exception("socket %s of %s failed", conn.session_id, conn.user_id)
            conn.close(Close.INTERNAL_ERROR, "internal error")
        finally:
            await conn.finish()

    async def _authenticate(self, app: Any, hub: Hub, receive: Any, send: Send,
                            scope_extensions: dict[str, Any] | None,
                            ) -> tuple[Conn, frames.Resume | None]:
        settings = hub.settings
        try:
            async with asyncio.timeout(settings.ws_auth_timeout_s):  # no task, unlike wait_for
                msg = await receive()
        except TimeoutError:
            raise Refused(Close.AUTH_FAILED, "auth timeout") from None
        if msg["type"] == "websocket.disconnect":
            raise _Disconnected
        text = msg.get("text")
        try:
            auth = frames.parse(text) if text is not None else None
        except FrameError as exc:
            raise Refused(Close.AUTH_FAILED, _first_frame_refused(exc)) from None
        if not isinstance(auth, frames.Auth):
            raise Refused(Close.AUTH_FAILED, "the first frame must be auth")
        try:
            identity = await authenticate_socket(app.state.db, settings, auth.token)
        except AuthError as exc:
            raise Refused(Close.AUTH_FAILED, exc.message[:120]) from None
        framed = (scope_extensions or {}).get(EXTENSION)
        conn = Conn(hub, send, str(identity.user_id), uuid.uuid4().hex, identity.expires_at,
                    raw=framed is not None, write_now=(framed or {}).get("write_now"),
                    generation=identity.generation)
        return conn, auth.resume

    async def _serve(self, app: Any, hub: Hub, conn: Conn, resume: frames.Resume | None,
                     receive: Any) -> None:
        bus = hub.bus
        assert bus is not None
        # Live events are held from attach() on, then deduped by offset.
        try:
            # Counted from the call on (a subscribe that times out still holds its reference):
            # finish() gives it back. Run inline (asyncio.timeout), not as a task that a
            # timeout could cancel before it counted.
            conn.subscribed = True
            async with asyncio.timeout(SUBSCRIBE_TIMEOUT_S):
                await bus.subscribe(conn.user_id)
            head = await bus.head(conn.user_id)
            history: list[str] = []
            failed: ResumeFailed | None = None
            start = head.offset
            if resume is not None:
                try:
                    history = await bus.since(conn.user_id, resume.since, resume.epoch)
                    start = resume.since
                except ResumeFailed as exc:
                    failed = exc
        except Exception as exc:
            log.warning("socket of %s refused: bus unavailable (%s)", conn.user_id, exc)
            conn.close(Close.TRY_AGAIN_LATER, "bus unavailable")
            await _drain(receive)
            return
        welcome: frames.Welcome = {
            "type": "welcome", "user_id": conn.user_id, "session_id": conn.session_id,
            "epoch": head.epoch, "offset": head.offset, "expires_at": int(conn.expires_at),
            "ping_interval_s": hub.settings.ws_ping_interval_s,
            "idle_timeout_s": hub.settings.ws_idle_timeout_s,
            "max_frame_bytes": hub.settings.ws_max_frame_bytes}
        first: list[Any] = [welcome]
        if failed is not None:
            refused: frames.ResumeFailedFrame = {
                "type": "resume.failed", "reason": ResumeReason(failed.reason),
                "message": str(failed), "epoch": head.epoch, "offset": head.offset}
            first.append(refused)
        conn.activate(head.epoch, start, first, history)
        del first, history, head, resume, welcome  # this frame lives as long as the socket
        conn.start()
        # The read loop (inline: one coroutine frame less per idle socket).
        while True:
            msg = await receive()
            if msg["type"] == "websocket.disconnect":
                if conn.close_code is None:  # the peer closed (or the connection dropped)
                    conn.close_code = int(msg.get("code") or 1005)
                    hub.count_close(conn.close_code)
                return
            if conn.state is State.CLOSING:
                continue  # draining until the peer answers our close
            conn.last_recv = time.monotonic()
            text = msg.get("text")
            if text is None:
                hub.frames_in += 1
                hub.bytes_in += len(msg.get("bytes") or b"")
                conn.close(Close.UNSUPPORTED_DATA, "binary frames are not supported")
                continue
            hub.frames_in += 1
            hub.bytes_in += len(text)
            try:
                await self._handle(app, hub, conn, text)
            except Exception as exc:  # that frame fails, not the socket
                conn.send_frame(_failed(exc, f"socket {conn.session_id}: handling a frame"))

    async def _handle(self, app: Any, hub: Hub, conn: Conn, text: str) -> None:
        refused: FrameError | None = None
        try:
            value = codec.loads_client(text)
        except FrameError as exc:
            value, refused = None, exc
        if isinstance(value, dict) and value.get("type") == "pong":
            return  # keepalive answer: activity only, not rate limited
        bucket = hub.bucket(conn.user_id)
        if bucket is not None:
            wait = bucket.take(time.monotonic())
            if wait:
                if bucket.refused > hub.settings.ws_rate_limit_burst:
                    conn.close(Close.FLOODING, "flooding")
                    return
                conn.send_frame(error(ErrorCode.RATE_LIMITED, "Too many frames; slow down.",
                                      retry_after=round(wait, 3)))
                return
        ref = frames.frame_id(value)
        if refused is None:
            try:
                frame = frames.validate(value)
            except FrameError as exc:
                refused = exc
        if refused is not None:
            conn.send_frame(error(refused.code, refused.message, **ref))
            return
        if isinstance(frame, frames.Ping):
            pong: frames.PongFrame = {"type": "pong", **ref}  # type: ignore[typeddict-item]
            if "t" in frame.model_fields_set:
                pong["t"] = frame.t
            conn.send_frame(pong)
        elif isinstance(frame, frames.AuthRefresh):
            await self._refresh(app, hub, conn, frame, ref)
        elif isinstance(frame, frames.ChatSend | frames.ChatCancel):
            await self._tutor(app, conn, ref, frame)
        elif isinstance(frame, frames.Auth):
            conn.send_frame(error(ErrorCode.BAD_FRAME, "Already authenticated; use auth.refresh.",
                                  **ref))

    async def _refresh(self, app: Any, hub: Hub, conn: Conn, frame: frames.AuthRefresh,
                       ref: dict[str, Any]) -> None:
        try:
            identity = await authenticate_socket(app.state.db, hub.settings, frame.token)
        except AuthError as exc:
            conn.send_frame(error(ErrorCode.AUTH_FAILED, exc.message, **ref))
            return
        if str(identity.user_id) != conn.user_id:
            conn.send_frame(error(ErrorCode.AUTH_FAILED, "The token belongs to another user.",
                                  **ref))
            return
        conn.expires_at = identity.expires_at
        conn.generation = identity.generation
        conn.warned = False
        refreshed: frames.AuthRefreshed = {"type": "auth.refreshed",
                                           "expires_at": int(conn.expires_at)}
        refreshed.update(ref)  # type: ignore[typeddict-item]
        conn.send_frame(refreshed)

    async def _tutor(self, app: Any, conn: Conn, ref: dict[str, Any],
                     frame: frames.ChatSend | frames.ChatCancel) -> None:
        from chat_server.tutor.errors import TutorError

        tutor = getattr(app.state, "tutor", None)
        if tutor is None:
            conn.send_frame(error(ErrorCode.UNAVAILABLE, "The tutor is not available.", **ref))
            return
        try:
            if isinstance(frame, frames.ChatSend):
                await tutor.send(uuid.UUID(conn.user_id), frame)
            else:
                await tutor.cancel(uuid.UUID(conn.user_id), frame.reply_id)
        except TutorError as exc:
            conn.send_frame(error(exc.code, exc.message, **ref, **exc.extra))
        except Exception as exc:
            conn.send_frame(_failed(exc, f"tutor.{frame.type}", **ref))


class _Disconnected(Exception):
    pass


def _failed(exc: Exception, what: str, **ref: Any) -> frames.ErrorFrame:
    """The error frame for a client frame whose handling raised: `unavailable` (retryable)
    when the database is unreachable right now, else `internal` (a bug: logged with its
    traceback)."""
    if is_unavailable(exc):
        log.warning("%s failed: the database is unavailable (%s)", what, type(exc).__name__)
        return error(ErrorCode.UNAVAILABLE, "The service is unavailable right now; try again.",
                     **ref)
    log.exception("%s failed", what, exc_info=exc)
    return error(ErrorCode.INTERNAL, "Internal error; try again.", **ref)


def _first_frame_refused(exc: FrameError) -> str:
    """The close reason (at most 123 bytes) for a first frame that is not a valid auth."""
    reason = f"the first frame must be auth: {exc.message}"
    return reason.encode()[:123].decode(errors="ignore")


async def _drain(receive: Any) -> None:
    """Read until the disconnect so the close handshake completes (bounded by the server)."""
    with suppress(Exception):
        while (await asyncio.wait_for(receive(), 15))["type"] != "websocket.disconnect":
            pass
