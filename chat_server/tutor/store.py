"""The tutor's SQL: every statement of the chat hot path, on plain asyncpg (Database.pool).

One `chat.send` is one statement (its conversation, both messages, whether the learner has
passages in scope, and the history, in one round trip and one implicit transaction); the
ends of the replies that end together are one statement. The REST API reads the same rows
through SQLAlchemy (models.py is the schema); here each statement is written out so that a
message costs ~0.2 ms of client CPU per round trip instead of a SQLAlchemy session's ~6 ms.

One streaming reply per conversation is the database's rule (the partial unique index
`uq_messages_one_streaming`, migration 0002): a second send into a conversation whose reply
still streams fails its insert on any instance, with no lock or look-up before each send.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from chat_server.retrieval import COURSE_MEMBER, chunk_scope
from chat_server.tutor.errors import TutorError

HISTORY_ROWS = 200  # at most, however short the turns; prompt.trim_history cuts to the budget
CLIENT_ID_CONSTRAINT = "uq_messages_user_client_id"
STREAMING_CONSTRAINT = "uq_messages_one_streaming"

# $1 user, $2 client id, $3 message id, $4 text, $5 reply id, $6 provider, $7 model,
# $8 material ids in scope (null: all), $9 history characters (see `send`), $10 whether the
# learner's own materials are in scope, $11 the course (null: none), $12 conversation id,
# $13 socratic (null: keep), $14 title (new conversations only).
_SEND = """
with conv as ({conv}),
ins as (
    insert into messages (id, conversation_id, user_id, role, content, status, client_id,
                          reply_to, provider, model, input_tokens, output_tokens, created_at)
    select $3::uuid, conv.id, $1::uuid, 'user'::message_role, $4::text,
           'complete'::message_status, $2::text, null::uuid, null::text, null::text, 0, 0,
           now() from conv
    union all
    -- now() is the transaction's start: clock_timestamp() makes the answer sort after.
    select $5::uuid, conv.id, $1::uuid, 'assistant'::message_role, '',
           'streaming'::message_status, null, $3::uuid, $6::text, $7::text, 0, 0,
           clock_timestamp() from conv
)
select conv.id, conv.socratic,
       exists(select 1 from chunks c where {scope}
              and ($8::uuid[] is null or c.material_id = any($8::uuid[]))) as has_chunks,
       -- The statement's snapshot predates `ins`: the history is everything before this send.
       -- Newest first; on a created_at tie the answer (it has reply_to) is the newer. Rows
       -- after the newer ones already hold $9 characters cannot reach the prompt.
       array(select row(x.role, x.content) from (
                 select y.role, y.content, row_number() over newest as n,
                        sum(length(y.content)) over newest - length(y.content) as before
                 from (select h.role::text as role, h.content, h.created_at, h.reply_to
                       from messages h
                       where h.conversation_id = conv.id and h.user_id = $1
                             and h.content <> ''
                       order by h.created_at desc, h.reply_to is null asc
                       limit {history}) y
                 window newest as (order by y.created_at desc, y.reply_to is null asc
                                   rows between unbounded preceding and current row)) x
             where x.before <= $9
             order by x.n) as history
from conv
"""
_NEW_CONVERSATION = ("insert into conversations (id, user_id, title, socratic, course_id, "
                     "created_at, updated_at) values ($12, $1, $14, coalesce($13, false), $11, "
                     "now(), now()) returning id, socratic")
_EXISTING_CONVERSATION = ("update conversations set updated_at = now(), "
                          "socratic = coalesce($13, socratic) where id = $12 and user_id = $1 "
                          "and course_id is not distinct from $11 returning id, socratic")

_SCOPE = chunk_scope("c", "$1::uuid", "$10::boolean", "$11::uuid")
SEND_NEW = _SEND.format(conv=_NEW_CONVERSATION, history=HISTORY_ROWS, scope=_SCOPE)
SEND_EXISTING = _SEND.format(conv=_EXISTING_CONVERSATION, history=HISTORY_ROWS, scope=_SCOPE)


@dataclass(frozen=True)
class CourseSetup:
    """A course's tutor set-up, as a send into it uses it."""

    id: uuid.UUID
    instructions: str
    socratic: bool
    provider: str | None
    model: str | None
    allow_own_materials: bool


_COURSE = ("select co.id, co.instructions, co.socratic, co.provider, co.model, "
           "co.allow_own_materials from courses co where co.id = $2 and "
           + COURSE_MEMBER.format(cid="co.id", uid="$1"))
