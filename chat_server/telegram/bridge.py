"""The Telegram bridge: aiogram on one side, Tutorhub's public protocol on the other.

An update is handled by one process only (claims.py), then by aiogram's dispatcher:

- a text becomes a `chat.send` on the user's socket (client.py) into the chat's current
  conversation; the reply's events stream into the chat (replies.py);
- a file (a document of any format the server reads, or a photo of a page) is downloaded
  through the Bot API file endpoint and uploaded with `POST /materials`, which tells its format
  by content;
  a YouTube link is offered with a button, then added with `POST /materials/youtube`; either
  way one status message follows the ingestion (materials.py);
- commands: /start <code> (linking), /new, /stop, /materials, /socratic on|off, /unlink,
  /help, /cards (flashcard review) and /quiz (a material's quiz): study.py.

Echo rule: a reply the user triggers elsewhere (the browser) reaches Telegram only if its
conversation is the current conversation of one of the user's private chats with the bot, and
only while this bridge holds the user's socket (from their last Telegram message for
`telegram_socket_idle_s`). Replies are never echoed into groups. Every reply is streamed by
one process: the one that sent its `chat.send`, or, for an echo, the one that claims it.
"""

from __future__ import annotations

import asyncio
import logging
import re
import tempfile
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from aiogram import Dispatcher, F, Router
from aiogram.enums import ParseMode
from aiogram.exceptions import (
    TelegramAPIError,
    TelegramBadRequest,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
)
from aiogram.filters import Command, CommandObject, CommandStart
from aiogram.methods import EditMessageText, SendMessage
from aiogram.types import (
    BotCommand,
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    MessageGenerationStopped,
    TelegramObject,
    Update,
    User,
)
from aiogram.utils.backoff import BackoffConfig

from chat_server.db import Database
from chat_server.settings import Settings
from chat_server.telegram import store
from chat_server.telegram.botapi import Outbox, make_bot, webhook_secret
from chat_server.telegram.claims import Claims
from chat_server.telegram.client import TutorhubClient, Unavailable
from chat_server.telegram.materials import MaterialStatus, from_rest, youtube_id
from chat_server.telegram.render import escape
from chat_server.telegram.replies import ReplyStream, Target
from chat_server.telegram.study import CALLBACK, StudyChat
from chat_server.telegram.texts import language, t

log = logging.getLogger(__name__)

UPDATE_CLAIM_TTL_S = 86_400  # Telegram keeps an unconfirmed update for 24 hours
REPLY_CLAIM_TTL_S = 3_600
POLL_TIMEOUT_S = 25
# The Bot API unreachable: getUpdates is retried after 1 s, growing to 30 s.
POLL_BACKOFF = BackoffConfig(min_delay=1.0, max_delay=30.0, factor=1.6, jitter=0.1)
RECENT_MAX = 256  # material events kept for a material whose status message is not known yet
JANITOR_S = 30.0
MAX_UPDATES = 256  # updates in progress at once; webhook mode: beyond it 503, Telegram re-sends
BOT_API_DOWNLOAD_LIMIT = 20 * 1024 * 1024  # the public Bot API's getFile limit
PUBLIC_BOT_API = "https://api.telegram.org"  # a local Bot API server has no such limit
COMMANDS = ("new", "stop", "materials", "socratic", "cards", "quiz", "help", "unlink")
STATUS = {"complete": "stop", "cancelled": "cancelled", "failed": "failed",
          "interrupted": "interrupted"}


@dataclass(frozen=True)
class _Send:
    user_id: uuid.UUID
    target: Target


