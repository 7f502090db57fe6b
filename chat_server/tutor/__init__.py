"""The streaming tutor: `lifespan(app)` sets `app.state.tutor` (see service.Tutor)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from fastapi import FastAPI

from chat_server.tutor.errors import ProviderError, TutorError
from chat_server.tutor.providers import open_providers
from chat_server.tutor.service import Tutor

__all__ = ["ProviderError", "Tutor", "TutorError", "lifespan"]

log = logging.getLogger(__name__)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = app.state.settings
    async with AsyncExitStack() as stack:
        bus: Any = getattr(app.state, "bus", None)
        if bus is None:
            # Without the hub nobody can receive events; keep them in an in-process history
            # so the tutor still works (and stores replies) rather than failing the start.
            from chat_server.bus import open_bus

            log.warning("no bus on app.state: the tutor publishes into an in-process history")
            bus = await stack.enter_async_context(open_bus(
                "memory://", _drop, max_events=settings.history_max_events,
                ttl_s=settings.history_ttl_s))
        providers = await stack.enter_async_context(open_providers(settings))
        tutor = Tutor(settings, app.state.db, bus.publish, providers, bus.publish_many,
                      signal=bus.signal, ready=bus.ready)
        bus.on_signal(tutor.on_signal)
        tutor.start()
        app.state.tutor = tutor
        log.info("tutor ready: providers %s", ", ".join(p.name for p in providers))
        try:
            yield
        finally:
            await tutor.aclose(settings.shutdown_timeout_s)
            app.state.tutor = None


def _drop(user_id: str, offset: int, frame: str, *_: Any) -> None:
    return None
