"""A learner's client that keeps books: what it sent, what the server acknowledged, every event
by offset (gaps and duplicates counted), and resuming on whatever instance is up.

Used by the fault tests and the soak: after a fault, `Ledger` says what was lost."""

from __future__ import annotations

import asyncio
import itertools
import json
from dataclasses import dataclass, field
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from tests.support.ws import new_user, ws_url

_ids = itertools.count(1)
PAGE = 200  # conversations per page (the most GET /conversations returns)


@dataclass
class Ledger:
    """What one learner saw."""

    offsets_seen: int = 0
    gaps: int = 0  # events missing between two offsets of one epoch
    duplicates: int = 0  # an offset seen twice in one epoch
    epochs: int = 0  # resume.failed epoch_changed (history lost under it: Redis restarted)
    # Any other resume.failed (history_trimmed, offset_ahead): events this learner will
    # never get by offset — counted as lost, not skipped silently.
    resume_failed: dict[str, int] = field(default_factory=dict)
    acked: dict[str, dict[str, Any]] = field(default_factory=dict)  # client id → chat.ack
    ended: dict[str, dict[str, Any]] = field(default_factory=dict)  # reply id → reply.end
    text: dict[str, str] = field(default_factory=dict)  # reply id → deltas received, in order
    refused: dict[str, int] = field(default_factory=dict)  # error code → count
    closes: dict[int, int] = field(default_factory=dict)  # close code → count
    connects: int = 0


class Learner:
    """One user with at most one socket, reconnecting with `resume` to the first instance of
    `bases` that takes it."""

    def __init__(self, user_id: str, token: str) -> None:
        self.user_id = user_id
        self.token = token
        self.book = Ledger()
        self.epoch: str | None = None
        self.last_o = 0
        self.ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self.changed = asyncio.Event()  # set on every event (tests wait on it)

    @classmethod
    async def create(cls, base: str) -> Learner:
        return cls(*await new_user(base))

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def connect(self, bases: list[str], wait_s: float = 30.0) -> str:
        """Open a socket on the first instance that answers (resuming from the last offset);
        returns its base URL."""
        await self.disconnect()
        async with asyncio.timeout(wait_s):
            for attempt in itertools.count():
                for base in bases:
                    try:
                        ws = await connect(ws_url(base), open_timeout=5, close_timeout=2,
                                           max_size=None, compression=None)
                    except (OSError, InvalidHandshake, InvalidStatus, TimeoutError):
                        continue
                    auth: dict[str, Any] = {"type": "auth", "token": self.token}
                    if self.epoch is not None:
                        auth["resume"] = {"since": self.last_o, "epoch": self.epoch}
                    try:
                        await ws.send(json.dumps(auth))
                        welcome = json.loads(await asyncio.wait_for(ws.recv(), 10))
                    except (ConnectionClosed, TimeoutError) as exc:
                        self._closed(exc)
                        await ws.close()
                        continue
                    assert welcome["type"] == "welcome", welcome
                    if self.epoch is None:
                        self.epoch, self.last_o = welcome["epoch"], welcome["offset"]
                    self.book.connects += 1
                    self.ws = ws
                    self._reader = asyncio.create_task(self._read(ws))
                    return base
                await asyncio.sleep(min(0.05 * 2 ** attempt, 1.0))
        raise AssertionError("unreachable")

    def _closed(self, exc: BaseException) -> None:
        if isinstance(exc, ConnectionClosed):
            code = exc.rcvd.code if exc.rcvd is not None else 1006
            self.book.closes[code] = self.book.closes.get(code, 0) + 1

    async def _read(self, ws: ClientConnection) -> None:
        try:
            async for raw in ws:
                self.take(json.loads(raw))
                self.changed.set()
        except ConnectionClosed as exc:
            self._closed(exc)
        else:  # a normal close ends the iteration
            code = ws.close_code or 1005
            self.book.closes[code] = self.book.closes.get(code, 0) + 1
        finally:
            self.changed.set()

    def take(self, frame: dict[str, Any]) -> None:
        kind = frame["type"]
        if kind == "ping":
            if self.ws is not None:
                asyncio.get_running_loop().create_task(self._pong())
            return
        if kind == "resume.failed":
            reason = frame["reason"]
            if reason == "epoch_changed":
                self.book.epochs += 1
            else:
                self.book.resume_failed[reason] = self.book.resume_failed.get(reason, 0) + 1
            self.epoch, self.last_o = frame["epoch"], frame["offset"]
            return
        if kind == "error":
            self.book.refused[frame["code"]] = self.book.refused.get(frame["code"], 0) + 1
            return
        if "o" not in frame:
            return
        o = frame["o"]
        first = o - frame.get("parts", 1) + 1  # a coalesced delta covers `parts` offsets
        self.book.offsets_seen += 1
        if first <= self.last_o:
            self.book.duplicates += 1
            return
        self.book.gaps += first - self.last_o - 1
        self.last_o = o
        if kind == "chat.ack":
            self.book.acked[frame["id"]] = frame
        elif kind == "reply.delta":
            rid = frame["reply_id"]
            self.book.text[rid] = self.book.text.get(rid, "") + frame["text"]
        elif kind == "reply.end":
            self.book.ended[frame["reply_id"]] = frame

    async def _pong(self) -> None:
        if self.ws is not None:
            try:
                await self.ws.send('{"type":"pong"}')
            except ConnectionClosed:
                pass

    @property
    def connected(self) -> bool:
        return self._reader is not None and not self._reader.done()

    async def send(self, text: str) -> str:
        """chat.send; returns its client id (the ack, if any, lands in the ledger)."""
        cid = f"c{next(_ids)}"
        assert self.ws is not None
        await self.ws.send(json.dumps({"type": "chat.send", "id": cid, "text": text}))
        return cid

    async def wait(self, predicate: Any, wait_s: float = 30.0) -> None:
        async with asyncio.timeout(wait_s):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

    async def disconnect(self) -> None:
        if self.ws is not None:
            await self.ws.close()
            self.ws = None
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
            self._reader = None

    async def stored(self, base: str) -> dict[str, dict[str, Any]]:
        """Every stored message of the user by id (over REST, every page of conversations)."""
        found: dict[str, dict[str, Any]] = {}
        async with httpx.AsyncClient(base_url=base, headers=self.auth, timeout=30) as c:
            for offset in itertools.count(0, PAGE):
                page = (await c.get("/conversations", params={"limit": PAGE, "offset": offset}))
                page.raise_for_status()
                for conv in page.json():
                    detail = (await c.get(f"/conversations/{conv['id']}")).json()
                    for message in detail["messages"]:
                        found[message["id"]] = message
                if len(page.json()) < PAGE:
                    return found
        raise AssertionError("unreachable")


