"""LLM providers behind one small interface, and the choice of them from settings.

A provider's `stream(request)` is an async context manager yielding a `ReplyStream`:
iterate it for text deltas; afterwards `finish_reason` ("stop" | "length") and `usage`
are set. Leaving the context closes the HTTP stream at once (that is how cancel stops
billing). Every fault surfaces as `ProviderError`; a stream that ends without its
provider's final event raises `ProviderError("provider_stream_cut")`.

Both SDKs are used for what they are good at — auth, base_url, the request, status errors —
but the request goes through the SDKs' documented call for custom requests (`client.post`
with `cast_to=httpx.Response`, `stream=True`: the response unread) and the streamed body is
read raw and parsed here: the SDKs' per-event SSE decoding and pydantic models cost 70 µs
(anthropic) to 380 µs (openai) of CPU per token, more than everything else a token costs;
our parser plus `json.loads` is ~20 µs.
When aiohttp is installed the SDKs' own aiohttp transport is used (C HTTP parser, and one
read returns every chunk that has arrived), and then a stream can also be polled: once tokens
flow, the tutor's flush tick reads every reply's socket itself, once per tick, however many
tokens arrived meanwhile (they would wait for the tick anyway), with no task woken per read.
"""

from __future__ import annotations

import email.utils
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import httpx2

from chat_server.settings import Settings
from chat_server.tutor.errors import ProviderError
from chat_server.tutor.prompt import PromptRequest
from chat_server.tutor.stream import Polled
from chat_server.tutor.tap import Tap, TapError

log = logging.getLogger(__name__)


@dataclass
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens}


class ReplyStream(Protocol):
    usage: Usage
    finish_reason: str | None
    merge_reads: bool  # set by a consumer that merges tokens into deltas anyway: the texts
    # of one network read are yielded as one

    def __aiter__(self) -> AsyncIterator[str]: ...

    def polled(self) -> Polled | None:
        """The stream as a consumer's tick reads it, without waiting (once tokens flow), or
        None: iterate it."""


class Provider(Protocol):
    name: str
    model: str

    def stream(self, request: PromptRequest) -> AbstractAsyncContextManager[ReplyStream]: ...

    async def aclose(self) -> None: ...


# --- fault mapping ------------------------------------------------------------------

_RETRYABLE_STATUS = {408, 409, 429}
_RETRYABLE_BODY_TYPES = {"overloaded_error", "rate_limit_error", "api_error", "server_error"}


def retry_after_seconds(headers: Any) -> float | None:
    if headers is None:
        return None
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(0.0, float(raw_ms) / 1000)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        parsed = email.utils.parsedate_tz(raw)
        return max(0.0, email.utils.mktime_tz(parsed) - time.time()) if parsed else None


def _body_error_type(body: Any) -> str | None:
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and isinstance(err.get("type"), str):
            return str(err["type"])
    return None


def _from_status(provider: str, status: int, body: Any, headers: Any) -> ProviderError:
    kind = _body_error_type(body)
    retryable = status in _RETRYABLE_STATUS or status >= 500 or kind in _RETRYABLE_BODY_TYPES
    if status == 429 or kind == "rate_limit_error":
        return ProviderError("provider_overloaded",
                             f"The {provider} provider is rate limiting us (HTTP 429).",
                             retryable=True, retry_after=retry_after_seconds(headers),
                             status=status)
    if retryable:
        what = f"HTTP {status}" if status != 200 else "error event"
        what += f", {kind}" if kind else ""
        return ProviderError("provider_overloaded",
                             f"The {provider} provider is overloaded or failing ({what}).",
                             retryable=True, retry_after=retry_after_seconds(headers),
                             status=status)
    if status in (401, 403):
        return ProviderError("provider_rejected",
                             f"The {provider} provider refused our credentials (HTTP {status}).",
                             status=status)
    return ProviderError("provider_rejected",
                         f"The {provider} provider rejected the request (HTTP {status}"
                         f"{', ' + kind if kind else ''}).", status=status)


def _transport(provider: str, err: Exception, started: bool) -> ProviderError:
    if started:
        return ProviderError("provider_stream_cut",
                             f"The {provider} stream was cut off mid-way ({type(err).__name__}).",
                             retryable=True)
    if isinstance(err, (httpx2.TimeoutException, TimeoutError)):
        return ProviderError("provider_timeout", f"The {provider} provider did not answer in time.",
                             retryable=True)
    return ProviderError("provider_unreachable",
                         f"Could not reach the {provider} provider ({type(err).__name__}).",
                         retryable=True)


