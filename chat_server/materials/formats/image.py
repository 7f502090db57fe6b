"""Images (PNG, JPEG): a photo or scan of a page, read by OCR."""

from __future__ import annotations

from pathlib import Path

from chat_server.materials.formats.base import Extracted, MaterialFailed, Progress, Segment, clean
from chat_server.materials.formats.ocr import OcrBudget, open_image
from chat_server.settings import Settings

NO_TEXT = "We found no text in this image to learn from."


def extract_image(path: Path, settings: Settings, progress: Progress | None = None) -> Extracted:
    budget = OcrBudget(settings)
    budget.admit(1)
    if progress:
        progress(0, 1)
    text = clean(budget.read(open_image(path, settings)))
    if progress:
        progress(1, 1)
    if not text:
        raise MaterialFailed(NO_TEXT)
    text = text[:settings.max_extracted_chars]
    return Extracted(segments=[Segment(text)], scanned_pages=1)
