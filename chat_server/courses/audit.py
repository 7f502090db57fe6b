"""The audit log: security-relevant actions, appended in the transaction of the action itself
(so one action is one entry, and an action that rolls back leaves none), and read by admins.

An entry names who (actor id), what (action, target), when and from where (client address),
with a little detail (ids, roles, counts). Never a secret: no password, token, code or hash,
and no email (the actor's id says who; a deleted account's entries keep only that id).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from chat_server.courses.access import Admin
from chat_server.deps import SessionDep
from chat_server.models import AuditEntry
from chat_server.schemas import MAX_OFFSET


class Action(StrEnum):
    login_succeeded = "login.succeeded"
    login_failed = "login.failed"
    role_changed = "role.changed"
    enrolled = "enrollment.created"
    unenrolled = "enrollment.deleted"
    material_deleted = "material.deleted"
    course_deleted = "course.deleted"
    tokens_revoked = "tokens.revoked"
    account_deleted = "account.deleted"


def address(request: Request | None) -> str | None:
    if request is None or request.client is None:
        return None
    return request.client.host[:64]


def record(session: AsyncSession, action: Action, *, actor: uuid.UUID | None,
           request: Request | None = None, target_type: str | None = None,
           target_id: uuid.UUID | str | None = None, **detail: Any) -> None:
    """Add an entry to `session`: it is stored when the caller commits the action."""
    detail = {k: v for k, v in detail.items() if v is not None}
    session.add(AuditEntry(actor_id=actor, action=action.value, target_type=target_type,
                           target_id=str(target_id) if target_id is not None else None,
                           address=address(request), detail=detail or None))


router = APIRouter(tags=["admin"])


class AuditPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    at: datetime
    actor_id: uuid.UUID | None
    action: str
    target_type: str | None
    target_id: str | None
    address: str | None
    detail: dict[str, Any] | None


@router.get("/admin/audit", response_model=list[AuditPublic],
            summary="The audit log, newest first (admins only)")
async def audit_log(
    _: Admin, session: SessionDep,
    action: Action | None = Query(None, description="Only this action."),
    actor_id: uuid.UUID | None = Query(None, description="Only entries by this user."),
    target_id: str | None = Query(None, max_length=64, description="Only this target."),
    since: datetime | None = Query(None, description="At or after (ISO 8601)."),
    until: datetime | None = Query(None, description="Before (ISO 8601)."),
    limit: int = Query(100, ge=1, le=1000), before_id: int | None = Query(
        None, le=MAX_OFFSET, description="Page on: entries older than this id."),
) -> list[AuditEntry]:
    query = select(AuditEntry)
    if action is not None:
        query = query.where(AuditEntry.action == action.value)
    if actor_id is not None:
        query = query.where(AuditEntry.actor_id == actor_id)
    if target_id is not None:
        query = query.where(AuditEntry.target_id == target_id)
    if since is not None:
        query = query.where(AuditEntry.at >= since)
    if until is not None:
        query = query.where(AuditEntry.at < until)
    if before_id is not None:
        query = query.where(AuditEntry.id < before_id)
    return list(await session.scalars(query.order_by(AuditEntry.id.desc()).limit(limit)))
