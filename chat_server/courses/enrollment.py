"""Enrollment by the host site: an embed token may carry a course and a role (auth.py calls
`apply_grants` after resolving the token's user). The host signed them with the embed secret,
so they are trusted like the identity itself; admin is never granted this way."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from chat_server.auth import EmbedGrants
from chat_server.courses import audit
from chat_server.models import Course, Enrollment, User, UserRole


async def apply_grants(session: AsyncSession, user: User, grants: EmbedGrants) -> None:
    """Set the granted role and enroll in the granted course, once (a token seen again
    changes nothing and records nothing)."""
    changed = False
    if grants.role is not None and user.role != grants.role \
            and user.role != UserRole.admin.value:
        audit.record(session, audit.Action.role_changed, actor=None, target_type="user",
                     target_id=user.id, old=user.role, new=grants.role, via="embed")
        user.role = grants.role
        changed = True
    if grants.course_id is not None:
        changed = await _enroll(session, user, grants) or changed
    if changed:
        await session.commit()


async def _enroll(session: AsyncSession, user: User, grants: EmbedGrants) -> bool:
    assert grants.course_id is not None
    known = await session.scalar(select(Enrollment.user_id).where(
        Enrollment.course_id == grants.course_id, Enrollment.user_id == user.id))
    if known is not None:
        return False
    course = await session.get(Course, grants.course_id)
    if course is None or course.owner_id == user.id:
        return False  # a course that does not exist (any more) is no error: the host's page
    try:
        async with session.begin_nested():
            session.add(Enrollment(course_id=course.id, user_id=user.id, via="embed",
                                   shared_conversations=course.share_conversations))
    except IntegrityError:
        return False  # enrolled at the same moment by another request
    audit.record(session, audit.Action.enrolled, actor=user.id, target_type="course",
                 target_id=course.id, via="embed")
    return True
