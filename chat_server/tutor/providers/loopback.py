"""The benchmark provider: generated words at a fixed pace, no model and no network.

Load tests point at it so that they measure Tutorhub, not a model vendor. It is never chosen by
`auto` and is refused unless `TUTORHUB_LLM_LOOPBACK_ALLOWED` is set (settings.check_loopback):
its replies are not answers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from chat_server.settings import Settings, check_loopback
from chat_server.tutor.prompt import PromptRequest
from chat_server.tutor.providers.base import ReplyStream, Usage

# One word is one token; in the question's language so the widget and Telegram show text that
# looks like a reply when someone watches a load test.
_WORDS = {
    "en": "the cell divides its nucleus first then the cytoplasm so each daughter cell "
          "receives a full copy of the genome".split(),
    "ru": "клетка сначала делит ядро затем цитоплазму так что каждая дочерняя клетка "
          "получает полную копию генома".split(),
}
# Without a pace, hand the loop back this often so one reply cannot hold a process.
_YIELD_EVERY = 16


class _LoopbackStream:
    def __init__(self, request: PromptRequest, tokens: int, per_s: float) -> None:
        self._words = _WORDS.get(request.language, _WORDS["en"])
        self._tokens = min(tokens, request.max_tokens)
        self._truncated = tokens > request.max_tokens
        self._per_s = per_s
        self.usage = Usage(input_tokens=request.input_tokens_estimate)
        self.finish_reason: str | None = None

    async def __aiter__(self) -> AsyncIterator[str]:
        started = time.monotonic()
        words = self._words
        for i in range(self._tokens):
            if self._per_s:
                # An absolute schedule: a late wake-up is caught up, not added to every token.
                delay = started + i / self._per_s - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            elif i and i % _YIELD_EVERY == 0:
                await asyncio.sleep(0)
            word = words[i % len(words)]
            self.usage.output_tokens = i + 1
            yield word if i == 0 else " " + word
        self.finish_reason = "length" if self._truncated else "stop"


class LoopbackProvider:
    name = "loopback"

    def __init__(self, settings: Settings) -> None:
        check_loopback(settings)  # also when settings were copied past their validation
        self._tokens = settings.llm_loopback_reply_tokens
        self._per_s = settings.llm_loopback_tokens_per_s
        pace = f"{self._per_s:g}/s" if self._per_s else "unpaced"
        self.model = f"loopback-{self._tokens}-tokens-{pace}"

    @asynccontextmanager
    async def stream(self, request: PromptRequest) -> AsyncIterator[ReplyStream]:
        yield _LoopbackStream(request, self._tokens, self._per_s)

    async def aclose(self) -> None:
        return None