_CUT = "The {} stream ended before its final event."


class SSEParser:
    """Server-sent events as (event name or b"", data), fed bytes as they are read.

    Lines end with LF, CRLF or CR; events end with a blank line; `data:` lines are joined
    with LF; comments and other fields are skipped; an unterminated last event is dropped.
    """

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, chunk: bytes) -> list[tuple[bytes, bytes]]:
        return self.events(self.feed_block(chunk))

    def feed_block(self, chunk: bytes) -> bytes:
        """The complete events read so far as one block (LF line ends, each event followed by
        a blank line; b"" if none); the rest is kept for the next read."""
        buf = self._buf + chunk if self._buf else chunk
        if b"\r" in buf:
            # A CR at the very end may be the first half of a CRLF: keep it for the next read.
            tail = b"\r" if buf.endswith(b"\r") else b""
            buf = buf[:len(buf) - len(tail)].replace(b"\r\n", b"\n").replace(b"\r", b"\n") + tail
        if b"\n\n" not in buf:
            self._buf = buf
            return b""
        self._buf = rest = buf.split(b"\n\n")[-1]  # what follows the last complete event
        return buf[:len(buf) - len(rest)]

    @staticmethod
    def events(block: bytes) -> list[tuple[bytes, bytes]]:
        events = []
        for part in block.split(b"\n\n")[:-1]:
            if part.startswith(b"data: ") and b"\n" not in part:
                events.append((b"", part[6:]))  # the usual event: one data line, no name
                continue
            event = b""
            data: list[bytes] = []
            for line in part.split(b"\n"):
                if line.startswith(b"data:"):
                    data.append(line[6:] if line[5:6] == b" " else line[5:])
                elif line.startswith(b"event:"):
                    event = line[6:].strip()
            if data:
                events.append((event, data[0] if len(data) == 1 else b"\n".join(data)))
        return events


# Bytes that cannot stand raw inside a JSON string: a quote ends it, a backslash starts an
# escape, control characters are invalid.
_NOT_PLAIN = re.compile(rb'["\\\x00-\x1f]')
_PLAIN = rb'([^"\\\x00-\x1f]*)'
_PLAIN_RUN = re.compile(_PLAIN)
_COLON = re.compile(rb'[ \t\n\r]*:[ \t\n\r]*"')


class TextTemplate:
    """Takes tokens' texts out of streamed events without parsing the events.

    A provider's text events differ only in their text: `learn` is given one that was parsed
    (and found to be a plain text event) and keeps the bytes before and after its text.
    `match` returns the text of an event made of exactly those bytes around a middle with no
    quote, backslash or control character, else None (then the caller parses the event).
    Such an event tokenizes exactly like the learnt one — the middle cannot end the string —
    so json.loads would give the same object with only that string changed: the fast path
    is exact, never a guess. `texts` does the same for a whole block of SSE events at once:
    json.loads is ~10 µs per event, this ~1. Nothing is compiled per reply: the learnt bytes
    hold the response's id, and a regex built from them cost ~0.7 ms per reply with a real
    provider's unique ids.
    """

    __slots__ = ("_key", "_prefix", "_suffix", "_min", "_before", "_after")

    def __init__(self, key: str) -> None:
        self._key = f'"{key}"'.encode()
        self._prefix: bytes | None = None
        self._suffix = b""
        self._min = 0
        self._before: bytes | None = None  # what precedes the text in the SSE stream
        self._after = b""  # what follows it, with the event's blank line

    def learn(self, data: bytes, text: str, head: bytes = b"data: ") -> None:
        """`data` parsed to an event whose text (under this key) is `text`; `head` is what
        precedes `data` in the SSE stream for such an event."""
        self._prefix = self._before = None
        if b"\\" in data:
            return  # escapes: the raw bytes are not the text
        # No backslash: every quote opens or closes a string, so `"key"` followed by a colon
        # is that key; found once, it is the one whose value is `text`.
        at = data.find(self._key)
        if at < 0 or data.find(self._key, at + 1) >= 0:
            return
        colon = _COLON.match(data, at + len(self._key))
        if colon is None:
            return
        start = colon.end()
        end = data.find(b'"', start)
        if end < 0 or data[start:end] != text.encode():
            return
        self._prefix, self._suffix = data[:start], data[end:]
        self._min = start + len(self._suffix)
        if b"\n" not in data:  # one data line: the event is `head + data` and a blank line
            self._before, self._after = head + self._prefix, self._suffix + b"\n\n"

    def match(self, data: bytes) -> str | None:
        prefix = self._prefix
        if (prefix is None or len(data) < self._min or not data.startswith(prefix)
                or not data.endswith(self._suffix)):
            return None
        middle = data[len(prefix):len(data) - len(self._suffix)]
        if _NOT_PLAIN.search(middle) is not None:
            return None
        try:
            return middle.decode()
        except UnicodeDecodeError:
            return None  # json.loads decides (it allows lone surrogates)

    def texts(self, block: bytes) -> list[str] | None:
        """The non-empty texts of a block of events (SSEParser.feed_block) that are all
        learnt-shape text events, else None."""
        before, after = self._before, self._after
        if before is None:
            return None
        middles = []
        pos, end = 0, len(block)
        plain = _PLAIN_RUN.match
        while pos < end:
            # Event by event from the start: the learnt bytes, a plain middle, the learnt
            # bytes after it and the event's blank line, exactly.
            if not block.startswith(before, pos):
                return None
            start = pos + len(before)
            stop = plain(block, start).end()  # type: ignore[union-attr]  # * always matches
            if not block.startswith(after, stop):
                return None
            if stop > start:
                middles.append(block[start:stop])
            pos = stop + len(after)
        try:
            return [m.decode() for m in middles]
        except UnicodeDecodeError:
            return None


