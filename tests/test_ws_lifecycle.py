"""A socket's life in the hub ends the same whatever ends it: churn leaves nothing behind."""

from __future__ import annotations

import gc
from typing import Any

import psutil

from chat_server.app import create_app
from chat_server.hub.hub import Hub
from chat_server.settings import Settings
from tests.support.churn import FLAVOURS, churn, gauges
from tests.support.services import serve_app
from tests.support.ws import new_user, socket, until

CYCLES = 700  # per flavour
RSS_BOUND = 3_000_000  # bytes for all 2,100 cycles (main grew ~6 KB per cycle: 12 MB)


async def test_socket_churn_returns_registries_gauges_and_memory_to_baseline(
    settings: Settings,
) -> None:
    app = create_app(settings)
    async with serve_app(app) as base:
        uid, token = await new_user(base)
        hub, bus = app.state.hub, app.state.bus
        sockets0, users0 = await gauges(base)  # the gauges are per process (other apps)
        async with socket(base, token):  # a socket that stays open throughout
            for flavour in (*FLAVOURS, "refused"):  # warm-up: every path once, caches filled
                await churn(base, token, flavour, 60)
            await until(lambda: _settled(hub, bus, 1))
            gc.collect()
            rss0 = psutil.Process().memory_info().rss
            for flavour in FLAVOURS:
                await churn(base, token, flavour, CYCLES)
                await until(lambda: _settled(hub, bus, 1))
                assert [c.state.value for c in hub.users[uid].conns] == ["live"], flavour
                assert bus._subscribed == {uid: 1}, flavour
                assert await gauges(base) == (sockets0 + 1, users0 + 1), flavour
            gc.collect()
            growth = psutil.Process().memory_info().rss - rss0
            assert growth < RSS_BOUND, growth
        await until(lambda: _settled(hub, bus, 0))
        assert hub.users == {} and bus._subscribed == {}
        assert await gauges(base) == (sockets0, users0)


async def _settled(hub: Hub, bus: Any, sockets: int) -> bool:
    """Every ended socket has finished: left the hub and given back its subscription."""
    return hub.open_sockets == sockets and sum(bus._subscribed.values()) == sockets
