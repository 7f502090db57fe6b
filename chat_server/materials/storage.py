"""Where a material's file lives: data_dir/uploads/<material id><suffix> (shared with the
workers), staged uploads beside it as incoming-<hex>.part; and the sweep that removes what no
material refers to (a killed process's leftovers)."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path

from fastapi import FastAPI
from sqlalchemy import select

from chat_server.db import Database
from chat_server.models import Material
from chat_server.settings import Settings

log = logging.getLogger(__name__)


def uploads_dir(settings: Settings) -> Path:
    path = settings.data_dir / "uploads"
    path.mkdir(parents=True, exist_ok=True)
    return path


def upload_path(settings: Settings, material_id: uuid.UUID, suffix: str) -> Path:
    return settings.data_dir / "uploads" / f"{material_id}{suffix}"


def remove_files(settings: Settings, material_id: uuid.UUID) -> None:
    for suffix in SUFFIXES:
        upload_path(settings, material_id, suffix).unlink(missing_ok=True)


def kept_file(settings: Settings, material: Material) -> Path | None:
    """The material's file on disk, if it has one under data_dir/uploads."""
    if not material.file_path:
        return None
    path = Path(material.file_path)
    if path.parent.resolve() != (settings.data_dir / "uploads").resolve() \
            or not _MATERIAL_FILE.match(path.name) or not path.is_file():
        return None
    return path


_UNSAFE_NAME = re.compile(r'[\x00-\x1f\x7f"\\/]+')


def download_name(source: str, suffix: str) -> str:
    """The uploaded name for a download, with the suffix of what the file is."""
    stem = _UNSAFE_NAME.sub("_", Path(source).stem).strip(" ._") or "material"
    return stem[:150] + suffix


# --- orphans -------------------------------------------------------------------------------

# Every suffix a material's file may have (formats/detect.py; .txt for pasted text too).
SUFFIXES = (".pdf", ".txt", ".md", ".html", ".docx", ".pptx", ".png", ".jpg")
_MATERIAL_FILE = re.compile(
    r"^([0-9a-f-]{36})(?:" + "|".join(re.escape(s) for s in SUFFIXES) + ")$")
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