def _aiohttp_of(response: httpx2.Response) -> Any:
    """The aiohttp response under an aiohttp-backed httpx2 response, or None."""
    stream = getattr(response, "stream", None)
    stream = getattr(stream, "_stream", stream)  # httpx2 wraps the transport's stream
    inner = getattr(stream, "_aiohttp_response", None)
    return inner if isinstance(inner, aiohttp.ClientResponse) else None


def _socket_of(inner: Any) -> Any:
    """The asyncio transport under an aiohttp response, or None."""
    transport = getattr(getattr(inner, "connection", None), "transport", None)
    return transport if hasattr(transport, "pause_reading") else None


Read = Callable[[], Awaitable[bytes]]


def _reader(response: httpx2.Response, inner: Any) -> Read:
    """Returns what has arrived of the body (waiting for something), b"" at its end.

    On aiohttp the body is read from aiohttp's buffer directly: everything that arrived in
    one call, without the five async generators of httpx2's and the SDK's transport
    layers (their errors — aiohttp.ClientError, TimeoutError — are mapped by the caller)."""
    if inner is not None:
        return inner.content.readany  # type: ignore[no-any-return]
    chunks = response.aiter_bytes().__aiter__()

    async def read() -> bytes:
        try:
            return await chunks.__anext__()
        except StopAsyncIteration:
            return b""

    return read


def _deliverable(texts: list[str], *, merge: bool) -> list[str]:
    """The texts of one network read to yield: each as it came, or joined into one when the
    consumer merges tokens into deltas anyway. Joined, tokens that arrived together leave
    together: the first token of a reply goes out at once, and with it the rest of its read,
    instead of one flush tick later."""
    return ["".join(texts)] if merge and len(texts) > 1 else texts


# What a body read raises when the connection fails: httpx2's own, or aiohttp's when the
# body is read from aiohttp directly (a server-side read timeout is a TimeoutError).
_READ_ERRORS = (httpx2.TransportError, aiohttp.ClientError, TimeoutError)


def _http_client(sdk: Any, settings: Settings) -> Any:
    """The SDK's aiohttp-based client when aiohttp is installed, else None (the SDK default)."""
    try:
        return sdk.DefaultAioHttpClient(timeout=_timeout(settings))
    except RuntimeError:  # the SDK says: install aiohttp
        return None


def _json(provider: str, data: bytes) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        raise ProviderError("provider_stream_cut",
                            f"The {provider} stream sent an event that is not JSON.",
                            retryable=True) from None


def _timeout(settings: Settings) -> httpx2.Timeout:
    return httpx2.Timeout(settings.llm_timeout_s, connect=min(10.0, settings.llm_timeout_s))


