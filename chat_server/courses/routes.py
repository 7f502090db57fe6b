"""Courses over REST: create and edit (with the tutor set-up), invites, enrollment, learners,
aggregates. Who may call what is courses/access.py (the `Teaching`/`Viewing`/`Instructor`
dependencies); every route here names one of them.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Query, Request, Response
from sqlalchemy import delete, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from chat_server.courses import audit
from chat_server.courses.access import Instructor, Teaching, Viewing
from chat_server.courses.schemas import (
    CodeIn,
    CourseCreate,
    CoursePublic,
    CourseStats,
    CourseUpdate,
    DayCount,
    EnrollmentPublic,
    InviteCreate,
    InviteCreated,
    InvitePreview,
    InvitePublic,
    LearnerPublic,
    MaterialCount,
    TutorSetup,
)
from chat_server.deps import CurrentUser, SessionDep
from chat_server.errors import ApiError
from chat_server.models import (
    Conversation,
    Course,
    CourseInvite,
    Enrollment,
    Material,
    Message,
    User,
    UserRole,
)
from chat_server.schemas import (
    MAX_OFFSET,
    ConversationPublic,
    ConversationWithMessages,
    MessagePublic,
)

log = logging.getLogger(__name__)

router = APIRouter(tags=["courses"])

BAD_CODE = "This invite code is unknown, expired or revoked."


def code_hash(code: str) -> str:
    return hashlib.sha256(code.strip().encode()).hexdigest()


async def course_public(session: AsyncSession, course: Course, user: User) -> CoursePublic:
    role = ("owner" if course.owner_id == user.id
            else "admin" if user.role == UserRole.admin.value else "learner")
    count = await session.scalar(select(func.count()).select_from(Material).where(
        Material.course_id == course.id))
    return CoursePublic(
        id=course.id, title=course.title, description=course.description,
        language=course.language, my_role=role, allow_own_materials=course.allow_own_materials,
        share_conversations=course.share_conversations, socratic=course.socratic,
        material_count=count or 0, created_at=course.created_at,
        tutor=TutorSetup.model_validate(course, from_attributes=True)
        if role != "learner" else None)


@router.post("/courses", status_code=201, response_model=CoursePublic,
             summary="Create a course (instructors and admins)")
async def create_course(body: CourseCreate, allowed: Instructor,
                        session: SessionDep) -> CoursePublic:
    course = Course(owner_id=allowed.user.id, title=body.title.strip(),
                    description=body.description, language=body.language)
    session.add(course)
    await session.commit()
    await session.refresh(course)
    return await course_public(session, course, allowed.user)


@router.get("/courses", response_model=list[CoursePublic],
            summary="The courses I teach or am enrolled in")
async def list_courses(user: CurrentUser, session: SessionDep) -> list[CoursePublic]:
    enrolled = select(Enrollment.course_id).where(Enrollment.user_id == user.id)
    rows = await session.scalars(select(Course).where(
        (Course.owner_id == user.id) | Course.id.in_(enrolled)).order_by(Course.created_at))
    return [await course_public(session, c, user) for c in rows]


@router.get("/courses/{course_id}", response_model=CoursePublic, summary="A course")
async def get_course(course_id: uuid.UUID, allowed: Viewing,
                     session: SessionDep) -> CoursePublic:
    return await course_public(session, allowed.the_course, allowed.user)


@router.patch("/courses/{course_id}", response_model=CoursePublic,
              summary="Edit a course and its tutor set-up")
async def update_course(course_id: uuid.UUID, body: CourseUpdate, allowed: Teaching,
                        session: SessionDep, request: Request) -> CoursePublic:
    course = allowed.the_course
    changes = body.model_dump(exclude_unset=True)
    provider = changes.get("provider")
    if provider is not None:
        tutor = getattr(request.app.state, "tutor", None)
        names = [p.name for p in tutor.providers] if tutor is not None else []
        if provider not in names:
            raise ApiError(422, f"Invalid request: provider: not configured here (configured: "
                           f"{', '.join(names) or 'none'}).")
    owner_id = changes.pop("owner_id", None)
    if owner_id is not None and owner_id != course.owner_id:
        if allowed.user.role != UserRole.admin.value:
            raise ApiError(403, "Only an admin hands a course over.", "role_required")
        heir = await session.get(User, owner_id)
        if heir is None or heir.role == UserRole.learner.value:
            raise ApiError(422, "Invalid request: owner_id: not an instructor or admin.")
        course.owner_id = heir.id
    for name, value in changes.items():
        if name in ("title", "description", "language", "socratic", "allow_own_materials",
                    "share_conversations", "instructions") and value is None:
            continue  # null for a required field: unchanged
        setattr(course, name, value.strip() if name == "title" else value)
    course.updated_at = datetime.now(UTC)
    await session.commit()
    await session.refresh(course)
    return await course_public(session, course, allowed.user)


@router.delete("/courses/{course_id}", status_code=204,
               summary="Delete a course, its materials and its invites; learners leave it")
async def delete_course(course_id: uuid.UUID, allowed: Teaching, session: SessionDep,
                        request: Request) -> Response:
    course = allowed.the_course
    materials = list(await session.scalars(select(Material.id).where(
        Material.course_id == course.id)))
    learners = list(await session.scalars(select(Enrollment.user_id).where(
        Enrollment.course_id == course.id)))
    await session.execute(delete(Course).where(Course.id == course.id))
    audit.record(session, audit.Action.course_deleted, actor=allowed.user.id, request=request,
                 target_type="course", target_id=course.id, materials=len(materials),
                 learners=len(learners))
    await session.commit()
    from chat_server.materials.storage import remove_files

    for material_id in materials:
        remove_files(request.app.state.settings, material_id)
    await announce_left(request, course.id, None, [*learners, course.owner_id])
    return Response(status_code=204)


# --- invites -------------------------------------------------------------------------------

async def _seats(session: AsyncSession, invite_ids: list[uuid.UUID]) -> dict[uuid.UUID, int]:
    rows = await session.execute(select(Enrollment.invite_id, func.count()).where(
        Enrollment.invite_id.in_(invite_ids)).group_by(Enrollment.invite_id))
    return {r[0]: r[1] for r in rows if r[0] is not None}


@router.post("/courses/{course_id}/invites", status_code=201, response_model=InviteCreated,
             summary="A new invite code (shown once)")
async def create_invite(course_id: uuid.UUID, body: InviteCreate, allowed: Teaching,
                        session: SessionDep, request: Request) -> InviteCreated:
    code = secrets.token_urlsafe(12)
    invite = CourseInvite(
        course_id=allowed.the_course.id, code_hash=code_hash(code), created_by=allowed.user.id,
        max_seats=body.max_seats,
        expires_at=(datetime.now(UTC) + timedelta(seconds=body.expires_in_s)
                    if body.expires_in_s is not None else None))
    session.add(invite)
    await session.commit()
    await session.refresh(invite)
    url = str(request.base_url).rstrip("/") + f"/#join={code}"
    return InviteCreated(**InvitePublic.model_validate(invite).model_dump(), code=code, url=url)


@router.get("/courses/{course_id}/invites", response_model=list[InvitePublic],
            summary="The course's invites (without their codes)")
async def list_invites(course_id: uuid.UUID, allowed: Teaching,
                       session: SessionDep) -> list[InvitePublic]:
    rows = list(await session.scalars(select(CourseInvite).where(
        CourseInvite.course_id == allowed.the_course.id).order_by(CourseInvite.created_at)))
    seats = await _seats(session, [r.id for r in rows])
    return [InvitePublic.model_validate(r).model_copy(update={"seats_used": seats.get(r.id, 0)})
            for r in rows]


@router.delete("/courses/{course_id}/invites/{invite_id}", status_code=204,
               summary="Revoke an invite (learners it enrolled stay)")
async def revoke_invite(course_id: uuid.UUID, invite_id: uuid.UUID, allowed: Teaching,
                        session: SessionDep) -> Response:
    invite = await session.scalar(select(CourseInvite).where(
        CourseInvite.id == invite_id, CourseInvite.course_id == allowed.the_course.id))
    if invite is None:
        raise ApiError(404, "Invite not found.")
    if invite.revoked_at is None:
        invite.revoked_at = datetime.now(UTC)
        await session.commit()
    return Response(status_code=204)


async def _usable_invite(session: AsyncSession, code: str, *, lock: bool) -> CourseInvite:
    query = select(CourseInvite).where(CourseInvite.code_hash == code_hash(code))
    invite = await session.scalar(query.with_for_update() if lock else query)
    now = datetime.now(UTC)
    if invite is None or invite.revoked_at is not None or (
            invite.expires_at is not None and invite.expires_at <= now):
        raise ApiError(404, BAD_CODE, "invite_invalid")
    return invite


@router.post("/enroll/preview", response_model=InvitePreview,
             summary="What an invite code enrolls in (shown before enrolling)")
async def preview(body: CodeIn, user: CurrentUser, session: SessionDep) -> InvitePreview:
    invite = await _usable_invite(session, body.code, lock=False)
    course = await session.get(Course, invite.course_id)
    assert course is not None
    return InvitePreview(course_id=course.id, title=course.title,
                         description=course.description, language=course.language,
                         share_conversations=course.share_conversations,
                         allow_own_materials=course.allow_own_materials)


@router.post("/enroll", status_code=201, response_model=EnrollmentPublic,
             responses={200: {"description": "Already enrolled: the enrollment."},
                        404: {"description": "Unknown, expired or revoked code."},
                        409: {"description": "No seat left."}},
             summary="Enroll with an invite code")
async def enroll(body: CodeIn, user: CurrentUser, session: SessionDep, request: Request,
                 response: Response) -> Enrollment:
    # The invite's row is locked until the commit: two last-seat enrollments can't both pass.
    invite = await _usable_invite(session, body.code, lock=True)
    existing = await session.get(Enrollment, (invite.course_id, user.id))
    if existing is not None:
        response.status_code = 200
        return existing
    course = await session.get(Course, invite.course_id)
    assert course is not None
    if course.owner_id == user.id:
        raise ApiError(409, "You teach this course.", "already_teaching")
    if invite.max_seats is not None:
        used = await session.scalar(select(func.count()).select_from(Enrollment).where(
            Enrollment.invite_id == invite.id))
        if (used or 0) >= invite.max_seats:
            raise ApiError(409, "This invite has no seat left.", "no_seats")
    enrollment = Enrollment(course_id=course.id, user_id=user.id, via="invite",
                            invite_id=invite.id,
                            shared_conversations=course.share_conversations)
    session.add(enrollment)
    audit.record(session, audit.Action.enrolled, actor=user.id, request=request,
                 target_type="course", target_id=course.id, via="invite",
                 invite_id=str(invite.id))
    await session.commit()
    await session.refresh(enrollment)
    return enrollment


# --- learners ------------------------------------------------------------------------------

@router.get("/courses/{course_id}/enrollments", response_model=list[LearnerPublic],
            summary="The course's learners")
async def list_learners(course_id: uuid.UUID, allowed: Teaching,
                        session: SessionDep) -> list[LearnerPublic]:
    rows = await session.execute(
        select(Enrollment, User).join(User, User.id == Enrollment.user_id)
        .where(Enrollment.course_id == allowed.the_course.id).order_by(Enrollment.created_at))
    return [LearnerPublic(**EnrollmentPublic.model_validate(e).model_dump(),
                          display_name=u.display_name, email=u.email) for e, u in rows]


async def _unenroll(session: AsyncSession, request: Request, actor: User,
                    course_id: uuid.UUID, user_id: uuid.UUID) -> Response:
    gone = await session.execute(delete(Enrollment).where(
        Enrollment.course_id == course_id, Enrollment.user_id == user_id))
    if not gone.rowcount:  # type: ignore[attr-defined]
        raise ApiError(404, "Enrollment not found.")
    audit.record(session, audit.Action.unenrolled, actor=actor.id, request=request,
                 target_type="course", target_id=course_id, user_id=str(user_id))
    await session.commit()
    await announce_left(request, course_id, [user_id], [user_id])
    return Response(status_code=204)


@router.delete("/courses/{course_id}/enrollments/{user_id}", status_code=204,
               summary="Remove a learner from the course (at once, on every socket)")
async def remove_learner(course_id: uuid.UUID, user_id: uuid.UUID, allowed: Teaching,
                         session: SessionDep, request: Request) -> Response:
    return await _unenroll(session, request, allowed.user, allowed.the_course.id, user_id)


@router.delete("/me/courses/{course_id}", status_code=204, summary="Leave a course")
async def leave_course(course_id: uuid.UUID, user: CurrentUser, session: SessionDep,
                       request: Request) -> Response:
    return await _unenroll(session, request, user, course_id, user.id)


async def announce_left(request: Request, course_id: uuid.UUID,
                        learners: list[uuid.UUID] | None, told: list[uuid.UUID]) -> None:
    """Stop the replies streaming for `learners` (None: everyone) in the course on every
    instance, and tell the users `told` (their widgets drop the course)."""
    bus: Any = getattr(request.app.state, "bus", None)
    if bus is None:
        return
    try:
        await bus.signal({"type": "course.left", "course_id": str(course_id),
                          "user_ids": [str(u) for u in learners] if learners is not None
                          else None})
        for user_id in told:
            await bus.publish(str(user_id), {"type": "course.left",
                                             "course_id": str(course_id)})
    except Exception as exc:  # the next send is refused anyway: membership is checked in SQL
        log.warning("could not announce leaving course %s: %s", course_id, type(exc).__name__)


@router.get("/courses/{course_id}/conversations", response_model=list[ConversationWithMessages],
            summary="Course conversations of learners who enrolled while the course shared "
            "them (empty otherwise)")
async def shared_conversations(course_id: uuid.UUID, allowed: Teaching,
                               session: SessionDep) -> list[ConversationWithMessages]:
    course = allowed.the_course
    if not course.share_conversations:  # turned off since: nobody's are shown any more
        return []
    consented = select(Enrollment.user_id).where(Enrollment.course_id == course.id,
                                                 Enrollment.shared_conversations)
    convs = list(await session.scalars(select(Conversation).where(
        Conversation.course_id == course.id, Conversation.user_id.in_(consented))
        .order_by(Conversation.updated_at.desc()).limit(200)))
    out = []
    for conv in convs:
        messages = await session.scalars(
            select(Message).where(Message.conversation_id == conv.id)
            .order_by(Message.created_at, Message.reply_to.is_not(None)))
        out.append(ConversationWithMessages(
            **ConversationPublic.model_validate(conv).model_dump(),
            messages=[MessagePublic.model_validate(m) for m in messages]))
    return out


# --- aggregates ----------------------------------------------------------------------------

_PER_DAY = text("""
select to_char(date_trunc('day', q.created_at at time zone 'UTC'), 'YYYY-MM-DD') as day,
       count(*) as questions,
       count(*) filter (where coalesce(jsonb_array_length(a.citations), 0) = 0
                        and a.status = 'complete') as uncovered
