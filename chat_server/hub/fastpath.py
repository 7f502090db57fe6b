"""The hub's one use of another library's internals, isolated: pre-framed fan-out writes on
uvicorn's websockets-sansio protocol.

Fan-out sends the same event to many sockets. Through plain ASGI (`websocket.send`) every
socket pays for framing (websockets' serializer) and one `transport.write` per frame. The
`tutorhub.frames` ASGI extension offered here lets the hub frame each event once (server frames
are unmasked, so the bytes are the same for every socket), write it at once to a socket that
is idle (`write_now`), and write all the frames queued for a socket that is behind in one
`transport.write`. It also replaces the protocol's receive queue and writable flag with
slimmer equivalents (an idle socket holds them for its whole life). What it gains and costs
against the public path: load_tests/reports/hub.md.

That reaches into uvicorn: a subclass of its websockets-sansio protocol (not a public API)
that relies on the names listed in `problems()`. So:

- uvicorn is pinned to the version this was checked against (`UVICORN_VERSION`, pyproject);
- `problems()` checks those names, signatures and the protocol's use of its queue and flag at
  start; tests/test_fastpath.py fails loudly when any changed;
- `uvicorn_ws(settings)` is the whole interface: the protocol for uvicorn's `ws` option — this
  one when `problems()` is empty (and the setting `ws_fast_path` is on, and no compression:
  permessage-deflate compresses per socket), else uvicorn's own "websockets-sansio", with the
  hub writing through plain ASGI `websocket.send`. One write path per engine: the hub writes
  pre-framed bytes exactly when the socket's scope offers `EXTENSION`.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import logging
import struct
import textwrap
from functools import cache
from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chat_server.settings import Settings

log = logging.getLogger(__name__)

UVICORN_VERSION = "0.55.0"  # what `problems()` was checked against; pinned in pyproject.toml
PUBLIC = "websockets-sansio"  # uvicorn's own protocol, through ASGI only
EXTENSION = "tutorhub.frames"

# What the subclass relies on in uvicorn (the canary checks every line of this).
IMPL = ("uvicorn.protocols.websockets.websockets_sansio_impl", "WebSocketsSansIOProtocol")
DISCONNECTED = ("uvicorn.protocols.utils", "ClientDisconnected")
SIGNATURES = {
    "__init__": ["self", "config", "server_state", "app_state", "_loop"],
    "handle_connect": ["self", "event"],
    "send": ["self", "message"],
}
# The protocol's uses of the two objects replaced here must stay within what they implement.
QUEUE_USES = {"put_nowait", "get", "empty"}
FLAG_USES = {"is_set", "set", "clear", "wait"}
# State the subclass reads: each must still be an attribute the protocol sets.
STATE = {"queue", "writable", "transport", "scope", "request", "response", "logger",
         "handshake_complete", "close_sent", "disconnected"}


def text_frame(payload: bytes) -> bytes:
    """One unfragmented, unmasked text frame (RFC 6455 §5.2)."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", 0x81, 126, n) + payload
    return struct.pack("!BBQ", 0x81, 127, n) + payload


class _ClientFault(logging.Filter):
    """uvicorn logs a text frame that is not UTF-8 at ERROR with a traceback and closes the
    socket 1007 (docs/protocol.md): that is a client's fault, not ours, so it becomes one
    WARNING line. (A filter on its logger, public API: the parsing itself stays uvicorn's.)"""

    MESSAGE = "Invalid UTF-8 sequence received from client."

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and record.msg == self.MESSAGE:
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg = "A client sent a text frame that is not UTF-8; closed it with 1007."
            record.exc_info = record.exc_text = None
        return True


_CLIENT_FAULT = _ClientFault()


def _quiet_client_faults(logger: logging.Logger) -> None:
    if _CLIENT_FAULT not in logger.filters:
        logger.addFilter(_CLIENT_FAULT)


def uvicorn_ws(settings: Settings) -> str | type[asyncio.Protocol]:
    """uvicorn's `ws` option: the fast protocol when it can serve, else the public one."""
    _quiet_client_faults(logging.getLogger("uvicorn.error"))  # both paths log through it
    if not settings.ws_fast_path or settings.ws_compression:
        return PUBLIC
    found = problems()
    if found:
        log.warning("the hub's pre-framed write path is off (uvicorn's internals changed: %s); "
                    "sockets use uvicorn's public ASGI path", "; ".join(found))
        return PUBLIC
    return fast_protocol()


