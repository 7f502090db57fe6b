"""Plain text: a pasted text or a text file (any common encoding) as one segment."""

from __future__ import annotations

from pathlib import Path

from chat_server.materials.formats.base import Extracted, MaterialFailed, Segment, decode_text
from chat_server.settings import Settings


def extract_text_file(path: Path, settings: Settings) -> Extracted:
    body = decode_text(path.read_bytes()).replace("\x00", "")
    body = body.replace("\r\n", "\n").replace("\r", "\n").strip()
    truncated = len(body) > settings.max_extracted_chars
    body = body[: settings.max_extracted_chars]
    if not body:
        raise MaterialFailed("This text is empty.")
    return Extracted(segments=[Segment(body)], truncated=truncated)
