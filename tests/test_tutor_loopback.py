"""The loopback benchmark provider: refused unless allowed, reported by /readyz, and a paced
reply streamed over the socket."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError
from websockets.asyncio.client import connect

from chat_server import cli
from chat_server.app import create_app
from chat_server.settings import Settings, get_settings
from chat_server.tutor.prompt import PromptRequest
from chat_server.tutor.providers import build_provider, primary_name
from tests.conftest import register
from tests.support.services import serve_app


def _settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg, arg-type]


def test_loopback_is_refused_unless_allowed(tmp_path: Path) -> None:
    for values in ({"llm_provider": "loopback"}, {"llm_fallback": ["offline", "loopback"]}):
        with pytest.raises(ValidationError, match="TUTORHUB_LLM_LOOPBACK_ALLOWED=true"):
            _settings(**values)
    # Settings copied past validation still cannot build it.
    sneaked = _settings().model_copy(update={"llm_provider": "loopback"})
    with pytest.raises(ValueError, match="benchmark provider"):
        build_provider("loopback", sneaked)
    # Never the default, even where it is allowed.
    assert primary_name(_settings(llm_loopback_allowed=True)) == "offline"


def test_serve_refuses_loopback_with_a_clear_message(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("TUTORHUB_LLM_PROVIDER", "loopback")
    get_settings.cache_clear()
    try:
        assert cli.main(["serve"]) == 2
    finally:
        get_settings.cache_clear()
    err = capsys.readouterr().err
    assert "is the benchmark provider" in err and "TUTORHUB_LLM_LOOPBACK_ALLOWED=true" in err
    assert "Traceback" not in err


async def test_loopback_truncates_at_max_tokens() -> None:
    provider = build_provider("loopback", _settings(
        llm_provider="loopback", llm_loopback_allowed=True, llm_loopback_reply_tokens=50))
    request = PromptRequest(system="", messages=[], question="Что такое митоз?", language="ru",
                            hits=[], socratic=False, max_tokens=7, temperature=0.0)
    async with provider.stream(request) as stream:
        pieces = [piece async for piece in stream]
    assert len(pieces) == 7 and stream.finish_reason == "length"
    assert stream.usage.output_tokens == 7 and pieces[0] == "клетка"


async def test_readyz_reports_loopback_and_a_paced_reply_streams(settings: Settings) -> None:
    settings = settings.model_copy(update={
        "llm_provider": "loopback", "llm_loopback_allowed": True,
        "llm_loopback_tokens_per_s": 200.0, "llm_loopback_reply_tokens": 30})
    async with serve_app(create_app(settings)) as base, \
            httpx.AsyncClient(base_url=base, timeout=30) as client:
        ready = (await client.get("/readyz")).json()
        assert ready["status"] == "ready"
        assert ready["llm"] == [{"provider": "loopback",
                                 "model": "loopback-30-tokens-200/s"}]
        assert "loopback" in ready["benchmark"]

        token = await register(client, "loopback@example.com")
        async with connect(base.replace("http", "ws") + "/ws/v1", compression=None) as ws:
            await ws.send(json.dumps({"type": "auth", "token": token}))
            assert json.loads(await ws.recv())["type"] == "welcome"
            sent = time.monotonic()
            await ws.send(json.dumps({"type": "chat.send", "id": uuid.uuid4().hex,
                                      "text": "What is mitosis?"}))
            deltas = []
            while True:
                frame = json.loads(await ws.recv())
                if frame["type"] == "reply.delta":
                    deltas.append(frame)
                if frame["type"] == "reply.end":
                    break
            elapsed = time.monotonic() - sent
    text = "".join(d["text"] for d in deltas)
    assert [d["seq"] for d in deltas] == list(range(1, len(deltas) + 1))
    assert len(text.split(" ")) == 30 and text.startswith("the cell divides")
    assert frame["finish_reason"] == "stop" and frame["usage"]["output_tokens"] == 30
    # Paced on an absolute schedule: the 30th token cannot leave before 29/200 s.
    assert elapsed >= 29 / 200
