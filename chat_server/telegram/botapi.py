"""Talking to the Bot API: the bot, the draft method, rate limits, retries, and the token kept
out of every log.

The token is part of every Bot API URL (`/bot<token>/<method>`, `/file/bot<token>/<path>`),
and aiohttp puts URLs into some of its exceptions' messages, which aiogram and we may log. So
the bot is made only after the token and the webhook secret are added to the process's log
redaction (chat_server/redact.py: every record of every logger, before any handler sees it).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import TypeVar

from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
)
from aiogram.methods import TelegramMethod

from chat_server import redact
from chat_server.settings import Settings

log = logging.getLogger(__name__)

try:  # Bot API 9.5+; aiogram added it in 3.24
    from aiogram.methods import SendMessageDraft
except ImportError:  # an older aiogram: the same method through aiogram's custom-method type
    class SendMessageDraft(TelegramMethod[bool]):  # type: ignore[no-redef]
        """Stream a partial message to a private chat (sendMessageDraft)."""

        __returning__ = bool
        __api_method__ = "sendMessageDraft"

        chat_id: int
        draft_id: int
        message_thread_id: int | None = None
        text: str | None = None
        parse_mode: str | None = None

# A stop button on the draft (Bot API 10.x): pressing it sends `stopped_message_generation`,
# which cancels the reply like /stop. Older aiogram versions lack the field: no button then.
DRAFT_CAN_STOP = "can_stop" in SendMessageDraft.model_fields

T = TypeVar("T")
FINAL_ATTEMPTS = 8  # a final message is retried this often (429 waits and outages alike)
BACKOFF_MAX_S = 30.0


# --- the bot -----------------------------------------------------------------------------

def token_of(settings: Settings) -> str:
    if settings.telegram_bot_token is None:
        raise RuntimeError("TUTORHUB_TELEGRAM_BOT_TOKEN is not set.")
    return settings.telegram_bot_token.get_secret_value()


def make_bot(settings: Settings) -> Bot:
    token = token_of(settings)
    redact.install([token, webhook_secret(settings)])
    session = AiohttpSession(api=TelegramAPIServer.from_base(settings.telegram_api_url))
    return Bot(token, session=session)


def webhook_secret(settings: Settings) -> str:
    """What Telegram sends in X-Telegram-Bot-Api-Secret-Token (1-256 of A-Z a-z 0-9 _ -)."""
    if settings.telegram_webhook_secret is not None:
        return settings.telegram_webhook_secret.get_secret_value()
    import hashlib
    import hmac

    key = settings.resolved_secret_key().encode()
    return hmac.new(key, b"tutorhub telegram webhook", hashlib.sha256).hexdigest()


# --- calls that honour 429 and survive outages ---------------------------------------------

class Outbox:
    """Bot API calls with Telegram's flood control honoured per chat.

    A 429 blocks the chat for its `retry_after`: updates (drafts, progress edits) are skipped
    until then, and a final message waits for it and is then sent in full. Network faults and
    5xx: an update is skipped (the next one carries the same text), a final message is retried
    with backoff.
    """

    def __init__(self, bot: Bot) -> None:
        self.bot = bot
        self._blocked: dict[int, float] = {}

    def blocked_for(self, chat_id: int) -> float:
        """Seconds until `chat_id` may be sent to again (0 when it may now)."""
        until = self._blocked.get(chat_id)
        if until is None:
            return 0.0
        left = until - time.monotonic()
        if left <= 0:
            del self._blocked[chat_id]
            return 0.0
        return left

    def _block(self, chat_id: int, seconds: float) -> None:
        until = time.monotonic() + seconds
        self._blocked[chat_id] = max(until, self._blocked.get(chat_id, 0.0))
        log.info("Bot API flood control: chat %s paused for %.1f s", chat_id, seconds)

    async def update(self, chat_id: int, method: TelegramMethod[T]) -> T | None:
        """A best-effort call (the next update supersedes it): None if skipped or failed."""
        if self.blocked_for(chat_id):
            return None
        try:
            return await self.bot(method)
        except TelegramRetryAfter as exc:
            self._block(chat_id, exc.retry_after)
        except (TelegramNetworkError, TelegramServerError) as exc:
            log.warning("Bot API %s failed: %s", method.__api_method__, exc)
        return None

    async def final(self, chat_id: int, method: TelegramMethod[T]) -> T:
        """A call that must happen: waits out flood control, retries faults with backoff.
        Bad requests are raised (the caller knows what they mean)."""
        delay = 0.5
        for attempt in range(FINAL_ATTEMPTS):
            wait = self.blocked_for(chat_id)
            if wait:
                await asyncio.sleep(wait)
            try:
                return await self.bot(method)
            except TelegramRetryAfter as exc:
                self._block(chat_id, exc.retry_after)
            except (TelegramNetworkError, TelegramServerError) as exc:
                if attempt == FINAL_ATTEMPTS - 1:
                    raise
                log.warning("Bot API %s failed (%s); retrying in %.1f s",
                            method.__api_method__, exc, delay)
                await asyncio.sleep(delay * (0.8 + 0.4 * random.random()))
                delay = min(delay * 2, BACKOFF_MAX_S)
        raise TelegramServerError(method=method, message="still rate limited after retries")


def not_modified(exc: TelegramBadRequest) -> bool:
    """An edit to the text the message already has: nothing to do."""
    return "not modified" in exc.message
