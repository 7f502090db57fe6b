"""A material added from Telegram: one status message, edited as its ingestion goes.

Progress comes from the user's socket (`material.progress`, `.ready`, `.failed`), fed by the
bridge; edits are throttled to `telegram_edit_interval_s` and the last one (ready, or the
failure's reason) is always delivered, after any flood-control pause. Should the socket's events
stop (a resume that could not reach back), the material's state is read over REST instead.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Any

from aiogram.enums import ParseMode
from aiogram.exceptions import TelegramBadRequest
from aiogram.methods import EditMessageText

from chat_server.telegram.botapi import Outbox, not_modified
from chat_server.telegram.render import escape
from chat_server.telegram.texts import EN, t

log = logging.getLogger(__name__)

QUIET_POLL_S = 20.0  # no event for this long: ask REST
GIVE_UP_S = 6 * 3600.0
YOUTUBE = re.compile(r"(?:https?://)?(?:www\.|m\.)?(?:youtube\.com/(?:watch\?(?:[^\s#]*&)?v="
                     r"|shorts/|live/|embed/)|youtu\.be/)([A-Za-z0-9_-]{11})")

Poll = Callable[[], Awaitable[dict[str, Any] | None]]


def youtube_id(text: str) -> str | None:
    found = YOUTUBE.search(text)
    return found.group(1) if found else None


def from_rest(material: dict[str, Any]) -> dict[str, Any]:
    """A material as GET /materials/{id} returns it, as the socket event it amounts to."""
    status = material.get("status")
    if status == "ready":
        return {"type": "material.ready", "chunks": material.get("chunk_count", 0)}
    if status == "failed":
        return {"type": "material.failed", "reason": material.get("error") or ""}
    return {"type": "material.progress", "stage": material.get("stage") or "extracting",
            "done": material.get("progress_done", 0), "total": material.get("progress_total", 0)}


class MaterialStatus:
    def __init__(self, outbox: Outbox, chat_id: int, message_id: int, title: str, lang: str,
                 interval_s: float, poll: Poll) -> None:
        self.outbox = outbox
        self.chat_id = chat_id
        self.message_id = message_id
        self.title = title
        self.lang = lang
        self.interval_s = interval_s
        self.poll = poll
        self.state: dict[str, Any] | None = None
        self._shown = ""
        self._shown_at = 0.0
        self._changed = asyncio.Event()

    def feed(self, frame: dict[str, Any]) -> None:
        if self.done:
            return
        self.state = frame
        self._changed.set()

    @property
    def done(self) -> bool:
        return self.state is not None and self.state["type"] in ("material.ready",
                                                                 "material.failed")

    def text(self) -> str:
        title, lang, state = escape(self.title), self.lang, self.state or {}
        kind = state.get("type")
        if kind == "material.ready":
            return t(lang, "status_ready", title=title, chunks=state.get("chunks", 0))
        if kind == "material.failed":
            return t(lang, "status_failed", title=title,
                     reason=escape(str(state.get("reason") or "?")))
        if kind == "material.progress" and state.get("total"):
            key = f"stage_{state.get('stage')}"  # a stage not in the catalogue shows as named
            return t(lang, "status_stage", title=title,
                     stage=t(lang, key) if key in EN else escape(str(state.get("stage"))),
                     done=state.get("done", 0), total=state["total"])
        return t(lang, "status_queued", title=title)

    async def run(self) -> None:
        started = time.monotonic()
        while not self.done and time.monotonic() - started < GIVE_UP_S:
            try:
                await asyncio.wait_for(self._changed.wait(), QUIET_POLL_S)
            except TimeoutError:
                with suppress(Exception):
                    polled = await self.poll()
                    if polled is not None:
                        self.feed(from_rest(polled))
            self._changed.clear()
            if self.done:
                break
            wait = max(self._shown_at + self.interval_s - time.monotonic(),
                       self.outbox.blocked_for(self.chat_id))
            if wait > 0:
                with suppress(TimeoutError):
                    await asyncio.wait_for(self._until_done(), wait)
                if self.done:
                    break
            await self._edit(final=False)
        if self.done:
            await self._edit(final=True)

    async def _until_done(self) -> None:
        while not self.done:
            await self._changed.wait()
            self._changed.clear()

    async def _edit(self, *, final: bool) -> None:
        text = self.text()
        if text == self._shown:
            return
        self._shown, self._shown_at = text, time.monotonic()
        method = EditMessageText(chat_id=self.chat_id, message_id=self.message_id, text=text,
                                 parse_mode=ParseMode.HTML)
        try:
            if final:
                await self.outbox.final(self.chat_id, method)
            else:
                await self.outbox.update(self.chat_id, method)
        except TelegramBadRequest as exc:
            if not not_modified(exc):
                log.info("chat %s: status edit refused (%s)", self.chat_id, exc.message)