# --- Anthropic ------------------------------------------------------------------------

_ANTHROPIC_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length",
                     "refusal": "stop", "pause_turn": "stop", "tool_use": "stop"}


class _SSEStream:
    """The read path both providers' streams share: each network read's complete events go
    through the text template in one go when they are all plain text events, else one by one
    (a text event the template knows, or parsed by the subclass's `_event`). Subclasses say
    which events are text and when the stream is over.

    Two ways to read: iterate (each read's texts are yielded, together when `merge_reads`),
    or, once tokens flow and when the body comes from aiohttp, let the consumer `poll` at its
    own pace: `resume()` lets the socket be read, `poll()` takes what has arrived without
    waiting and pauses the socket again, so tokens arriving meanwhile stay in the kernel and
    come in with one recv, and no task wakes per read. From the first poll that finds the
    body between two chunks, the connection is tapped (tap.py): its bytes skip aiohttp until
    polling is over. Iteration after polling goes on where the polls stopped.
    """

    provider = ""
    key = ""  # the JSON key that holds a text event's text
    text_kind: bytes | None = None  # the SSE event name of text events (None: unnamed)

    def __init__(self, response: httpx2.Response) -> None:
        self._response = response
        self.usage = Usage()
        self.finish_reason: str | None = None
        self.merge_reads = False  # set by a consumer that merges tokens into deltas anyway
        self._template = TextTemplate(self.key)
        self._parser = SSEParser()
        # The provider's last event came (set by `_event`): the rest of the body is read, not
        # parsed.
        self._ended = False
        self._started = False  # some text came
        self._failure: ProviderError | None = None  # raised once the texts before it are out
        self._inner = _aiohttp_of(response)
        self._socket = _socket_of(self._inner)
        self._tappable = self._socket is not None and Tap.tappable(self._inner)
        self._tap: Tap | None = None

    def _event(self, kind: bytes, data: bytes) -> list[str]:
        """One parsed event: its texts."""
        raise NotImplementedError

    def _complete(self) -> bool:
        """The provider said how the reply ended (no more polling; without it, a cut)."""
        raise NotImplementedError

    def _texts(self, raw: bytes) -> list[str]:
        """The texts of one network read. An event that fails after texts of the same read
        is kept in `_failure`: those texts are delivered first."""
        block = self._parser.feed_block(raw)
        if self._ended or not block:
            return []
        template = self._template
        texts = template.texts(block)
        if texts is not None:
            return texts
        texts = []
        for kind, data in self._parser.events(block):
            if self._ended:
                break  # the rest of the body is read to its end: the connection is reused
            if kind == (self.text_kind or b"") and (text := template.match(data)) is not None:
                if text:
                    texts.append(text)
                continue
            try:
                texts += self._event(kind, data)
            except ProviderError as err:
                if not texts:
                    raise
                self._failure = err
                break
        return texts

    def _deliver(self, texts: list[str]) -> list[str]:
        if texts:
            self._started = True
        return _deliverable(texts, merge=self.merge_reads)

    def polled(self) -> Polled | None:
        return self if self._socket is not None else None  # the body comes from aiohttp

    def resume(self) -> bool:
        """Let a paused socket be read at the loop's next turn; False if it reads anyway."""
        if self._socket.is_closing():
            return False
        try:
            self._socket.resume_reading()
        except RuntimeError:
            return False
        return True

    def poll(self) -> tuple[list[str], bool]:
        """The texts that arrived since the last read, without waiting, and whether polling
        is over (the provider said how the reply ended, or the body ended: iterate for the
        rest). The socket is left paused until `resume()`."""
        if self._failure is not None:
            raise self._failure
        content = self._inner.content
        tap = self._tap
        try:
            raw = b""
            if tap is None:
                if self._tappable:
                    tap = self._tap = Tap.take(self._inner)  # between two chunks, or later
                raw = content.read_nowait()  # what aiohttp read before
            if tap is not None:
                raw += tap.read()
        except (*_READ_ERRORS, TapError) as err:
            raise _transport(self.provider, err, self._started) from err
        texts = self._texts(raw) if raw else []
        # Handed back (the body's last chunk came, or the connection ended), the rest of the
        # body is aiohttp's: iterating reads it.
        over = (self._complete() or self._failure is not None
                or (tap.returned if tap is not None else content.at_eof()))
        if tap is not None and over:
            tap.give_back()
        elif not over and not self._socket.is_closing():
            try:
                self._socket.pause_reading()
            except RuntimeError:
                pass
        return self._deliver(texts), over

    async def __aiter__(self) -> AsyncIterator[str]:
        read = _reader(self._response, self._inner)
        try:
            while self._failure is None and (raw := await read()):
                for text in self._deliver(self._texts(raw)):
                    yield text
        except _READ_ERRORS as err:
            raise _transport(self.provider, err, self._started) from err
        if self._failure is not None:
            raise self._failure
        if not self._complete():
            raise ProviderError("provider_stream_cut", _CUT.format(self.provider),
                                retryable=True)
        self.finish_reason = self.finish_reason or "stop"


