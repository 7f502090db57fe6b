"""The tap: a streamed provider body read off aiohttp's connection by the tutor's tick, then
handed back. Driven with a real aiohttp client against loopback servers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import aiohttp
import pytest

from chat_server.tutor.tap import Tap, TapError
from tests.support.fake_providers import FakeProvider, http_chunk, openai_stream
from tests.support.tls import loopback_tls

PIECES = [f"токен{i} word{i} " for i in range(40)]


async def _tapped(response: aiohttp.ClientResponse) -> tuple[bytes, Tap]:
    """What aiohttp had read, then the tap (taken once the body stands between chunks)."""
    got = await response.content.readany()
    assert Tap.tappable(response)
    for _ in range(200):
        await asyncio.sleep(0.005)
        tap = Tap.take(response)
        if tap is not None:
            return got + response.content.read_nowait(), tap
    raise AssertionError("never tapped")


async def _drain(tap: Tap, wait_s: float = 5.0) -> bytes:
    """Read the tap until it hands the connection back (like the tick, every 10 ms)."""
    body = b""
    for _ in range(int(wait_s / 0.01)):
        body += tap.read()
        if tap.returned:
            return body
        await asyncio.sleep(0.01)
    raise AssertionError("the tap never gave the connection back")


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
async def test_a_tapped_body_reads_exactly_and_its_connection_is_pooled(tls: bool) -> None:
    """Over TLS too, as real providers are reached: the tap sits on the TLS transport's
    decrypted side."""
    server_tls, client_tls = loopback_tls() if tls else (None, None)
    async with FakeProvider(tls=server_tls) as fake:
        fake.script.append(openai_stream(PIECES, delay_s=0.005))
        fake.script.append(openai_stream(PIECES))
        connector = aiohttp.TCPConnector(limit=1, ssl=client_tls or True)
        async with aiohttp.ClientSession(connector=connector) as session:
            async with session.post(fake.base_url + "/v1/chat/completions", json={}) as r:
                before, tap = await _tapped(r)
                tapped = await _drain(tap)
                after = await r.content.read()  # aiohttp again, to the end of the body
            async with session.post(fake.base_url + "/v1/chat/completions", json={}) as r:
                plain = await r.content.read()
    assert tapped  # the tap read part of the body
    assert before + tapped + after == plain  # the same bytes as read by aiohttp alone
    assert fake.connections == 1  # the tapped connection went back to the pool and was reused
    assert fake.client_closed == 0


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
async def test_a_connection_lost_while_tapped_is_a_payload_error_after_the_bytes_before_it(
    tls: bool
) -> None:
    server_tls, client_tls = loopback_tls() if tls else (None, None)
    async with FakeProvider(tls=server_tls) as fake:
        fake.script.append(openai_stream(PIECES, delay_s=0.005, cut_after_pieces=20))
        connector = aiohttp.TCPConnector(ssl=client_tls or True)
        async with aiohttp.ClientSession(connector=connector) as session:
            async with session.post(fake.base_url + "/v1/chat/completions", json={}) as r:
                before, tap = await _tapped(r)
                tapped = await _drain(tap)  # given back when the connection closes
                with pytest.raises(aiohttp.ClientPayloadError):
                    await r.content.read()
    text = (before + tapped).decode()
    assert "токен19 word19" in text and "токен20" not in text  # every byte before the cut


@asynccontextmanager
async def _raw_server(respond: Callable[[asyncio.StreamWriter], Awaitable[None]]
                      ) -> AsyncIterator[str]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        try:
            await respond(writer)
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()


CHUNKED = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


async def test_a_malformed_chunk_is_an_error_not_a_guess() -> None:
    async def respond(writer: asyncio.StreamWriter) -> None:
        writer.write(CHUNKED + b"5\r\nhello\r\n")
        await asyncio.sleep(0.05)
        writer.write(b"zz\r\nnot a chunk\r\n")
        await asyncio.sleep(0.5)

    async with _raw_server(respond) as url, aiohttp.ClientSession() as session:
        async with session.get(url) as r:
            before, tap = await _tapped(r)
            assert before == b"hello"
            with pytest.raises(TapError):
                await _drain(tap)


async def test_no_data_for_the_read_timeout_while_tapped_times_out() -> None:
    async def respond(writer: asyncio.StreamWriter) -> None:
        writer.write(CHUNKED + b"5\r\nhello\r\n")
        await asyncio.sleep(2)  # then nothing: a provider that hangs

    timeout = aiohttp.ClientTimeout(sock_read=0.3)
    async with _raw_server(respond) as url, aiohttp.ClientSession(timeout=timeout) as session:
        async with session.get(url) as r:
            _, tap = await _tapped(r)
            with pytest.raises(TimeoutError):
                await _drain(tap, wait_s=1.5)


async def test_only_a_plain_chunked_body_is_tapped() -> None:
    async def sized(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello")
        await asyncio.sleep(0.3)
        writer.write(b"world")

    async def gzipped(writer: asyncio.StreamWriter) -> None:
        import gzip

        body = gzip.compress(b"data: hello\n\n")
        writer.write(CHUNKED.replace(b"\r\n\r\n", b"\r\ncontent-encoding: gzip\r\n\r\n")
                     + http_chunk(body))
        await asyncio.sleep(0.3)
        writer.write(b"0\r\n\r\n")

    for respond, whole in ((sized, b"helloworld"), (gzipped, b"data: hello\n\n")):
        async with _raw_server(respond) as url, aiohttp.ClientSession() as session:
            async with session.get(url) as r:
                got = await r.content.readany()
                await asyncio.sleep(0.05)
                assert not Tap.tappable(r)
                assert got + await r.content.read() == whole
