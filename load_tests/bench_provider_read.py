"""CPU per token of reading provider streams, client side only: the OpenAI provider through the
SDK's aiohttp transport (what the tutor uses), through its default httpx2 transport, and the
SDK's typed stream (what a plain relay iterates), against one paced loopback provider.

    .venv/bin/python load_tests/bench_provider_read.py [--streams 200] [--rounds 2]
        [--ways aiohttp httpx2 typed]

Each round reads, per way, `--streams` concurrent streams of 300 tokens at 50 tokens/s (the
provider in its own process) and prints this process's CPU seconds per token received. The
ways alternate within a round, so a change of machine speed hits all of them. Prints only.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import openai  # noqa: E402
import uvloop  # noqa: E402

from tests.support.fake_providers import FakeProvider, Paced, Scripted  # noqa: E402

TOKENS, RATE = 300, 50.0
WAYS = ("aiohttp", "httpx2", "typed")


async def _serve() -> None:
    async with FakeProvider(default=lambda _: Scripted(paced=Paced(TOKENS, RATE))) as fake:
        print(fake.base_url, flush=True)
        while True:  # until terminated
            await asyncio.sleep(1.0)
            fake.requests.clear()


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _read(url: str, way: str, streams: int) -> str:
    from chat_server.settings import Settings
    from chat_server.tutor.prompt import build_request
    from chat_server.tutor.providers.openai import OpenAIProvider

    request = build_request(question="PACED", hits=[], history=[], socratic=False,
                            history_budget=100, max_tokens=1000, temperature=0.3)
    settings = Settings(llm_provider="openai", openai_base_url=url + "/v1",
                        openai_api_key="bench", openai_model="bench")
    if way == "typed":
        client = openai.AsyncOpenAI(api_key="bench", base_url=url + "/v1", max_retries=0,
                                    http_client=openai.DefaultAioHttpClient())

        async def one() -> int:
            n = 0
            stream = await client.chat.completions.create(
                model="bench", messages=[{"role": "user", "content": "PACED"}], stream=True)
            async for chunk in stream:
                n += sum(1 for c in chunk.choices if c.delta.content)
            return n

        close: Any = client.close
    else:
        http = (openai.DefaultAioHttpClient() if way == "aiohttp"
                else openai.DefaultAsyncHttpxClient())
        provider = OpenAIProvider(settings, client=http)

        async def one() -> int:
            n = 0
            async with provider.stream(request) as stream:
                async for _ in stream:
                    n += 1
            return n

        close = provider.aclose
    try:
        await asyncio.gather(*(one() for _ in range(5)))  # connections, imports
        t0, c0 = time.monotonic(), _cpu()
        tokens = sum(await asyncio.gather(*(one() for _ in range(streams))))
        c1, t1 = _cpu(), time.monotonic()
    finally:
        await close()
    return (f"{way:8} {tokens} tokens in {t1 - t0:.1f} s: {1e6 * (c1 - c0) / tokens:.1f} µs of "
            f"CPU per token ({100 * (c1 - c0) / (t1 - t0):.0f}% of a core)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--ways", nargs="+", choices=WAYS, default=list(WAYS),
                        help="which ways to read (default: all three)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        uvloop.run(_serve())
        return
    provider = subprocess.Popen([sys.executable, __file__, "--serve"], stdout=subprocess.PIPE,
                                cwd=ROOT)
    try:
        assert provider.stdout is not None
        url = provider.stdout.readline().decode().strip()
        for n in range(args.rounds):
            ways = [w for w in WAYS if w in args.ways]
            for way in ways if n % 2 == 0 else reversed(ways):
                print(f"round {n + 1}: {uvloop.run(_read(url, way, args.streams))}", flush=True)
    finally:
        provider.terminate()
        provider.wait(30)


if __name__ == "__main__":
    main()