class _AnthropicStream(_SSEStream):
    """Messages API SSE: message_start, content_block_delta…, message_delta, message_stop."""

    provider, key, text_kind = "anthropic", "text", b"content_block_delta"

    def _complete(self) -> bool:
        return self._ended  # message_stop

    def _event(self, kind: bytes, data: bytes) -> list[str]:
        if kind == b"ping":
            return []
        event = _json("anthropic", data)
        if not isinstance(event, dict):
            return []
        etype = event.get("type") or kind.decode()
        usage = self.usage
        if etype == "content_block_delta":
            delta = event.get("delta") or {}
            if delta.get("type") == "text_delta" and isinstance(text := delta.get("text"), str):
                if kind == self.text_kind:  # named as the template expects
                    self._template.learn(data, text, b"event: content_block_delta\ndata: ")
                return [text] if text else []
        elif etype == "message_start":
            u = (event.get("message") or {}).get("usage") or {}
            usage.input_tokens = u.get("input_tokens") or 0
            usage.output_tokens = u.get("output_tokens") or 0
        elif etype == "message_delta":
            reason = (event.get("delta") or {}).get("stop_reason")
            if reason:
                self.finish_reason = _ANTHROPIC_FINISH.get(reason, "stop")
            u = event.get("usage") or {}
            if u.get("output_tokens") is not None:
                usage.output_tokens = u["output_tokens"]
            if u.get("input_tokens"):
                usage.input_tokens = u["input_tokens"]
        elif etype == "message_stop":
            self._ended = True
        elif etype == "error":
            raise _from_status("anthropic", self._response.status_code, event,
                               self._response.headers)
        return []


class AnthropicProvider:
    name = "anthropic"

    def __init__(self, settings: Settings) -> None:
        import anthropic

        self.model = settings.anthropic_model
        self._settings = settings
        from anthropic.resources.messages.messages import DEPRECATED_MODELS

        if self.model in DEPRECATED_MODELS:
            log.warning("Anthropic model %s reaches end of life on %s: set "
                        "TUTORHUB_ANTHROPIC_MODEL to a newer one.", self.model,
                        DEPRECATED_MODELS[self.model])
        self._client = anthropic.AsyncAnthropic(
            api_key=settings.anthropic_api_key or "unset", base_url=settings.anthropic_base_url,
            max_retries=0,  # the tutor retries itself: only before the first token, with events
            timeout=_timeout(settings), http_client=_http_client(anthropic, settings),
        )

    @asynccontextmanager
    async def stream(self, request: PromptRequest) -> AsyncIterator[ReplyStream]:
        import anthropic

        # The body is sent as is (plain role/content text, already the wire format), through
        # the SDK's documented call for custom requests: auth, base_url, headers, timeouts and
        # status errors are the SDK's, without `messages.create`'s typed transform of every
        # part (milliseconds with a full prompt) and response wrappers (~0.7 ms per request).
        body = {"model": self.model, "max_tokens": request.max_tokens, "stream": True,
                "system": request.system, "messages": request.messages,
                "temperature": request.temperature}
        try:
            response = await self._client.post("/v1/messages", cast_to=httpx2.Response,
                                               body=body, stream=True)
        except anthropic.APIStatusError as err:
            raise _from_status("anthropic", err.status_code, err.body,
                               err.response.headers) from err
        except (anthropic.APIConnectionError, httpx2.TransportError) as err:
            raise _transport("anthropic", err, False) from err
        try:
            yield _AnthropicStream(response)
        finally:
            await response.aclose()  # closes the HTTP stream at once (cancel stops billing)

    async def aclose(self) -> None:
        await self._client.close()


