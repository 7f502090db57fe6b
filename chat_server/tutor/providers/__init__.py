"""LLM providers behind one small interface (base.py), and their choice from settings.

`anthropic` and `openai` stream through their SDKs (anthropic.py, openai.py); `offline` needs
no network (chat_server/tutor/offline.py); `loopback` is the load tests' benchmark provider
(loopback.py), refused unless explicitly allowed. An SDK is imported only when its provider is used.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from chat_server.settings import Settings
from chat_server.tutor.providers.base import Provider, ReplyStream, Usage

__all__ = ["Provider", "ReplyStream", "Usage", "build_provider", "open_providers",
           "primary_name"]


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
        from chat_server.tutor.providers.anthropic import AnthropicProvider

        return AnthropicProvider(settings)
    if name == "openai":
        from chat_server.tutor.providers.openai import OpenAIProvider

        return OpenAIProvider(settings)
    if name == "offline":
        from chat_server.tutor.offline import OfflineProvider

        return OfflineProvider()
    if name == "loopback":
        from chat_server.tutor.providers.loopback import LoopbackProvider

        return LoopbackProvider(settings)
    raise ValueError(f"Unknown LLM provider {name!r}: use anthropic, openai, offline or "
                     "loopback (benchmarks).")


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
