"""Generated hostile input on /ws/v1, before and after auth: random JSON, wrong types, huge and
deep values, binary frames, invalid UTF-8, NUL, lone surrogates, forged tokens, floods.

Whatever arrives, the server answers only with frames, error codes and close codes that
docs/protocol.md documents, logs nothing at ERROR, keeps answering the socket (a `ping` after
every frame gets its `pong`) and never disturbs another user: a bystander's stream arrives
whole, in order, while the fuzzing runs. Example counts: tests/support/fuzz.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from jose import jwt
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from chat_server.app import create_app
from chat_server.protocol.codes import Close, ErrorCode
from chat_server.settings import Settings
from tests.support import protocol_doc
from tests.support.fuzz import examples
from tests.support.logs import Collected, collect_logs
from tests.support.services import serve_app
from tests.support.threaded import LoopThread, loop_thread
from tests.support.ws import new_user, recv, socket, ws_url

MAX_FRAME = 4096  # small, so that "huge" costs little
KNOWN = ["auth", "ping", "pong", "auth.refresh", "chat.send", "chat.cancel"]
FIELDS = ["id", "text", "token", "reply_id", "conversation_id", "material_ids", "socratic", "t",
          "resume", "type"]
HOSTILE_CHARS = ["\x00", "\ud800", "\udfff", "\ufeff", "\u202e", "\\", '"', "Ё", "😀"]


@dataclass
class Frame:
    """One client frame: its bytes, whether it goes as a text frame, and the close it must get
    (None: answered, and the socket stays open)."""

    data: bytes
    text: bool = True

    @property
    def close(self) -> int | None:
        if len(self.data) > MAX_FRAME:
            return Close.TOO_BIG
        if not self.text:
            return Close.UNSUPPORTED_DATA
        try:
            self.data.decode()
        except UnicodeDecodeError:
            return Close.INVALID_DATA
        return None


# --- strategies --------------------------------------------------------------------------
texts = st.text(st.characters(exclude_categories=()) | st.sampled_from(HOSTILE_CHARS), max_size=40)
leaves = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**80), max_value=2**80),
                   st.floats(allow_nan=False), texts, st.uuids().map(str))
values = st.recursive(leaves, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(texts, inner, max_size=4), max_leaves=12)


@st.composite
def typed(draw: st.DrawFn) -> dict[str, Any]:
    """A frame that looks like ours: a known (or random) type, known fields of any type."""
    frame: dict[str, Any] = {"type": draw(st.sampled_from(KNOWN) | texts)}
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=5, unique=True)):
        frame[name] = draw(values | texts | st.uuids().map(str))
    return frame


def _encoded(value: Any, ascii_only: bool) -> bytes:
    # With ensure_ascii=False a lone surrogate stays raw: its bytes are not UTF-8.
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


json_frames = st.builds(_encoded, typed() | values, st.booleans()).map(Frame)
deep_frames = st.builds(lambda n, obj: (('{"a":' * n + "1" + "}" * n) if obj
                                        else "[" * n + "]" * n).encode(),
                        st.integers(1, 3000), st.booleans()).map(Frame)
huge_frames = st.builds(lambda n, c: json.dumps({"type": "ping", "t": c * n}).encode(),
                        st.integers(MAX_FRAME - 200, MAX_FRAME + 200),
                        st.sampled_from(["x", "Ё", "\\"])).map(Frame)
raw_text = st.builds(lambda s: s.encode("utf-8", "surrogatepass"), texts).map(Frame)
binary = st.binary(max_size=64).map(lambda b: Frame(b, text=False))
bad_utf8 = st.builds(lambda head, bad: head + bad, st.binary(max_size=16),
                     st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80",
                                      b"\xe2\x82"])).map(Frame)
frames = st.one_of(json_frames, json_frames, deep_frames, huge_frames, raw_text, binary,
                   bad_utf8)


# --- the server and what it may say ----------------------------------------------------
@dataclass
class Fuzzed:
    thread: LoopThread
    app: Any
    base: str
    settings: Settings
    user_id: str
    token: str
    logs: Collected


async def bystander(base: str, bus: Any, stop: asyncio.Event) -> tuple[int, list[int]]:
    """Another user's socket receiving a steady stream (an event every 20 ms, then a last one
    once `stop` is set): (events published, offsets received)."""
    uid, token = await new_user(base)
    published = 0
    offsets: list[int] = []
    async with socket(base, token) as (ws, _):
        async def publish() -> None:
            nonlocal published
            while not stop.is_set():
                await bus.publish(uid, {"type": "material.progress", "material_id": "m",
                                        "stage": "embedding", "done": published, "total": 0})
                published += 1
                await asyncio.sleep(0.02)
            await bus.publish(uid, {"type": "material.ready", "material_id": "m", "chunks": 0})
            published += 1

        publisher = asyncio.create_task(publish())
        try:
            frame: dict[str, Any] = {}
            while frame.get("type") != "material.ready":
                try:
                    frame = await recv(ws, 10)
                except TimeoutError:
                    raise AssertionError(f"the bystander got nothing for 10 s: {published} "
                                         f"published, received {offsets}") from None
                assert frame["type"] in ("material.progress", "material.ready"), frame
                offsets.append(frame["o"])
        finally:
            stop.set()
            await publisher
    return published, offsets


def assert_whole(stream: tuple[int, list[int]]) -> None:
    published, offsets = stream
    assert published > 0
    assert offsets == list(range(1, published + 1))  # no gap, no duplicate, in order


class Bystander:
    """`bystander` on the server's loop thread, for the synchronous fuzz tests."""

    def __init__(self, fuzzed: Fuzzed) -> None:
        self.loop = fuzzed.thread.loop
        self.stop = asyncio.Event()
        self.task = fuzzed.thread.spawn(bystander(fuzzed.base, fuzzed.app.state.bus, self.stop))

    def finish(self) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        assert_whole(self.task.result(30))


