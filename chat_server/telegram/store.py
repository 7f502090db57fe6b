"""The bridge's own data: linked accounts, single-use link codes, per-chat conversation state,
and the quiz a chat is taking (`/quiz`).

Everything else the bridge touches (conversations, replies, materials) it reaches as a client,
through the public WebSocket protocol and REST. Link codes are stored as sha256 only: the
code itself exists in the deep link the user was handed, nowhere else.
"""

from __future__ import annotations

import enum
import hashlib
import secrets
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, literal, select, update
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncSession

from chat_server.auth import user_for_external_id
from chat_server.models import TelegramChat, TelegramLink, TelegramLinkCode, TelegramQuiz, User


class LinkResult(enum.Enum):
    linked = "linked"
    used = "code_used"
    expired = "code_expired"
    unknown = "code_unknown"


def _hash(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


async def create_code(session: AsyncSession, user_id: uuid.UUID, ttl_s: int
                      ) -> tuple[str, datetime]:
    """A new random code for `user_id` (22 URL-safe characters: a valid `start` parameter)."""
    code = secrets.token_urlsafe(16)
    expires_at = datetime.now(UTC) + timedelta(seconds=ttl_s)
    # Expired codes of anyone go with each new one, so the table holds live codes only.
    await session.execute(delete(TelegramLinkCode).where(
        TelegramLinkCode.expires_at < datetime.now(UTC) - timedelta(days=1)))
    session.add(TelegramLinkCode(code_hash=_hash(code), user_id=user_id, expires_at=expires_at))
    await session.commit()
    return code, expires_at


async def redeem(session: AsyncSession, code: str, telegram_user_id: int,
                 username: str | None) -> tuple[LinkResult, uuid.UUID | None]:
    """Use `code` once and bind the Telegram user to its Tutorhub user (replacing older links
    of either side)."""
    if not code or len(code) > 64:
        return LinkResult.unknown, None
    digest = _hash(code)
    user_id = await session.scalar(
        update(TelegramLinkCode)
        .where(TelegramLinkCode.code_hash == digest, TelegramLinkCode.used_at.is_(None),
               TelegramLinkCode.expires_at > datetime.now(UTC))
        .values(used_at=datetime.now(UTC)).returning(TelegramLinkCode.user_id))
    if user_id is None:
        used_at = await session.scalar(select(TelegramLinkCode.used_at).where(
            TelegramLinkCode.code_hash == digest))
        known = await session.scalar(select(TelegramLinkCode.code_hash).where(
            TelegramLinkCode.code_hash == digest))
        await session.rollback()
        if known is None:
            return LinkResult.unknown, None
        return (LinkResult.used if used_at is not None else LinkResult.expired), None
    await bind(session, telegram_user_id, user_id, username)
    return LinkResult.linked, user_id


async def bind(session: AsyncSession, telegram_user_id: int, user_id: uuid.UUID,
               username: str | None) -> None:
    old = await session.scalars(select(TelegramLink.user_id).where(
        (TelegramLink.telegram_user_id == telegram_user_id) | (TelegramLink.user_id == user_id)))
    # The chats of a user who loses this Telegram account must not keep receiving anything.
    for previous in set(old):
        await session.execute(delete(TelegramChat).where(TelegramChat.user_id == previous))
    await session.execute(delete(TelegramLink).where(
        (TelegramLink.telegram_user_id == telegram_user_id) | (TelegramLink.user_id == user_id)))
    generation = await session.scalar(select(User.token_generation).where(User.id == user_id))
    session.add(TelegramLink(telegram_user_id=telegram_user_id, user_id=user_id,
                             telegram_username=(username or None) and username[:64],
                             generation=generation or 0))
    await session.commit()


async def auto_account(session: AsyncSession, telegram_user_id: int, name: str | None,
                       username: str | None) -> uuid.UUID:
    """A Tutorhub account for a Telegram user seen for the first time, linked to it."""
    user = await user_for_external_id(session, f"telegram:{telegram_user_id}", name)
    await bind(session, telegram_user_id, user.id, username)
    return user.id


class LinkRevoked(Exception):
    """The user's password changed since the link was made: the link is gone."""


async def linked_user(session: AsyncSession, telegram_user_id: int) -> uuid.UUID | None:
    """The linked user, or None; LinkRevoked (and the link removed) if their password changed
    since, like every token issued before it."""
    row = (await session.execute(
        select(TelegramLink.user_id, TelegramLink.generation, User.token_generation)
        .join(User, User.id == TelegramLink.user_id)
        .where(TelegramLink.telegram_user_id == telegram_user_id))).first()
    if row is None:
        return None
    if row.generation != row.token_generation:
        await unlink(session, telegram_user_id=telegram_user_id)
        raise LinkRevoked
    return row.user_id  # type: ignore[no-any-return]


async def generation_of(session: AsyncSession, user_id: uuid.UUID) -> int:
    """The user's token generation: the bridge's tokens carry it (chat_server/auth.py)."""
    return int(await session.scalar(select(User.token_generation).where(User.id == user_id))
               or 0)


async def link_of(session: AsyncSession, user_id: uuid.UUID) -> TelegramLink | None:
    return await session.scalar(select(TelegramLink).where(TelegramLink.user_id == user_id))


async def unlink(session: AsyncSession, *, telegram_user_id: int | None = None,
                 user_id: uuid.UUID | None = None) -> uuid.UUID | None:
    """Remove the link (by either side) and the user's chat state; the user it belonged to."""
    cond = (TelegramLink.telegram_user_id == telegram_user_id if telegram_user_id is not None
            else TelegramLink.user_id == user_id)
    gone = await session.scalar(delete(TelegramLink).where(cond).returning(TelegramLink.user_id))
    if gone is not None:
        await session.execute(delete(TelegramChat).where(TelegramChat.user_id == gone))
    await session.commit()
    return gone


async def chat(session: AsyncSession, chat_id: int, user_id: uuid.UUID, language: str
               ) -> TelegramChat:
    """The chat's state for this user (created on first use; the language follows Telegram)."""
    await session.execute(
        insert(TelegramChat).values(chat_id=chat_id, user_id=user_id, language=language)
        .on_conflict_do_update(index_elements=["chat_id", "user_id"],
                               set_={"language": language}))
    await session.commit()
    row = await session.get(TelegramChat, (chat_id, user_id), populate_existing=True)
    assert row is not None
    return row


async def set_chat(session: AsyncSession, chat_id: int, user_id: uuid.UUID, **values: object
                   ) -> None:
    """Update conversation_id / socratic of a chat's state."""
    await session.execute(update(TelegramChat).where(
        TelegramChat.chat_id == chat_id, TelegramChat.user_id == user_id).values(
        **values, updated_at=datetime.now(UTC)))
    await session.commit()


async def private_chats_of(session: AsyncSession, user_id: uuid.UUID,
                           conversation_id: uuid.UUID) -> list[TelegramChat]:
    """The private chats whose current conversation is `conversation_id` (echo targets)."""
    rows = await session.scalars(select(TelegramChat).where(
        TelegramChat.user_id == user_id, TelegramChat.conversation_id == conversation_id,
        TelegramChat.chat_id > 0))
    return list(rows)


# --- /quiz: the quiz a chat is taking ---------------------------------------------------------


async def start_quiz(session: AsyncSession, chat_id: int, user_id: uuid.UUID,
                     quiz_id: uuid.UUID, typed: bool) -> None:
    """Begin (or begin again) `quiz_id` in the chat at its first question."""
    values = {"quiz_id": quiz_id, "position": 0, "answers": [], "typed": typed,
              "updated_at": datetime.now(UTC)}
    await session.execute(
        insert(TelegramQuiz).values(chat_id=chat_id, user_id=user_id, **values)
        .on_conflict_do_update(index_elements=["chat_id", "user_id"], set_=values))
    await session.commit()


async def quiz_of(session: AsyncSession, chat_id: int, user_id: uuid.UUID,
                  max_age_s: float | None = None) -> TelegramQuiz | None:
    """The quiz the chat is taking (None when none, or when idle for over `max_age_s`)."""
    row = await session.get(TelegramQuiz, (chat_id, user_id), populate_existing=True)
    if row is not None and max_age_s is not None and \
            row.updated_at < datetime.now(UTC) - timedelta(seconds=max_age_s):
        return None
    return row


async def answer_quiz(session: AsyncSession, chat_id: int, user_id: uuid.UUID,
                      quiz_id: uuid.UUID, position: int, answer: dict[str, object],
                      typed_next: bool) -> list[dict[str, object]] | None:
    """Record the answer to question `position` and move on; the answers so far, or None
    when that question is no longer the current one (answered already: a second press, or
    another bridge process got there first)."""
    row = await session.scalar(
        update(TelegramQuiz)
        .where(TelegramQuiz.chat_id == chat_id, TelegramQuiz.user_id == user_id,
               TelegramQuiz.quiz_id == quiz_id, TelegramQuiz.position == position)
        .values(position=position + 1, typed=typed_next, updated_at=datetime.now(UTC),
                answers=TelegramQuiz.answers.op("||")(literal([answer], JSONB)))
        .returning(TelegramQuiz.answers))
    await session.commit()
    return list(row) if row is not None else None


async def end_quiz(session: AsyncSession, chat_id: int, user_id: uuid.UUID,
                   quiz_id: uuid.UUID) -> list[dict[str, object]] | None:
    """Forget the chat's quiz; its answers, or None when it was ended already."""
    row = await session.scalar(
        delete(TelegramQuiz)
        .where(TelegramQuiz.chat_id == chat_id, TelegramQuiz.user_id == user_id,
               TelegramQuiz.quiz_id == quiz_id)
        .returning(TelegramQuiz.answers))
    await session.commit()
    return list(row) if row is not None else None
