"""Receiving materials: a streamed multipart file, a YouTube link, a text; dedup by content hash.

The file goes to a temporary file under data_dir/uploads as it arrives (never whole in memory),
hashed and size-checked on the way, and is recognised by its content (formats/detect.py). A
material row is created (or the user's existing one with the same content returned) within the
user's storage quota, and the ingestion task queued. The file waits under data_dir/uploads for
the worker (shared with workers), and stays there as the kept original (`keep_originals`).

No way out leaves a file behind: a failed, refused or abandoned upload removes its staged file,
a failed insert removes the moved one, and a sweep (at start and every
`upload_sweep_interval_s`) removes what a killed process left: files no material refers to,
older than `upload_orphan_grace_s`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from fastapi import Request
from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import func
from starlette.exceptions import HTTPException
from taskiq import AsyncBroker

from chat_server.errors import ApiError
from chat_server.jobs import enqueue_ingestion
from chat_server.materials.formats.detect import Refused, sniff
from chat_server.materials.storage import upload_path, uploads_dir
from chat_server.models import Material, MaterialKind, MaterialStatus, User
from chat_server.settings import Settings
from chat_server.text import PROBLEM, clean_text

log = logging.getLogger(__name__)

@dataclass
class Received:
    path: Path
    content_hash: str
    filename: str
    title: str | None
    size: int


@dataclass
class _Seen:
    file_parts: int = 0
    size: int = 0


def _hash() -> Any:
    # The "pdf:" prefix is from when only PDFs were uploaded: files uploaded since keep their
    # hashes, so the same file uploaded again is still found.
    return hashlib.sha256(b"pdf:")


def staged_path(settings: Settings) -> Path:
    """Where an incoming file is written before it is a material's (the sweep's `incoming-`)."""
    return uploads_dir(settings) / f"incoming-{uuid.uuid4().hex}.part"


async def receive_file(request: Request, settings: Settings) -> Received:
    """Stream the multipart body's `file` part to disk; the optional `title` field too."""
    from python_multipart.multipart import MultipartParser, parse_options_header

    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or b"boundary" not in params:
        raise ApiError(415, "Upload the file as multipart/form-data in the field `file`.")
    limit = settings.max_upload_bytes
    too_large = f"This file is larger than the upload limit of {limit // (1024 * 1024)} MB."
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + 65_536:
        raise ApiError(413, too_large)

    tmp = staged_path(settings)
    digest = _hash()
    state: dict[str, Any] = {"name": None, "filename": None, "field": b"", "header": b"",
                             "value": b"", "disposition": b""}
    fields: dict[str, bytes] = {}
    pending: list[bytes] = []
    seen = _Seen()

    def on_part_begin() -> None:
        state.update(name=None, filename=None, disposition=b"")

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["header"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["value"] += data[start:end]

    def on_header_end() -> None:
        if state["header"].lower() == b"content-disposition":
            _, disp = parse_options_header(state["value"])
            state["name"] = disp.get(b"name", b"").decode("utf-8", "replace")
            raw = disp.get(b"filename")
            state["filename"] = raw.decode("utf-8", "replace") if raw is not None else None
            if state["name"] == "file":
                seen.file_parts += 1
        state["header"], state["value"] = b"", b""

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if state["name"] == "file" and seen.file_parts == 1:
            pending.append(data[start:end])
        elif state["name"] == "title":
            fields["title"] = (fields.get("title", b"") + data[start:end])[:4096]

    def on_part_end() -> None:
        if state["name"] == "file" and seen.file_parts == 1:
            state["filename_final"] = state["filename"]

    parser = MultipartParser(params[b"boundary"], {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field,
        "on_header_value": on_header_value, "on_header_end": on_header_end,
        "on_part_data": on_part_data, "on_part_end": on_part_end,
    })
    ok = False
    try:
        async with await anyio.open_file(tmp, "wb") as out:
            async for body in request.stream():
                parser.write(body)
                for piece in pending:
                    seen.size += len(piece)
                    if seen.size > limit:
                        raise ApiError(413, too_large)
                    digest.update(piece)
                    await out.write(piece)
                pending.clear()
            parser.finalize()
        if seen.file_parts == 0:
            raise ApiError(422, "Invalid request: file: the file must be sent in the field `file`.")
        if seen.size == 0:
            raise ApiError(422, "Invalid request: file: the file is empty.")
        title = fields.get("title", b"").decode("utf-8", "replace").strip() or None
        filename = state.get("filename_final") or ""
        for name, value in (("title", title), ("filename", filename)):
            if value is not None and not clean_text(value):
                raise ApiError(422, f"Invalid request: {name}: {PROBLEM}")
        ok = True
    except (ApiError, HTTPException):  # HTTPException: the body limit (413)
        raise
    except Exception as exc:  # a broken body, or the client went away mid-upload
        log.info("bad multipart upload: %s", type(exc).__name__)
        raise ApiError(400, "The upload could not be read as multipart/form-data.") from exc
    finally:
        if not ok:  # every way out but success (cancellation too) removes the staged file
            tmp.unlink(missing_ok=True)
    return Received(tmp, digest.hexdigest(), filename, title, seen.size)


def text_hash(body: str) -> str:
    return hashlib.sha256(b"text:" + body.encode("utf-8")).hexdigest()


def youtube_hash(video_id: str) -> str:
    return hashlib.sha256(b"youtube:" + video_id.encode()).hexdigest()


async def add_file(
    session: AsyncSession, settings: Settings, broker: AsyncBroker, *, user_id: uuid.UUID,
    staged: Path, filename: str, title: str | None = None, content_hash: str | None = None,
    course_id: uuid.UUID | None = None,
) -> tuple[Material, bool]:
    """Add a file as a material of `user_id` (of `course_id` when given) and queue its
    ingestion: what POST /materials does once the body is on disk, and what another way in (a
    bot with a downloaded file) calls.

    `staged` must lie under data_dir/uploads (`staged_path`): it is moved into place, or
    removed when refused (ApiError: 415/422 for what we do not read, 413 over the storage
    quota). Returns (material, queued): not queued when the user has this content already."""
    try:
        if content_hash is None:
            content_hash = await asyncio.to_thread(_file_hash, staged)
        size = await asyncio.to_thread(os.path.getsize, staged)
        try:
            found = await asyncio.to_thread(sniff, staged, filename, settings)
        except Refused as exc:
            raise ApiError(exc.status, exc.message, exc.code) from exc
        name = Path(filename).name
        title = (title or "").strip() or Path(name).stem.strip() or f"Untitled {found.name}"
        material, queued = await create_material(
            session, settings, user_id=user_id, kind=found.kind, title=title, source=name,
            content_hash=content_hash, staged=staged, suffix=found.suffix,
            content_type=found.content_type, file_size=size, course_id=course_id)
    finally:
        staged.unlink(missing_ok=True)  # noqa: ASYNC240  # moved away unless refused
    if queued:
        await enqueue_or_later(broker, material)
    return material, queued


async def enqueue_or_later(broker: AsyncBroker, material: Material) -> None:
    try:
        await enqueue_ingestion(broker, material.id)
    except Exception:  # the recovery sweep queues it again once the broker is back
        log.warning("could not queue %s", material.id, exc_info=True)


def _file_hash(path: Path) -> str:
    digest = _hash()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


async def stored_bytes(session: AsyncSession, user_id: uuid.UUID) -> int:
    """Bytes of the user's files on disk: what the storage quota counts."""
    used = await session.scalar(
        select(func.coalesce(func.sum(Material.file_size), 0)).where(Material.user_id == user_id))
    return int(used or 0)


def _mb(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB"


async def check_quota(session: AsyncSession, settings: Settings, user_id: uuid.UUID,
                      size: int) -> None:
    """413 `storage_quota_exceeded` when `size` more bytes would not fit the user's quota."""
    quota = settings.storage_quota_bytes
    if quota <= 0 or size <= 0:
        return
    used = await stored_bytes(session, user_id)
    if used + size > quota:
        raise ApiError(
            413, f"This file ({_mb(size)}) does not fit your storage: you keep {_mb(used)} of "
            f"files and may keep {_mb(quota)}. Delete materials you no longer need, then upload "
            "it again.", "storage_quota_exceeded")


async def create_material(
    session: AsyncSession, settings: Settings, *, user_id: uuid.UUID, kind: MaterialKind,
    title: str, source: str, content_hash: str, staged: Path | None, suffix: str,
    content_type: str | None = None, file_size: int = 0, course_id: uuid.UUID | None = None,
) -> tuple[Material, bool]:
    """Insert a queued material (moving `staged` into place), or return the user's existing
    one with the same content (in the same course, or in their own library when `course_id`
    is None). A failed one is queued again. A file that counts (`file_size`)
    must fit the user's storage quota. Returns (material, queued)."""
    material_id = uuid.uuid4()
    final: Path | None = None
    if staged is not None:
        final = upload_path(settings, material_id, suffix)
        os.replace(staged, final)
    try:
        return await _insert(session, settings, material_id=material_id, user_id=user_id,
                             kind=kind, title=title, source=source,
                             content_hash=content_hash, final=final, suffix=suffix,
                             content_type=content_type, file_size=file_size,
                             course_id=course_id)
    except BaseException:
        # Nothing refers to the file unless the statement committed: never leave it behind.
        if final is not None:
            final.unlink(missing_ok=True)
        raise


async def _insert(
    session: AsyncSession, settings: Settings, *, material_id: uuid.UUID, user_id: uuid.UUID,
    kind: MaterialKind, title: str, source: str, content_hash: str, final: Path | None,
    suffix: str, content_type: str | None, file_size: int, course_id: uuid.UUID | None,
) -> tuple[Material, bool]:
    # The user's row is locked until the commit: uploads of one user are counted against the
    # quota one at a time, so two at once cannot both fit its last bytes.
    await session.execute(select(User.id).where(User.id == user_id).with_for_update())
    existing = await session.scalar(
        select(Material).where(Material.user_id == user_id, Material.content_hash == content_hash,
                               Material.course_id.is_not_distinct_from(course_id))
    )
    if existing is not None and existing.status != MaterialStatus.failed:
        await session.commit()
        if final is not None:  # a metadata operation, like the os.replace that put it there
            final.unlink(missing_ok=True)  # noqa: ASYNC240
        return existing, False
    await check_quota(session, settings, user_id, file_size)
    if existing is None:
        await session.execute(
            insert(Material).values(
                id=material_id, user_id=user_id, kind=kind, title=title[:300], source=source,
                status=MaterialStatus.queued, content_hash=content_hash,
                file_path=str(final) if final else None, content_type=content_type,
                file_size=file_size, course_id=course_id,
            )
        )
        await session.commit()
        material = await session.get(Material, material_id)
        assert material is not None
        return material, True
    # Same content after a failure: try again (a video may have captions now). The file
    # takes the existing material's name; if the update fails, the sweep finds it unreferenced.
    moved: Path | None = None
    if final is not None:
        moved = upload_path(settings, existing.id, suffix)
        os.replace(final, moved)
    await session.execute(
        update(Material).where(Material.id == existing.id).values(
            status=MaterialStatus.queued, error=None, stage=None, progress_done=0,
            progress_total=0, file_path=str(moved) if moved else existing.file_path,
            content_type=content_type, file_size=file_size, updated_at=func.now(),
        )
    )
    await session.commit()
    await session.refresh(existing)
    return existing, True


async def stage_text(settings: Settings, body: str) -> Path:
    tmp = uploads_dir(settings) / f"incoming-{uuid.uuid4().hex}.part"
    async with await anyio.open_file(tmp, "w", encoding="utf-8") as out:
        await out.write(body)
    return tmp