@pytest.fixture
def fuzzed(settings: Settings) -> Iterator[Fuzzed]:
    s = settings.model_copy(update={"ws_max_frame_bytes": MAX_FRAME,
                                    # Fuzzing, not flooding: test_floods has the default limits.
                                    "ws_rate_limit_per_s": 10_000.0,
                                    "ws_rate_limit_burst": 10_000})
    with collect_logs(logging.ERROR) as logs, loop_thread() as thread:
        app = create_app(s)
        base = thread.enter(serve_app(app, ws_max_size=MAX_FRAME))
        uid, token = thread.run(new_user(base))
        yield Fuzzed(thread, app, base, s, uid, token, logs)


def _open(base: str) -> ClientConnection:
    return connect(ws_url(base), open_timeout=10, close_timeout=5, max_size=None,
                   compression=None)


def _check(frame: dict[str, Any]) -> None:
    """A frame the server sent: documented type, documented code."""
    assert frame.get("type") in protocol_doc.server_frames(), frame
    if frame["type"] in ("error", "reply.error"):
        assert frame["code"] in protocol_doc.error_codes(), frame
        assert isinstance(frame["message"], str) and frame["message"], frame
    if frame["type"] == "resume.failed":
        assert frame["reason"] in protocol_doc.resume_reasons(), frame


def _closed_with(ws: ClientConnection, sent: Frame) -> int:
    """Read until the server closes; its close code (every frame before it checked)."""
    try:
        for _ in range(10_000):
            _check(json.loads(ws.recv(10)))
    except ConnectionClosed as closed:
        assert closed.rcvd is not None, "the connection dropped without a close frame"
        return closed.rcvd.code
    except TimeoutError:
        raise AssertionError(f"not closed after {sent}") from None
    raise AssertionError("the socket was never closed")


def _answered(ws: ClientConnection, marker: str) -> list[dict[str, Any]]:
    """Send a ping and read up to its pong: the socket still answers. Every frame checked."""
    ws.send(json.dumps({"type": "ping", "id": marker}))
    got: list[dict[str, Any]] = []
    try:
        for _ in range(10_000):
            frame = json.loads(ws.recv(10))
            _check(frame)
            if frame == {"type": "pong", "id": marker}:
                return got
            got.append(frame)
    except ConnectionClosed as closed:
        raise AssertionError(f"closed {closed.rcvd} after {got[-3:]}") from None
    raise AssertionError("no pong")


