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

import asyncio
import hashlib
import json
import logging
import os
import re
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from fastapi import FastAPI, Request
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import func
from starlette.exceptions import HTTPException

from chat_server.db import Database
from chat_server.errors import ApiError
from chat_server.materials.ingest import upload_path
from chat_server.models import Material, MaterialKind, MaterialStatus
from chat_server.settings import Settings
from chat_server.text import PROBLEM, SafeStr, clean_text

log = logging.getLogger(__name__)

PDF_MAGIC = b"%PDF-"
MAGIC_WINDOW = 1024  # the PDF spec allows the header anywhere in the first 1024 bytes


class YouTubeIn(BaseModel):
    url: SafeStr = Field(min_length=1, max_length=2048,
                         description="A YouTube link or a video id.")
    title: SafeStr | None = Field(None, max_length=300)


class TextIn(BaseModel):
    title: SafeStr = Field(min_length=1, max_length=300)
    text: SafeStr = Field(min_length=1)


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


def uploads_dir(settings: Settings) -> Path:
    path = settings.data_dir / "uploads"
    path.mkdir(parents=True, exist_ok=True)
    return path


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


async def read_capped_json(request: Request, max_bytes: int) -> Any:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise ApiError(413, f"Request body is larger than {max_bytes} bytes.")
    body = bytearray()
    async for piece in request.stream():
        body += piece
        if len(body) > max_bytes:
            raise ApiError(413, f"Request body is larger than {max_bytes} bytes.")
    try:
        return json.loads(body)
    except ValueError as exc:
        raise ApiError(422, "Invalid request: body: not valid JSON.") from exc


def parse_model(model: type[BaseModel], data: Any) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err.get("loc", ())) or "body"
        raise ApiError(422, f"Invalid request: {field}: {err.get('msg', 'invalid')}") from exc


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


def remove_uploads(settings: Settings, material_id: uuid.UUID) -> None:
    for suffix in (".pdf", ".txt"):
        upload_path(settings, material_id, suffix).unlink(missing_ok=True)


# --- orphans -------------------------------------------------------------------------------

_MATERIAL_FILE = re.compile(r"^([0-9a-f-]{36})\.(?:pdf|txt)$")
_STAGED_FILE = re.compile(r"^incoming-[0-9a-f]{32}\.part$")


def _old_files(directory: Path, cutoff: float) -> list[tuple[Path, uuid.UUID | None]]:
    """Our files in `directory` last written before `cutoff`: (path, material id or None for
    a staged upload). Other names are not ours and are left alone."""
    found: list[tuple[Path, uuid.UUID | None]] = []
    with os.scandir(directory) as entries:
        for entry in entries:
            staged = _STAGED_FILE.match(entry.name)
            material = _MATERIAL_FILE.match(entry.name)
            if not (staged or material) or not entry.is_file(follow_symlinks=False):
                continue
            try:
                if entry.stat(follow_symlinks=False).st_mtime >= cutoff:
                    continue
                found.append((Path(entry.path), uuid.UUID(material.group(1)) if material
                              else None))
            except (OSError, ValueError):
                continue
    return found


async def sweep_orphans(settings: Settings, db: Database) -> int:
    """Delete the files under data_dir/uploads that no material refers to and that are older
    than `upload_orphan_grace_s` (failed or abandoned uploads); returns how many."""
    directory = settings.data_dir / "uploads"
    if not directory.is_dir():
        return 0
    cutoff = time.time() - settings.upload_orphan_grace_s
    old = await asyncio.to_thread(_old_files, directory, cutoff)
    if not old:
        return 0
    ids = [material_id for _, material_id in old if material_id is not None]
    referenced: set[uuid.UUID] = set()
    if ids:
        async with db.session() as session:
            referenced = set(await session.scalars(
                select(Material.id).where(Material.id.in_(ids), Material.file_path.is_not(None))))
    removed = 0
    for path, material_id in old:
        if material_id is None or material_id not in referenced:
            try:
                path.unlink()
                removed += 1
            except FileNotFoundError:
                pass
    if removed:
        log.info("removed %d orphaned upload files", removed)
    return removed


@asynccontextmanager
async def sweep_lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Sweeps orphaned uploads at start and every `upload_sweep_interval_s`."""
    settings: Settings = app.state.settings

    async def sweep_forever() -> None:
        while True:
            try:
                await sweep_orphans(settings, app.state.db)
            except Exception:
                log.warning("sweeping orphaned uploads failed", exc_info=True)
            await asyncio.sleep(settings.upload_sweep_interval_s)

    task = asyncio.create_task(sweep_forever(), name="upload-sweep")
    try:
        yield
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
