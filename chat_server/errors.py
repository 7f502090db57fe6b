"""HTTP errors: one JSON shape `{"error": code, "message": text}` for every failure."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "rate_limited",
    503: "unavailable",
}


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code or _CODES.get(status, "error")
        self.headers = headers


def error_body(code: str, message: str, **extra: object) -> dict[str, object]:
    # A message never echoes raw input, but keep it encodable whatever it quotes.
    return {"error": code, "message": message.encode("utf-8", "replace").decode(), **extra}


def is_unavailable(exc: BaseException) -> bool:
    """The database (or the network to it) is unreachable right now, as opposed to a bug:
    a client gets 503 `unavailable` (REST) or close 1013 (socket) and tries again."""
    import asyncpg
    import sqlalchemy.exc as sa_exc

    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, sa_exc.DBAPIError) and cause.connection_invalidated:
            return True
        if isinstance(cause, OSError | TimeoutError | sa_exc.OperationalError
                      | sa_exc.InterfaceError | sa_exc.TimeoutError
                      | asyncpg.PostgresConnectionError | asyncpg.InterfaceError
                      | asyncpg.CannotConnectNowError | asyncpg.OperatorInterventionError
                      | asyncpg.TooManyConnectionsError):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(error_body(exc.code, exc.message), status_code=exc.status,
                            headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "Request failed."
        return JSONResponse(
            error_body(_CODES.get(exc.status_code, "error"), message),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {"field": ".".join(str(p) for p in err.get("loc", ()) if p != "body"),
             "problem": err.get("msg", "invalid")}
            for err in exc.errors()
        ]
        first = problems[0] if problems else {"field": "", "problem": "invalid"}
        message = f"Invalid request: {first['field'] or 'body'}: {first['problem']}"
        return JSONResponse(
            error_body("invalid_request", message, problems=problems), status_code=422
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        # Only what escapes CatchAllMiddleware gets here: a failure after the response began.
        return unexpected_response(exc)

    # Innermost of the middlewares (added first): any other exception is answered here.
    app.add_middleware(CatchAllMiddleware)


def unexpected_response(exc: Exception) -> JSONResponse:
    if is_unavailable(exc):
        log.warning("request failed, the database is unavailable: %s: %s",
                    type(exc).__name__, exc)
        return JSONResponse(
            error_body("unavailable", "The service is unavailable right now; try again."),
            status_code=503, headers={"Retry-After": "1"})
    log.exception("unhandled error", exc_info=exc)
    return JSONResponse(
        error_body("internal", "Something went wrong on our side."), status_code=500
    )


class CatchAllMiddleware:
    """An exception no handler took is logged once and answered (JSON 500, or 503 when the
    database is unreachable) here, below Starlette's ServerErrorMiddleware, which would answer
    the same and then re-raise it: the server would log it a second time and drop the
    keep-alive connection, so the client's next request on it failed too."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        watched = _Watched(send)
        try:
            await self.app(scope, receive, watched)
        except StarletteHTTPException:
            raise
        except Exception as exc:
            if watched.started:
                raise
            await unexpected_response(exc)(scope, receive, send)


class _Watched:
    """`send`, noting whether the response has begun (after that, nothing else can be sent)."""

    def __init__(self, send: Send) -> None:
        self.send = send
        self.started = False

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        await self.send(message)


@dataclass(frozen=True)
class BodyRule:
    """How large a body one route takes, and whether multipart/* is accepted there."""

    max_bytes: int
    multipart: bool = False


class BodyTooLarge(StarletteHTTPException):
    """Raised from `receive` once a streamed body passes its limit (FastAPI re-raises
    HTTPExceptions met while reading a body; the handler above renders it)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"Request body is larger than {limit} bytes.")


class BodyLimitMiddleware:
    """One body limit for every route and content type, checked before a byte is read.

    Each request gets the rule of its (method, path), else `default`. A declared
    Content-Length over the limit is refused at once (413); a streamed body is cut off with 413
    as soon as it passes the limit, so no route ever holds more than its limit. multipart/*
    is refused at once (415) except on the routes whose rule allows it (uploads, which also
    authenticate before reading the body): no login or JSON route parses or spools a form.
    The connection of a refused body is closed (the rest of it is never read).
    """

    def __init__(self, app: ASGIApp, default: BodyRule,
                 rules: dict[tuple[str, str], BodyRule] | None = None) -> None:
        self.app = app
        self.default = default
        self.rules = rules or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rule = self.rules.get((scope["method"], scope["path"]), self.default)
        if _is_multipart(scope) and not rule.multipart:
            await _refuse(send, 415, "unsupported_media_type",
                          "multipart bodies are accepted only by the upload route "
                          "(POST /materials); send JSON or a URL-encoded form.")
            return
        limit = rule.max_bytes
        length = _content_length(scope)
        if length is not None and length > limit:
            await _refuse(send, 413, "too_large", f"Request body is larger than {limit} bytes.")
            return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        watched = _Watched(send)
        try:
            await self.app(scope, limited_receive, watched)
        except BodyTooLarge:
            if not watched.started:
                await _refuse(send, 413, "too_large", f"Request body is larger than {limit} bytes.")


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value
    return None


def _content_length(scope: Scope) -> int | None:
    raw = _header(scope, b"content-length")
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


def _is_multipart(scope: Scope) -> bool:
    return (_header(scope, b"content-type") or b"").strip().lower().startswith(b"multipart/")


async def _refuse(send: Send, status: int, code: str, message: str) -> None:
    body = json.dumps(error_body(code, message)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        (b"connection", b"close")],
        }
    )
    await send({"type": "http.response.body", "body": body})
