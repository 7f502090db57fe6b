"""The Telegram bridge under test: the real server (uvicorn, pgserver), the loopback OpenAI
provider, the fake Bot API, and a Bridge polling it in this event loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import SecretStr

from chat_server.app import create_app
from chat_server.db import open_database
from chat_server.settings import Settings
from chat_server.telegram.bridge import Bridge, open_bridge
from chat_server.telegram.claims import open_claims
from tests.support.fake_providers import FakeProvider, openai_stream
from tests.support.fake_telegram import TOKEN, FakeTelegram, Sent
from tests.support.services import free_port, serve_app
from tests.support.ws import new_user, until


@dataclass
class TelegramEnv:
    base_url: str
    api: FakeTelegram
    llm: FakeProvider
    bridge: Bridge | None  # None when run without one
    settings: Settings

    async def user(self) -> tuple[str, dict[str, str]]:
        user_id, token = await new_user(self.base_url)
        return user_id, {"Authorization": f"Bearer {token}"}

    async def link_url(self, auth: dict[str, str]) -> str:
        async with httpx.AsyncClient(base_url=self.base_url) as c:
            r = await c.post("/telegram/link", headers=auth)
        assert r.status_code == 201, r.text
        return str(r.json()["url"])

    async def linked(self, chat_id: int, language: str = "en") -> tuple[str, dict[str, str]]:
        """A new Tutorhub user linked to Telegram user `chat_id` (their private chat)."""
        user_id, auth = await self.user()
        code = (await self.link_url(auth)).split("start=", 1)[1]
        self.api.message(chat_id, f"/start {code}", language=language)
        await self.api.wait_for(lambda: len(self.api.texts(chat_id)) >= 1)
        assert self.api.texts(chat_id)[-1].startswith(("Linked", "Аккаунт привязан"))
        return user_id, auth

    def reply(self, pieces: list[str], delay_s: float = 0.0) -> None:
        """The provider's answer to the next question, streamed piece by piece."""
        self.llm.script.append(openai_stream(pieces, delay_s=delay_s))

    async def said(self, chat_id: int, count: int, within_s: float = 30.0) -> list[Sent]:
        """Wait until the bot sent `count` messages into the chat; all of them."""
        await self.api.wait_for(lambda: len(self.api.messages[chat_id]) >= count, within_s)
        return self.api.messages[chat_id]

    async def idle(self, chat_id: int) -> None:
        """Wait until nothing streams into the chat (every reply task delivered)."""
        bridge = self.bridge
        assert bridge is not None

        async def settled() -> bool:
            return all(s.target.chat_id != chat_id for s in bridge.replies.values())

        await until(settled, step_s=0.02)

    async def conversation(self, auth: dict[str, str]) -> dict[str, Any]:
        """The user's most recent conversation with its messages."""
        async with httpx.AsyncClient(base_url=self.base_url) as c:
            convs = (await c.get("/conversations", headers=auth)).json()
            r = await c.get(f"/conversations/{convs[0]['id']}", headers=auth)
        return r.json()  # type: ignore[no-any-return]

    async def stored(self, auth: dict[str, str], status: str = "complete") -> dict[str, Any]:
        """The last assistant message once it has `status`."""
        async with asyncio.timeout(20):
            while True:
                messages = (await self.conversation(auth))["messages"]
                if messages and messages[-1]["role"] == "assistant" and \
                        messages[-1]["status"] == status:
                    return messages[-1]  # type: ignore[no-any-return]
                await asyncio.sleep(0.05)


@asynccontextmanager
async def telegram_env(settings: Settings, *, bridge: bool = True, claims_url: str | None = None,
                       **overrides: Any) -> AsyncIterator[TelegramEnv]:
    """The server with the fake Bot API and provider; with `bridge`, a Bridge polling in this
    event loop (in webhook mode the server's own bridge; without, none), claiming updates in
    the Redis at `claims_url` if given."""
    port = free_port()
    async with FakeTelegram() as api, FakeProvider() as llm:
        s = settings.model_copy(update={
            "llm_provider": "openai", "openai_base_url": llm.base_url + "/v1",
            "openai_api_key": "sk-test", "openai_model": "gpt-test",
            "telegram_bot_token": SecretStr(TOKEN), "telegram_api_url": api.base_url,
            "telegram_server_url": f"http://127.0.0.1:{port}",
            "telegram_draft_interval_s": 0.2, "telegram_edit_interval_s": 0.3,
            # Study tools only where a test asks (they would ask the scripted provider).
            "study_on_ready": False,
            **overrides})
        assert s.database_url
        app = create_app(s)
        async with serve_app(app, port=port) as base_url:
            if s.telegram_mode == "webhook" or not bridge:
                yield TelegramEnv(base_url, api, llm, getattr(app.state, "telegram", None), s)
                return
            async with open_database(s.database_url, 3) as db, \
                    open_claims(claims_url or s.redis_url) as claims, \
                    open_bridge(s, db, claims) as polling:
                task = asyncio.create_task(polling.run_polling())
                try:
                    await api.wait_for(lambda: api.polls_waiting > 0 or task.done(), 10)
                    yield TelegramEnv(base_url, api, llm, polling, s)
                finally:
                    await polling.stop_polling()
                    await asyncio.wait_for(task, 10)
