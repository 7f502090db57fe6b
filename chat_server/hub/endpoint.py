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

from chat_server.auth import AuthError, authenticate
from chat_server.bus import ResumeFailed
from chat_server.errors import is_unavailable
from chat_server.hub import protocol as p
from chat_server.hub.connection import Conn, Send, State
from chat_server.hub.hub import Hub
from chat_server.hub.protocol import Close
from chat_server.hub.wsproto import EXTENSION

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
                            ) -> tuple[Conn, dict[str, Any] | None]:
        settings = hub.settings
        try:
            msg = await asyncio.wait_for(receive(), settings.ws_auth_timeout_s)
        except TimeoutError:
            raise Refused(Close.AUTH_FAILED, "auth timeout") from None
        if msg["type"] == "websocket.disconnect":
            raise _Disconnected
        text = msg.get("text")
        try:
            frame = p.loads(text) if text is not None else None
        except p.FrameError as exc:
            raise Refused(Close.AUTH_FAILED, f"the first frame must be auth: {exc.message}"
                          ) from None
        if not isinstance(frame, dict) or frame.get("type") != "auth":
            raise Refused(Close.AUTH_FAILED, "the first frame must be auth")
        token = frame.get("token")
        if not isinstance(token, str) or not token:
            raise Refused(Close.AUTH_FAILED, "auth needs a token")
        resume = frame.get("resume")
        if resume is not None and not (
            isinstance(resume, dict) and isinstance(resume.get("since"), int)
            and isinstance(resume.get("epoch"), str)
        ):
            raise Refused(Close.AUTH_FAILED, "resume needs since (integer) and epoch (string)")
        try:
            async with app.state.db.session() as session:
                identity = await authenticate(session, settings, token)
        except AuthError as exc:
            raise Refused(Close.AUTH_FAILED, exc.message[:120]) from None
        frames = (scope_extensions or {}).get(EXTENSION)
        conn = Conn(hub, send, str(identity.user.id), uuid.uuid4().hex, identity.expires_at,
                    raw=frames is not None, write_now=(frames or {}).get("write_now"),
                    generation=identity.generation)
        return conn, resume

    async def _serve(self, app: Any, hub: Hub, conn: Conn, resume: dict[str, Any] | None,
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
                    history = await bus.since(conn.user_id, resume["since"], resume["epoch"])
                    start = resume["since"]
                except ResumeFailed as exc:
                    failed = exc
        except Exception as exc:
            log.warning("socket of %s refused: bus unavailable (%s)", conn.user_id, exc)
            conn.close(Close.TRY_AGAIN_LATER, "bus unavailable")
            await _drain(receive)
            return
        first = [p.dumps({"type": "welcome", "user_id": conn.user_id,
                          "session_id": conn.session_id, "epoch": head.epoch,
                          "offset": head.offset, "expires_at": int(conn.expires_at),
                          "ping_interval_s": hub.settings.ws_ping_interval_s,
                          "idle_timeout_s": hub.settings.ws_idle_timeout_s,
                          "max_frame_bytes": hub.settings.ws_max_frame_bytes})]
        if failed is not None:
            first.append(p.dumps({"type": "resume.failed", "reason": failed.reason,
                                  "message": str(failed), "epoch": head.epoch,
                                  "offset": head.offset}))
        conn.activate(head.epoch, start, first, history)
        del first, history, head, resume  # this frame lives as long as the socket
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
        refused: p.FrameError | None = None
        try:
            frame = p.loads(text)
        except p.FrameError as exc:
            frame, refused = None, exc
        kind = frame.get("type") if isinstance(frame, dict) else None
        if kind == "pong":
            return  # keepalive answer: activity only, not rate limited
        bucket = hub.bucket(conn.user_id)
        if bucket is not None:
            wait = bucket.take(time.monotonic())
            if wait:
                if bucket.refused > hub.settings.ws_rate_limit_burst:
                    conn.close(Close.FLOODING, "flooding")
                    return
                conn.send_frame(p.error(p.RATE_LIMITED, "Too many frames; slow down.",
                                        retry_after=round(wait, 3)))
                return
        if refused is not None:
            conn.send_frame(p.error(refused.code, refused.message))
            return
        if not isinstance(kind, str):
            conn.send_frame(p.error(p.BAD_FRAME,
                                    'Every frame is a JSON object with a string "type".'))
            return
        assert isinstance(frame, dict)
        frame_id = frame.get("id")
        ref = {"id": frame_id} if isinstance(frame_id, (str, int)) else {}
        if kind == "ping":
            pong: dict[str, Any] = {"type": "pong", **ref}
            if "t" in frame:
                pong["t"] = frame["t"]
            conn.send_frame(p.dumps(pong))
        elif kind == "auth.refresh":
            await self._refresh(app, hub, conn, frame, ref)
        elif kind == "chat.send":
            if not isinstance(frame_id, str) or not frame_id or not isinstance(
                    frame.get("text"), str):
                conn.send_frame(p.error(p.BAD_FRAME, 'chat.send needs "id" (string) and '
                                        '"text" (string).', **ref))
                return
            await self._tutor(app, conn, ref, "send", frame)
        elif kind == "chat.cancel":
            if not isinstance(frame.get("reply_id"), str):
                conn.send_frame(p.error(p.BAD_FRAME, 'chat.cancel needs "reply_id" (string).',
                                        **ref))
                return
            await self._tutor(app, conn, ref, "cancel", frame)
        elif kind == "auth":
            conn.send_frame(p.error(p.BAD_FRAME, "Already authenticated; use auth.refresh.",
                                    **ref))
        else:
            conn.send_frame(p.error(p.UNKNOWN_TYPE, f"Unknown frame type {kind[:50]!r}.",
                                    **ref))

    async def _refresh(self, app: Any, hub: Hub, conn: Conn, frame: dict[str, Any],
                       ref: dict[str, Any]) -> None:
        token = frame.get("token")
        if not isinstance(token, str) or not token:
            conn.send_frame(p.error(p.BAD_FRAME, 'auth.refresh needs "token" (string).', **ref))
            return
        try:
            async with app.state.db.session() as session:
                identity = await authenticate(session, hub.settings, token)
        except AuthError as exc:
            conn.send_frame(p.error(p.AUTH_FAILED, exc.message, **ref))
            return
        if str(identity.user.id) != conn.user_id:
            conn.send_frame(p.error(p.AUTH_FAILED, "The token belongs to another user.", **ref))
            return
        conn.expires_at = identity.expires_at
        conn.generation = identity.generation
        conn.warned = False
        conn.send_frame(p.dumps({"type": "auth.refreshed", "expires_at": int(conn.expires_at),
                                 **ref}))

    async def _tutor(self, app: Any, conn: Conn, ref: dict[str, Any], action: str,
                     frame: dict[str, Any]) -> None:
        from chat_server.tutor.errors import TutorError

        tutor = getattr(app.state, "tutor", None)
        if tutor is None:
            conn.send_frame(p.error(p.UNAVAILABLE, "The tutor is not available.", **ref))
            return
        try:
            if action == "send":
                await tutor.send(uuid.UUID(conn.user_id), frame)
            else:
                await tutor.cancel(uuid.UUID(conn.user_id), frame["reply_id"])
        except TutorError as exc:
            conn.send_frame(p.dumps({"type": "error", "code": exc.code, "message": exc.message,
                                     **ref, **exc.extra}))
        except Exception as exc:
            conn.send_frame(_failed(exc, f"tutor.{action}", **ref))


class _Disconnected(Exception):
    pass


def _failed(exc: Exception, what: str, **ref: Any) -> str:
    """The error frame for a client frame whose handling raised: `unavailable` (retryable)
    when the database is unreachable right now, else `internal` (a bug: logged with its
    traceback)."""
    if is_unavailable(exc):
        log.warning("%s failed: the database is unavailable (%s)", what, type(exc).__name__)
        return p.error(p.UNAVAILABLE, "The service is unavailable right now; try again.", **ref)
    log.exception("%s failed", what, exc_info=exc)
    return p.error(p.INTERNAL, "Internal error; try again.", **ref)


async def _drain(receive: Any) -> None:
    """Read until the disconnect so the close handshake completes (bounded by the server)."""
    with suppress(Exception):
        while (await asyncio.wait_for(receive(), 15))["type"] != "websocket.disconnect":
            pass
