"""REST for the Telegram bridge: link a Telegram account, and the webhook (webhook mode).

`POST /telegram/link` hands a logged-in user a deep link `https://t.me/<bot>?start=<code>`;
opening it sends `/start <code>` to the bot, which binds the two accounts. In webhook mode
the bridge runs inside `tutorhub serve` (`lifespan`), and Telegram posts updates to
`POST /telegram/webhook` with the secret header it was registered with.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime

from fastapi import APIRouter, FastAPI, Request, Response
from pydantic import BaseModel

from chat_server.deps import CurrentUser, SessionDep, SettingsDep
from chat_server.errors import ApiError
from chat_server.settings import Settings
from chat_server.telegram import store

log = logging.getLogger(__name__)
router = APIRouter(prefix="/telegram", tags=["telegram"])
SECRET_HEADER = "x-telegram-bot-api-secret-token"


class TelegramLinkOut(BaseModel):
    url: str
    bot_username: str
    expires_at: datetime


class TelegramLinkStatus(BaseModel):
    linked: bool
    telegram_username: str | None = None
    linked_at: datetime | None = None


def _enabled(settings: Settings) -> None:
    if settings.telegram_bot_token is None:
        raise ApiError(503, "Telegram is not set up on this server.", "telegram_disabled")


async def bot_username(app: FastAPI, settings: Settings) -> str:
    """The bot's username: the setting, or getMe once per process."""
    if settings.telegram_bot_username:
        return settings.telegram_bot_username.lstrip("@")
    cached: str | None = getattr(app.state, "telegram_username", None)
    if cached:
        return cached
    from aiogram.exceptions import TelegramAPIError

    from chat_server.telegram.botapi import make_bot

    bot = make_bot(settings)
    try:
        me = await bot.me()
    except TelegramAPIError as exc:
        log.warning("getMe failed: %s", exc)
        raise ApiError(503, "Telegram cannot be reached right now; try again shortly.",
                       "telegram_unavailable") from exc
    finally:
        await bot.session.close()
    app.state.telegram_username = me.username or ""
    return app.state.telegram_username  # type: ignore[no-any-return]


@router.post("/link", response_model=TelegramLinkOut, status_code=201,
             summary="A one-time deep link that links a Telegram account to mine")
async def create_link(request: Request, user: CurrentUser, session: SessionDep,
                      settings: SettingsDep) -> TelegramLinkOut:
    _enabled(settings)
    username = await bot_username(request.app, settings)
    code, expires_at = await store.create_code(session, user.id, settings.telegram_link_ttl_s)
    return TelegramLinkOut(url=f"https://t.me/{username}?start={code}", bot_username=username,
                           expires_at=expires_at)


@router.get("/link", response_model=TelegramLinkStatus,
            summary="Whether a Telegram account is linked to mine")
async def link_status(user: CurrentUser, session: SessionDep) -> TelegramLinkStatus:
    link = await store.link_of(session, user.id)
    if link is None:
        return TelegramLinkStatus(linked=False)
    return TelegramLinkStatus(linked=True, telegram_username=link.telegram_username,
                              linked_at=link.created_at)


@router.delete("/link", status_code=204, summary="Unlink my Telegram account")
async def delete_link(user: CurrentUser, session: SessionDep) -> Response:
    await store.unlink(session, user_id=user.id)
    return Response(status_code=204)


@router.post("/webhook", include_in_schema=False)
async def webhook(request: Request) -> dict[str, bool]:
    bridge = getattr(request.app.state, "telegram", None)
    if bridge is None:
        raise ApiError(404, "The Telegram bridge does not run in webhook mode here.")
    from chat_server.telegram.botapi import webhook_secret

    given = request.headers.get(SECRET_HEADER, "").encode()
    if not hmac.compare_digest(given, webhook_secret(bridge.settings).encode()):
        raise ApiError(403, "Wrong or missing secret token.")
    try:
        update = await request.json()
        if not isinstance(update, dict):
            raise ValueError("not an object")
        accepted = bridge.feed_webhook(update)
    except (ValueError, RecursionError) as exc:  # RecursionError: JSON nested too deep to decode
        raise ApiError(400, "The body is not a Telegram update.") from exc
    if not accepted:
        raise ApiError(503, "Too many updates in progress; send it again later.")
    return {"ok": True}


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Webhook mode: the bridge runs in this process (a client of this very server)."""
    settings: Settings = app.state.settings
    if settings.telegram_bot_token is None or settings.telegram_mode != "webhook":
        yield
        return
    from chat_server.telegram.bridge import open_bridge
    from chat_server.telegram.claims import open_claims

    async with open_claims(settings.redis_url) as claims, \
            open_bridge(settings, app.state.db, claims) as bridge:
        bridge.spawn(bridge.register_webhook(), "tg-set-webhook")
        app.state.telegram = bridge
        try:
            yield
        finally:
            app.state.telegram = None