from messages q join conversations c on c.id = q.conversation_id
left join messages a on a.reply_to = q.id
where c.course_id = :cid and q.role = 'user'
group by 1 order by 1 desc limit :days
""")
_CITED = text("""
select m.id, m.title, count(*) as n
from messages a join conversations c on c.id = a.conversation_id,
     jsonb_array_elements(coalesce(a.citations, '[]'::jsonb)) as cit
join materials m on m.id::text = cit ->> 'material_id'
where c.course_id = :cid and a.role = 'assistant' and m.course_id = :cid
group by m.id, m.title order by n desc, m.title limit 10
""")


@router.get("/courses/{course_id}/stats", response_model=CourseStats,
            summary="Aggregates of the course's questions (never a learner's text)")
async def course_stats(course_id: uuid.UUID, allowed: Teaching, session: SessionDep,
                       days: int = Query(30, le=MAX_OFFSET)) -> CourseStats:
    cid = allowed.the_course.id
    per_day = [DayCount(day=r.day, questions=r.questions, uncovered=r.uncovered)
               for r in await session.execute(_PER_DAY, {"cid": cid, "days": max(1, days)})]
    cited = [MaterialCount(material_id=r.id, title=r.title, citations=r.n)
             for r in await session.execute(_CITED, {"cid": cid})]
    learners = await session.scalar(select(func.count()).select_from(Enrollment).where(
        Enrollment.course_id == cid))
    return CourseStats(learners=learners or 0, questions=sum(d.questions for d in per_day),
                       uncovered=sum(d.uncovered for d in per_day), per_day=per_day,
                       most_cited=cited)