def _no_error_logged(logs: Collected) -> None:
    assert not logs.records, "\n".join(logs.lines[:5])


# --- after auth ----------------------------------------------------------------------
def test_frames_after_auth_get_documented_answers(fuzzed: Fuzzed) -> None:
    assert Close.INVALID_DATA in protocol_doc.close_codes()
    bystander = Bystander(fuzzed)
    counter = iter(range(1_000_000))

    @settings(max_examples=examples(60))
    @given(st.lists(frames, min_size=1, max_size=4))
    def property_(sent: list[Frame]) -> None:
        with _open(fuzzed.base) as ws:
            ws.send(json.dumps({"type": "auth", "token": fuzzed.token}))
            assert json.loads(ws.recv(10))["type"] == "welcome"
            for frame in sent:
                ws.send(frame.data, text=frame.text)
                if frame.close is not None:
                    assert _closed_with(ws, frame) == frame.close, frame
                    return
                _answered(ws, f"m{next(counter)}")

    property_()
    bystander.finish()
    _no_error_logged(fuzzed.logs)


# --- the first frame -----------------------------------------------------------------
@st.composite
def tokens(draw: st.DrawFn, real: str, user_id: str, secret: str, embed_secret: str) -> Any:
    """A token field: the real one, anything at all, or a JWT signed with our key (or the embed
    key) whose claims are of any type or value."""
    kind = draw(st.sampled_from(["real", "value", "signed", "signed", "signed"]))
    if kind == "real":
        return real
    if kind == "value":
        return draw(values)
    now = int(time.time())
    claims: dict[str, Any] = {}
    for name, plausible in (("sub", st.sampled_from([user_id, str(uuid.uuid4()), "host-1"])),
                            ("typ", st.sampled_from(["access", "refresh", "embed"])),
                            ("exp", st.sampled_from([now + 300, now - 300, 10**400, 2**63, 1e300])),
                            ("iat", st.just(now)), ("gen", st.sampled_from([0, 1, -1])),
                            ("name", texts), ("jti", st.uuids().map(str))):
        # Mostly plausible, so that one odd claim at a time gets past the others.
        choice = draw(st.sampled_from(["plausible"] * 4 + ["absent", "any"]))
        if choice == "plausible":
            claims[name] = draw(plausible)
        elif choice == "any":
            claims[name] = draw(values)
    key = draw(st.sampled_from([secret, embed_secret]))
    return jwt.encode(claims, key, algorithm="HS256")


def test_first_frames_get_welcome_or_a_documented_close(fuzzed: Fuzzed) -> None:
    s = fuzzed.settings
    token_st = tokens(fuzzed.token, fuzzed.user_id, str(s.secret_key), str(s.embed_secret))
    resume_st = st.none() | values | st.fixed_dictionaries(
        {"since": st.integers(-5, 5) | values, "epoch": texts | values})
    auth_st = st.builds(lambda token, resume, extra: Frame(_encoded(
        {"type": "auth", "token": token, **({"resume": resume} if resume is not None else {}),
         **extra}, True)), token_st, resume_st, st.dictionaries(st.sampled_from(FIELDS[:6]),
                                                                values, max_size=2))
    bystander = Bystander(fuzzed)

    def signed(key: str, **claims: Any) -> Frame:
        return Frame(_encoded({"type": "auth", "token": jwt.encode(claims, key, "HS256")}, True))

    # What the fuzzing found once, kept as explicit examples: an expiry no float holds
    # (OverflowError) or that is not a number (jose's TypeError): 1011 and an ERROR line,
    # where 4401 is due.
    @example(signed(str(s.embed_secret), sub="host-1", exp=10**400))
    @example(signed(str(s.embed_secret), sub="host-1", exp=[1]))
    @example(signed(str(s.secret_key), sub=fuzzed.user_id, typ="access", exp=10**400))
    @settings(max_examples=examples(100))
    @given(auth_st | frames)
    def property_(first: Frame) -> None:
        with _open(fuzzed.base) as ws:
            ws.send(first.data, text=first.text)
            try:
                welcome = json.loads(ws.recv(10))
            except ConnectionClosed as closed:
                assert closed.rcvd is not None, "dropped without a close frame"
                # The WebSocket layer's 1009 and 1007 come first; a binary first frame is
                # "anything else" (4401), like any other.
                expected = first.close if first.close in (Close.TOO_BIG, Close.INVALID_DATA) \
                    else Close.AUTH_FAILED
                assert closed.rcvd.code == expected, (closed.rcvd, first)
                return
            assert first.close is None and welcome["type"] == "welcome", welcome
            _answered(ws, "after-welcome")

    property_()
    bystander.finish()
    _no_error_logged(fuzzed.logs)