class Bridge:
    def __init__(self, settings: Settings, db: Database, claims: Claims) -> None:
        self.settings = settings
        self.db = db
        self.claims = claims
        self.bot = make_bot(settings)
        self.outbox = Outbox(self.bot)
        self.client = TutorhubClient(settings, self._on_event, self._generation)
        self.study = StudyChat(self.client, db, claims, self._say, self._status)
        self.dp = Dispatcher()
        self.dp.update.outer_middleware(self._once)
        self.dp.include_router(self._router())
        self.replies: dict[str, ReplyStream] = {}
        self._reply_users: dict[str, uuid.UUID] = {}
        self._reply_conversations: dict[str, str] = {}
        self._active: dict[tuple[int, uuid.UUID], str] = {}  # (chat, user) -> streaming reply
        self._sends: dict[str, _Send] = {}
        self._ignored: OrderedDict[str, None] = OrderedDict()  # other processes' replies
        self._done: OrderedDict[str, None] = OrderedDict()  # replies streamed lately
        self._echoes: dict[str, list[dict[str, Any]]] = {}  # replies being looked up
        self.materials: dict[str, tuple[uuid.UUID, MaterialStatus]] = {}
        self._recent: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._no_drafts: set[int] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._webhook_slots = asyncio.Semaphore(MAX_UPDATES)

    # --- lifecycle ------------------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._reap)
        return task

    def _reap(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("bridge task %s failed", task.get_name(), exc_info=task.exception())

    async def start(self) -> None:
        self.spawn(self._janitor(), "tg-janitor")

    async def stop_polling(self) -> None:
        """End run_polling (aiogram cancels its polling tasks and returns)."""
        with suppress(RuntimeError):  # not polling
            await self.dp.stop_polling()

    async def aclose(self) -> None:
        await self.stop_polling()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=10)
        await self.client.aclose()
        await self.bot.session.close()

    async def run_polling(self) -> None:
        """Long polling until cancelled (or SIGINT/SIGTERM when `handle_signals`)."""
        await self._wait_for_api()
        await self._setup()
        with suppress(TelegramAPIError):  # polling and a webhook exclude each other
            await self.bot.delete_webhook(drop_pending_updates=False)
        await self.dp.start_polling(
            self.bot, polling_timeout=POLL_TIMEOUT_S, backoff_config=POLL_BACKOFF,
            handle_signals=False, close_bot_session=False,
            tasks_concurrency_limit=MAX_UPDATES)

    async def _wait_for_api(self) -> None:
        """getMe until the Bot API answers (a bad token is raised: retrying cannot help)."""
        delay = POLL_BACKOFF.min_delay
        while True:
            try:
                await self.bot.me()
                return
            except (TelegramNetworkError, TelegramServerError, TelegramRetryAfter) as exc:
                log.warning("Bot API unreachable (%s); retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * POLL_BACKOFF.factor, POLL_BACKOFF.max_delay)

    async def register_webhook(self) -> None:
        """setWebhook with our URL and secret, retried until the Bot API takes it."""
        url = self.settings.telegram_webhook_url
        if not url:
            log.warning("webhook mode without TUTORHUB_TELEGRAM_WEBHOOK_URL: not registering it")
            return
        await self._setup()
        delay = 1.0
        while True:
            try:
                await self.bot.set_webhook(
                    url=url, secret_token=webhook_secret(self.settings),
                    allowed_updates=self.dp.resolve_used_update_types())
                log.info("Telegram webhook registered")
                return
            except TelegramAPIError as exc:
                log.warning("setWebhook failed (%s); retrying in %.0f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 300.0)

    def feed_webhook(self, data: dict[str, Any]) -> bool:
        """Take one update posted by Telegram; False when too many are in progress (the
        route answers 503 and Telegram sends it again later)."""
        if self._webhook_slots.locked():
            return False
        update = Update.model_validate(data, context={"bot": self.bot})

        async def handle() -> None:
            async with self._webhook_slots:
                await self.dp.feed_update(self.bot, update)

        self.spawn(handle(), f"tg-update-{update.update_id}")
        return True

    async def _setup(self) -> None:
        for lang in ("en", "ru"):
            commands = [BotCommand(command=c, description=_command_help(lang, c))
                        for c in COMMANDS]
            with suppress(TelegramAPIError):
                await self.bot.set_my_commands(commands, language_code=lang)

    async def _janitor(self) -> None:
        """Close the sockets of users idle in Telegram with nothing streaming to them."""
        while True:
            await asyncio.sleep(JANITOR_S)
            busy = set(self._reply_users.values()) | {u for u, _ in self.materials.values()}
            idle_since = time.monotonic() - self.settings.telegram_socket_idle_s
            for user_id, sock in list(self.client.sockets.items()):
                if user_id not in busy and not sock.busy and sock.last_used < idle_since:
                    await self.client.close_socket(user_id)
            self.client.forget_tokens(keep=set(self.client.sockets) | busy)

    async def _once(self, handler: Any, event: TelegramObject, data: dict[str, Any]) -> Any:
        assert isinstance(event, Update)
        if not await self.claims.claim(f"u:{self.bot.id}:{event.update_id}", UPDATE_CLAIM_TTL_S):
            log.debug("update %s is handled by another process", event.update_id)
            return None
        return await handler(event, data)

    # --- events from the users' sockets ---------------------------------------------------------

    def _on_event(self, user_id: uuid.UUID, frame: dict[str, Any]) -> None:
        kind = str(frame.get("type"))
        if kind == "chat.ack":
            reply_id = str(frame["reply_id"])
            send = self._sends.get(str(frame.get("id")))
            if send is not None:
                # An ack repeated for a resend (after a reconnect) of a reply already streamed.
                if reply_id not in self.replies and reply_id not in self._done:
                    self._stream(reply_id, send.user_id, send.target)
                self._reply_conversations[reply_id] = str(frame.get("conversation_id"))
            elif str(frame.get("id", "")).startswith("tg-"):
                self._ignored[reply_id] = None  # sent by another bridge process: its to stream
                while len(self._ignored) > RECENT_MAX:
                    self._ignored.popitem(last=False)
        elif kind.startswith("reply."):
            reply_id = str(frame.get("reply_id"))
            stream = self.replies.get(reply_id)
            if stream is not None:
                stream.feed(frame)
            elif reply_id in self._echoes:
                self._echoes[reply_id].append(frame)
            elif kind == "reply.start" and reply_id not in self._ignored \
                    and reply_id not in self._done:
                self._echoes[reply_id] = []
                self.spawn(self._echo(user_id, reply_id, str(frame.get("conversation_id"))),
                           f"tg-echo-{reply_id}")
        elif kind.startswith("material."):
            material_id = str(frame.get("material_id"))
            tracked = self.materials.get(material_id)
            if tracked is not None:
                tracked[1].feed(frame)
            else:  # it may be ours, with the upload's answer still on its way
                self._recent[material_id] = frame
                while len(self._recent) > RECENT_MAX:
                    self._recent.popitem(last=False)
        elif kind == "resume.failed":
            for reply_id, owner in list(self._reply_users.items()):
                if owner == user_id:
                    self.spawn(self._reconcile(reply_id), f"tg-reconcile-{reply_id}")

    def _stream(self, reply_id: str, user_id: uuid.UUID, target: Target) -> ReplyStream:
        stream = ReplyStream(
            self.outbox, target, reply_id, drafts=target.chat_id not in self._no_drafts,
            draft_interval_s=self.settings.telegram_draft_interval_s,
            edit_interval_s=self.settings.telegram_edit_interval_s,
            quiet=lambda: self._reconcile(reply_id, once=True))
        self.replies[reply_id] = stream
        self._reply_users[reply_id] = user_id
        self._active[(target.chat_id, user_id)] = reply_id
        self.spawn(self._run_stream(stream, user_id), f"tg-reply-{reply_id}")
        return stream

    async def _run_stream(self, stream: ReplyStream, user_id: uuid.UUID) -> None:
        try:
            await stream.run()
        finally:
            if stream.drafts_refused:
                self._no_drafts.add(stream.target.chat_id)
            self.replies.pop(stream.reply_id, None)
            self._done[stream.reply_id] = None
            while len(self._done) > RECENT_MAX:
                self._done.popitem(last=False)
            self._reply_users.pop(stream.reply_id, None)
            self._reply_conversations.pop(stream.reply_id, None)
            key = (stream.target.chat_id, user_id)
            if self._active.get(key) == stream.reply_id:
                del self._active[key]

    async def _echo(self, user_id: uuid.UUID, reply_id: str, conversation_id: str) -> None:
        """A reply started elsewhere: stream it into the user's private chats whose current
        conversation it belongs to (if this process claims it)."""
        try:
            try:
                conversation = uuid.UUID(conversation_id)
            except ValueError:
                return
            async with self.db.session() as session:
                chats = await store.private_chats_of(session, user_id, conversation)
            if not chats or not await self.claims.claim(f"r:{reply_id}", REPLY_CLAIM_TTL_S):
                return
            for row in chats:
                stream = self._stream(reply_id, user_id, Target(row.chat_id, True, row.language))
                self._reply_conversations[reply_id] = conversation_id
                for frame in self._echoes.get(reply_id, []):
                    stream.feed(frame)
                break  # one chat per reply: a user has one private chat with the bot
        finally:
            self._echoes.pop(reply_id, None)

    async def _reconcile(self, reply_id: str, *, once: bool = False) -> None:
        """The reply's events were lost (a resume that could not reach back, or silence for
        too long): read its end over REST, until it has one (or `once`)."""
        stream = self.replies.get(reply_id)
        user_id = self._reply_users.get(reply_id)
        conversation = self._reply_conversations.get(reply_id)
        while stream is not None and not stream.ended and user_id and conversation:
            with suppress(Unavailable):
                r = await self.client.rest(user_id, "GET", f"/conversations/{conversation}")
                if r.status_code == 404:
                    stream.end("failed")
                    return
                for message in r.json().get("messages", []):
                    if message["id"] == reply_id and message["status"] in STATUS:
                        stream.citations = message.get("citations") or []
                        stream.end(STATUS[message["status"]], message["content"])
                        return
            if once:
                return
            await asyncio.sleep(1.0)

    # --- handlers -----------------------------------------------------------------------------

    def _router(self) -> Router:
        router = Router(name="tutorhub")
        router.message.register(self._start, CommandStart())
        router.message.register(self._help, Command("help"))
        router.message.register(self._cards, Command("cards"))
        router.message.register(self._quiz, Command("quiz"))
        router.message.register(self._new, Command("new"))
        router.message.register(self._stop, Command("stop"))
        router.message.register(self._materials, Command("materials"))
        router.message.register(self._socratic, Command("socratic"))
        router.message.register(self._unlink, Command("unlink"))
        router.message.register(self._help, F.text.startswith("/"))
        router.message.register(self._document, F.document)
        router.message.register(self._photo, F.photo)
        router.message.register(self._text, F.text)
        router.callback_query.register(self._callback, F.data.startswith("yt:"))
        router.callback_query.register(self._study, F.data.regexp(CALLBACK))
        router.stopped_message_generation.register(self._stopped)
        return router

    async def _say(self, chat_id: int, text: str, **kwargs: Any) -> Message | None:
        try:
            return await self.outbox.final(chat_id, SendMessage(
                chat_id=chat_id, text=text, parse_mode=ParseMode.HTML, **kwargs))
        except TelegramAPIError as exc:
            log.warning("chat %s: could not answer (%s)", chat_id, exc)
            return None

    async def _generation(self, user_id: uuid.UUID) -> int:
        async with self.db.session() as session:
            return await store.generation_of(session, user_id)

    async def _user(self, message: Message, *, command: bool = True) -> uuid.UUID | None:
        """The linked Tutorhub user of the sender; None after telling them how to link (in a
        group only when they addressed the bot with a command)."""
        sender = message.from_user
        if sender is None or sender.is_bot:
            return None
        return await self._linked(sender, message.chat.id,
                                  tell=command or message.chat.type == "private")

    async def _linked(self, sender: User, chat_id: int, *, tell: bool) -> uuid.UUID | None:
        key = "unlinked"
        async with self.db.session() as session:
            try:
                user_id = await store.linked_user(session, sender.id)
            except store.LinkRevoked:
                user_id, key = None, "link_revoked"
            if user_id is None and self.settings.telegram_auto_accounts:
                user_id = await store.auto_account(session, sender.id, sender.full_name,
                                                   sender.username)
        if user_id is None and tell:
            await self._say(chat_id, t(_lang(sender), key))
        return user_id

    async def _start(self, message: Message, command: CommandObject) -> None:
        sender = message.from_user
        if sender is None:
            return
        lang = _lang(sender)
        if command.args:
            async with self.db.session() as session:
                result, _ = await store.redeem(session, command.args.strip(), sender.id,
                                               sender.username)
            await self._say(message.chat.id, t(lang, result.value))
            return
        if await self._user(message) is not None:
            await self._say(message.chat.id, t(lang, "welcome_back"))

    async def _help(self, message: Message) -> None:
        await self._say(message.chat.id, t(_lang(message.from_user), "help"))

    async def _cards(self, message: Message) -> None:
        user_id = await self._user(message)
        if user_id is not None:
            await self.study.cards(message.chat.id, user_id, _lang(message.from_user))

    async def _quiz(self, message: Message) -> None:
        user_id = await self._user(message)
        if user_id is not None:
            await self.study.quiz(message.chat.id, user_id, _lang(message.from_user))

    async def _study(self, query: CallbackQuery) -> None:
        """A button of a card or of a quiz (answered once, with a notice if it was stale)."""
        answered = False

        async def ack(notice: str | None) -> None:
            nonlocal answered
            if not answered:
                answered = True
                with suppress(TelegramAPIError):
                    await query.answer(text=notice)

        message = query.message
        user_id = None
        if isinstance(message, Message) and query.data is not None:
            user_id = await self._linked(query.from_user, message.chat.id, tell=True)
        if isinstance(message, Message) and query.data is not None and user_id is not None:
            await self.study.callback(message, user_id, _lang(query.from_user), query.data, ack)
        await ack(None)

    async def _new(self, message: Message) -> None:
        user_id = await self._user(message)
        if user_id is None:
            return
        async with self.db.session() as session:
            await store.chat(session, message.chat.id, user_id, _lang(message.from_user))
            await store.set_chat(session, message.chat.id, user_id, conversation_id=None)
        await self._say(message.chat.id, t(_lang(message.from_user), "new"))

    async def _stop(self, message: Message) -> None:
        user_id = await self._user(message)
        if user_id is None:
            return
        reply_id = self._active.get((message.chat.id, user_id))
        if reply_id is None:  # streaming in another process, perhaps: ask the server
            reply_id = await self._streaming_reply(message.chat.id, user_id)
        if reply_id is None:
            await self._say(message.chat.id, t(_lang(message.from_user), "stopped_none"))
            return
        await self._cancel(user_id, reply_id, message.chat.id, _lang(message.from_user))

    async def _cancel(self, user_id: uuid.UUID, reply_id: str, chat_id: int, lang: str) -> None:
        try:
            await self.client.socket(user_id).send({"type": "chat.cancel", "reply_id": reply_id})
        except Unavailable:
            await self._say(chat_id, t(lang, "unavailable"))

    async def _streaming_reply(self, chat_id: int, user_id: uuid.UUID) -> str | None:
        async with self.db.session() as session:
            state = await session.get(store.TelegramChat, (chat_id, user_id))
        if state is None or state.conversation_id is None:
            return None
        try:
            r = await self.client.rest(user_id, "GET", f"/conversations/{state.conversation_id}")
        except Unavailable:
            return None
        if r.status_code != 200:
            return None
        streaming = [m["id"] for m in r.json()["messages"]
                     if m["role"] == "assistant" and m["status"] == "streaming"]
        return str(streaming[-1]) if streaming else None

    async def _stopped(self, event: MessageGenerationStopped) -> None:
        """The user pressed stop on a draft."""
        for reply_id, stream in list(self.replies.items()):
            if stream.target.chat_id == event.chat.id and stream.owns_draft(event.draft_id):
                await self._cancel(self._reply_users[reply_id], reply_id, event.chat.id,
                                   stream.target.lang)

    async def _materials(self, message: Message) -> None:
        user_id = await self._user(message)
        if user_id is None:
            return
        lang = _lang(message.from_user)
        try:
            r = await self.client.rest(user_id, "GET", "/materials", params={"limit": 30})
            r.raise_for_status()
        except Exception:
            await self._say(message.chat.id, t(lang, "unavailable"))
            return
        items = r.json()
        if not items:
            await self._say(message.chat.id, t(lang, "materials_none"))
            return
        icons = {"pdf": "📄", "docx": "📃", "pptx": "📊", "markdown": "📝", "html": "🌐",
                 "image": "🖼️", "youtube": "▶️", "text": "📝"}
        lines = [t(lang, "materials_head")]
        for m in items:
            state = t(lang, f"state_{m['status']}")
            if m["status"] == "failed" and m.get("error"):
                state += f": {escape(m['error'][:200])}"
            elif m["status"] == "processing" and m.get("progress_total"):
                state += f" {m['progress_done']}/{m['progress_total']}"
            lines.append(f"{icons.get(m['kind'], '•')} {escape(m['title'][:100])}: {state}")
        await self._say(message.chat.id, "\n".join(lines))

    async def _socratic(self, message: Message, command: CommandObject) -> None:
        user_id = await self._user(message)
        if user_id is None:
            return
        lang = _lang(message.from_user)
        arg = (command.args or "").strip().lower()
        async with self.db.session() as session:
            state = await store.chat(session, message.chat.id, user_id, lang)
            if arg not in ("on", "off"):
                word = t(lang, "on" if state.socratic else "off")
                await self._say(message.chat.id, t(lang, "socratic_usage", state=word))
                return
            on = arg == "on"
            await store.set_chat(session, message.chat.id, user_id, socratic=on)
        if state.conversation_id is not None:
            with suppress(Unavailable):
                await self.client.rest(user_id, "PATCH", f"/conversations/{state.conversation_id}",
                                       json={"socratic": on})
        await self._say(message.chat.id, t(lang, "socratic_on" if on else "socratic_off"))

    async def _unlink(self, message: Message) -> None:
        if message.from_user is None:
            return
        async with self.db.session() as session:
            user_id = await store.unlink(session, telegram_user_id=message.from_user.id)
        if user_id is not None:
            await self.client.close_socket(user_id)
        key = "unlinked_done" if user_id is not None else "not_linked"
        await self._say(message.chat.id, t(_lang(message.from_user), key))

    async def _addressed(self, message: Message) -> str | None:
        """The question in a message, or None for group chatter not meant for the bot: in a
        group only a reply to the bot or a message naming @bot is (without privacy mode the
        bot sees every message there)."""
        text = message.text or ""
        if message.chat.type == "private":
            return text
        replied = message.reply_to_message
        if replied is not None and replied.from_user is not None and \
                replied.from_user.id == self.bot.id:
            return text
        mention = f"@{(await self.bot.me()).username}".lower()
        if mention in text.lower():
            return re.sub(re.escape(mention), "", text, flags=re.IGNORECASE).strip()
        return None

    async def _text(self, message: Message) -> None:
        text = await self._addressed(message)
        if not text:
            return
        video = youtube_id(text)
        user_id = await self._user(message, command=video is not None)
        if user_id is None:
            return
        lang = _lang(message.from_user)
        if video is not None:
            button = InlineKeyboardButton(text=t(lang, "youtube_add"), callback_data=f"yt:{video}")
            await self._say(message.chat.id, t(lang, "youtube_offer"),
                            reply_markup=InlineKeyboardMarkup(inline_keyboard=[[button]]))
            return
        if await self.study.typed(message.chat.id, user_id, lang, text):
            return  # the answer to the quiz's short-answer question
        target = Target(message.chat.id, message.chat.type == "private", lang,
                        message.message_thread_id if message.is_topic_message else None)
        await self.ask(user_id, target, text, f"tg-{self.bot.id}-{message.chat.id}-"
                       f"{message.message_id}")

    async def ask(self, user_id: uuid.UUID, target: Target, text: str, client_id: str) -> None:
        """`chat.send` into the chat's current conversation (a new one after /new, or when it
        was deleted); the reply streams into the chat once acked."""
        async with self.db.session() as session:
            state = await store.chat(session, target.chat_id, user_id, target.lang)
        conversation = state.conversation_id
        sock = self.client.socket(user_id)
        for frame_id in (client_id, client_id + "-new"):
            frame: dict[str, Any] = {"type": "chat.send", "id": frame_id, "text": text}
            if conversation is not None:
                frame["conversation_id"] = str(conversation)
            else:
                frame["socratic"] = state.socratic
            self._sends[frame_id] = _Send(user_id, target)
            try:
                answer = await sock.request(frame)
            except Unavailable as exc:
                log.warning("chat.send for %s failed: %s", user_id, exc)
                await self._say(target.chat_id, t(target.lang, "unavailable"))
                return
            finally:
                self._sends.pop(frame_id, None)
            if answer["type"] == "chat.ack":
                if str(conversation) != answer["conversation_id"]:
                    async with self.db.session() as session:
                        await store.set_chat(session, target.chat_id, user_id,
                                             conversation_id=uuid.UUID(answer["conversation_id"]))
                return
            code = answer.get("code")
            if code == "conversation_not_found" and conversation is not None:
                conversation = None  # deleted in the browser: continue in a new one
                continue
            if code == "reply_in_progress":
                await self._say(target.chat_id, t(target.lang, "busy"))
            elif code == "quota_exceeded":
                await self._say(target.chat_id, t(target.lang, "quota", used=answer.get("used"),
                                                  quota=answer.get("quota")))
            elif code == "unavailable":
                await self._say(target.chat_id, t(target.lang, "unavailable"))
            else:
                await self._say(target.chat_id, t(target.lang, "refused",
                                                  message=escape(str(answer.get("message")))))
            return

    # --- materials ---------------------------------------------------------------------------

    async def _document(self, message: Message) -> None:
        doc = message.document
        if doc is not None:
            await self._file(message, doc.file_id, doc.file_name or "document", doc.file_size,
                             doc.mime_type)

    async def _photo(self, message: Message) -> None:
        """A photo of a page: Telegram's largest rendition of it (JPEG), read by OCR. Only in a
        private chat: in a group, photos are conversation, and a file is sent as a document."""
        if message.photo and message.chat.type == "private":
            best = message.photo[-1]
            await self._file(message, best.file_id, "photo.jpg", best.file_size, "image/jpeg")

    async def _file(self, message: Message, file_id: str, name: str, size: int | None,
                    mime_type: str | None) -> None:
        """Download a file the user sent and upload it as theirs. Neither its name nor the MIME
        type Telegram reports decides anything: the server tells the format by the content, as
        for any upload, and its refusal (415, 422) is answered in the user's language."""
        user_id = await self._user(message, command=False)
        if user_id is None:
            return
        chat_id, lang = message.chat.id, _lang(message.from_user)
        limit = self.settings.max_upload_bytes
        size = size or 0
        if size > limit:
            await self._say(chat_id, t(lang, "too_big", size=_mb(size), limit=_mb(limit)))
            return
        if size > BOT_API_DOWNLOAD_LIMIT and self.settings.telegram_api_url == PUBLIC_BOT_API:
            await self._say(chat_id, t(lang, "too_big_api", size=_mb(size)))
            return
        title = (message.caption or "").strip()[:300] or PurePath(name).stem.strip() or name
        status = await self._say(chat_id, t(lang, "status_downloading", title=escape(title)))
        if status is None:
            return
        with tempfile.TemporaryFile() as spool:
            try:
                file = await self.bot.get_file(file_id)
                if file.file_path is not None:
                    await self.bot.download_file(file.file_path, spool, timeout=300)
            except TelegramBadRequest as exc:
                key = "too_big_api" if "too big" in exc.message.lower() else "download_failed"
                await self._status(chat_id, status.message_id, t(lang, key, size=_mb(size)))
                return
            except Exception as exc:
                log.warning("chat %s: download failed (%s)", chat_id, type(exc).__name__)
                await self._status(chat_id, status.message_id, t(lang, "download_failed"))
                return
            if file.file_path is None:
                await self._status(chat_id, status.message_id, t(lang, "download_failed"))
                return
            spool.seek(0)
            part = (name, spool, mime_type or "application/octet-stream")
            await self._add(user_id, chat_id, status.message_id, lang, title, "POST",
                            "/materials", files={"file": part}, data={"title": title})

    async def _callback(self, query: CallbackQuery) -> None:
        with suppress(TelegramAPIError):
            await query.answer()
        message = query.message
        if not isinstance(message, Message) or query.data is None:
            return
        lang = _lang(query.from_user)
        user_id = await self._linked(query.from_user, message.chat.id, tell=True)
        if user_id is None:
            return
        video = query.data.removeprefix("yt:")
        title = f"YouTube {video}"
        await self._status(message.chat.id, message.message_id,
                           t(lang, "status_queued", title=escape(title)))
        await self._add(user_id, message.chat.id, message.message_id, lang, title, "POST",
                        "/materials/youtube",
                        json={"url": f"https://www.youtube.com/watch?v={video}"})

    async def _status(self, chat_id: int, message_id: int, text: str) -> None:
        with suppress(TelegramAPIError):
            await self.outbox.final(chat_id, EditMessageText(
                chat_id=chat_id, message_id=message_id, text=text, parse_mode=ParseMode.HTML))

    async def _add(self, user_id: uuid.UUID, chat_id: int, status_id: int, lang: str,
                   title: str, method: str, path: str, **request: Any) -> None:
        """Add a material over REST; its status message follows the ingestion."""
        try:
            await self.client.socket(user_id).open()  # progress events need the socket
            r = await self.client.rest(user_id, method, path, **request)
        except Unavailable:
            await self._status(chat_id, status_id, t(lang, "unavailable"))
            return
        if r.status_code not in (200, 202):
            try:
                error = r.json()
                code, reason = str(error.get("error")), str(error.get("message"))
            except ValueError:
                code, reason = "", f"HTTP {r.status_code}"
            limit = self.settings.max_upload_bytes
            if code == "storage_quota_exceeded":
                text = t(lang, "storage_full")
            elif code == "password_protected":
                text = t(lang, "password_protected")
            elif r.status_code == 415:  # not a format we read, or its name claims another
                text = t(lang, "not_supported")
            elif r.status_code == 413:
                text = t(lang, "too_big", size=">" + _mb(limit), limit=_mb(limit))
            else:
                text = t(lang, "upload_failed", message=escape(reason))
            await self._status(chat_id, status_id, text)
            return
        material = r.json()
        material_id = str(material["id"])

        async def poll() -> dict[str, Any] | None:
            got = await self.client.rest(user_id, "GET", f"/materials/{material_id}")
            return got.json() if got.status_code == 200 else None  # type: ignore[no-any-return]

        status = MaterialStatus(self.outbox, chat_id, status_id, material.get("title") or title,
                                lang, self.settings.telegram_edit_interval_s, poll)
        early = self._recent.pop(material_id) if material_id in self._recent else None
        status.feed(early or from_rest(material))
        if r.status_code == 200 and status.done and status.state is not None and \
                status.state["type"] == "material.ready":
            await self._status(chat_id, status_id, t(lang, "status_exists",
                                                     title=escape(status.title)))
            return
        self.materials[material_id] = (user_id, status)
        try:
            await status.run()
        finally:
            self.materials.pop(material_id, None)


def _lang(user: User | None) -> str:
    return language(user.language_code if user is not None else None)


def _mb(size: int) -> str:
    return f"{size / (1024 * 1024):.1f}".removesuffix(".0")


def _command_help(lang: str, command: str) -> str:
    for line in t(lang, "help").splitlines():
        if line.startswith(f"/{command}"):
            return line.split(":", 1)[1].strip()[:256]
    return command


@asynccontextmanager
async def open_bridge(settings: Settings, db: Database, claims: Claims
                      ) -> AsyncIterator[Bridge]:
    bridge = Bridge(settings, db, claims)
    await bridge.start()
    try:
        yield bridge
    finally:
        await bridge.aclose()


async def run_polling(settings: Settings) -> int:
    """`tutorhub telegram`: the bridge with long polling until SIGINT/SIGTERM."""
    import signal

    from chat_server.db import check_migrated, open_database
    from chat_server.telegram.claims import open_claims
    from chat_server.telegram.client import server_url

    assert settings.database_url
    async with open_database(settings.database_url, 5) as db, \
            open_claims(settings.redis_url) as claims, \
            open_bridge(settings, db, claims) as bridge:
        await check_migrated(db.engine)
        log.info("Telegram bridge (bot id %s): long polling %s; Tutorhub at %s", bridge.bot.id,
                 settings.telegram_api_url, server_url(settings))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, lambda: bridge.spawn(bridge.stop_polling(), "tg-stop"))
        await bridge.run_polling()
        log.info("Telegram bridge stopped")
    return 0