async def converse(learner: Learner, bases: list[str], stop: asyncio.Event,
                    retry_s: float = 0.2) -> None:
    """Ask, wait for the answer's end (or a refusal), ask again, until `stop`; reconnect
    (resuming) whenever the socket is gone."""
    while not stop.is_set():
        if not learner.connected:
            try:
                await learner.connect(bases, 30)
            except (AssertionError, TimeoutError):
                await asyncio.sleep(retry_s)
                continue
        before = progress(learner)
        try:
            await learner.send("Расскажи про энтропию, please.")
        except Exception:
            # The socket is gone and its reader has not seen it yet: yield so it can (a bare
            # `continue` never awaited, so the reader never ran: the soak's driver spun at
            # 100% CPU for good after a storm).
            await asyncio.sleep(retry_s)
            continue
        try:
            # An end, a refusal, a lost socket, or the history lost with Redis (the end of
            # an answer cut by the outage never comes: it is reloaded over REST; a socket
            # whose user got no event since doesn't know yet: it gives up waiting).
            await learner.wait(lambda b=before: not learner.connected or progress(learner) > b
                               or stop.is_set(), 5)  # a reply takes 2 s
        except TimeoutError:
            pass
        if progress(learner)[0] > before[0]:  # refused: try again in a moment
            await asyncio.sleep(retry_s)


def stop_all(stop: asyncio.Event, learners: list[Learner]) -> None:
    stop.set()
    for learner in learners:
        learner.changed.set()  # wakes its wait to see `stop`


def progress(learner: Learner) -> tuple[int, int, int]:
    """(refusals, reply ends, epoch changes): each only grows."""
    book = learner.book
    return sum(book.refused.values()), len(book.ended), book.epochs


async def losses(learners: list[Learner], base: str) -> dict[str, int]:
    """What was lost, counted over every learner: acknowledged messages not stored, replies of
    acknowledged messages with no stored row, gaps and duplicates in the event streams, resumes
    the history could not serve (other than a lost history: `Ledger.epochs`)."""
    lost = {"acked_not_stored": 0, "reply_missing": 0, "gaps": 0, "duplicates": 0,
            "resume_failed": 0}
    everything = await asyncio.gather(*(learner.stored(base) for learner in learners))
    for learner, stored in zip(learners, everything, strict=True):
        for ack in learner.book.acked.values():
            lost["acked_not_stored"] += ack["message_id"] not in stored
            lost["reply_missing"] += ack["reply_id"] not in stored
        lost["gaps"] += learner.book.gaps
        lost["duplicates"] += learner.book.duplicates
        lost["resume_failed"] += sum(learner.book.resume_failed.values())
    return lost
