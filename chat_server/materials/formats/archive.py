"""DOCX and PPTX are ZIP archives: their size and number of entries are checked before a parser
opens them (a zip bomb unpacks a few kilobytes into gigabytes, or holds a million entries whose
directory alone would fill memory)."""

from __future__ import annotations

import zipfile
from pathlib import Path

from chat_server.materials.formats.base import MaterialFailed
from chat_server.settings import Settings

TOO_MANY_ENTRIES = ("This file is made of more than {limit} parts: it is refused as a possible "
                    "zip bomb.")
TOO_LARGE_UNPACKED = ("This file would unpack to more than {limit} MB: it is refused as a possible "
                      "zip bomb.")
NOT_A_ZIP = "This file is damaged: it is not a valid Word or PowerPoint file."

_EOCD = b"PK\x05\x06"
_ZIP64_LOCATOR = b"PK\x06\x07"
_ZIP64_EOCD = b"PK\x06\x06"
# A central directory entry is 46 bytes and its name: beyond this per entry, the directory is
# not one of a real document.
_DIRECTORY_BYTES_PER_ENTRY = 1024


def directory_size(path: Path) -> tuple[int, int] | None:
    """(entries, bytes) of the ZIP's central directory as its end record states them, read
    without reading the directory; None when there is no end record (not a ZIP)."""
    size = path.stat().st_size
    with path.open("rb") as f:
        tail_len = min(size, 65_535 + 22)
        f.seek(size - tail_len)
        tail = f.read(tail_len)
        at = tail.rfind(_EOCD)
        if at < 0 or len(tail) - at < 22:
            return None
        entries = int.from_bytes(tail[at + 10:at + 12], "little")
        directory = int.from_bytes(tail[at + 12:at + 16], "little")
        if (entries == 0xFFFF or directory == 0xFFFFFFFF) and at >= 20 \
                and tail[at - 20:at - 16] == _ZIP64_LOCATOR:
            f.seek(int.from_bytes(tail[at - 12:at - 4], "little"))
            record = f.read(56)
            if record[:4] == _ZIP64_EOCD:
                entries = int.from_bytes(record[32:40], "little")
                directory = int.from_bytes(record[40:48], "little")
    return entries, directory


def directory_fits(path: Path, settings: Settings) -> bool:
    """The central directory is small enough to be read (zipfile reads all of it)."""
    found = directory_size(path)
    if found is None:
        return True  # zipfile will say what is wrong
    entries, directory = found
    limit = settings.max_zip_entries
    return entries <= limit and directory <= limit * _DIRECTORY_BYTES_PER_ENTRY


def check_zip(path: Path, settings: Settings) -> None:
    """Refuse a ZIP with too many entries or too much to unpack (zipfile stops every entry at
    its stated size, so the stated sizes bound what a parser can unpack)."""
    if not directory_fits(path, settings):
        raise MaterialFailed(TOO_MANY_ENTRIES.format(limit=settings.max_zip_entries))
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise MaterialFailed(NOT_A_ZIP) from exc
    if len(infos) > settings.max_zip_entries:
        raise MaterialFailed(TOO_MANY_ENTRIES.format(limit=settings.max_zip_entries))
    if sum(info.file_size for info in infos) > settings.max_zip_uncompressed_bytes:
        raise MaterialFailed(TOO_LARGE_UNPACKED.format(
            limit=settings.max_zip_uncompressed_bytes // (1024 * 1024)))
