"""LLM providers behind one small interface, and the choice of them from settings.

A provider's `stream(request)` is an async context manager yielding a `ReplyStream`:
iterate it for text deltas; afterwards `finish_reason` ("stop" | "length") and `usage`
are set. Leaving the context closes the HTTP stream at once (that is how cancel stops
billing). Every fault surfaces as `ProviderError`; a stream that ends without its
provider's final event raises `ProviderError("provider_stream_cut")`.

Both SDKs are used for what they are good at — auth, base_url, the request, status errors —
but the streamed body is read raw (`with_streaming_response`) and parsed here: the SDKs'
per-event SSE decoding and pydantic models cost 70 µs (anthropic) to 380 µs (openai) of CPU
per token, more than everything else a token costs; our parser plus `json.loads` is ~20 µs.
When aiohttp is installed the SDKs' own aiohttp transport is used (C HTTP parser, and one
read returns every chunk that has arrived). A stream's optional `pace` is awaited after each
read once tokens flow: the tutor sets it to its flush tick, so a reply's socket is read once
per tick, however many tokens arrived meanwhile (they would wait for the tick anyway).
"""

from __future__ import annotations

import email.utils
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import httpx2

from chat_server.settings import Settings
from chat_server.tutor.errors import ProviderError
from chat_server.tutor.prompt import PromptRequest

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
    # HTTP streams also have `pace`: awaited between network reads once tokens flow (set by
    # the consumer); None = read on.

    def __aiter__(self) -> AsyncIterator[str]: ...


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
    if isinstance(err, httpx2.TimeoutException):
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
        buf = self._buf + chunk
        if b"\r" in buf:
            # A CR at the very end may be the first half of a CRLF: keep it for the next read.
            tail = b"\r" if buf.endswith(b"\r") else b""
            buf = buf[:len(buf) - len(tail)].replace(b"\r\n", b"\n").replace(b"\r", b"\n") + tail
        events = []
        while (end := buf.find(b"\n\n")) >= 0:
            block, buf = buf[:end], buf[end + 2:]
            event = b""
            data: list[bytes] = []
            for line in block.split(b"\n"):
                if line.startswith(b"data:"):
                    data.append(line[6:] if line[5:6] == b" " else line[5:])
                elif line.startswith(b"event:"):
                    event = line[6:].strip()
            if data:
                events.append((event, data[0] if len(data) == 1 else b"\n".join(data)))
        self._buf = buf
        return events


def _socket_of(response: httpx2.Response) -> Any:
    """The asyncio transport under an aiohttp-backed response, or None (other transports)."""
    stream = getattr(response, "stream", None)
    stream = getattr(stream, "_stream", stream)  # httpx2 wraps the transport's stream
    connection = getattr(getattr(stream, "_aiohttp_response", None), "connection", None)
    transport = getattr(connection, "transport", None)
    return transport if hasattr(transport, "pause_reading") else None


async def _pace(pace: Callable[[], Awaitable[None]], transport: Any) -> None:
    """Wait for the consumer's tick with the socket unread: tokens arriving meanwhile stay in
    the kernel and come in with one recv when reading resumes, not one wakeup each."""
    paused = False
    if transport is not None and not transport.is_closing():
        try:
            transport.pause_reading()
            paused = True
        except RuntimeError:
            pass
    try:
        await pace()
    finally:
        if paused and not transport.is_closing():
            try:
                transport.resume_reading()
            except RuntimeError:
                pass


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