@cache
def problems() -> list[str]:
    """What in the installed uvicorn no longer matches what the fast path relies on."""
    try:
        impl = getattr(import_module(IMPL[0]), IMPL[1])
        getattr(import_module(DISCONNECTED[0]), DISCONNECTED[1])
    except (ImportError, AttributeError) as exc:
        return [f"{type(exc).__name__}: {exc}"]
    found = []
    for name, params in SIGNATURES.items():
        method = getattr(impl, name, None)
        if method is None:
            found.append(f"{IMPL[1]}.{name} is gone")
        elif list(inspect.signature(method).parameters) != params:
            found.append(f"{IMPL[1]}.{name}{inspect.signature(method)} is not "
                         f"({', '.join(params)})")
    if inspect.iscoroutinefunction(getattr(impl, "send", None)) is False:
        found.append(f"{IMPL[1]}.send is no longer a coroutine function")
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(impl)))
    except (OSError, TypeError, SyntaxError) as exc:
        return [*found, f"the source of {IMPL[1]} cannot be read: {exc}"]
    assigned, used, passed = _self_attributes(tree)
    for attr in sorted(STATE - assigned):
        found.append(f"{IMPL[1]} no longer sets self.{attr}")
    for attr, allowed in (("queue", QUEUE_USES), ("writable", FLAG_USES)):
        for method in sorted(used.get(attr, set()) - allowed):
            found.append(f"{IMPL[1]} now uses self.{attr}.{method}")
        if attr in passed:
            found.append(f"{IMPL[1]} now passes self.{attr} around (not only calls on it)")
    return found


def _is_self(node: ast.expr) -> bool:
    return isinstance(node, ast.Name) and node.id == "self"


def _self_attributes(tree: ast.AST) -> tuple[set[str], dict[str, set[str]], set[str]]:
    """(attributes assigned on self, {attribute: names used on self.<attribute>}, attributes
    read as a whole — `x = self.queue` — where their uses can no longer be seen here)."""
    assigned: set[str] = set()
    used: dict[str, set[str]] = {}
    bases: set[int] = set()  # self.<attribute> nodes that are the base of an access
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) \
                and _is_self(node.value.value):
            used.setdefault(node.value.attr, set()).add(node.attr)
            bases.add(id(node.value))
    passed: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _is_self(node.value):
            if isinstance(node.ctx, ast.Store):
                assigned.add(node.attr)
            elif id(node) not in bases:
                passed.add(node.attr)
    return assigned, used, passed


def __getattr__(name: str) -> Any:
    # `uvicorn --ws chat_server.hub.fastpath:HubWebSocketProtocol` (load_tests/bench_tutor.py).
    if name == "HubWebSocketProtocol" and not problems():
        return fast_protocol()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@cache
def fast_protocol() -> type[asyncio.Protocol]:
    """The protocol class (built on first use: only when `problems()` found nothing)."""
    impl = getattr(import_module(IMPL[0]), IMPL[1])
    client_disconnected = getattr(import_module(DISCONNECTED[0]), DISCONNECTED[1])

    class HubWebSocketProtocol(impl):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            _quiet_client_faults(self.logger)  # also when started by `uvicorn --ws` directly
            self.queue = _Inbox()
            self.writable = _Flag()

        def handle_connect(self, event: Any) -> None:
            super().handle_connect(event)
            response = getattr(self, "response", None)
            if (response is not None and response.status_code == 101
                    and "Sec-WebSocket-Extensions" not in response.headers):
                # `write_now`: a frame written at once when nothing stops it (see below).
                self.scope["extensions"][EXTENSION] = {"write_now": self.write_now}

        async def send(self, message: Any) -> None:
            if message["type"] != EXTENSION:
                await super().send(message)
                if message["type"] == "websocket.accept" and self.handshake_complete:
                    # The handshake is done: its request and response are not needed.
                    self.request = None
                    self.response = None
                return
            if not self.writable.is_set():
                await self.writable.wait()
            if self.disconnected or self.transport.is_closing():
                raise client_disconnected()
            if self.close_sent or not self.handshake_complete:
                raise RuntimeError(
                    f"Unexpected ASGI message '{EXTENSION}' before accept or after close.")
            self.transport.write(message["data"])

        def write_now(self, data: bytes) -> bool:
            """Write pre-framed bytes now if `send` would write them without waiting; False
            (nothing written) when it would wait or raise: the caller queues them for `send`."""
            if (not self.writable.is_set() or self.disconnected or self.transport.is_closing()
                    or self.close_sent or not self.handshake_complete):
                return False
            self.transport.write(data)
            return True

    HubWebSocketProtocol.__module__ = __name__
    return HubWebSocketProtocol


class _Inbox:
    """What the protocol needs of its per-connection asyncio.Queue (QUEUE_USES), in ~200 bytes
    instead of ~3 KB (an idle socket holds one of these for its whole life)."""

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def get(self) -> Any:
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.pop(0)

    def empty(self) -> bool:
        return not self._items


class _Flag:
    """asyncio.Event without its waiter deque (FLAG_USES, as the protocol uses them)."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = True
        self._waiters: list[asyncio.Future[None]] = []

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> bool:
        if self._set:
            return True
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        finally:
            if fut in self._waiters:
                self._waiters.remove(fut)
        return True
