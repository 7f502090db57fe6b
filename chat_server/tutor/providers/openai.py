"""OpenAI chat completions, streamed (and any compatible server by base URL: Ollama, vLLM, LM
Studio): chunks as SSE `data:` lines, the usage chunk, then `data: [DONE]`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, cast

import openai
from httpx_sse import ServerSentEvent

from chat_server.settings import Settings
from chat_server.tutor.prompt import PromptRequest
from chat_server.tutor.providers.base import (
    RawResponse,
    ReplyStream,
    SSEStream,
    http_client,
    parse_json,
    status_error,
    timeout,
    transport_error,
)


class OpenAIStream(SSEStream):
    provider = "openai"

    def _complete(self) -> bool:
        return self.finish_reason is not None

    def _text(self, sse: ServerSentEvent) -> str | None:
        if sse.data.startswith("[DONE]"):
            self._ended = True
            return None
        chunk = parse_json("openai", sse.data)
        if not isinstance(chunk, dict):
            return None
        if chunk.get("error"):  # an error object inside the stream
            raise self.error_event(chunk["error"])
        usage = chunk.get("usage")
        if usage:
            self.usage.input_tokens = usage.get("prompt_tokens") or 0
            self.usage.output_tokens = usage.get("completion_tokens") or 0
        texts = []
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta")
            text = delta.get("content") if delta else None
            if isinstance(text, str) and text:
                texts.append(text)
            reason = choice.get("finish_reason")
            if reason:
                self.finish_reason = "length" if reason == "length" else "stop"
        return texts[0] if len(texts) == 1 else "".join(texts)


class OpenAIProvider:
    name = "openai"

    def __init__(self, settings: Settings, *, client: Any = None) -> None:
        """`client`: the SDK's HTTP client to use (tests: another transport, a private CA);
        by default its aiohttp transport when aiohttp is installed."""
        self.model = settings.openai_model
        self._client = openai.AsyncOpenAI(
            api_key=settings.openai_api_key or "unset", base_url=settings.openai_base_url,
            max_retries=0,  # the tutor retries itself: only before the first token, with events
            timeout=timeout(settings),
            http_client=client if client is not None else http_client(openai, settings),
        )

    @asynccontextmanager
    async def stream(self, request: PromptRequest) -> AsyncIterator[ReplyStream]:
        messages = [{"role": "system", "content": request.system}, *request.messages]
        async with AsyncExitStack() as stack:
            try:
                # max_tokens rather than max_completion_tokens: Ollama, vLLM and LM Studio
                # know it.
                response = await stack.enter_async_context(
                    self._client.chat.completions.with_streaming_response.create(
                        model=self.model, messages=cast(Any, messages), stream=True,
                        max_tokens=request.max_tokens, temperature=request.temperature,
                        stream_options={"include_usage": True}))
            except openai.APIStatusError as err:
                raise status_error("openai", err.status_code, err.body,
                                   err.response.headers) from err
            except openai.APIConnectionError as err:
                raise transport_error("openai", err, False,
                                      timeout=isinstance(err, openai.APITimeoutError)) from err
            # Leaving closes the HTTP stream at once (cancel stops billing).
            yield OpenAIStream(cast(RawResponse, response))

    async def aclose(self) -> None:
        await self._client.close()
