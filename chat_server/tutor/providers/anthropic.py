"""Anthropic's Messages API, streamed: message_start, content_block_delta…, message_delta,
message_stop (an `error` event may come instead)."""

from __future__ import annotations

import warnings
from contextlib import AbstractAsyncContextManager
from typing import Any, cast

import anthropic
from httpx_sse import ServerSentEvent

from chat_server.settings import Settings
from chat_server.tutor.prompt import PromptRequest
from chat_server.tutor.providers.base import (
    ReplyStream,
    SSEStream,
    open_stream,
    parse_json,
    sdk_client,
)

_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length",
           "refusal": "stop", "pause_turn": "stop", "tool_use": "stop"}


class AnthropicStream(SSEStream):
    provider = "anthropic"

    def _complete(self) -> bool:
        return self._ended  # message_stop came

    def _text(self, sse: ServerSentEvent) -> str | None:
        if sse.event == "ping":
            return None
        event = parse_json("anthropic", sse.data)
        if not isinstance(event, dict):
            return None
        kind = event.get("type") or sse.event
        if kind == "content_block_delta":
            delta = event.get("delta") or {}
            text = delta.get("text") if delta.get("type") == "text_delta" else None
            return text if isinstance(text, str) else None
        usage = self.usage
        if kind == "message_start":
            u = (event.get("message") or {}).get("usage") or {}
            usage.input_tokens = u.get("input_tokens") or 0
            usage.output_tokens = u.get("output_tokens") or 0
        elif kind == "message_delta":
            reason = (event.get("delta") or {}).get("stop_reason")
            if reason:
                self.finish_reason = _FINISH.get(reason, "stop")
            u = event.get("usage") or {}
            if u.get("output_tokens") is not None:
                usage.output_tokens = u["output_tokens"]
            if u.get("input_tokens"):
                usage.input_tokens = u["input_tokens"]
        elif kind == "message_stop":
            self._ended = True
        elif kind == "error":
            raise self.error_event(event)
        return None


class AnthropicProvider:
    name = "anthropic"

    def __init__(self, settings: Settings, *, client: Any = None) -> None:
        """`client`: the SDK's HTTP client to use (tests: another transport, a private CA)."""
        self.model = settings.anthropic_model
        # The SDK warns (DeprecationWarning, hidden by default) on every request to a model
        # near its end of life: shown once, so whoever runs the server sees it.
        warnings.filterwarnings("default", message=r"The model '.*' is deprecated",
                                category=DeprecationWarning)
        self._client = sdk_client(anthropic, anthropic.AsyncAnthropic, settings,
                                  api_key=settings.anthropic_api_key,
                                  base_url=settings.anthropic_base_url, http=client)

    def stream(self, request: PromptRequest) -> AbstractAsyncContextManager[ReplyStream]:
        return open_stream(anthropic, self.name, AnthropicStream,
                           self._client.messages.with_streaming_response.create(
                               model=request.model or self.model,
                               max_tokens=request.max_tokens, stream=True,
                               system=request.system, messages=cast(Any, request.messages),
                               # Not a parameter of this SDK's create(): sent as the API
                               # documents it.
                               extra_body={"temperature": request.temperature}))

    async def aclose(self) -> None:
        await self._client.close()
