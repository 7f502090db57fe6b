"""A loopback Bot API server for the Telegram bridge's tests (aiogram is pointed at it).

It records every call, keeps the chats' messages as Telegram would show them (after edits),
checks HTML the way Telegram's parser refuses it (unknown or unbalanced tags, stray `<`, `>`
or `&`, more than 4096 characters after parsing), long-polls updates, serves files for
getFile, and answers scripted faults: 429 with retry_after, refused drafts, any error.

getUpdates behaves like the real one where it matters for duplicates: an update is handed to
every poll until some poll confirms it with a higher offset, so two bridges polling at once
both receive it.
"""

from __future__ import annotations

import asyncio
import html
import json
import re
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

TOKEN = "123456789:AAH-loopback-secret-token-0123456789xyz"
BOT_ID = 123456789
BOT_USERNAME = "tutorhub_test_bot"
ALLOWED_TAGS = {"b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "a", "code", "pre",
                "blockquote", "tg-spoiler", "span", "tg-emoji"}
_TOKENS = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9-]*)((?:\s+[a-z-]+=\"[^\"<>]*\")*)\s*>|[<>]|&[^;\s]*;?")
_ENTITY = re.compile(r"&(lt|gt|amp|quot|#\d+|#x[0-9a-fA-F]+);")


class BadRequest(Exception):
    pass


class _Down(Exception):
    pass


def parse_html(markup: str) -> str:
    """The visible text of Telegram HTML, or BadRequest as the Bot API words it."""
    stack: list[str] = []
    for m in _TOKENS.finditer(markup):
        token = m.group(0)
        if token.startswith("&"):
            if not _ENTITY.fullmatch(token):
                raise BadRequest(f"can't parse entities: unsupported entity {token[:12]!r}")
            continue
        if token in ("<", ">"):
            raise BadRequest(f"can't parse entities: unexpected {token!r} at {m.start()}")
        closing, name = m.group(1), m.group(2).lower()
        if name not in ALLOWED_TAGS:
            raise BadRequest(f"can't parse entities: unsupported start tag \"{name}\"")
        if closing:
            if not stack or stack.pop() != name:
                raise BadRequest(f"can't parse entities: unmatched end tag \"{name}\"")
        else:
            if name == "a" and "href=" not in m.group(3):
                raise BadRequest("can't parse entities: a tag without href")
            stack.append(name)
    if stack:
        raise BadRequest(f"can't parse entities: can't find end tag corresponding to {stack[-1]}")
    return html.unescape(re.sub(r"<[^>]+>", "", markup))


def _visible(params: dict[str, Any]) -> str:
    text = str(params.get("text") or "")
    # Telegram trims the text around what it shows.
    visible = (parse_html(text) if params.get("parse_mode") == "HTML" else text).strip()
    if not visible:
        raise BadRequest("message text is empty")
    if len(visible.encode("utf-16-le")) // 2 > 4096:
        raise BadRequest("message is too long")
    return visible


def _keyboard(params: dict[str, Any]) -> list[list[dict[str, Any]]] | None:
    markup = params.get("reply_markup")
    return markup.get("inline_keyboard") if isinstance(markup, dict) else None


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    at: float  # time.monotonic()
    status: int = 200  # what the fake answered

    @property
    def chat_id(self) -> int | None:
        chat = self.params.get("chat_id")
        return int(chat) if chat is not None else None


@dataclass
class Fault:
    method: str
    status: int
    description: str
    retry_after: int | None = None
    after: int = 0  # let this many calls of the method succeed first
    times: int = 1


@dataclass
class Sent:
    message_id: int
    chat_id: int
    text: str  # visible text, as it reads now (after edits)
    markup: str  # what the bot sent, last version
    edits: int = 0
    # The inline keyboard's rows of {text, callback_data} (an edit without one removes it).
    keyboard: list[list[dict[str, Any]]] | None = None

    def button(self, text: str) -> str:
        """The callback data of the button labelled `text`."""
        for row in self.keyboard or []:
            for b in row:
                if b["text"] == text:
                    return str(b["callback_data"])
        raise KeyError(text)


@dataclass
class FakeTelegram:
    token: str = TOKEN
    calls: list[Call] = field(default_factory=list)
    messages: dict[int, list[Sent]] = field(default_factory=lambda: defaultdict(list))
    drafts: dict[int, list[str]] = field(default_factory=lambda: defaultdict(list))
    files: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # file_id -> (path, data)
    refuse_drafts: bool = False
    down: bool = False  # every call answers 502, as during a Bot API outage
    faults: list[Fault] = field(default_factory=list)
    base_url: str = ""
    updates: list[dict[str, Any]] = field(default_factory=list)
    pushed_at: dict[int, float] = field(default_factory=dict)  # update_id -> time.monotonic()
    confirmed: int = 0
    polls_waiting: int = 0
    closing: bool = False
    _next_update: int = 1000
    _next_message: int = 100
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _runner: web.AppRunner | None = None

    # --- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> FakeTelegram:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/bot{token}/{method}", self._api)
        app.router.add_get("/file/bot{token}/{path:.+}", self._file)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        self.closing = True  # long polls return now
        self._wake()
        await self._runner.cleanup()

    # --- what tests drive -----------------------------------------------------------------

    def push(self, update: dict[str, Any]) -> int:
        """Queue an update (without update_id: one is given); returns its update_id."""
        self._next_update += 1
        update = {"update_id": self._next_update, **update}
        self.updates.append(update)
        self.pushed_at[self._next_update] = time.monotonic()
        self._wake()
        return int(update["update_id"])

    def message(self, chat_id: int, text: str, *, user_id: int | None = None,
                language: str = "en", chat_type: str = "private",
                **extra: Any) -> int:
        """A user's text message (commands get their bot_command entity)."""
        msg = self._message(chat_id, user_id or chat_id, language, chat_type)
        msg["text"] = text
        if text.startswith("/"):
            msg["entities"] = [{"type": "bot_command", "offset": 0,
                                "length": len(text.split()[0])}]
        msg.update(extra)
        return self.push({"message": msg})

    def document(self, chat_id: int, data: bytes, file_name: str, *,
                 mime_type: str = "application/pdf", user_id: int | None = None,
                 language: str = "en", file_size: int | None = None) -> int:
        file_id = f"doc{len(self.files) + 1}"
        self.files[file_id] = (f"documents/file_{len(self.files)}.pdf", data)
        msg = self._message(chat_id, user_id or chat_id, language, "private")
        msg["document"] = {"file_id": file_id, "file_unique_id": "u" + file_id,
                           "file_name": file_name, "mime_type": mime_type,
                           "file_size": len(data) if file_size is None else file_size}
        return self.push({"message": msg})

    def photo(self, chat_id: int, data: bytes, width: int, height: int, *,
              caption: str | None = None, user_id: int | None = None,
              language: str = "en", chat_type: str = "private") -> int:
        """A photo message as Telegram sends one: renditions smallest first; only the largest
        (`data`) can be downloaded here, so a bridge that takes another fails loudly."""
        file_id = f"photo{len(self.files) + 1}"
        self.files[file_id] = (f"photos/file_{len(self.files)}.jpg", data)
        msg = self._message(chat_id, user_id or chat_id, language, chat_type)
        thumb = {"file_id": "thumb" + file_id, "file_unique_id": "uthumb" + file_id,
                 "width": 90, "height": max(1, 90 * height // width), "file_size": 1000}
        msg["photo"] = [thumb, {"file_id": file_id, "file_unique_id": "u" + file_id,
                                "width": width, "height": height, "file_size": len(data)}]
        if caption is not None:
            msg["caption"] = caption
        return self.push({"message": msg})

    def press(self, chat_id: int, message_id: int, data: str, *, user_id: int | None = None,
              language: str = "en") -> int:
        """The user presses an inline button of `message_id`."""
        sent = self.find(chat_id, message_id)
        message = {**self._message(chat_id, BOT_ID, language, "private"),
                   "message_id": message_id, "text": sent.text}
        message["from"] = {"id": BOT_ID, "is_bot": True, "first_name": "Tutor",
                           "username": BOT_USERNAME}
        return self.push({"callback_query": {
            "id": f"cb{self._next_update}", "chat_instance": "ci",
            "from": self._user(user_id or chat_id, language), "message": message,
            "data": data}})

    def outage(self, down: bool) -> None:
        """The Bot API goes down (every call, long polls in progress too, answers 502) or back."""
        self.down = down
        self._wake()

    def stop_draft(self, chat_id: int, draft_id: int) -> int:
        """The user presses the stop button of a draft (can_stop)."""
        return self.push({"stopped_message_generation": {
            "chat": {"id": chat_id, "type": "private", "first_name": f"User{chat_id}"},
            "draft_id": draft_id}})

    def fail(self, method: str, status: int, description: str, *, retry_after: int | None = None,
             after: int = 0, times: int = 1) -> None:
        self.faults.append(Fault(method, status, description, retry_after, after, times))

    def of(self, method: str, chat_id: int | None = None) -> list[Call]:
        return [c for c in self.calls if c.method == method
                and (chat_id is None or c.chat_id == chat_id)]

    def texts(self, chat_id: int) -> list[str]:
        return [m.text for m in self.messages[chat_id]]

    def find(self, chat_id: int, message_id: int) -> Sent:
        for sent in self.messages[chat_id]:
            if sent.message_id == message_id:
                return sent
        raise KeyError(message_id)

    async def wait_for(self, predicate: Any, within_s: float = 30.0) -> None:
        async with asyncio.timeout(within_s):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    async def wait_text(self, chat_id: int, needle: str, within_s: float = 30.0) -> Sent:
        await self.wait_for(lambda: any(needle in t for t in self.texts(chat_id)), within_s)
        return next(m for m in self.messages[chat_id] if needle in m.text)

    # --- the Bot API ----------------------------------------------------------------------

    def _wake(self) -> None:
        self._changed.set()

    def _user(self, user_id: int, language: str) -> dict[str, Any]:
        return {"id": user_id, "is_bot": False, "first_name": f"User{user_id}",
                "username": f"user{user_id}", "language_code": language}

    def _message(self, chat_id: int, user_id: int, language: str, chat_type: str
                 ) -> dict[str, Any]:
        self._next_message += 1
        chat: dict[str, Any] = {"id": chat_id, "type": chat_type}
        if chat_type == "private":
            chat["first_name"] = f"User{user_id}"
        else:
            chat["title"] = f"Group {chat_id}"
        return {"message_id": self._next_message, "date": int(time.time()), "chat": chat,
                "from": self._user(user_id, language)}

    async def _file(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.Response(status=401)
        for path, data in self.files.values():
            if path == request.match_info["path"]:
                return web.Response(body=data, content_type="application/octet-stream")
        return web.Response(status=404)

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        form = await request.post()
        params: dict[str, Any] = {}
        for key, value in form.items():
            raw = str(value)
            try:
                params[key] = json.loads(raw) if raw[:1] in "[{" else raw
            except ValueError:
                params[key] = raw
        call = Call(method, params, time.monotonic())
        self.calls.append(call)
        try:
            if request.match_info["token"] != self.token:
                return self._error(call, 401, "Unauthorized")
            if self.down:
                return self._error(call, 502, "Bad Gateway")
            fault = self._fault(method)
            if fault is not None:
                return self._error(call, fault.status, fault.description, fault.retry_after)
            result = await self._call(method, params)
        except BadRequest as exc:
            return self._error(call, 400, f"Bad Request: {exc}")
        except _Down:
            return self._error(call, 502, "Bad Gateway")
        finally:
            self._wake()
        return web.json_response({"ok": True, "result": result})

    def _fault(self, method: str) -> Fault | None:
        for fault in self.faults:
            if fault.method != method:
                continue
            if fault.after > 0:
                fault.after -= 1
                return None
            fault.times -= 1
            if fault.times <= 0:
                self.faults.remove(fault)
            return fault
        return None

    def _error(self, call: Call, status: int, description: str,
               retry_after: int | None = None) -> web.Response:
        call.status = status
        body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
        if retry_after is not None:
            body["parameters"] = {"retry_after": retry_after}
            body["description"] = f"Too Many Requests: retry after {retry_after}"
        return web.json_response(body, status=status)

    def _bot_message(self, chat_id: int, text: str) -> dict[str, Any]:
        msg = self._message(chat_id, BOT_ID, "en", "private" if chat_id > 0 else "group")
        msg["from"] = {"id": BOT_ID, "is_bot": True, "first_name": "Tutor",
                       "username": BOT_USERNAME}
        msg["text"] = text
        return msg

    async def _call(self, method: str, p: dict[str, Any]) -> Any:
        if method == "getMe":
            return {"id": BOT_ID, "is_bot": True, "first_name": "Tutor",
                    "username": BOT_USERNAME}
        if method in ("deleteWebhook", "setWebhook", "setMyCommands", "sendChatAction",
                      "answerCallbackQuery", "deleteMessage"):
            return True
        if method == "getUpdates":
            return await self._get_updates(p)
        if method == "getFile":
            path, data = self.files[p["file_id"]]
            return {"file_id": p["file_id"], "file_unique_id": "u" + p["file_id"],
                    "file_size": len(data), "file_path": path}
        chat_id = int(p["chat_id"])
        if method == "sendMessageDraft":
            if self.refuse_drafts:
                raise BadRequest("TEXTDRAFT_PEER_INVALID")
            self.drafts[chat_id].append(_visible(p))
            return True
        if method == "sendMessage":
            text = _visible(p)
            msg = self._bot_message(chat_id, text)
            self.messages[chat_id].append(Sent(msg["message_id"], chat_id, text, p["text"],
                                               keyboard=_keyboard(p)))
            return msg
        if method == "editMessageText":
            text = _visible(p)
            sent = self.find(chat_id, int(p["message_id"]))
            if sent.markup == p["text"]:
                raise BadRequest("message is not modified: specified new message content and "
                                 "reply markup are exactly the same as a current content and "
                                 "reply markup of the message")
            sent.text, sent.markup, sent.keyboard = text, p["text"], _keyboard(p)
            sent.edits += 1
            return {**self._bot_message(chat_id, text), "message_id": sent.message_id}
        raise BadRequest(f"method {method} is not in the fake")

    async def _get_updates(self, p: dict[str, Any]) -> list[dict[str, Any]]:
        offset = int(p.get("offset") or 0)
        self.confirmed = max(self.confirmed, offset)
        deadline = time.monotonic() + float(p.get("timeout") or 0)
        self.polls_waiting += 1
        self._wake()
        try:
            while True:
                pending = [u for u in self.updates if u["update_id"] >= max(offset,
                                                                            self.confirmed)]
                left = deadline - time.monotonic()
                if self.down:
                    raise _Down
                if pending or left <= 0 or self.closing:
                    return pending[:100]
                self._changed.clear()
                try:
                    await asyncio.wait_for(self._changed.wait(), left)
                except TimeoutError:
                    pass
        finally:
            self.polls_waiting -= 1
