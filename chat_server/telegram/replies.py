"""One tutor reply streamed into a Telegram chat.

Private chats get drafts (sendMessageDraft) at most every `telegram_draft_interval_s`, then
the final text with sendMessage. Groups, and private chats that refuse drafts, get one
placeholder message edited at most every `telegram_edit_interval_s`, and a last edit with the
final text. A reply longer than one message is split (render.split): each part is delivered
as a message of its own as soon as the text has grown past it, so only the last part streams.

Flood control (429 `retry_after`) pauses the chat's updates for that long (botapi.Outbox); the
final text waits it out and is then delivered whole. The source list and a note on how the
reply ended (stopped, failed) follow the text, in the user's language.

The reply is fed by the bridge from the user's socket (`feed`, synchronous and cheap); its own
task (`run`) does every Bot API call, so a slow Bot API never holds up the socket.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from aiogram.enums import ParseMode
from aiogram.exceptions import TelegramBadRequest
from aiogram.methods import EditMessageText, SendMessage

from chat_server.telegram import render
from chat_server.telegram.botapi import DRAFT_CAN_STOP, Outbox, SendMessageDraft, not_modified
from chat_server.telegram.texts import t

log = logging.getLogger(__name__)

CURSOR = " …"  # shown at the end of a placeholder while the reply is still being written
QUIET_S = 90.0  # longer than any pause of a live reply (provider timeout 60 s, heartbeats)
DRAFT_KEEPALIVE_S = 20.0  # a draft is a ~30 s preview: shown again if nothing new came


@dataclass(frozen=True)
class Target:
    """Where a reply goes."""

    chat_id: int
    private: bool
    lang: str
    thread_id: int | None = None


class ReplyStream:
    def __init__(self, outbox: Outbox, target: Target, reply_id: str, *, drafts: bool,
                 draft_interval_s: float, edit_interval_s: float,
                 quiet: Callable[[], Awaitable[None]] | None = None) -> None:
        self.outbox = outbox
        self.target = target
        self.reply_id = reply_id
        self.drafts = drafts and target.private
        self.draft_interval_s = draft_interval_s
        self.edit_interval_s = edit_interval_s
        # Called when no event came for QUIET_S (events lost: the state is read over REST).
        self.quiet = quiet
        self.pieces: list[str] = []
        self.citations: list[dict[str, Any]] = []
        self.finish_reason: str | None = None
        self.error: str | None = None
        self.drafts_refused = False  # the chat refused a draft: the bridge remembers it
        self.delivered = 0  # parts already sent as messages of their own
        self.placeholder: int | None = None  # message id being edited (edit mode)
        self._shown = ""  # markup of the last update that went out
        self._shown_at = 0.0
        self._changed = asyncio.Event()
        # Nonzero, stable per reply; each part of a long reply drafts under its own id.
        self._draft_base = (zlib.crc32(reply_id.encode()) & 0x3FFFFFFF) + 1

    # --- fed by the bridge --------------------------------------------------------------------

    def feed(self, frame: dict[str, Any]) -> None:
        kind = frame["type"]
        if kind == "reply.delta":
            self.pieces.append(str(frame.get("text", "")))
        elif kind == "reply.citations":
            self.citations = list(frame.get("citations") or [])
        elif kind == "reply.error":
            self.error = str(frame.get("message") or frame.get("code") or "")
        elif kind == "reply.end":
            self.finish_reason = str(frame.get("finish_reason") or "stop")
        else:
            return
        self._changed.set()

    def end(self, finish_reason: str, text: str | None = None) -> None:
        """End from outside the stream (the reply's events were lost: state read over REST)."""
        if text is not None:
            self.pieces = [text]
        self.finish_reason = finish_reason
        self._changed.set()

    def owns_draft(self, draft_id: int) -> bool:
        return self._draft_base <= draft_id <= self._draft_base + self.delivered

    @property
    def text(self) -> str:
        if len(self.pieces) > 1:
            self.pieces = ["".join(self.pieces)]
        return self.pieces[0] if self.pieces else ""

    @property
    def ended(self) -> bool:
        return self.finish_reason is not None

    # --- the task -------------------------------------------------------------------------------

    async def run(self) -> None:
        while not self.ended:
            try:
                await asyncio.wait_for(self._changed.wait(), QUIET_S)
            except TimeoutError:
                if self.quiet is not None:
                    await self.quiet()
                continue
            self._changed.clear()
            if self.ended:
                break
            interval = self.draft_interval_s if self.drafts else self.edit_interval_s
            due = max(self._shown_at + interval - time.monotonic(),
                      self.outbox.blocked_for(self.target.chat_id))
            if due > 0:  # throttled: the text keeps growing meanwhile; the end cuts it short
                with suppress(TimeoutError):
                    await asyncio.wait_for(self._until_ended(), due)
                if self.ended:
                    break
            await self._update()
        await self._deliver()

    async def _until_ended(self) -> None:
        while not self.ended:
            await self._changed.wait()
            self._changed.clear()

    async def _update(self) -> None:
        parts = render.split(self.text)
        while self.delivered < len(parts) - 1:
            await self._deliver_part(render.to_html(parts[self.delivered]))
        current = parts[-1]
        if not current.strip():
            return
        markup = render.to_html(current)
        stale = time.monotonic() - self._shown_at > DRAFT_KEEPALIVE_S
        if markup == self._shown and not (self.drafts and stale):
            return
        self._shown, self._shown_at = markup, time.monotonic()
        chat = self.target.chat_id
        if self.drafts:
            try:
                draft = SendMessageDraft(
                    chat_id=chat, draft_id=self._draft_base + self.delivered, text=markup,
                    parse_mode=ParseMode.HTML, message_thread_id=self.target.thread_id)
                if DRAFT_CAN_STOP:
                    draft.can_stop = True
                await self.outbox.update(chat, draft)
                return
            except TelegramBadRequest as exc:
                log.info("chat %s refuses drafts (%s): editing a message instead", chat,
                         exc.message)
                self.drafts, self.drafts_refused = False, True
        # The cursor keeps the text under the limit: the part has room for a closing fence.
        markup += CURSOR
        if self.placeholder is None:
            sent = await self.outbox.update(chat, self._send(markup))
            if sent is not None:
                self.placeholder = sent.message_id
            return
        try:
            await self.outbox.update(chat, EditMessageText(
                chat_id=chat, message_id=self.placeholder, text=markup,
                parse_mode=ParseMode.HTML))
        except TelegramBadRequest as exc:
            if not not_modified(exc):
                log.info("chat %s: edit refused (%s)", chat, exc.message)

    def _send(self, markup: str) -> SendMessage:
        return SendMessage(chat_id=self.target.chat_id, text=markup, parse_mode=ParseMode.HTML,
                           message_thread_id=self.target.thread_id)

    async def _deliver_part(self, markup: str) -> None:
        """One finished part as a message: the placeholder's last edit, or a new message."""
        chat = self.target.chat_id
        self.delivered += 1
        if self.placeholder is not None:
            message_id, self.placeholder = self.placeholder, None
            # The last edit keeps the pace of the others (groups limit edits per minute).
            await asyncio.sleep(max(0.0, self._shown_at + self.edit_interval_s - time.monotonic()))
            self._shown_at = time.monotonic()
            try:
                await self.outbox.final(chat, EditMessageText(
                    chat_id=chat, message_id=message_id, text=markup, parse_mode=ParseMode.HTML))
                return
            except TelegramBadRequest as exc:
                if not_modified(exc):
                    return
                log.info("chat %s: final edit refused (%s); sending anew", chat, exc.message)
        try:
            await self.outbox.final(chat, self._send(markup))
        except TelegramBadRequest as exc:
            log.warning("chat %s: reply part refused: %s", chat, exc.message)
        self._shown = ""

    def _tail(self) -> str:
        """Markup after the text: how it ended (if not normally) and the sources."""
        lang = self.target.lang
        notes = []
        if self.finish_reason == "cancelled":
            notes.append(f"<i>{render.escape(t(lang, 'stopped'))}</i>")
        elif self.finish_reason == "failed":
            notes.append(f"<i>{render.escape(t(lang, 'failed', message=self.error or '?'))}</i>")
        elif self.finish_reason == "interrupted":
            notes.append(f"<i>{render.escape(t(lang, 'interrupted'))}</i>")
        listed = render.sources(self.citations, t(lang, "sources"), t(lang, "page"),
                                t(lang, "slide"), t(lang, "section"))
        if listed:
            notes.append(listed)
        return "\n\n".join(notes)

    async def _deliver(self) -> None:
        parts = render.split(self.text)
        tail = self._tail()
        last = parts[-1].strip()
        markups = [render.to_html(p) for p in parts[self.delivered:-1]]
        fits = render.utf16_len(last) + render.utf16_len(render.to_text(tail)) + 2 <= render.LIMIT
        if last and tail and fits:
            markups.append(render.to_html(last) + "\n\n" + tail)
        else:
            markups += [m for m in (render.to_html(last) if last else "", tail) if m]
        for markup in markups:
            await self._deliver_part(markup)
