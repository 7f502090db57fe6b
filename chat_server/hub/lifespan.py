"""The hub's lifespan component and route: opens the bus, owns the Hub, serves /ws/v1."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from chat_server.bus import open_bus
from chat_server.hub.endpoint import HubEndpoint
from chat_server.hub.hub import Hub
from chat_server.settings import Settings

WS_PATH = "/ws/v1"
endpoint = HubEndpoint()
router = APIRouter()
router.add_websocket_route(WS_PATH, endpoint, name="ws_v1")  # type: ignore[arg-type]


class HubFastPath:
    """ASGI middleware: /ws/v1 sockets go straight to the hub endpoint.

    A socket lives for hours; every middleware and routing frame it passes through stays in
    memory for that long. Skipping them saves a few KB per idle socket. HTTP is untouched.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and scope["path"] == WS_PATH:
            await endpoint(scope, receive, send)  # type: ignore[arg-type]
        else:
            await self.app(scope, receive, send)


@asynccontextmanager
async def hub_lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    hub = Hub(settings)
    async with open_bus(settings.redis_url or "memory://", hub.deliver,
                        max_events=settings.history_max_events, ttl_s=settings.history_ttl_s,
                        on_epoch=hub.on_epoch) as bus:
        await bus.wait_ready(2.0)  # not fatal: the readiness probe reports it meanwhile
        hub.bus = bus
        bus.on_signal(hub.on_signal)
        app.state.bus = bus
        app.state.hub = hub
        app.state.readiness["bus"] = bus.ready
        await hub.start()
        try:
            yield
        finally:
            await hub.stop()