_CONVERSATION_COURSE = ("select course_id from conversations where id = $2 and user_id = $1")


async def course_of(pool: asyncpg.Pool, user_id: uuid.UUID, course_id: uuid.UUID | None,
                    conversation_id: uuid.UUID | None) -> CourseSetup | None:
    """The course a send goes to (the frame's, or its conversation's) with its set-up; None:
    the learner's own library. TutorError `course_not_found` when the learner is not (or no
    longer) in it, `invalid_request` when the conversation belongs to another course."""
    async with pool.acquire() as conn:
        if conversation_id is not None:
            found = await conn.fetchrow(_CONVERSATION_COURSE, user_id, conversation_id)
            if found is None:
                raise TutorError("conversation_not_found", "Conversation not found.",
                                 conversation_id=str(conversation_id))
            if course_id is not None and found["course_id"] != course_id:
                raise TutorError("invalid_request",
                                 "This conversation is not in that course: start a new one.")
            course_id = found["course_id"]
        if course_id is None:
            return None
        row = await conn.fetchrow(_COURSE, user_id, course_id)
    if row is None:
        raise TutorError("course_not_found", "Course not found (or you are not enrolled in it).",
                         course_id=str(course_id))
    return CourseSetup(**dict(row))


@dataclass
class Sent:
    conversation_id: uuid.UUID
    socratic: bool
    has_chunks: bool
    history: list[tuple[str, str]]  # (role, content), oldest first


class Busy(Exception):
    """The conversation already has a streaming reply (the unique index said so)."""


async def send(pool: asyncpg.Pool, *, user_id: uuid.UUID, client_id: str, text: str,
               message_id: uuid.UUID, reply_id: uuid.UUID, provider: str,
               model: str | None, material_ids: list[uuid.UUID] | None,
               conversation_id: uuid.UUID | None, socratic: bool | None,
               title: str, history_chars: int, course: CourseSetup | None = None
               ) -> Sent | None:
    """Store a user message and its `streaming` answer. None: a new client id that is already
    known (a resend; the caller re-acks). Raises Busy, or TutorError for a missing
    conversation.

    The history holds the newest earlier turns until their text passes `history_chars`
    characters: a prompt budget of B tokens never takes more than 4·B characters of it
    (prompt.estimate_tokens counts at least one token per 4 characters), so a long
    conversation does not read all its turns back on every send."""
    args: list[Any] = [user_id, client_id, message_id, text, reply_id, provider, model,
                       material_ids, history_chars,
                       course is None or course.allow_own_materials,
                       course.id if course is not None else None]
    if conversation_id is None:
        sql, args = SEND_NEW, [*args, uuid.uuid4(), socratic, title]
    else:
        sql, args = SEND_EXISTING, [*args, conversation_id, socratic]
    try:
        row = await pool.fetchrow(sql, *args)
    except asyncpg.UniqueViolationError as err:
        if err.constraint_name == CLIENT_ID_CONSTRAINT:
            return None
        if err.constraint_name == STREAMING_CONSTRAINT:
            raise Busy from err
        raise
    if row is None:
        raise TutorError("conversation_not_found", "Conversation not found.",
                         conversation_id=str(conversation_id))
    history = [(role, content) for role, content in reversed(row["history"])]
    return Sent(row["id"], row["socratic"], row["has_chunks"], history)


async def discard(pool: asyncpg.Pool, user_id: uuid.UUID, message_ids: list[uuid.UUID],
                  conversation_id: uuid.UUID | None) -> None:
    """Undo a send nobody was told of: its messages, and `conversation_id` (the conversation
    the send started) if nothing else is in it."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("delete from messages where user_id = $1 and id = any($2::uuid[])",
                           user_id, message_ids)
        if conversation_id is not None:
            await conn.execute(
                "delete from conversations c where c.id = $1 and c.user_id = $2 and not exists "
                "(select 1 from messages m where m.conversation_id = c.id)",
                conversation_id, user_id)


# A `streaming` reply whose heartbeat (or, before its first one, its start) is older than
# $1 seconds: the process streaming it died, nothing will ever end it.
_ORPHAN = ("status = 'streaming' and coalesce(heartbeat_at, created_at) "
           "< now() - make_interval(secs => $1)")
_INTERRUPT = ("update messages set status = 'interrupted', finished_at = now(), "
              "error = 'interrupted: the server streaming this reply stopped' where ")


async def streaming_reply(pool: asyncpg.Pool, conversation_id: uuid.UUID,
                          stale_after_s: float) -> uuid.UUID | None:
    """The conversation's streaming reply, after marking it `interrupted` if it is an orphan.
    None: no live one."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(_INTERRUPT + _ORPHAN + " and conversation_id = $2",
                           float(stale_after_s), conversation_id)
        found: uuid.UUID | None = await conn.fetchval(
            "select id from messages where conversation_id = $1 and status = 'streaming'",
            conversation_id)
        return found