# --- floods ----------------------------------------------------------------------------
async def test_floods_are_refused_without_disturbing_anyone(settings: Settings) -> None:
    """Default limits: a flood of frames gets rate_limited and then 4429; a crowd of sockets
    that never authenticate is closed 4401 when their time is up; binary floods 1003.
    A bystander's stream goes on meanwhile."""
    s = settings.model_copy(update={"ws_auth_timeout_s": 1.0})
    with collect_logs(logging.ERROR) as logs:
        app = create_app(s)
        async with serve_app(app) as base:
            _, token = await new_user(base)
            stop = asyncio.Event()
            stream = asyncio.create_task(bystander(base, app.state.bus, stop))
            async with socket(base, token) as (ws, _):
                for n in range(500):
                    try:
                        await ws.send(json.dumps({"type": "ping", "id": n}))
                    except ConnectionClosed:
                        break
                seen: list[dict[str, Any]] = []
                with pytest.raises(ConnectionClosed) as flood:
                    for _ in range(1000):
                        seen.append(await recv(ws))
                        _check(seen[-1])
                assert flood.value.rcvd is not None and flood.value.rcvd.code == Close.FLOODING
                # Pongs, then refusals (what is still queued at the close is dropped with it).
                assert all(f["type"] == "pong" or f.get("code") == "rate_limited" for f in seen)

            from websockets.asyncio.client import connect as aconnect

            async def silent() -> int:
                async with aconnect(ws_url(base), open_timeout=10) as quiet:
                    with pytest.raises(ConnectionClosed) as closed:
                        await asyncio.wait_for(quiet.recv(), 10)
                    assert closed.value.rcvd is not None
                    return closed.value.rcvd.code

            async def binary_flood() -> int:
                async with socket(base, token) as (noisy, _):
                    with pytest.raises(ConnectionClosed) as closed:
                        for _ in range(200):
                            await noisy.send(b"\x00" * 100)
                        await asyncio.wait_for(noisy.recv(), 10)
                    assert closed.value.rcvd is not None
                    return closed.value.rcvd.code

            codes = await asyncio.gather(*(silent() for _ in range(30)),
                                         *(binary_flood() for _ in range(5)))
            assert codes == [Close.AUTH_FAILED] * 30 + [Close.UNSUPPORTED_DATA] * 5
            # The flooder's user can come back once the bucket refilled; a new socket works.
            await asyncio.sleep(0.5)
            async with socket(base, token) as (again, _):
                await again.send(json.dumps({"type": "ping", "id": "back"}))
                assert await recv(again) == {"type": "pong", "id": "back"}
            stop.set()
            assert_whole(await stream)
    _no_error_logged(logs)


def test_the_codes_module_and_the_protocol_document_agree() -> None:
    assert {int(code) for code in Close} == protocol_doc.close_codes()
    assert {ErrorCode.BAD_JSON, ErrorCode.BAD_FRAME, ErrorCode.UNKNOWN_TYPE, ErrorCode.RATE_LIMITED,
            ErrorCode.AUTH_FAILED, ErrorCode.UNAVAILABLE, ErrorCode.INTERNAL} <= protocol_doc.error_codes()
