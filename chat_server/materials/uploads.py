"""Receiving materials: a streamed multipart PDF, a YouTube link, a text; dedup by content hash.

The PDF goes to a temporary file under data_dir/uploads as it arrives (never whole in
memory), hashed and size-checked on the way, and is recognised by its magic bytes. A material
row is created (or the user's existing one with the same content returned) and the ingestion
task kicked. The file waits under data_dir/uploads for the worker (shared with workers).

No way out leaves a file behind: a failed, refused or abandoned upload removes its staged file,
a failed insert removes the moved one, and a sweep (at start and every
`upload_sweep_interval_s`) removes what a killed process left: files no material refers to,
older than `upload_orphan_grace_s`.
"""

from __future__ import annotations

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

from chat_server.errors import ApiError
from chat_server.materials.storage import upload_path, uploads_dir
from chat_server.models import Material, MaterialKind, MaterialStatus
from chat_server.settings import Settings
from chat_server.text import PROBLEM, clean_text

log = logging.getLogger(__name__)

PDF_MAGIC = b"%PDF-"
MAGIC_WINDOW = 1024  # the PDF spec allows the header anywhere in the first 1024 bytes


@dataclass
class Received:
    path: Path
    content_hash: str
    filename: str
    title: str | None


@dataclass
class _Seen:
    file_parts: int = 0
    size: int = 0
    head: bytes = b""


async def receive_pdf(request: Request, settings: Settings) -> Received:
    """Stream the multipart body's `file` part to disk; the optional `title` field too."""
    from python_multipart.multipart import MultipartParser, parse_options_header

    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or b"boundary" not in params:
        raise ApiError(415, "Upload the PDF as multipart/form-data in the field `file`.")
    limit = settings.max_upload_bytes
    too_large = f"This file is larger than the upload limit of {limit // (1024 * 1024)} MB."
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + 65_536:
        raise ApiError(413, too_large)

    directory = uploads_dir(settings)
    tmp = directory / f"incoming-{uuid.uuid4().hex}.part"
    digest = hashlib.sha256(b"pdf:")
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
                    if len(seen.head) < MAGIC_WINDOW:
                        seen.head += piece[: MAGIC_WINDOW - len(seen.head)]
                    digest.update(piece)
                    await out.write(piece)
                pending.clear()
            parser.finalize()
        if seen.file_parts == 0:
            raise ApiError(422, "Invalid request: file: the PDF must be sent in the field `file`.")
        if seen.size == 0:
            raise ApiError(422, "Invalid request: file: the file is empty.")
        if PDF_MAGIC not in seen.head:
            raise ApiError(415, "This file is not a PDF (it does not start with %PDF-).")
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
    return Received(tmp, digest.hexdigest(), filename, title)


def text_hash(body: str) -> str:
    return hashlib.sha256(b"text:" + body.encode("utf-8")).hexdigest()


def youtube_hash(video_id: str) -> str:
    return hashlib.sha256(b"youtube:" + video_id.encode()).hexdigest()


async def create_material(
    session: AsyncSession, settings: Settings, *, user_id: uuid.UUID, kind: MaterialKind,
    title: str, source: str, content_hash: str, staged: Path | None, suffix: str,
) -> tuple[Material, bool]:
    """Insert a queued material (moving `staged` into place), or return the user's existing
    one with the same content. A failed one is queued again. Returns (material, queued)."""
    material_id = uuid.uuid4()
    final: Path | None = None
    if staged is not None:
        final = upload_path(settings, material_id, suffix)
        os.replace(staged, final)
    try:
        return await _insert(session, settings, material_id=material_id, user_id=user_id,
                             kind=kind, title=title, source=source,
                             content_hash=content_hash, final=final, suffix=suffix)
    except BaseException:
        # Nothing refers to the file unless the statement committed: never leave it behind.
        if final is not None:
            final.unlink(missing_ok=True)
        raise


async def _insert(
    session: AsyncSession, settings: Settings, *, material_id: uuid.UUID, user_id: uuid.UUID,
    kind: MaterialKind, title: str, source: str, content_hash: str, final: Path | None,
    suffix: str,
) -> tuple[Material, bool]:
    inserted = await session.scalar(
        insert(Material).values(
            id=material_id, user_id=user_id, kind=kind, title=title[:300], source=source,
            status=MaterialStatus.queued, content_hash=content_hash,
            file_path=str(final) if final else None,
        ).on_conflict_do_nothing(constraint="uq_materials_user_content_hash")
        .returning(Material.id)
    )
    if inserted is not None:
        await session.commit()
        material = await session.get(Material, material_id)
        assert material is not None
        return material, True
    existing = await session.scalar(
        select(Material).where(Material.user_id == user_id, Material.content_hash == content_hash)
    )
    assert existing is not None, "the unique constraint said it exists"
    if existing.status != MaterialStatus.failed:
        if final is not None:  # a metadata operation, like the os.replace that put it there
            final.unlink(missing_ok=True)  # noqa: ASYNC240
        return existing, False
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
            updated_at=func.now(),
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
