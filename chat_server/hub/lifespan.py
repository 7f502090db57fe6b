"""The hub's lifespan component and route: opens the bus, owns the Hub, serves /ws/v1."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI

from chat_server.hub.bus import RedisBus, open_bus
from chat_server.hub.endpoint import HubEndpoint
from chat_server.hub.hub import Hub
from chat_server.settings import Settings

router = APIRouter()
router.add_websocket_route("/ws/v1", HubEndpoint(), name="ws_v1")  # type: ignore[arg-type]


@asynccontextmanager
async def hub_lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    hub = Hub(settings)
    async with open_bus(settings.redis_url or "memory://", hub.deliver,
                        max_events=settings.history_max_events, ttl_s=settings.history_ttl_s,
                        on_epoch=hub.on_epoch) as bus:
        if isinstance(bus, RedisBus):
            await bus.wait_ready(2.0)  # not fatal: the readiness probe reports it meanwhile
        hub.bus = bus
        app.state.bus = bus
        app.state.hub = hub
        app.state.readiness["bus"] = bus.ready
        await hub.start()
        try:
            yield
        finally:
            await hub.stop()
