"""The Tutor: accepts chat.send / chat.cancel for a user and owns every reply being streamed.

Flow of one `chat.send`: validate → quota → one statement (store.py) that stores the user's
message and a `streaming` assistant row and reads the history and whether the learner has
passages in scope (a resend hits the unique client id or a refusal and is re-acked instead)
→ `chat.ack` and `reply.start`, together in one bus round trip, while a reply task starts
(none of its events goes out before them). The task retrieves passages (skipped when there
are none), builds the prompt, waits for a provider slot (`reply.queued` when it has to),
streams `reply.delta`s (coalesced: see stream.py), then `reply.citations` and `reply.end`,
and stores the final text and status. Every way out of the task (done, cancel, fault,
shutdown) goes through `_finish`, so a reply is never lost.

Policies:
- One streaming reply per conversation (a unique index: store.py): a second `chat.send` into
  it is refused with `reply_in_progress` (the client can cancel or wait; queueing would hide a
  stuck reply). A `streaming` row whose heartbeat stopped (`stale_after_s`) was left by a
  process that died mid-reply: it is marked `interrupted` and the send goes ahead.
- Provider slots: `llm_max_concurrent_streams` per process, FIFO; waiting replies get
  `reply.queued {position}` once, when they start to wait.
- Retries: `llm_retries` on retryable faults before the first token (retry-after honoured,
  else exponential backoff from 0.5 s, capped at 8 s; retry-after capped at 30 s), then the
  next provider of `llm_fallback`; after the first token a fault ends the reply `failed`.
- The bus (Redis) unreachable: a send is refused with `unavailable` (retryable) and nothing of
  it stays stored (its chat.ack could not be published: the rows it wrote are deleted); a reply
  whose events can no longer be published ends `interrupted` with its text kept, as at a
  shutdown (its end is stored; the learner reloads it over REST).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from chat_server import metrics, retrieval
from chat_server.batch import Batcher
from chat_server.bus import BusUnavailable
from chat_server.db import Database
from chat_server.errors import is_unavailable
from chat_server.models import MessageStatus
from chat_server.protocol import frames
from chat_server.protocol.codec import FrameError
from chat_server.settings import Settings
from chat_server.tutor import store
from chat_server.tutor.citations import Source
from chat_server.tutor.citations import resolve as resolve_citations
from chat_server.tutor.errors import ProviderError, TutorError
from chat_server.tutor.prompt import (
    CHARS_PER_TOKEN_MAX,
    PromptRequest,
    Turn,
    build_request,
    estimate_tokens,
)
from chat_server.tutor.providers import Provider, Usage
from chat_server.tutor.stream import Coalescer, Event, Pending, PublishMany

log = logging.getLogger(__name__)

Publish = Callable[[str, dict[str, Any]], Awaitable[int]]
Signal = Callable[[dict[str, Any]], Awaitable[None]]
Ready = Callable[[], Awaitable[bool]]

BUS_DOWN = ("Messages can't be delivered right now (the event bus is unreachable); nothing was "
            "stored: send it again in a moment.")

BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 8.0
RETRY_AFTER_MAX_S = 30.0
# A `streaming` row whose heartbeat is older than this belongs to a dead process: it is marked
# `interrupted` (store.py). Heartbeats come with the checkpoints; without checkpoints
# (TUTORHUB_REPLY_CHECKPOINT_S=0) a reply counts as orphaned this long after it began.
STALE_STREAMING_S = 15 * 60
MISSED_HEARTBEATS = 3  # a live process is late by a tick or two under load, not by three
MIN_STALE_S = 30.0
# Replies being started at once: stored, acked, prompt built, provider request sent, first token
# not yet in. A burst of sends is let in this many at a time, so each turn of the event loop
# stays short and the tokens of replies already streaming are not held up behind hundreds of
# starts (load_tests/bench_tutor.py: 500 sends at the same instant). Rarely binds otherwise.
STARTING_MAX = 16


@dataclass
class Reply:
    user_id: uuid.UUID
    reply_id: uuid.UUID
    message_id: uuid.UUID
    conversation_id: uuid.UUID
    question: str
    material_ids: list[uuid.UUID] | None
    socratic: bool
    study: bool = False  # chat.send's `study`: a quiz turn (chat_server/study/coach.py)
    new_conversation: bool = False  # started by this send (so no quiz is waiting in it)
    # A quiz turn's citations, given rather than resolved from passages.
    fixed_citations: list[dict[str, Any]] | None = None
    course: store.CourseSetup | None = None
    text: list[str] = field(default_factory=list)
    checkpointed: int = 0  # len(text) when it was last stored while streaming
    pending: Pending | None = None
    history: list[Turn] = field(default_factory=list)
    has_chunks: bool = False
    usage: Usage = field(default_factory=Usage)
    hits: list[retrieval.Hit] = field(default_factory=list)
    sources: list[Source] = field(default_factory=list)  # the prompt's numbered passages
    provider: str | None = None
    model: str | None = None
    received: float = 0.0  # time.perf_counter() when send() got the frame
    starting: bool = False  # holds one of the tutor's STARTING_MAX permits
    acked: asyncio.Future[Any] | None = None  # the publish of chat.ack + reply.start
    # Set before the task is cancelled, so the task knows why: cancelled | interrupted |
    # discarded (its send is undone: no end is stored or published).
    stop_reason: str | None = None
    task: asyncio.Task[None] | None = None
    ending: asyncio.Task[None] | None = None

    @property
    def user(self) -> str:
        return str(self.user_id)


class _Slots:
    """A FIFO counting semaphore that tells each waiter its position when it starts waiting."""

    def __init__(self, size: int) -> None:
        self._free = max(1, size)
        self._waiters: deque[asyncio.Future[None]] = deque()

    @asynccontextmanager
    async def hold(self, on_queued: Callable[[int], Awaitable[object]]) -> AsyncIterator[None]:
        if self._free > 0 and not self._waiters:
            self._free -= 1
        else:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            try:
                await on_queued(len(self._waiters))
                await fut
            except BaseException:
                if fut.done() and not fut.cancelled():
                    self._release()  # the slot was handed to us as we were cancelled: pass it on
                else:
                    self._waiters.remove(fut)
                raise
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)  # the slot passes straight to the next waiter
                return
        self._free += 1

    @property
    def waiting(self) -> int:
        return len(self._waiters)


def _chat_send(frame: frames.ChatSend | Mapping[str, Any]) -> frames.ChatSend:
    """The hub hands over a validated frame; a mapping (the Python API: tests, bridges) is
    validated here by the same model, with the same codes."""
    if isinstance(frame, frames.ChatSend):
        return frame
    try:
        return frames.validate_as(frames.ChatSend, frame)
    except FrameError as exc:
        raise TutorError(exc.code, exc.message) from None


def _reply_id(value: uuid.UUID | str) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return frames.validate_as(frames.ChatCancel, {"reply_id": value}).reply_id
    except FrameError as exc:
        raise TutorError(exc.code, exc.message) from None


class Tutor:
    def __init__(self, settings: Settings, db: Database, publish: Publish,
                 providers: list[Provider], publish_many: PublishMany,
                 signal: Signal | None = None, ready: Ready | None = None) -> None:
        if not providers:
            raise ValueError("The tutor needs at least one provider.")
        self.settings = settings
        self.db = db
        self._publish = publish
        self._publish_many = publish_many
        # Reaches the tutors of every instance (Bus.signal): a cancel for a reply streaming on
        # another instance. None: this process is the only one.
        self._signal = signal
        # Whether the bus can publish now (Bus.ready); None: always.
        self._ready = ready
        self._coalescer = Coalescer(self._publish_many, settings.reply_flush_ms / 1000)
        # Replies that end together are stored together (one statement, one commit).
        self._ends: Batcher[store.Finished] = Batcher(
            lambda ends: store.finish_many(self.db.pool, ends), refused=store.refused)
        self.providers = providers
        self._slots = _Slots(settings.llm_max_concurrent_streams)
        self._starting = asyncio.Semaphore(STARTING_MAX)
        self._replies: dict[uuid.UUID, Reply] = {}
        self._by_conversation: dict[uuid.UUID, uuid.UUID] = {}
        self._closing = False
        self._checkpointer: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        every = settings.reply_checkpoint_s
        self.stale_after_s = (max(MIN_STALE_S, MISSED_HEARTBEATS * every) if every > 0
                              else float(STALE_STREAMING_S))

    # --- the contract --------------------------------------------------------------------

    def start(self) -> None:
        """Mark the orphans of dead servers interrupted now, and then every half of
        `stale_after_s`: a server killed mid-reply leaves its replies `streaming`, and with
        nothing streaming on the other instances no checkpoint would look for them (a quiet
        cluster would show them streaming for ever). One statement per sweep."""
        async def sweep() -> None:
            delay = 0.0
            while True:
                await asyncio.sleep(delay)
                delay = self.stale_after_s / 2
                try:
                    await self.interrupt_orphans()
                except Exception as exc:
                    if is_unavailable(exc):
                        log.warning("could not look for replies left streaming by a stopped "
                                    "server: the database is unavailable")
                    else:
                        log.exception("could not look for replies left streaming by a "
                                      "stopped server")

        self._sweeper = asyncio.create_task(sweep(), name="reply-orphans")

    async def send(self, user_id: uuid.UUID, frame: frames.ChatSend | Mapping[str, Any]) -> None:
        """Store the message, publish chat.ack, start the reply. Refusals raise TutorError."""
        received = time.perf_counter()
        if self._closing:
            raise TutorError("unavailable", "The tutor is shutting down; send again in a moment.")
        send = _chat_send(frame)
        client_id, text, conversation_id = send.id, send.text, send.conversation_id
        material_ids, socratic, study = send.material_ids, send.socratic, send.study
        course = None
        if send.course_id is not None or conversation_id is not None:
            course = await store.course_of(self.db.pool, user_id, send.course_id,
                                           conversation_id)
            if course is not None and socratic is None and conversation_id is None:
                socratic = course.socratic  # a new course conversation: the course's default
        if self._ready is not None and not await self._ready():
            raise TutorError("unavailable", BUS_DOWN)
        message_id, reply_id = uuid.uuid4(), uuid.uuid4()
        await self._starting.acquire()
        handed: list[Reply] = []  # the reply whose task took the permit over
        try:
            await self._start(user_id, client_id, text, conversation_id, material_ids, socratic,
                              message_id, reply_id, received, handed, bool(study),
                              course)
        except BusUnavailable as exc:  # a re-ack that could not be published
            raise TutorError("unavailable", BUS_DOWN) from exc
        finally:
            if not handed:
                self._starting.release()  # refused, re-acked or failed: no reply task to hold it

    async def _start(self, user_id: uuid.UUID, client_id: str, text: str,
                     conversation_id: uuid.UUID | None, material_ids: list[uuid.UUID] | None,
                     socratic: bool | None, message_id: uuid.UUID, reply_id: uuid.UUID,
                     received: float, handed: list[Reply], study: bool = False,
                     course: store.CourseSetup | None = None) -> None:
        try:
            sent = await self._store(user_id, client_id, text, conversation_id, material_ids,
                                     socratic, message_id, reply_id, course)
        except TutorError:
            # A resend of a stored message can be refused too (its own reply still streams):
            # it is acked again instead.
            if await self._reack(user_id, client_id):
                return
            raise
        if sent is None:
            # A known client id (a resend, or the same id racing in from another socket): the
            # first one answers, this one is acked again.
            if await self._reack(user_id, client_id):
                return
            raise TutorError("unavailable", "That message could not be stored; send it again.")
        reply = Reply(user_id=user_id, reply_id=reply_id, message_id=message_id,
                      conversation_id=sent.conversation_id, question=text,
                      material_ids=material_ids, socratic=sent.socratic, study=study,
                      new_conversation=conversation_id is None, course=course,
                      has_chunks=sent.has_chunks,
                      history=[Turn(role="assistant" if role == "assistant" else "user",
                                   content=content) for role, content in sent.history],
                      received=received, starting=True)
        self._replies[reply.reply_id] = reply
        self._start_checkpoints()
        self._by_conversation[reply.conversation_id] = reply.reply_id
        ids = {"message_id": str(reply.message_id),
               "conversation_id": str(reply.conversation_id), "reply_id": str(reply.reply_id)}
        # The reply starts while the ack goes out (the prompt and the provider request need
        # not wait for Redis); its own first event waits for the ack (_after_ack), so clients
        # still see chat.ack and reply.start first. A failed ack still reaches the sender.
        reply.acked = asyncio.ensure_future(self._publish_many([
            (reply.user, {"type": "chat.ack", "id": client_id, **ids}),
            (reply.user, {"type": "reply.start", **ids})]))
        reply.task = asyncio.create_task(self._run(reply), name=f"reply-{reply.reply_id}")
        handed.append(reply)
        try:
            await reply.acked
        except Exception as exc:
            # Nobody was told of this message: undo it rather than answer it into the void.
            await self._discard(reply, new_conversation=conversation_id is None)
            raise TutorError("unavailable", BUS_DOWN) from exc

    async def _discard(self, reply: Reply, *, new_conversation: bool) -> None:
        """Stop a reply whose chat.ack could not be published and delete what its send stored
        (both messages; the conversation too if the send started it)."""
        reply.stop_reason = "discarded"
        assert reply.task is not None
        reply.task.cancel()  # before it runs again: it resumes into the cancellation
        await asyncio.wait({reply.task})
        self._replies.pop(reply.reply_id, None)
        if self._by_conversation.get(reply.conversation_id) == reply.reply_id:
            del self._by_conversation[reply.conversation_id]
        try:
            await store.discard(self.db.pool, reply.user_id, [reply.reply_id, reply.message_id],
                                reply.conversation_id if new_conversation else None)
        except Exception as exc:  # left `streaming`: the orphan sweep marks it interrupted
            log.warning("could not discard the undelivered send of reply %s: %s",
                        reply.reply_id, type(exc).__name__)

    async def cancel(self, user_id: uuid.UUID, reply_id: uuid.UUID | str) -> None:
        """Stop a streaming reply (its HTTP stream closes); it ends `cancelled`, text kept."""
        rid = _reply_id(reply_id)
        reply = self._replies.get(rid)
        if reply is not None and reply.user_id == user_id:
            if reply.stop_reason is None:
                reply.stop_reason = "cancelled"
            if reply.task is not None:
                reply.task.cancel()
                await asyncio.wait({reply.task})
            return
        status = await store.reply_status(self.db.pool, user_id, rid)
        if status is None:
            raise TutorError("reply_not_found", "No such reply.", reply_id=str(rid))
        if status == MessageStatus.streaming.value:
            if self._signal is None:
                raise TutorError("reply_not_found",
                                 "This reply is not streaming on this server.", reply_id=str(rid))
            # Streaming on another instance: its tutor cancels it, and its reply.end (finish
            # reason `cancelled`) reaches every socket of the user through the bus.
            await self._signal({"type": "reply.cancel", "reply_id": str(rid),
                                "user_id": str(user_id)})
        # Already finished: cancelling it again is a no-op.

    def on_signal(self, message: dict[str, Any]) -> None:
        """A control message from any instance (Bus.on_signal): cancel a reply if it is ours;
        `course.left` stops the replies of learners who left a course (or of everyone in a
        deleted course) at once."""
        if message.get("type") == "course.left":
            self._course_left(message)
            return
        if message.get("type") != "reply.cancel":
            return
        try:
            rid, uid = uuid.UUID(str(message["reply_id"])), uuid.UUID(str(message["user_id"]))
        except (KeyError, ValueError):
            return
        reply = self._replies.get(rid)
        if reply is None or reply.user_id != uid or reply.task is None:
            return
        if reply.stop_reason is None:
            reply.stop_reason = "cancelled"
        reply.task.cancel()

    def _course_left(self, message: dict[str, Any]) -> None:
        course_id, users = str(message.get("course_id")), message.get("user_ids")
        for reply in list(self._replies.values()):
            if (reply.course is None or str(reply.course.id) != course_id
                    or (users is not None and reply.user not in users) or reply.task is None):
                continue
            if reply.stop_reason is None:
                reply.stop_reason = "revoked"
            reply.task.cancel()

    async def aclose(self, timeout_s: float) -> None:
        """Refuse new sends, give running replies `timeout_s` to finish, then interrupt the rest."""
        self._closing = True
        tasks = {r.task for r in self._replies.values() if r.task is not None}
        if tasks:
            await asyncio.wait(tasks, timeout=timeout_s)
        for reply in list(self._replies.values()):
            if reply.task is not None and not reply.task.done():
                reply.stop_reason = reply.stop_reason or "interrupted"
                reply.task.cancel()
        tasks = {r.task for r in self._replies.values() if r.task is not None}
        if tasks:
            await asyncio.wait(tasks)
        await self._ends.drain()  # a cancelled reply's end may still be on its way
        for task in (self._checkpointer, self._sweeper):
            if task is not None:
                task.cancel()
                await asyncio.wait({task})

    @property
    def active(self) -> int:
        return len(self._replies)

    # --- send, step by step ------------------------------------------------------------------

    async def _store(self, user_id: uuid.UUID, client_id: str, text: str,
                     conversation_id: uuid.UUID | None, material_ids: list[uuid.UUID] | None,
                     socratic: bool | None, message_id: uuid.UUID, reply_id: uuid.UUID,
                     course: store.CourseSetup | None = None) -> store.Sent | None:
        if conversation_id is not None:
            self._refuse_if_streaming(self._by_conversation.get(conversation_id))
        await self._check_quota(user_id)
        provider = self._providers_for(course)[0]
        for _ in range(2):  # a second time only after an orphaned reply was marked interrupted
            try:
                return await store.send(
                    self.db.pool, user_id=user_id, client_id=client_id, text=text,
                    message_id=message_id, reply_id=reply_id, provider=provider.name,
                    model=provider.model, material_ids=material_ids,
                    conversation_id=conversation_id, socratic=socratic, title=_title(text),
                    history_chars=CHARS_PER_TOKEN_MAX * self.settings.history_token_budget,
                    course=course)
            except store.Busy:
                assert conversation_id is not None
                self._refuse_if_streaming(await store.streaming_reply(
                    self.db.pool, conversation_id, self.stale_after_s))
        raise TutorError("unavailable", "The conversation is busy; send again in a moment.")

    def _providers_for(self, course: store.CourseSetup | None) -> list[Provider]:
        """The configured providers in the order a reply tries them: the course's choice
        first (a provider no longer configured is passed over)."""
        if course is None or course.provider is None:
            return self.providers
        chosen = [p for p in self.providers if p.name == course.provider]
        return chosen + [p for p in self.providers if p.name != course.provider]

    async def _reack(self, user_id: uuid.UUID, client_id: str) -> bool:
        known = await store.known_send(self.db.pool, user_id, client_id)
        if known is None:
            return False
        event: dict[str, Any] = {
            "type": "chat.ack", "id": client_id, "message_id": str(known.message_id),
            "conversation_id": str(known.conversation_id),
            "reply_id": str(known.reply_id) if known.reply_id else None, "duplicate": True}
        await self._publish(str(user_id), event)
        return True

    async def _check_quota(self, user_id: uuid.UUID) -> None:
        quota = self.settings.daily_token_quota
        if quota <= 0:
            return
        used = await store.tokens_used_since(self.db.pool, user_id, store.utc_midnight())
        if used >= quota:
            raise TutorError("quota_exceeded",
                             f"You have used your {quota} tokens for today; the quota resets at "
                             "midnight UTC.", used=used, quota=quota)

    @staticmethod
    def _refuse_if_streaming(busy: uuid.UUID | None) -> None:
        if busy is not None:
            raise TutorError("reply_in_progress",
                             "A reply is still streaming in this conversation: wait for its "
                             "reply.end or cancel it, then send again.", reply_id=str(busy))

    # --- the reply task ----------------------------------------------------------------------

    async def _run(self, reply: Reply) -> None:
        try:
            from chat_server.study import coach

            coached = None
            if reply.study or coach.wants_quiz(reply.question) or not reply.new_conversation:
                coached = await coach.turn(self.db.pool, self.settings, reply.user_id,
                                           reply.conversation_id, reply.question,
                                           reply.material_ids, reply.study,
                                           reply.course.id if reply.course else None)
            if coached is not None:  # a quiz turn: the coach's text, no retrieval, no LLM
                reply.fixed_citations = coached.citations
                request = build_request(question=reply.question, hits=[], history=[],
                                        socratic=False, history_budget=0,
                                        max_tokens=self.settings.llm_max_tokens,
                                        temperature=self.settings.llm_temperature)
                finish = await self._stream(reply, request, [coach.FixedProvider(coached.text)])
                await self._end(reply, finish)
                return
            request = await self._prepare(reply)
            async with self._slots.hold(lambda pos: self._queued(reply, pos)):
                finish = await self._stream(reply, request)
            await self._end(reply, finish)
        except asyncio.CancelledError:
            if reply.stop_reason == "revoked":
                await self._end(reply, "cancelled", code="course_access_revoked",
                                message="You are no longer enrolled in this course.")
            elif reply.stop_reason != "discarded":
                await self._end(reply, reply.stop_reason or "interrupted")
            raise
        except BusUnavailable as exc:
            # Its events can't be published: as at a shutdown, the reply ends here, text kept.
            log.warning("reply %s interrupted: %s", reply.reply_id, exc)
            await self._end(reply, "interrupted")
        except ProviderError as err:
            await self._end(reply, "failed", code=err.code, message=err.message)
        except Exception as err:
            log.exception("reply %s failed", reply.reply_id)
            await self._end(reply, "failed", code="internal",
                            message=f"The tutor failed unexpectedly ({type(err).__name__}).")
        finally:
            self._started(reply)

    def _started(self, reply: Reply) -> None:
        """The reply no longer counts as starting (first token in, queued for a slot, or ended)."""
        if reply.starting:
            reply.starting = False
            self._starting.release()

    async def _queued(self, reply: Reply, position: int) -> None:
        self._started(reply)  # waiting for a provider slot must not hold up other starts
        await _after_ack(reply)
        await self._publish(reply.user, {"type": "reply.queued",
                                         "reply_id": str(reply.reply_id), "position": position})

    # --- checkpoints: the text of streaming replies, stored while they stream -----------------

    def _start_checkpoints(self) -> None:
        if self.settings.reply_checkpoint_s > 0 and (
                self._checkpointer is None or self._checkpointer.done()):
            self._checkpointer = asyncio.create_task(self._checkpoint_forever(),
                                                     name="reply-checkpoints")

    async def _checkpoint_forever(self) -> None:
        # Runs while replies stream and ends with the last (send() starts it again): no task
        # ticks on an idle server. Orphans of dead processes are looked for meanwhile too.
        while self._replies:
            await asyncio.sleep(self.settings.reply_checkpoint_s)
            try:
                await self.checkpoint()
                await self.interrupt_orphans()
            except Exception as exc:
                if not is_unavailable(exc):
                    log.exception("could not store the text of streaming replies")
                else:  # the next tick tries again
                    log.warning("could not store the text of streaming replies: the database "
                                "is unavailable (%s)", type(exc).__name__)

    async def checkpoint(self) -> int:
        """The heartbeat of every streaming reply of this process, with the text so far of
        those that got tokens since the last time; returns how many texts were stored. The end
        of a reply (`_finish`) always stores its final text; a row that already ended is left
        alone."""
        live = [r for r in self._replies.values() if r.ending is None]
        if not live:
            return 0
        counts = [len(r.text) for r in live]
        texts = ["".join(r.text) if len(r.text) != r.checkpointed else None for r in live]
        await store.checkpoint(self.db.pool, [r.reply_id for r in live], texts)
        for reply, count in zip(live, counts, strict=True):
            reply.checkpointed = count
        return sum(t is not None for t in texts)

    async def interrupt_orphans(self) -> int:
        """Mark `interrupted` the replies left `streaming` by processes that died (their
        heartbeat stopped); returns how many. Runs at start and with the checkpoints."""
        found = await store.interrupt_orphans(self.db.pool, self.stale_after_s)
        if found:
            log.warning("marked %d replies of a stopped server interrupted", found)
        return found

    async def _end(self, reply: Reply, finish: str, *, code: str | None = None,
                   message: str | None = None) -> None:
        """Run `_finish` once, shielded: a cancel arriving while the end is stored can't cut it."""
        if reply.ending is None:
            reply.ending = asyncio.create_task(
                self._finish(reply, finish, code=code, message=message),
                name=f"reply-end-{reply.reply_id}")
        cancelled = False
        while not reply.ending.done():
            try:
                await asyncio.shield(reply.ending)
            except asyncio.CancelledError:
                cancelled = True
        if cancelled:
            raise asyncio.CancelledError

    async def _prepare(self, reply: Reply) -> PromptRequest:
        if reply.has_chunks:
            reply.hits = await self._retrieve(reply)
        request = build_request(
            question=reply.question, hits=reply.hits, history=reply.history,
            socratic=reply.socratic,
            history_budget=self.settings.history_token_budget,
            max_tokens=self.settings.llm_max_tokens, temperature=self.settings.llm_temperature,
            relevance=partial(retrieval.sentence_relevance, self.settings),
            instructions=reply.course.instructions if reply.course else "")
        reply.sources = request.sources
        return request

    async def _retrieve(self, reply: Reply) -> list[retrieval.Hit]:
        return await retrieval.retrieve(
            self.db.pool, self.settings, reply.user_id, reply.question,
            material_ids=reply.material_ids, k=self.settings.retrieval_top_k,
            scope=retrieval.Scope(reply.course.id, reply.course.allow_own_materials)
            if reply.course else retrieval.OWN)

    async def _stream(self, reply: Reply, request: PromptRequest,
                      providers: list[Provider] | None = None) -> str:
        last: ProviderError | None = None
        attempts = 0
        course = reply.course
        for provider in providers or self._providers_for(course):
            # The course's model goes to the provider it was chosen with.
            request.model = (course.model if course is not None and course.model
                             and provider.name == course.provider else None)
            reply.provider, reply.model = provider.name, request.model or provider.model
            for attempt in range(self.settings.llm_retries + 1):
                attempts += 1
                try:
                    async with provider.stream(request) as stream:
                        async for delta in stream:
                            reply.text.append(delta)
                            reply.usage = stream.usage
                            if reply.pending is not None:
                                await self._coalescer.add(reply.pending, delta)
                                continue
                            await _after_ack(reply)
                            reply.pending = self._coalescer.open(
                                reply.user, reply.reply_id, gather_first=True,
                                on_first=partial(_first_published, reply))
                            await self._coalescer.add(reply.pending, delta)
                            self._started(reply)
                        reply.usage = stream.usage
                        return stream.finish_reason or "stop"
                except ProviderError as err:
                    if reply.text:
                        raise  # the learner saw part of this answer: no retry, no mixing
                    last = err
                    if not err.retryable or attempt == self.settings.llm_retries:
                        break
                    await asyncio.sleep(_delay(err, attempt))
            if last is not None:
                log.warning("provider %s gave up on reply %s: %s", provider.name,
                            reply.reply_id, last.message)
        assert last is not None
        if last.retryable:
            last.message = f"{last.message} Gave up after {attempts} attempts."
        raise last

    async def _finish(self, reply: Reply, finish: str, *, code: str | None = None,
                      message: str | None = None) -> None:
        """Store and announce the end of a reply; runs exactly once per reply, on every path."""
        text = "".join(reply.text)
        citations = (reply.fixed_citations if reply.fixed_citations is not None
                     else resolve_citations(text, reply.sources))
        if not reply.usage.output_tokens and text:
            reply.usage.output_tokens = estimate_tokens(text)
        status = {"stop": MessageStatus.complete, "length": MessageStatus.complete,
                  "cancelled": MessageStatus.cancelled, "failed": MessageStatus.failed,
                  "interrupted": MessageStatus.interrupted}[finish]
        rid = str(reply.reply_id)
        try:
            await self._store_end(store.Finished(
                reply_id=reply.reply_id, text=text, status=status.value, citations=citations,
                usage={**reply.usage.as_dict(), "finish_reason": finish},
                input_tokens=reply.usage.input_tokens, output_tokens=reply.usage.output_tokens,
                provider=reply.provider, model=reply.model,
                error=f"{code}: {message}" if code else None))
        except Exception:
            log.exception("could not store reply %s (%s)", rid, finish)
        # The conversation is free from here: a client may see reply.end (pub/sub) before our
        # publish returns, and send its next message at once.
        if self._by_conversation.get(reply.conversation_id) == reply.reply_id:
            del self._by_conversation[reply.conversation_id]
        try:
            await _after_ack(reply)
            events: list[Event] = []
            if reply.pending is not None and (
                    rest := await self._coalescer.take_rest(reply.pending)):
                # Whatever the provider gave is delivered before the end (and is the stored
                # text): the last delta goes out with the end, in one publish.
                events.append(rest)
            if code is not None:
                events.append((reply.user, {"type": "reply.error", "reply_id": rid,
                                            "code": code, "message": message}))
            events.append((reply.user, {"type": "reply.citations", "reply_id": rid,
                                        "citations": citations}))
            events.append((reply.user, {"type": "reply.end", "reply_id": rid,
                                        "finish_reason": finish,
                                        "usage": reply.usage.as_dict()}))
            await self._publish_many(events)
        except BusUnavailable as exc:  # stored all the same: the learner reloads it over REST
            log.warning("could not publish the end of reply %s (%s): %s", rid, finish, exc)
        except Exception:
            log.exception("could not publish the end of reply %s", rid)
        finally:
            if reply.pending is not None:
                self._coalescer.discard(reply.pending)
            self._replies.pop(reply.reply_id, None)


    async def _store_end(self, end: store.Finished) -> None:
        """Store a reply's end; while the database is unreachable, try again (backoff up to
        5 s) for as long as the reply's heartbeat would still count it alive. The learner saw
        the whole reply: a database restart must not cut the stored text back to its last
        checkpoint. (Its reply.end goes out once stored, so nothing overtakes the store.)"""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.stale_after_s
        delay = 0.25
        while True:
            try:
                await self._ends.submit(end)
                return
            except Exception as exc:
                if not is_unavailable(exc) or loop.time() + delay > deadline:
                    raise
                log.warning("reply %s: the database is unavailable (%s); storing its end again "
                            "in %.2f s", end.reply_id, type(exc).__name__, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def _after_ack(reply: Reply) -> None:
    """Wait until the reply's chat.ack + reply.start are published (or failed: the sender was
    told), so that nothing of the reply overtakes them."""
    if reply.acked is not None and not reply.acked.done():
        await asyncio.wait({reply.acked})


def _first_published(reply: Reply) -> None:
    metrics.tutor_first_delta_seconds.observe(time.perf_counter() - reply.received)


def _delay(err: ProviderError, attempt: int) -> float:
    if err.retry_after is not None:
        return min(err.retry_after, RETRY_AFTER_MAX_S)
    return min(BACKOFF_BASE_S * 2 ** attempt, BACKOFF_MAX_S) * (0.75 + random.random() / 4)


def _title(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= 60 else line[:59].rstrip() + "…"

