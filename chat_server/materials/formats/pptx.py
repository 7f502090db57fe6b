"""PowerPoint presentations (python-pptx): each slide's text (its shapes, tables and groups, in
reading order) and its speaker notes, one page per slide, so a citation says "slide N"."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from chat_server.materials.formats.archive import check_zip
from chat_server.materials.formats.base import (
    Extracted,
    MaterialFailed,
    Progress,
    Segment,
    Sink,
    clean,
)
from chat_server.settings import Settings

NO_TEXT = "This presentation has no text on its slides or in its notes to learn from."
CORRUPT = ("This file is damaged or is not a valid PowerPoint (.pptx) presentation, so it could "
           "not be read.")


def _shape_texts(shapes: Any, depth: int = 0) -> Iterator[str]:
    from pptx.shapes.group import GroupShape

    # Top to bottom, then left to right: the order a reader takes, whatever order they were drawn.
    def place(shape: Any) -> tuple[int, int]:
        return (shape.top or 0, shape.left or 0)

    for shape in sorted(shapes, key=place):
        if isinstance(shape, GroupShape):
            if depth < 8:
                yield from _shape_texts(shape.shapes, depth + 1)
        elif getattr(shape, "has_table", False) and shape.has_table:
            for row in shape.table.rows:
                cells = [c.text.strip() for c in row.cells if c.text.strip()]
                if cells:
                    yield " | ".join(cells)
        elif getattr(shape, "has_text_frame", False) and shape.has_text_frame:
            text = shape.text_frame.text.strip()
            if text:
                yield text


def slide_text(slide: Any) -> str:
    parts = list(_shape_texts(slide.shapes))
    if slide.has_notes_slide:
        notes = slide.notes_slide.notes_text_frame
        if notes is not None and notes.text.strip():
            parts.append(notes.text.strip())
    return clean("\n\n".join(parts))


def extract_pptx(path: Path, settings: Settings, progress: Progress | None = None,
                 sink: Sink | None = None) -> Extracted:
    import pptx
    from pptx.exc import PackageNotFoundError

    check_zip(path, settings)
    try:
        slides = list(pptx.Presentation(str(path)).slides)
    except (PackageNotFoundError, KeyError, ValueError, AttributeError, TypeError,
            IndexError, OSError) as exc:
        raise MaterialFailed(CORRUPT) from exc
    except Exception as exc:  # lxml's XMLSyntaxError and the like: a damaged part
        raise MaterialFailed(CORRUPT) from exc
    count = min(len(slides), settings.max_pdf_pages)
    result = Extracted(pages=count, truncated=len(slides) > count)
    room = settings.max_extracted_chars
    for number, slide in enumerate(slides[:count], 1):
        try:
            text = slide_text(slide)
        except Exception:
            text = ""  # one broken slide should not sink the rest of the deck
        if text and room > 0:
            if len(text) > room:
                text, result.truncated = text[:room], True
            room -= len(text)
            result.segments.append(Segment(text, page=number))
            if sink:
                sink(result.segments[-1])
        if progress:
            progress(number, count)
    if not result.segments:
        raise MaterialFailed(NO_TEXT)
    return result
