"""Both network providers, through their real SDKs, against the loopback provider servers,
without the tutor: what each yields for a set of scripted answers (`outcomes`).

`python -m tests.support.sdk_streams` prints the outcomes as JSON: the tests run it in a
subprocess with AIOHTTP_NO_EXTENSIONS=1, which aiohttp reads when it is imported (its
pure-Python HTTP parser instead of the C one).
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import zlib
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from chat_server.settings import Settings
from chat_server.tutor.errors import ProviderError
from chat_server.tutor.prompt import PromptRequest, build_request
from chat_server.tutor.providers import Provider
from tests.support.fake_providers import (
    FakeProvider,
    Scripted,
    anthropic_error,
    anthropic_stream,
    anthropic_stream_error,
    openai_error,
    openai_stream,
)
from tests.support.tls import loopback_tls

PIECES = ["Свет ", "is ", 'a "quoted" ', "word\n", "🧪 ", "sugar", "."]
FLAVOURS = ("anthropic", "openai")
TRANSPORTS = ("aiohttp", "httpx")


def mangled(script: Scripted, eol: bytes) -> Scripted:
    """The same events as a provider may also write them: `eol` line ends, a comment and an
    `id:`/`retry:` block without data first, the JSON of each data line over two data lines
    (joined with a newline: the same JSON), in pieces of 7 bytes (so reads split lines, and a
    CRLF, anywhere)."""
    body = b": a comment\nid: 7\nretry: 10\n\n" + b"".join(script.chunks)
    body = re.sub(rb"^data: \{", b"data: {\ndata: ", body, flags=re.M).replace(b"\n", eol)
    return replace(script, chunks=[body[i:i + 7] for i in range(0, len(body), 7)])


def gzipped(script: Scripted) -> Scripted:
    """The same events gzip-encoded (`content-encoding: gzip`), flushed after each event and
    cut in pieces of 5 bytes (the decoder gets partial blocks)."""
    packer = zlib.compressobj(wbits=31)  # the gzip container
    body = b"".join(packer.compress(c) + packer.flush(zlib.Z_SYNC_FLUSH) for c in script.chunks)
    body += packer.flush()
    return replace(script, headers={**script.headers, "content-encoding": "gzip"},
                   chunks=[body[i:i + 5] for i in range(0, len(body), 5)])


def scripts(flavour: str) -> dict[str, Scripted]:
    """Scenario → the loopback provider's answer (in this order, on one server)."""
    stream: Callable[..., Scripted]
    if flavour == "anthropic":
        stream = anthropic_stream
        limited = anthropic_error(429, "rate_limit_error", "slow down", 0.25)
        in_stream = anthropic_stream_error("overloaded_error")
    else:
        stream = openai_stream
        limited = openai_error(429, "slow down", retry_after=0.25)
        in_stream = Scripted(chunks=[b'data: {"error": {"type": "server_error", '
                                     b'"message": "boom"}}\n\n'])
    return {
        "paced": stream(PIECES, output_tokens=9, delay_s=0.002),
        "at_once": replace(stream(PIECES, output_tokens=9), at_once=True),
        "crlf": mangled(stream(PIECES, output_tokens=9), b"\r\n"),
        "cr": mangled(stream(PIECES, output_tokens=9), b"\r"),
        "gzip": gzipped(stream(PIECES, output_tokens=9)),
        "cut": stream(PIECES, delay_s=0.002, cut_after_pieces=3),
        "429": limited,
        "error_event": in_stream,
    }


def _request() -> PromptRequest:
    return build_request(question="How is sugar made?", hits=[], history=[], socratic=False,
                         history_budget=100, max_tokens=50, temperature=0.3)


def provider(flavour: str, base_url: str, transport: str,
             tls: ssl.SSLContext | None = None) -> Provider:
    from chat_server.tutor.providers.base import timeout

    settings = Settings(llm_provider=flavour, anthropic_api_key="sk-test",
                        anthropic_base_url=base_url, anthropic_model="claude-test",
                        openai_api_key="sk-test", openai_base_url=base_url + "/v1",
                        openai_model="gpt-test")
    if flavour == "anthropic":
        import anthropic

        from chat_server.tutor.providers.anthropic import AnthropicProvider

        sdk: Any = anthropic
        make: Any = AnthropicProvider
    else:
        import openai

        from chat_server.tutor.providers.openai import OpenAIProvider

        sdk, make = openai, OpenAIProvider
    client_class = sdk.DefaultAioHttpClient if transport == "aiohttp" else (
        sdk.DefaultAsyncHttpxClient)
    return make(settings, client=client_class(timeout=timeout(settings), verify=tls or True))


async def _one(p: Provider) -> dict[str, Any]:
    texts: list[str] = []
    try:
        async with p.stream(_request()) as stream:
            async for text in stream:
                texts.append(text)
        return {"text": "".join(texts), "finish": stream.finish_reason,
                "usage": stream.usage.as_dict()}
    except ProviderError as err:
        return {"text": "".join(texts), "error": err.code, "retryable": err.retryable,
                "retry_after": err.retry_after}


async def outcomes(transport: str = "aiohttp", tls: bool = False) -> dict[str, Any]:
    """Scenario → what the provider yielded, per flavour; and per flavour the TCP connections
    the server accepted for the three complete answers that come first (1: the SDK pools)."""
    server_tls, client_tls = loopback_tls() if tls else (None, None)
    got: dict[str, Any] = {}
    for flavour in FLAVOURS:
        script = scripts(flavour)
        async with FakeProvider(tls=server_tls) as fake:
            fake.script.extend(script.values())
            p = provider(flavour, fake.base_url, transport, client_tls)
            try:
                for name in script:
                    got[f"{flavour} {name}"] = await _one(p)
                    if name == "cr":
                        got[f"{flavour} connections"] = fake.connections
            finally:
                await p.aclose()
    return got


def expected() -> dict[str, Any]:
    whole = {"text": "".join(PIECES), "finish": "stop"}
    got: dict[str, Any] = {}
    for flavour, input_tokens in (("anthropic", 12), ("openai", 15)):
        usage = {"input_tokens": input_tokens, "output_tokens": 9}
        for name in ("paced", "at_once", "crlf", "cr", "gzip"):
            got[f"{flavour} {name}"] = {**whole, "usage": usage}
        got[f"{flavour} connections"] = 1
        got[f"{flavour} cut"] = {"text": "".join(PIECES[:3]), "error": "provider_stream_cut",
                                 "retryable": True, "retry_after": None}
        got[f"{flavour} 429"] = {"text": "", "error": "provider_overloaded", "retryable": True,
                                 "retry_after": 0.25}
        got[f"{flavour} error_event"] = {"text": "", "error": "provider_overloaded",
                                         "retryable": True, "retry_after": None}
    return got


def main() -> None:
    from aiohttp import http_parser

    result = asyncio.run(outcomes())
    # What the environment made aiohttp choose (AIOHTTP_NO_EXTENSIONS=1: the Python one).
    result["aiohttp parser"] = http_parser.HttpResponseParser.__module__
    print(json.dumps(result))


if __name__ == "__main__":
    main()
