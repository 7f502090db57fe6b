"""What every network provider shares: the interface, faults as ProviderError, and the
streamed body read as server-sent events.

A provider's `stream(request)` is an async context manager yielding a `ReplyStream`: iterate
it for text pieces; afterwards `finish_reason` ("stop" | "length") and `usage` are set.
Leaving the context closes the HTTP stream at once (that is how cancel stops billing). Every
fault surfaces as `ProviderError`; a stream that ends without its provider's final event
raises `ProviderError("provider_stream_cut")`.

The SDKs are used through their documented raw-response interface (`with_streaming_response`):
auth, base URL, headers, timeouts and status errors are theirs. The body is decoded by
httpx-sse and each event's JSON by `json.loads`, not by the SDKs' typed stream objects: a
pydantic model per event costs more CPU per token than the rest of the tutor's path
(load_tests/reports/tutor.md).
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack, aclosing, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol, cast

import httpx
import httpx2
from httpx_sse import EventSource, ServerSentEvent, SSEError

from chat_server.settings import Settings
from chat_server.tutor.errors import ProviderError
from chat_server.tutor.prompt import PromptRequest


@dataclass
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens}


class ReplyStream(Protocol):
    usage: Usage
    finish_reason: str | None

    def __aiter__(self) -> AsyncIterator[str]: ...


class Provider(Protocol):
    name: str
    model: str

    def stream(self, request: PromptRequest) -> AbstractAsyncContextManager[ReplyStream]: ...

    async def aclose(self) -> None: ...


class RawResponse(Protocol):
    """What both SDKs' `AsyncAPIResponse` offer and the streams read."""

    http_response: httpx2.Response

    @property
    def status_code(self) -> int: ...


# --- faults ----------------------------------------------------------------------------------

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


def status_error(provider: str, status: int, body: Any, headers: Any) -> ProviderError:
    """An error answer (an HTTP status, or an error event inside a stream) as ProviderError."""
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


def transport_error(provider: str, err: Exception, started: bool,
                    timeout: bool = False) -> ProviderError:
    """A connection fault: before the first token it can be retried; after it, the reply
    is cut (the learner saw part of it)."""
    if started:
        return ProviderError("provider_stream_cut",
                             f"The {provider} stream was cut off mid-way ({type(err).__name__}).",
                             retryable=True)
    if timeout or isinstance(err, (httpx2.TimeoutException, TimeoutError)):
        return ProviderError("provider_timeout", f"The {provider} provider did not answer in time.",
                             retryable=True)
    return ProviderError("provider_unreachable",
                         f"Could not reach the {provider} provider ({type(err).__name__}).",
                         retryable=True)


def parse_json(provider: str, data: str) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        raise ProviderError("provider_stream_cut",
                            f"The {provider} stream sent an event that is not JSON.",
                            retryable=True) from None


# --- the streamed body -----------------------------------------------------------------------

def events(response: RawResponse) -> AsyncGenerator[ServerSentEvent, None]:
    """The body's server-sent events, decoded by httpx-sse as they arrive."""
    # httpx-sse reads a response through `headers` and `aiter_text()`; the SDKs' httpx2
    # response has both, as httpx's does.
    return EventSource(cast(httpx.Response, response.http_response)).aiter_sse()


class SSEStream:
    """The read loop both providers' streams share. A subclass turns each event into text
    (or None) and says when the provider has said how the reply ended."""

    provider = ""

    def __init__(self, response: RawResponse) -> None:
        self._response = response
        self.usage = Usage()
        self.finish_reason: str | None = None
        # The provider's last event came: the rest of the body is read (so the connection
        # goes back to the SDK's pool), not parsed.
        self._ended = False

    def _text(self, sse: ServerSentEvent) -> str | None:
        raise NotImplementedError

    def _complete(self) -> bool:
        raise NotImplementedError

    async def __aiter__(self) -> AsyncIterator[str]:
        started = False
        try:
            async with aclosing(events(self._response)) as stream:
                async for sse in stream:
                    # An event without data (only an id or a retry time) tells us nothing,
                    # and none is dispatched by the standard's parsing rules either.
                    if self._ended or not sse.data:
                        continue
                    text = self._text(sse)
                    if text:
                        started = True
                        yield text
        except (httpx2.TransportError, TimeoutError) as err:  # a read timeout aiohttp raises
            # itself is not mapped to httpx2's
            raise transport_error(self.provider, err, started) from err
        except SSEError as err:
            raise ProviderError("provider_stream_cut",
                                f"The {self.provider} provider did not answer with an event "
                                f"stream ({err}).", retryable=True) from err
        if not self._complete():
            raise ProviderError("provider_stream_cut",
                                f"The {self.provider} stream ended before its final event.",
                                retryable=True)
        self.finish_reason = self.finish_reason or "stop"

    def error_event(self, body: Any) -> ProviderError:
        return status_error(self.provider, self._response.status_code, body,
                            self._response.http_response.headers)


# --- the SDKs --------------------------------------------------------------------------------

def timeout(settings: Settings) -> httpx2.Timeout:
    return httpx2.Timeout(settings.llm_timeout_s, connect=min(10.0, settings.llm_timeout_s))


def sdk_client(sdk: Any, client_class: Any, settings: Settings, *, api_key: str | None,
               base_url: str | None, http: Any = None) -> Any:
    """The SDK's async client. Its HTTP client is `http`, else its documented aiohttp
    transport (`DefaultAioHttpClient`, less CPU per token than its default httpx2 one:
    load_tests/reports/tutor.md) when aiohttp is installed."""
    if http is None:
        try:
            http = sdk.DefaultAioHttpClient(timeout=timeout(settings))
        except RuntimeError:  # the SDK says: install aiohttp
            http = None
    return client_class(
        api_key=api_key or "unset", base_url=base_url,
        max_retries=0,  # the tutor retries itself: only before the first token, with events
        timeout=timeout(settings), http_client=http)


@asynccontextmanager
async def open_stream(sdk: Any, provider: str, stream_class: type[SSEStream],
                      request: AbstractAsyncContextManager[Any]) -> AsyncIterator[ReplyStream]:
    """The SDK's streamed response (`request`: a `with_streaming_response` call) read as
    `stream_class`, its faults as ProviderError. Leaving closes the HTTP stream at once
    (cancel stops billing)."""
    async with AsyncExitStack() as stack:
        try:
            response = await stack.enter_async_context(request)
        except sdk.APIStatusError as err:
            raise status_error(provider, err.status_code, err.body, err.response.headers) from err
        except sdk.APIConnectionError as err:
            raise transport_error(provider, err, False,
                                  timeout=isinstance(err, sdk.APITimeoutError)) from err
        yield stream_class(cast(RawResponse, response))