class _AnthropicStream:
    """Messages API SSE: message_start, content_block_delta…, message_delta, message_stop."""

    def __init__(self, response: httpx2.Response) -> None:
        self._response = response
        self.usage = Usage()
        self.finish_reason: str | None = None
        self.pace: Callable[[], Awaitable[None]] | None = None

    async def __aiter__(self) -> AsyncIterator[str]:
        stopped = False
        started = False
        usage = self.usage
        parser = SSEParser()
        socket = _socket_of(self._response)
        try:
            async for chunk in self._response.aiter_bytes():
                for kind, data in parser.feed(chunk):
                    if kind == b"ping" or stopped:
                        continue  # after message_stop: read on to the end, the connection is reused
                    event = _json("anthropic", data)
                    if not isinstance(event, dict):
                        continue
                    etype = event.get("type") or kind.decode()
                    if etype == "content_block_delta":
                        delta = event.get("delta") or {}
                        if delta.get("type") == "text_delta" and delta.get("text"):
                            started = True
                            yield delta["text"]
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
                        stopped = True
                    elif etype == "error":
                        raise _from_status("anthropic", self._response.status_code, event,
                                           self._response.headers)
                if self.pace is not None and started and not stopped:
                    await _pace(self.pace, socket)
        except httpx2.TransportError as err:
            raise _transport("anthropic", err, started) from err
        if not stopped:
            raise ProviderError("provider_stream_cut", _CUT.format("anthropic"), retryable=True)
        self.finish_reason = self.finish_reason or "stop"


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

        opening = self._client.messages.with_streaming_response.create(
            model=self.model, max_tokens=request.max_tokens, messages=[], stream=True,
            # The prompt goes in extra_body, sent as is (it is plain role/content text, already
            # the wire format): the SDK's typed transform walks every part of `messages` and
            # `system` against its TypedDicts, milliseconds of CPU per request. This SDK no
            # longer types `temperature`; the Messages API still takes it.
            extra_body={"system": request.system, "messages": request.messages,
                        "temperature": request.temperature},
        )
        try:
            raw = await opening.__aenter__()
        except anthropic.APIStatusError as err:
            raise _from_status("anthropic", err.status_code, err.body,
                               err.response.headers) from err
        except (anthropic.APIConnectionError, httpx2.TransportError) as err:
            raise _transport("anthropic", err, False) from err
        try:
            yield _AnthropicStream(raw.http_response)
        finally:
            await raw.close()  # closes the HTTP stream at once (cancel stops billing)

    async def aclose(self) -> None:
        await self._client.close()


# --- OpenAI and compatible servers ----------------------------------------------------

class _OpenAIStream:
    """Chat completion chunks as SSE `data:` lines, then `data: [DONE]`."""

    def __init__(self, response: httpx2.Response) -> None:
        self._response = response
        self.usage = Usage()
        self.finish_reason: str | None = None
        self.pace: Callable[[], Awaitable[None]] | None = None

    async def __aiter__(self) -> AsyncIterator[str]:
        started = False
        done = False
        parser = SSEParser()
        socket = _socket_of(self._response)
        try:
            async for raw in self._response.aiter_bytes():
                for _, data in parser.feed(raw):
                    if done:
                        continue  # read on to the end of the body: the connection is reused
                    if data.startswith(b"[DONE]"):
                        done = True
                        continue
                    chunk = _json("openai", data)
                    if not isinstance(chunk, dict):
                        continue
                    if chunk.get("error"):  # an error object inside the stream
                        raise _from_status("openai", 500, chunk["error"], None)
                    usage = chunk.get("usage")
                    if usage:
                        self.usage.input_tokens = usage.get("prompt_tokens") or 0
                        self.usage.output_tokens = usage.get("completion_tokens") or 0
                    for choice in chunk.get("choices") or ():
                        delta = choice.get("delta")
                        text = delta.get("content") if delta else None
                        if text:
                            started = True
                            yield text
                        reason = choice.get("finish_reason")
                        if reason:
                            self.finish_reason = "length" if reason == "length" else "stop"
                if self.pace is not None and started and self.finish_reason is None:
                    await _pace(self.pace, socket)
        except httpx2.TransportError as err:
            raise _transport("openai", err, started) from err
        if self.finish_reason is None:
            raise ProviderError("provider_stream_cut", _CUT.format("openai"), retryable=True)


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
        opening = self._client.chat.completions.with_streaming_response.create(  # type: ignore[call-overload]
            model=self.model, messages=[], stream=True,
            # The body goes in extra_body, sent as is (plain role/content text, already the
            # wire format): the SDK's typed transform of `messages` walks every part against
            # its TypedDicts, ~4 ms of CPU per request with a full prompt.
            # max_tokens rather than max_completion_tokens: Ollama, vLLM and LM Studio know it.
            extra_body={"messages": messages, "max_tokens": request.max_tokens,
                        "temperature": request.temperature,
                        "stream_options": {"include_usage": True}},
        )
        try:
            raw = await opening.__aenter__()
        except openai.APIStatusError as err:
            raise _from_status("openai", err.status_code, err.body, err.response.headers) from err
        except (openai.APIConnectionError, httpx2.TransportError) as err:
            raise _transport("openai", err, False) from err
        try:
            yield _OpenAIStream(raw.http_response)
        finally:
            await raw.close()  # closes the HTTP stream at once (cancel stops billing)

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
