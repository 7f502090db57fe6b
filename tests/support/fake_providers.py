"""Loopback HTTP servers that speak the providers' streaming wire formats.

`FakeProvider` is a tiny asyncio HTTP/1.1 server: each request takes the next
`Scripted` response from its script (or the default), records the request body,
and streams the body in HTTP chunks — optionally slowly, optionally cut off mid-way
(no terminating chunk), optionally paced by an async generator. It notices when the
client closes the connection before the response is complete (`client_closed`). A complete
streamed response keeps its connection open for the client's next request, as real
providers do; error responses close it.

Benchmarks use `Paced` bodies instead: one timer task per server writes the due tokens of
every paced stream each tick (no coroutine per stream), from pre-built byte templates, so
the fake itself can emit tens of thousands of tokens per second on a shared core.
The real anthropic and openai SDKs are pointed at `base_url`.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import os
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Scripted:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    chunks: list[bytes] = field(default_factory=list)
    # Paced bodies (benchmarks): an async generator of chunks, made per request.
    stream: Callable[[], AsyncIterator[bytes]] | None = None
    delay_s: float = 0.0  # before each chunk
    cut_after: int | None = None  # close the connection after this many chunks
    paced: Paced | None = None  # benchmark body written by the server's pacer
    # Zero-latency bodies (benchmarks): the head, every chunk and the end in one write, as a
    # provider with the whole answer ready would send them.
    at_once: bool = False


@dataclass
class Paced:
    """OpenAI chunks: `count` tokens at `per_s`, each text `<emit time ns> `, then usage, DONE."""

    count: int
    per_s: float


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


class FakeProvider:
    def __init__(self, default: Scripted | Callable[[Recorded], Scripted] | None = None,
                 *, tls: ssl.SSLContext | None = None) -> None:
        self._tls = tls  # serve https with this server context
        self.script: deque[Scripted] = deque()
        self.default = default
        self.requests: list[Recorded] = []
        self.client_closed = 0  # responses abandoned by the client before their end
        self.connections = 0  # TCP connections accepted
        self.closed_event = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._pacer = _Pacer()

    @property
    def base_url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"{'https' if self._tls else 'http'}://127.0.0.1:{port}"

    async def __aenter__(self) -> FakeProvider:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0, backlog=1024,
                                                  ssl=self._tls)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._handlers):
            task.cancel()
        if self._handlers:
            await asyncio.wait(self._handlers)
        await self._server.wait_closed()

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.create_task(self._handle(reader, writer))
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Keep-alive, as real providers do: after a complete streamed response the client may
        # send its next request on the same connection (the SDKs pool their connections).
        watcher: asyncio.Task[bytes] | None = None
        carry = b""  # the first byte of the next request, read by the last watcher
        try:
            while True:
                head = carry + await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {k.strip().lower(): v.strip()
                           for k, v in (ln.split(":", 1) for ln in lines[1:] if ":" in ln)}
                raw = await reader.readexactly(int(headers.get("content-length", "0")))
                body = json.loads(raw) if raw else None
                recorded = Recorded(method, path, headers, body)
                self.requests.append(recorded)
                reply = self._next(recorded)
                # EOF from the client while we still owe it data = it closed the stream.
                watcher = asyncio.create_task(reader.read(1))
                if not await self._respond(reply, writer, watcher):
                    return
                if watcher.done():
                    carry = watcher.result()
                    if not carry:
                        return  # the client closed the connection after the response
                else:
                    watcher.cancel()
                    await asyncio.gather(watcher, return_exceptions=True)
                    carry = b""
                watcher = None
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            if watcher is not None:
                watcher.cancel()
                await asyncio.gather(watcher, return_exceptions=True)
            writer.close()

    def _next(self, recorded: Recorded) -> Scripted:
        if self.script:
            return self.script.popleft()
        if callable(self.default):
            return self.default(recorded)
        if self.default is not None:
            return self.default
        return Scripted(status=500, chunks=[b'{"error":{"type":"api_error","message":"no script"}}'])

    async def _respond(self, reply: Scripted, writer: asyncio.StreamWriter,
                       watcher: asyncio.Task[bytes]) -> bool:
        """Write the response; True if it was complete (the connection can serve another)."""
        streaming = reply.status == 200
        head = [f"HTTP/1.1 {reply.status} {'OK' if streaming else 'Error'}"]
        if streaming:
            head += ["content-type: text/event-stream", "transfer-encoding: chunked"]
        else:
            body = b"".join(reply.chunks)
            head += ["connection: close", "content-type: application/json",
                     f"content-length: {len(body)}"]
        head += [f"{k}: {v}" for k, v in reply.headers.items()]
        head_bytes = ("\r\n".join(head) + "\r\n\r\n").encode()
        if (streaming and reply.at_once and reply.stream is None and not reply.delay_s
                and reply.cut_after is None and reply.paced is None):
            writer.write(head_bytes + b"".join(http_chunk(piece) for piece in reply.chunks)
                         + b"0\r\n\r\n")
            await writer.drain()
            return True
        writer.write(head_bytes)
        if not streaming:
            writer.write(body)
            await writer.drain()
            return False
        if reply.paced is not None:
            paced = _PacedStream(writer.transport, reply.paced)
            self._pacer.add(paced)
            waits: set[asyncio.Future[Any]] = {paced.done, watcher}
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            if paced.done not in done:
                paced.stop()
                self._closed()
                return False
            return True
        sent = 0

        async def pieces() -> AsyncIterator[bytes]:
            if reply.stream is not None:
                async for piece in reply.stream():
                    yield piece
            else:
                for piece in reply.chunks:
                    yield piece

        async for piece in pieces():
            if reply.cut_after is not None and sent >= reply.cut_after:
                writer.transport.abort()  # mid-stream: no terminating chunk
                return False
            if reply.delay_s:
                done, _ = await asyncio.wait({watcher}, timeout=reply.delay_s)
                if done:
                    self._closed()
                    return False
            elif watcher.done():
                self._closed()
                return False
            writer.write(http_chunk(piece))
            await writer.drain()
            sent += 1
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True

    def _closed(self) -> None:
        self.client_closed += 1
        self.closed_event.set()


# --- Anthropic Messages SSE -------------------------------------------------------------

def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


def anthropic_start(input_tokens: int = 12) -> list[bytes]:
    return [
        _sse("message_start", {"type": "message_start", "message": {
            "id": "msg_fake", "type": "message", "role": "assistant", "model": "claude-fake",
            "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": 1}}}),
        _sse("content_block_start", {"type": "content_block_start", "index": 0,
                                     "content_block": {"type": "text", "text": ""}}),
        _sse("ping", {"type": "ping"}),
    ]


def anthropic_delta(text: str) -> bytes:
    return _sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                        "delta": {"type": "text_delta", "text": text}})


def anthropic_end(output_tokens: int, stop_reason: str = "end_turn") -> list[bytes]:
    return [
        _sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
        _sse("message_delta", {"type": "message_delta",
                               "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                               "usage": {"output_tokens": output_tokens}}),
        _sse("message_stop", {"type": "message_stop"}),
    ]


def anthropic_stream(pieces: list[str], *, input_tokens: int = 12, output_tokens: int | None = None,
                     stop_reason: str = "end_turn", delay_s: float = 0.0,
                     cut_after_pieces: int | None = None) -> Scripted:
    chunks = anthropic_start(input_tokens) + [anthropic_delta(p) for p in pieces]
    chunks += anthropic_end(output_tokens if output_tokens is not None else len(pieces),
                            stop_reason)
    cut = None if cut_after_pieces is None else len(anthropic_start()) + cut_after_pieces
    return Scripted(chunks=chunks, delay_s=delay_s, cut_after=cut)


def anthropic_error(status: int, kind: str, message: str,
                    retry_after: float | None = None) -> Scripted:
    headers = {"retry-after": str(retry_after)} if retry_after is not None else {}
    body = json.dumps({"type": "error", "error": {"type": kind, "message": message}}).encode()
    return Scripted(status=status, headers=headers, chunks=[body])


def anthropic_stream_error(kind: str = "overloaded_error", message: str = "Overloaded") -> Scripted:
    """A 200 stream whose first event after message_start is an SSE `error` event."""
    return Scripted(chunks=anthropic_start() + [
        _sse("error", {"type": "error", "error": {"type": kind, "message": message}})])


# --- OpenAI chat completion chunks SSE ----------------------------------------------------

def _data(obj: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n".encode()


def openai_chunk(text: str | None, finish: str | None = None) -> bytes:
    delta: dict[str, Any] = {"content": text} if text is not None else {}
    return _data({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0,
                  "model": "gpt-fake", "choices": [{"index": 0, "delta": delta,
                                                    "finish_reason": finish}]})


def openai_usage(prompt_tokens: int, completion_tokens: int) -> bytes:
    return _data({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0,
                  "model": "gpt-fake", "choices": [],
                  "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                            "total_tokens": prompt_tokens + completion_tokens}})


DONE = b"data: [DONE]\n\n"


def openai_stream(pieces: list[str], *, prompt_tokens: int = 15,
                  output_tokens: int | None = None, finish: str = "stop",
                  delay_s: float = 0.0, cut_after_pieces: int | None = None) -> Scripted:
    first = _data({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0,
                   "model": "gpt-fake", "choices": [{"index": 0, "delta": {"role": "assistant",
                                                     "content": ""}, "finish_reason": None}]})
    chunks = [first] + [openai_chunk(p) for p in pieces] + [
        openai_chunk(None, finish),
        openai_usage(prompt_tokens, output_tokens if output_tokens is not None
                     else len(pieces)),
        DONE]
    cut = None if cut_after_pieces is None else 1 + cut_after_pieces
    return Scripted(chunks=chunks, delay_s=delay_s, cut_after=cut)


def openai_error(status: int, message: str, kind: str = "server_error",
                 retry_after: float | None = None) -> Scripted:
    headers = {"retry-after": str(retry_after)} if retry_after is not None else {}
    body = json.dumps({"error": {"message": message, "type": kind, "code": None}}).encode()
    return Scripted(status=status, headers=headers, chunks=[body])


def http_chunk(piece: bytes) -> bytes:
    """`piece` framed as one chunk of a chunked HTTP/1.1 body."""
    return b"%x\r\n%s\r\n" % (len(piece), piece)


class _PacedStream:
    """One paced response. Its chunks carry an id of their own, as a real provider's do (a
    client that keys anything on the bytes of one response pays for that per response)."""

    __slots__ = ("transport", "spec", "start", "sent", "done", "rid", "head", "tail")

    def __init__(self, transport: Any, spec: Paced) -> None:
        self.transport = transport
        self.spec = spec
        self.start = time.monotonic()
        self.sent = 0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.rid = b"chatcmpl-" + os.urandom(12).hex().encode()
        # A token chunk split around its text: each token is written without json.dumps.
        self.head, self.tail = self._own(openai_chunk("@TOKEN@")).split(b"@TOKEN@")
        self.transport.write(http_chunk(self._own(openai_chunk(""))))

    def _own(self, chunk: bytes) -> bytes:
        return chunk.replace(b'"chatcmpl-fake"', b'"' + self.rid + b'"', 1)

    def next_due(self) -> float:
        """When the next token is due (monotonic seconds)."""
        return self.start + self.sent / self.spec.per_s

    def emit_due(self, now: float, wall_ns: int) -> None:
        """Write every token whose time has come (one per write at the usual rates)."""
        # At least one: the pacer calls when the next token is due (float rounding aside).
        due = min(self.spec.count, max(self.sent + 1, int((now - self.start) * self.spec.per_s) + 1))
        if due > self.sent:
            piece = self.head + b"%d " % wall_ns + self.tail
            self.transport.write(http_chunk(piece) * (due - self.sent))
            self.sent = due
        if self.sent >= self.spec.count:
            self.transport.write(http_chunk(self._own(openai_chunk(None, "stop")))
                                 + http_chunk(self._own(openai_usage(10, self.spec.count)))
                                 + http_chunk(DONE) + b"0\r\n\r\n")
            self.stop()

    def stop(self) -> None:
        if not self.done.done():
            self.done.set_result(None)


class _Pacer:
    """One task writes the due tokens of every paced stream, waking every TICK_S; streams wait
    in a heap by due time, so a tick touches only the streams that have a token due."""

    TICK_S = 0.005

    def __init__(self) -> None:
        self.due: list[tuple[float, int, _PacedStream]] = []
        self.added = 0  # tie-breaker: streams are not comparable
        self.task: asyncio.Task[None] | None = None

    def add(self, stream: _PacedStream) -> None:
        self.added += 1
        heapq.heappush(self.due, (stream.next_due(), self.added, stream))
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        due = self.due
        while due:
            started = time.monotonic()
            wall_ns = time.time_ns()
            while due and due[0][0] <= started:
                _, n, st = due[0]
                if not st.done.done():
                    st.emit_due(started, wall_ns)
                if st.done.done():
                    heapq.heappop(due)
                else:
                    heapq.heapreplace(due, (st.next_due(), n, st))
            await asyncio.sleep(max(0.0, self.TICK_S - (time.monotonic() - started)))
