"""Who may do what: every role and course check of the REST API is this one dependency.

Roles (users.role): `learner` (everyone, the default), `instructor` (may create courses),
`admin` (may do what any course's instructor may, and read the audit log). A course is
visible to its owner, admins and its enrolled learners; it is taught (edited, its materials,
invites, enrollments and aggregates) by its owner and admins. Anything a user may not see is
404, as if it did not exist; a role the user lacks for an action that names no course is 403.

The tutor (chat.send with a course) checks membership in its own SQL (tutor/store.py and
retrieval.py: `COURSE_MEMBER`), the same rule as `view` for everyone but admins: an admin who
is neither the owner nor enrolled manages a course without chatting in it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import Depends, Request
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from chat_server.deps import CurrentUser, SessionDep
from chat_server.errors import ApiError
from chat_server.models import Course, Enrollment, User, UserRole

Level = Literal["view", "teach"]
COURSE_NOT_FOUND = "Course not found."


@dataclass(frozen=True)
class Allowed:
    user: User
    course: Course | None = None

    @property
    def the_course(self) -> Course:
        assert self.course is not None, "a course-scoped route"
        return self.course


class Require:
    """`Depends(Require(...))`: the current user, with `roles` (one of them), and, with
    `course`, the `{course_id}` of the path at that level of access (404 otherwise)."""

    def __init__(self, *roles: UserRole, course: Level | None = None,
                 optional: bool = False) -> None:
        self.roles = {r.value for r in roles}
        self.course = course
        # The course comes from the query (`?course_id=`) and may be absent: the user's own
        # library (the material routes).
        self.optional = optional

    async def __call__(self, request: Request, user: CurrentUser,
                       session: SessionDep) -> Allowed:
        if self.roles and user.role not in self.roles:
            names = " or ".join(sorted(self.roles))
            raise ApiError(403, f"This needs the {names} role.", "role_required")
        if self.course is None:
            return Allowed(user)
        raw = (request.query_params.get("course_id") if self.optional
               else request.path_params.get("course_id"))
        if raw is None and self.optional:
            return Allowed(user)
        try:
            course_id = uuid.UUID(str(raw))
        except ValueError:
            raise ApiError(404, COURSE_NOT_FOUND) from None
        course = await session.get(Course, course_id)
        if course is None or not await may(session, user, course, self.course):
            raise ApiError(404, COURSE_NOT_FOUND)
        return Allowed(user, course)


async def may(session: AsyncSession, user: User, course: Course, level: Level) -> bool:
    """Whether `user` may `level` (view | teach) `course`: the rule, in one place."""
    if course.owner_id == user.id or user.role == UserRole.admin.value:
        return True
    if level == "teach":
        return False
    enrolled = await session.scalar(select(Enrollment.user_id).where(
        Enrollment.course_id == course.id, Enrollment.user_id == user.id))
    return enrolled is not None


Teaching = Annotated[Allowed, Depends(Require(course="teach"))]
Viewing = Annotated[Allowed, Depends(Require(course="view"))]
Instructor = Annotated[Allowed, Depends(Require(UserRole.instructor, UserRole.admin))]
Admin = Annotated[Allowed, Depends(Require(UserRole.admin))]
MaterialScope = Annotated[Allowed, Depends(Require(course="teach", optional=True))]
MaterialView = Annotated[Allowed, Depends(Require(course="view", optional=True))]
