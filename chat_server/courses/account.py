"""The account's life cycle: `GET /me/export` (everything of the user as one JSON archive) and
`DELETE /me` (everything of the user, rows and files).

Deleting the user row removes every row that refers to it: each table's foreign key to users
is ON DELETE CASCADE (conversations, messages, materials, chunks, refresh tokens, enrollments,
Telegram links and codes, study state), except `courses.owner_id` (RESTRICT): an instructor
hands their courses over or deletes them first, and is told so. Files (uploads waiting for
ingestion) are removed after the commit. The audit log keeps the deletion, by id only.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from sqlalchemy import delete, inspect, select
from sqlalchemy.ext.asyncio import AsyncSession

from chat_server.courses import audit
from chat_server.deps import CurrentUser, SessionDep
from chat_server.errors import ApiError
from chat_server.models import (
    Base,
    Conversation,
    Course,
    Enrollment,
    Material,
    Message,
    User,
)

log = logging.getLogger(__name__)

router = APIRouter(tags=["auth"])

# Never exported: secrets and what only the server needs.
_SECRET_COLUMNS = {"password_hash", "code_hash", "embedding", "tsv", "file_path"}
# Tables of the user's own data the archive lists (besides the user row); rows of other
# tables refer to the user only as a link (sessions, codes) and hold nothing of theirs.
_SKIP_TABLES = {"refresh_tokens", "telegram_link_codes", "audit_log", "meta"}


def _row(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for column in inspect(obj).mapper.column_attrs:
        if column.key in _SECRET_COLUMNS:
            continue
        value = getattr(obj, column.key)
        if isinstance(value, uuid.UUID | datetime):
            value = value.isoformat() if isinstance(value, datetime) else str(value)
        elif hasattr(value, "value"):
            value = value.value  # enums
        out[column.key] = value
    return out


def _user_tables() -> list[Any]:
    """Every mapped table with a `user_id` or `owner_id` column: new tables join the archive
    without a change here."""
    found = []
    for mapper in Base.registry.mappers:
        table: Any = mapper.local_table
        if table.name in _SKIP_TABLES or table.name == "users":
            continue
        for name in ("user_id", "owner_id"):
            if name in table.c:
                found.append((mapper.class_, getattr(mapper.class_, name)))
                break
    return found


@router.get("/me/export", summary="Everything of mine as one JSON archive")
async def export(user: CurrentUser, session: SessionDep) -> dict[str, Any]:
    archive: dict[str, Any] = {"format": "tutorhub-export-1",
                               "exported_at": datetime.now(UTC).isoformat(),
                               "user": _row(user)}
    for cls, column in sorted(_user_tables(), key=lambda t: t[0].__tablename__):
        query = select(cls).where(column == user.id)
        if cls is Message:
            query = query.order_by(Message.created_at)
        archive[cls.__tablename__] = [_row(r) for r in await session.scalars(query)]
    return archive


@router.delete("/me", status_code=204,
               responses={409: {"description": "The user owns courses (`owns_courses`)."}},
               summary="Delete my account and everything of mine")
async def delete_me(user: CurrentUser, session: SessionDep, request: Request) -> Response:
    owned = list(await session.scalars(select(Course.title).where(Course.owner_id == user.id)))
    if owned:
        raise ApiError(409, f"You own {len(owned)} course(s) ({', '.join(owned[:5])}): "
                       "hand them over or delete them first.", "owns_courses")
    materials = await delete_account(session, user.id)
    audit.record(session, audit.Action.account_deleted, actor=user.id, request=request,
                 target_type="user", target_id=user.id, materials=len(materials))
    await session.commit()
    await _after_delete(request, user.id, materials)
    return Response(status_code=204)


async def delete_account(session: AsyncSession, user_id: uuid.UUID) -> list[uuid.UUID]:
    """Delete the user's row (everything else goes with it: ON DELETE CASCADE); returns the
    ids of their materials, whose files the caller removes after the commit."""
    materials = list(await session.scalars(select(Material.id).where(
        Material.user_id == user_id)))
    # Explicit for the rows whose cascade runs through another table (messages through
    # conversations too): one order, whatever the foreign keys.
    await session.execute(delete(Enrollment).where(Enrollment.user_id == user_id))
    await session.execute(delete(Conversation).where(Conversation.user_id == user_id))
    await session.execute(delete(Material).where(Material.user_id == user_id))
    await session.execute(delete(User).where(User.id == user_id))
    return materials


async def _after_delete(request: Request, user_id: uuid.UUID,
                        materials: list[uuid.UUID]) -> None:
    from chat_server.materials.storage import remove_files

    for material_id in materials:
        remove_files(request.app.state.settings, material_id)
    bus: Any = getattr(request.app.state, "bus", None)
    if bus is None:
        return
    try:  # the user's open sockets close (4401): their tokens name a user that is gone
        await bus.signal({"type": "tokens.revoked", "user_id": str(user_id),
                          "generation": 2**31 - 1})
    except Exception as exc:
        log.warning("could not close the sockets of deleted user %s: %s", user_id,
                    type(exc).__name__)
