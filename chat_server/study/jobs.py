"""Generating a material's study tools: the job the taskiq task (workers/study.py) runs.

The `study_sets` row is the job; a broker message only says "look at it" (as for ingestion).
`request()` marks it queued (raising `requested`); `generate()` takes an advisory lock on the
material's study, runs the generator, stores what it made and marks the row ready — only if no
newer request came meanwhile, else it runs again with the newer request's kinds. Transient
faults (the database, an LLM provider's 429/5xx/connection) are retried with backoff; anything
else ends the job failed with a reason the learner can read. Progress goes out as
`study.progress` events (and into the row), then `study.ready` or `study.failed`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import CursorResult, Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from chat_server.db import Database, advisory_lock
from chat_server.errors import is_unavailable
from chat_server.settings import Settings
from chat_server.study import KINDS, material, store
from chat_server.study.drafts import Generated, Generator

log = logging.getLogger(__name__)

Publish = Callable[[uuid.UUID, dict[str, Any]], Awaitable[None]]
Kick = Callable[[uuid.UUID], Awaitable[None]]

TRANSIENT_REASON = ("The study tools could not be generated because a service they depend on "
                    "was unreachable. Please try again later.")
UNEXPECTED_REASON = "Something went wrong while generating the study tools. Please try again."
NO_TEXT = "This material has no text to study yet: wait until it is ready."
PROGRESS_EVERY_S = 0.5
RERUNS = 5  # newer requests that arrived while running, served by this same task at most


class StudyFailed(Exception):
    """The generation cannot succeed as asked (not worth a retry); `reason` is for the learner."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class StudyTransient(Exception):
    """A fault worth retrying (e.g. a provider overloaded)."""


@dataclass
class Deps:
    """What a generation needs from the process it runs in."""

    settings: Settings
    db: Database
    publish: Publish


def normalise_kinds(kinds: Sequence[str] | None) -> list[str]:
    """The kinds asked for, in KINDS order (all when none); a summary and notes come together."""
    wanted = set(kinds or KINDS)
    unknown = wanted - set(KINDS)
    if unknown:
        raise ValueError(f"unknown kinds {sorted(unknown)}: use {', '.join(KINDS)}")
    if wanted & {"summary", "notes"}:
        wanted |= {"summary", "notes"}
    return [k for k in KINDS if k in wanted]


def generator_name(settings: Settings) -> str:
    """`study_generator`; auto: the tutor's own provider."""
    if settings.study_generator != "auto":
        return settings.study_generator
    from chat_server.tutor.providers import primary_name

    return primary_name(settings)


def lock_key(material_id: uuid.UUID) -> int:
    # Not the ingestion task's key (the first 8 bytes): the last 8, so the two never collide.
    return int.from_bytes(material_id.bytes[8:], "big", signed=True)


def transient(exc: BaseException) -> bool:
    if isinstance(exc, StudyTransient | ConnectionError | TimeoutError) or is_unavailable(exc):
        return True
    import anthropic
    import openai

    return isinstance(exc, anthropic.APIConnectionError | anthropic.RateLimitError
                      | anthropic.InternalServerError | openai.APIConnectionError
                      | openai.RateLimitError | openai.InternalServerError)


async def request(db: Database, user_id: uuid.UUID, material_id: uuid.UUID,
                  kinds: Sequence[str]) -> None:
    """Queue a generation of `kinds` (joining those of a generation not yet done)."""
    async with db.engine.begin() as conn:
        await conn.execute(text(
            "insert into study_sets (material_id, user_id, status, kinds, requested) "
            "values (:mid, :uid, 'queued', cast(:kinds as jsonb), 1) "
            "on conflict (material_id) do update set status = 'queued', "
            "kinds = case when study_sets.status in ('queued', 'running') then "
            "(select jsonb_agg(distinct k) from jsonb_array_elements_text("
            "study_sets.kinds || excluded.kinds) k) else excluded.kinds end, "
            "requested = study_sets.requested + 1, error = null, stage = null, "
            "progress_done = 0, progress_total = 0, updated_at = now()"),
            {"mid": material_id, "uid": user_id, "kinds": json.dumps(list(kinds))})


_slots: dict[asyncio.AbstractEventLoop, asyncio.Semaphore] = {}


def _slot(size: int) -> asyncio.Semaphore:
    loop = asyncio.get_running_loop()
    if loop not in _slots:
        for old in [old for old in _slots if old.is_closed()]:
            del _slots[old]
        _slots[loop] = asyncio.Semaphore(max(1, size))
    return _slots[loop]


async def generate(deps: Deps, material_id: uuid.UUID) -> None:
    """Run the material's queued generation with retries; ends ready or failed."""
    settings = deps.settings
    async with _slot(settings.study_concurrency):
        for attempt in range(settings.task_retries + 1):
            try:
                await _locked(deps, material_id)
                return
            except StudyFailed as exc:
                await _fail(deps, material_id, exc.reason)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not transient(exc):
                    log.exception("study generation of %s failed", material_id)
                    await _fail(deps, material_id, UNEXPECTED_REASON)
                    return
                if attempt == settings.task_retries:
                    log.warning("study generation of %s failed after %d attempts: %r",
                                material_id, attempt + 1, exc)
                    await _fail(deps, material_id, TRANSIENT_REASON)
                    return
                delay = min(settings.task_retry_backoff_s * 2 ** attempt, 60.0)
                delay *= 0.5 + random.random() / 2
                log.info("study generation of %s: transient fault %r; retry in %.1fs",
                         material_id, exc, delay)
                await asyncio.sleep(delay)


