"""OpenAI chat completions, streamed (and any compatible server by base URL: Ollama, vLLM, LM
Studio): chunks as SSE `data:` lines, the usage chunk, then `data: [DONE]`."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any, cast

import openai
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
        """`client`: the SDK's HTTP client to use (tests: another transport, a private CA)."""
        self.model = settings.openai_model
        self._client = sdk_client(openai, openai.AsyncOpenAI, settings,
                                  api_key=settings.openai_api_key,
                                  base_url=settings.openai_base_url, http=client)

    def stream(self, request: PromptRequest) -> AbstractAsyncContextManager[ReplyStream]:
        messages = [{"role": "system", "content": request.system}, *request.messages]
        # max_tokens rather than max_completion_tokens: Ollama, vLLM and LM Studio know it.
        return open_stream(openai, self.name, OpenAIStream,
                           self._client.chat.completions.with_streaming_response.create(
                               model=request.model or self.model,
                               messages=cast(Any, messages), stream=True,
                               max_tokens=request.max_tokens, temperature=request.temperature,
                               stream_options={"include_usage": True}))

    async def aclose(self) -> None:
        await self._client.close()
