"""The hub's isolated fast path (chat_server/hub/fastpath.py): uvicorn is the pinned version and
its internals are what the fast path relies on (this fails loudly when an upgrade changes
them); the check catches such a change; and when they are absent the server falls back to
uvicorn's public ASGI path, which serves sockets the same (tests/test_ws_hub.py runs whole on
it too)."""

from __future__ import annotations

import asyncio
import logging
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState

from chat_server.app import create_app
from chat_server.hub import fastpath
from chat_server.settings import Settings
from tests.support.services import serve_app
from tests.support.ws import new_user, recv, socket

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def recheck() -> Iterator[None]:
    """problems() is cached per process: forget it before and after a test that moves IMPL."""
    fastpath.problems.cache_clear()
    yield
    fastpath.problems.cache_clear()


def test_uvicorn_is_pinned_and_its_internals_are_what_the_fast_path_relies_on() -> None:
    assert fastpath.problems() == [], "uvicorn changed under the hub's fast path: see fastpath.py"
    assert uvicorn.__version__ == fastpath.UVICORN_VERSION
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert f"uvicorn[standard]=={fastpath.UVICORN_VERSION}" in deps
    loop = asyncio.new_event_loop()
    try:
        cls: Any = fastpath.fast_protocol()
        protocol = cls(config=uvicorn.Config(_asgi_app), server_state=ServerState(), app_state={}, _loop=loop)
        assert isinstance(protocol.queue, fastpath._Inbox)
        assert isinstance(protocol.writable, fastpath._Flag)
    finally:
        loop.close()


async def _asgi_app(scope: Any, receive: Any, send: Any) -> None:
    pass


class ChangedProtocol:
    """What a new uvicorn might do: call a queue method the replacement lacks, hand the flag to
    a helper, drop an attribute, change a signature."""

    def __init__(self, config: Any, server_state: Any, app_state: Any, loop: Any = None) -> None:
        self.queue: Any = None
        self.writable: Any = None
        self.transport: Any = None

    def handle_connect(self, event: Any) -> None:
        self.queue.put_nowait(event)
        if self.queue.qsize() > 1:
            self.writable.wait_for(1)

    async def send(self, message: Any) -> None:
        keep(self.writable)


def keep(_: Any) -> None:
    pass


def test_the_check_catches_a_change_in_uvicorn(recheck: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fastpath, "IMPL", (__name__, "ChangedProtocol"))
    found = "\n".join(fastpath.problems())
    assert "ChangedProtocol.__init__" in found and "_loop" in found
    assert "self.queue.qsize" in found and "self.writable.wait_for" in found
    assert "passes self.writable around" in found
    for gone in ("scope", "request", "response", "handshake_complete", "close_sent", "disconnected"):
        assert f"no longer sets self.{gone}" in found
    assert not re.search(r"self\.queue\.(put_nowait|get)\b", found)


async def test_without_the_internals_sockets_use_the_public_path(
        recheck: None, monkeypatch: pytest.MonkeyPatch, settings: Settings,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(fastpath, "IMPL", ("uvicorn.protocols.websockets.gone", "Protocol"))
    with caplog.at_level(logging.WARNING, "chat_server.hub.fastpath"):
        assert fastpath.uvicorn_ws(settings) == fastpath.PUBLIC
    assert "ModuleNotFoundError" in caplog.text and "public ASGI path" in caplog.text
    with pytest.raises(AttributeError):
        _ = fastpath.HubWebSocketProtocol  # type: ignore[attr-defined]
    app = create_app(settings)
    async with serve_app(app) as base:  # as `tutorhub serve` picks it: uvicorn_ws(settings)
        uid, token = await new_user(base)
        async with socket(base, token) as (ws, _):
            assert [c.raw for c in app.state.hub.conns()] == [False]
            big = {"type": "material.failed", "material_id": "m", "reason": "я" * 40000}
            await app.state.bus.publish(uid, big)
            await app.state.bus.publish(uid, {"type": "material.ready", "material_id": "m", "chunks": 1})
            assert (await recv(ws))["reason"] == big["reason"]
            assert (await recv(ws))["o"] == 2


def test_the_setting_and_compression_choose_the_public_path(settings: Settings) -> None:
    assert fastpath.uvicorn_ws(settings) is fastpath.fast_protocol()
    assert fastpath.HubWebSocketProtocol is fastpath.fast_protocol()  # type: ignore[attr-defined]
    assert fastpath.uvicorn_ws(settings.model_copy(update={"ws_fast_path": False})) == fastpath.PUBLIC
    assert fastpath.uvicorn_ws(settings.model_copy(update={"ws_compression": True})) == fastpath.PUBLIC