async def interrupt_orphans(pool: asyncpg.Pool, stale_after_s: float) -> int:
    """Mark every orphaned `streaming` reply `interrupted` (its partial text is kept); how many."""
    status = await pool.execute(_INTERRUPT + _ORPHAN, float(stale_after_s))
    return int(status.rsplit(" ", 1)[-1])


async def tokens_used_since(pool: asyncpg.Pool, user_id: uuid.UUID, since: datetime) -> int:
    used = await pool.fetchval(
        "select coalesce(sum(input_tokens + output_tokens), 0) from messages "
        "where user_id = $1 and created_at >= $2", user_id, since)
    return int(used or 0)


def utc_midnight() -> datetime:
    return datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


@dataclass
class Known:
    message_id: uuid.UUID
    conversation_id: uuid.UUID
    reply_id: uuid.UUID | None


async def known_send(pool: asyncpg.Pool, user_id: uuid.UUID, client_id: str) -> Known | None:
    """The message a client id already stored, and its answer (a resend is acked with them)."""
    row = await pool.fetchrow(
        "select m.id, m.conversation_id, (select r.id from messages r where r.reply_to = m.id "
        "and r.role = 'assistant' limit 1) as reply_id from messages m "
        "where m.user_id = $1 and m.client_id = $2", user_id, client_id)
    return None if row is None else Known(row["id"], row["conversation_id"], row["reply_id"])


async def reply_status(pool: asyncpg.Pool, user_id: uuid.UUID, reply_id: uuid.UUID) -> str | None:
    """The status of one of the user's replies (None: no such reply of theirs)."""
    status: str | None = await pool.fetchval(
        "select status::text from messages where id = $1 and user_id = $2 "
        "and role = 'assistant'", reply_id, user_id)
    return status


@dataclass(slots=True)
class Finished:
    """One reply's end as stored: its final text, status and accounting."""

    reply_id: uuid.UUID
    text: str
    status: str
    citations: list[dict[str, Any]]
    usage: dict[str, Any]
    input_tokens: int
    output_tokens: int
    provider: str | None
    model: str | None
    error: str | None


async def finish_many(pool: asyncpg.Pool, ends: list[Finished]) -> None:
    """The ends of several replies in one statement (one commit: see chat_server.batch)."""
    await pool.execute(
        "update messages m set content = v.content, status = v.status::message_status, "
        "citations = v.citations::jsonb, usage = v.usage::jsonb, input_tokens = v.inp, "
        "output_tokens = v.outp, provider = v.provider, model = v.model, error = v.error, "
        "finished_at = now() "
        "from unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int[], "
        "$7::int[], $8::text[], $9::text[], $10::text[]) "
        "as v(id, content, status, citations, usage, inp, outp, provider, model, error) "
        "where m.id = v.id",
        [e.reply_id for e in ends], [e.text for e in ends], [e.status for e in ends],
        [json.dumps(e.citations, ensure_ascii=False) for e in ends],
        [json.dumps(e.usage, ensure_ascii=False) for e in ends],
        [e.input_tokens for e in ends], [e.output_tokens for e in ends],
        [e.provider for e in ends], [e.model for e in ends], [e.error for e in ends])


def refused(exc: Exception) -> bool:
    """Postgres answered and refused the statement (its data), as opposed to being
    unreachable: worth trying its rows one by one."""
    return isinstance(exc, asyncpg.PostgresError)


async def checkpoint(pool: asyncpg.Pool, ids: list[uuid.UUID], texts: list[str | None]) -> None:
    """The heartbeat of streaming replies and their text so far (None: unchanged), one
    statement for all; `status = 'streaming'` keeps a reply that ended meanwhile (its final
    text is stored) as it is."""
    await pool.execute(
        "update messages m set content = coalesce(v.content, m.content), heartbeat_at = now() "
        "from unnest($1::uuid[], $2::text[]) as v(id, content) "
        "where m.id = v.id and m.status = 'streaming'", ids, texts)