# --- OpenAI and compatible servers ----------------------------------------------------

class _OpenAIStream(_SSEStream):
    """Chat completion chunks as SSE `data:` lines, then `data: [DONE]`."""

    provider, key = "openai", "content"

    def _complete(self) -> bool:
        return self.finish_reason is not None

    def _event(self, kind: bytes, data: bytes) -> list[str]:
        if data.startswith(b"[DONE]"):
            self._ended = True
            return []
        return self._chunk(data)

    def _chunk(self, data: bytes) -> list[str]:
        """One parsed chunk: its texts (one per choice that has some)."""
        chunk = _json("openai", data)
        if not isinstance(chunk, dict):
            return []
        if chunk.get("error"):  # an error object inside the stream
            raise _from_status("openai", 500, chunk["error"], None)
        usage = chunk.get("usage")
        if usage:
            self.usage.input_tokens = usage.get("prompt_tokens") or 0
            self.usage.output_tokens = usage.get("completion_tokens") or 0
        texts = []
        choices = chunk.get("choices") or []
        text = None
        for choice in choices:
            delta = choice.get("delta")
            text = delta.get("content") if delta else None
            if text:
                texts.append(text)
            reason = choice.get("finish_reason")
            if reason:
                self.finish_reason = "length" if reason == "length" else "stop"
        if (len(choices) == 1 and not usage and isinstance(text, str)
                and not choices[0].get("finish_reason")):
            # A plain text chunk: the next ones that differ only in their text skip parsing.
            self._template.learn(data, text)
        return texts


class OpenAIProvider:
    name = "openai"

    def __init__(self, settings: Settings) -> None:
        import openai

        self.model = settings.openai_model
        self._client = openai.AsyncOpenAI(
            api_key=settings.openai_api_key or "unset", base_url=settings.openai_base_url,
            max_retries=0,
            timeout=_timeout(settings), http_client=_http_client(openai, settings),
        )

    @asynccontextmanager
    async def stream(self, request: PromptRequest) -> AsyncIterator[ReplyStream]:
        import openai

        messages = [{"role": "system", "content": request.system}, *request.messages]
        # As for Anthropic: the body as is, through the SDK's call for custom requests.
        # max_tokens rather than max_completion_tokens: Ollama, vLLM and LM Studio know it.
        body = {"model": self.model, "messages": messages, "stream": True,
                "max_tokens": request.max_tokens, "temperature": request.temperature,
                "stream_options": {"include_usage": True}}
        try:
            response = await self._client.post("/chat/completions", cast_to=httpx2.Response,
                                               body=body, stream=True)
        except openai.APIStatusError as err:
            raise _from_status("openai", err.status_code, err.body, err.response.headers) from err
        except (openai.APIConnectionError, httpx2.TransportError) as err:
            raise _transport("openai", err, False) from err
        try:
            yield _OpenAIStream(response)
        finally:
            await response.aclose()  # closes the HTTP stream at once (cancel stops billing)

    async def aclose(self) -> None:
        await self._client.close()


# --- choice -----------------------------------------------------------------------------

def primary_name(settings: Settings) -> str:
    if settings.llm_provider != "auto":
        return settings.llm_provider
    if settings.anthropic_api_key:
        return "anthropic"
    if settings.openai_api_key or settings.openai_base_url:
        return "openai"
    return "offline"


def build_provider(name: str, settings: Settings) -> Provider:
    if name == "anthropic":
        return AnthropicProvider(settings)
    if name == "openai":
        return OpenAIProvider(settings)
    if name == "offline":
        from chat_server.tutor.offline import OfflineProvider

        return OfflineProvider()
    raise ValueError(f"Unknown LLM provider {name!r}: use anthropic, openai or offline.")


@asynccontextmanager
async def open_providers(settings: Settings) -> AsyncIterator[list[Provider]]:
    """The primary provider then each fallback (duplicates dropped); all closed on exit."""
    names: list[str] = []
    for name in [primary_name(settings), *settings.llm_fallback]:
        if name not in names:
            names.append(name)
    providers: list[Provider] = []
    try:
        for name in names:
            providers.append(build_provider(name, settings))
        yield providers
    finally:
        for provider in providers:
            await provider.aclose()
