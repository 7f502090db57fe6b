"""Materials: upload (a file, a YouTube link, a text), list, inspect, the original file, delete.

`?course_id=` on an upload or the list: a course's materials (uploaded by who teaches it, owned
by the course, read by its learners' tutor); without it, the user's own library. Who may do
that is courses/access.py's rule (404 for a course the user may not teach / see)."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import FileResponse
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from chat_server.courses import audit
from chat_server.courses.access import MaterialScope, MaterialView, may
from chat_server.deps import CurrentUser, SessionDep, SettingsDep
from chat_server.errors import ApiError
from chat_server.materials.formats import parse_video_id
from chat_server.materials.schemas import MaterialPublic, TextIn, YouTubeIn
from chat_server.materials.storage import download_name, kept_file, remove_files
from chat_server.materials.uploads import (
    add_file,
    check_quota,
    create_material,
    enqueue_or_later,
    receive_file,
    stage_text,
    text_hash,
    youtube_hash,
)
from chat_server.models import Course, Material, MaterialKind, User
from chat_server.schemas import MAX_OFFSET

log = logging.getLogger(__name__)

# JSON bodies are read as JSON also without a Content-Type, as before the body models (bearer
# tokens, no cookies: a cross-site form post carries no credentials).
# Shown by the browser (a PDF opens at its page); anything else is downloaded.
INLINE_TYPES = frozenset({"application/pdf", "image/png", "image/jpeg"})

router = APIRouter(prefix="/materials", tags=["materials"], strict_content_type=False)

_COURSE = Query(None, description="Upload into (list) this course's materials: who teaches it "
                "(its enrolled learners may list them).")
_QUEUED: dict[int | str, dict[str, Any]] = {
    202: {"description": "Accepted and queued for ingestion."},
    200: {"description": "The same content was uploaded before: the existing material."},
}

# The upload is read as a stream (never whole in memory), so FastAPI does not parse it; this
# describes it in the OpenAPI schema.
_UPLOAD_BODY: dict[str, Any] = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {
        "type": "object", "required": ["file"],
        "properties": {"file": {"type": "string", "format": "binary"},
                       "title": {"type": "string", "maxLength": 300}}}}}}}


async def _queued(request: Request, response: Response, material: Material, queued: bool
                  ) -> Material:
    if queued:
        response.status_code = 202
        await enqueue_or_later(request.app.state.broker, material)
    else:
        response.status_code = 200
    return material


@router.post("", response_model=MaterialPublic, status_code=202, responses=_QUEUED,
             summary="Upload a file (multipart field `file`, optional `title`): PDF, DOCX, "
                     "PPTX, Markdown, HTML, text, PNG or JPEG",
             openapi_extra=_UPLOAD_BODY)
async def upload_file(request: Request, response: Response, scope: MaterialScope,
                      session: SessionDep, settings: SettingsDep,
                      course_id: uuid.UUID | None = _COURSE) -> Material:
    user = scope.user
    declared = request.headers.get("content-length")
    if declared and declared.isdigit():  # over the quota already: refused before it is sent
        await check_quota(session, settings, user.id, int(declared) - 65_536)
        await session.commit()
    received = await receive_file(request, settings)
    material, queued = await add_file(
        session, settings, request.app.state.broker, user_id=user.id, staged=received.path,
        filename=received.filename, title=received.title, content_hash=received.content_hash,
        course_id=course_id)
    response.status_code = 202 if queued else 200
    return material


@router.post("/youtube", response_model=MaterialPublic, status_code=202, responses=_QUEUED,
             summary="Add a YouTube video's transcript (JSON `{url, title?}`)")
async def add_youtube(body: YouTubeIn, request: Request, response: Response,
                      scope: MaterialScope, session: SessionDep, settings: SettingsDep,
                      course_id: uuid.UUID | None = _COURSE) -> Material:
    try:
        video_id = parse_video_id(body.url)
    except ValueError as exc:
        raise ApiError(422, f"Invalid request: url: {exc}") from exc
    material, queued = await create_material(
        session, settings, user_id=scope.user.id, kind=MaterialKind.youtube,
        title=(body.title or "").strip() or f"YouTube video {video_id}", source=video_id,
        content_hash=youtube_hash(video_id), staged=None, suffix="", course_id=course_id)
    return await _queued(request, response, material, queued)


@router.post("/text", response_model=MaterialPublic, status_code=202, responses=_QUEUED,
             summary="Add a text (JSON `{title, text}`)")
async def add_text(body: TextIn, request: Request, response: Response, scope: MaterialScope,
                   session: SessionDep, settings: SettingsDep,
                   course_id: uuid.UUID | None = _COURSE) -> Material:
    # The body limit of this route (app.py) allows max_text_chars of any script.
    text = body.text.strip()
    if not text:
        raise ApiError(422, "Invalid request: text: the text is empty.")
    if len(text) > settings.max_text_chars:
        raise ApiError(413, f"This text is longer than {settings.max_text_chars} characters.")
    staged = await stage_text(settings, text)
    try:
        material, queued = await create_material(
            session, settings, user_id=scope.user.id, kind=MaterialKind.text,
            title=body.title.strip(), source="", content_hash=text_hash(text), staged=staged,
            suffix=".txt", course_id=course_id)
    finally:
        staged.unlink(missing_ok=True)
    return await _queued(request, response, material, queued)


async def get_owned_material(
    session: AsyncSession, user: User, material_id: uuid.UUID, level: str = "teach"
) -> Material:
    """One of the user's own materials, or of a course the user may `level` (view | teach);
    404 otherwise."""
    material = await session.get(Material, material_id)
    if material is not None:
        if material.course_id is None and material.user_id == user.id:
            return material
        course = (await session.get(Course, material.course_id)
                  if material.course_id is not None else None)
        if course is not None and await may(session, user, course,
                                            "view" if level == "view" else "teach"):
            return material
    raise ApiError(404, "Material not found.")


@router.get("", response_model=list[MaterialPublic],
            summary="List my materials (or a course's: ?course_id=)")
async def list_materials(
    scope: MaterialView, session: SessionDep, course_id: uuid.UUID | None = _COURSE,
    limit: int = Query(100, ge=1, le=500), offset: int = Query(0, ge=0, le=MAX_OFFSET),
) -> list[Material]:
    where = (Material.course_id == course_id if course_id is not None
             else (Material.user_id == scope.user.id) & Material.course_id.is_(None))
    rows = await session.scalars(
        select(Material).where(where)
        .order_by(Material.created_at.desc()).limit(limit).offset(offset)
    )
    return list(rows)


@router.get("/{material_id}", response_model=MaterialPublic,
            summary="A material with its ingestion status and progress")
async def get_material(material_id: uuid.UUID, user: CurrentUser, session: SessionDep) -> Material:
    return await get_owned_material(session, user, material_id, "view")


@router.get("/{material_id}/file", response_class=FileResponse,
            summary="The uploaded file itself, to its owner only",
            responses={200: {"description": "The file, with its type by content and its name.",
                             "content": {"application/octet-stream": {}}},
                       404: {"description": "No such material of yours, or no file kept."}})
async def get_file(material_id: uuid.UUID, user: CurrentUser, session: SessionDep,
                   settings: SettingsDep) -> FileResponse:
    material = await get_owned_material(session, user, material_id)
    path = kept_file(settings, material)
    if path is None or material.content_type is None:
        raise ApiError(404, "This material has no file kept (a YouTube video or a pasted text, "
                       "a failed upload, or originals are not kept on this server).")
    inline = material.content_type in INLINE_TYPES
    headers = {"Cache-Control": "private, no-cache", "X-Content-Type-Options": "nosniff"}
    if material.content_type != "application/pdf":
        # Never run as a page of ours, whatever it holds (an HTML file is the learner's own).
        headers["Content-Security-Policy"] = "sandbox; default-src 'none'"
    return FileResponse(path, media_type=material.content_type, headers=headers,
                        filename=download_name(material.source, path.suffix),
                        content_disposition_type="inline" if inline else "attachment")


@router.delete("/{material_id}", status_code=204, summary="Delete a material and its chunks")
async def delete_material(
    material_id: uuid.UUID, request: Request, user: CurrentUser, session: SessionDep
) -> Response:
    material = await get_owned_material(session, user, material_id)
    await session.execute(delete(Material).where(Material.id == material.id))
    audit.record(session, audit.Action.material_deleted, actor=user.id, request=request,
                 target_type="material", target_id=material.id,
                 course_id=str(material.course_id) if material.course_id else None)
    await session.commit()
    remove_files(request.app.state.settings, material.id)
    return Response(status_code=204)