async def _locked(deps: Deps, material_id: uuid.UUID) -> None:
    async with advisory_lock(deps.db.engine, lock_key(material_id)) as got:
        if not got:
            log.info("study of %s is being generated elsewhere; skipping", material_id)
            return
        for _ in range(RERUNS):
            if not await _run(deps, material_id):
                break


async def _save(conn: AsyncConnection, material_id: uuid.UUID, row: Row[Any], kinds: list[str],
                generated: Generated) -> tuple[uuid.UUID | None, CursorResult[Any]]:
    """Store what was generated and mark the job ready, unless a newer request came."""
    quiz_id = await store.save(conn, material_id, row.user_id, set(kinds), generated)
    done = await conn.execute(text(
        "update study_sets set status = 'ready', stage = null, error = null, "
        "generator = :g, progress_done = progress_total, updated_at = now() "
        "where material_id = :id and requested = :r"),
        {"g": generated.generator, "id": material_id, "r": row.requested})
    return quiz_id, done


class _Progress:
    """`study.progress` on every stage change and at most every PROGRESS_EVERY_S within one,
    mirrored into the row."""

    def __init__(self, deps: Deps, material_id: uuid.UUID, user_id: uuid.UUID) -> None:
        self.deps, self.material_id, self.user_id = deps, material_id, user_id
        self.stage: str | None = None
        self.sent_at = 0.0

    async def __call__(self, stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        if stage == self.stage and now - self.sent_at < PROGRESS_EVERY_S and done < total:
            return
        self.stage, self.sent_at = stage, now
        try:
            async with self.deps.db.engine.begin() as conn:
                await conn.execute(text(
                    "update study_sets set stage = :s, progress_done = :d, progress_total = :t, "
                    "updated_at = now() where material_id = :id and status = 'running'"),
                    {"s": stage, "d": done, "t": total, "id": self.material_id})
        except Exception:
            log.warning("could not record study progress of %s", self.material_id,
                        exc_info=True)
        await _publish(self.deps, self.user_id, {
            "type": "study.progress", "material_id": str(self.material_id), "stage": stage,
            "done": done, "total": total})


async def _publish(deps: Deps, user_id: uuid.UUID, event: dict[str, Any]) -> None:
    try:
        await deps.publish(user_id, event)
    except Exception:  # events are best effort: the row says the same over REST
        log.warning("could not publish %s for user %s", event.get("type"), user_id,
                    exc_info=True)


async def _run(deps: Deps, material_id: uuid.UUID) -> bool:
    """One generation of what is queued; True when a newer request arrived meanwhile."""
    async with deps.db.engine.begin() as conn:
        row = (await conn.execute(text(
            "update study_sets set status = 'running', stage = 'reading', progress_done = 0, "
            "progress_total = 0, error = null, updated_at = now() "
            "where material_id = :id and status in ('queued', 'running') "
            "returning user_id, kinds, requested"), {"id": material_id})).first()
        if row is None:
            return False  # nothing queued: a duplicate message
        ready = await conn.scalar(text("select status = 'ready' from materials where id = :id"),
                                  {"id": material_id})
        text_of = await material.load(conn, material_id) if ready else None
    if text_of is None:
        raise StudyFailed(NO_TEXT)
    kinds = normalise_kinds(row.kinds)
    progress = _Progress(deps, material_id, row.user_id)
    await progress("reading", 0, 0)
    generated = await _generator(deps.settings).generate(text_of, kinds, progress)
    await progress("saving", 0, 1)
    try:
        async with deps.db.engine.begin() as conn:
            quiz_id, done = await _save(conn, material_id, row, kinds, generated)
    except IntegrityError:
        return False  # the material was deleted while we worked (its rows' foreign keys fail)
    if done.rowcount == 0:
        # Asked again meanwhile: what we made stays (it replaced the older tools); the newer
        # request runs next.
        return True
    event: dict[str, Any] = {
        "type": "study.ready", "material_id": str(material_id), "kinds": kinds,
        "generator": generated.generator}
    if "flashcards" in kinds:
        event["flashcards"] = len(generated.cards)
    if quiz_id is not None:
        event["quiz_id"] = str(quiz_id)
        event["questions"] = len(generated.questions)
    await _publish(deps, row.user_id, event)
    return False


def _generator(settings: Settings) -> Generator:
    name = generator_name(settings)
    if name == "offline":
        from chat_server.embeddings import get_embedder
        from chat_server.study.offline import OfflineGenerator

        return OfflineGenerator(settings, get_embedder(settings).embed)
    from chat_server.study.llm import LLMGenerator

    return LLMGenerator(settings, name)


async def _fail(deps: Deps, material_id: uuid.UUID, reason: str) -> None:
    try:
        async with deps.db.engine.begin() as conn:
            row = (await conn.execute(text(
                "update study_sets set status = 'failed', error = :e, stage = null, "
                "updated_at = now() where material_id = :id returning user_id"),
                {"e": reason, "id": material_id})).first()
    except Exception:
        # Left running: the recovery sweep runs it again.
        log.exception("could not mark the study of %s failed", material_id)
        return
    if row is not None:
        await _publish(deps, row.user_id, {"type": "study.failed",
                                           "material_id": str(material_id), "reason": reason})


async def recover(db: Database, kick: Kick, stale_s: float) -> int:
    """Kick generations left queued/running with no progress for `stale_s` seconds (a lost
    message, a killed worker); the advisory lock keeps a live one to itself."""
    async with db.engine.connect() as conn:
        rows = (await conn.execute(text(
            "select material_id from study_sets where status in ('queued', 'running') "
            "and updated_at < now() - make_interval(secs => :s) order by updated_at limit 1000"),
            {"s": stale_s})).all()
    for row in rows:
        await kick(row.material_id)
    return len(rows)
