"""What every format's extraction gives: segments of text with their place in the source.

Extraction is blocking and runs in a worker thread. Failures a learner can act on raise
`MaterialFailed` with a message meant for them; failures that may pass on their own (network,
YouTube throttling) raise `TransientError` so the task retries with backoff.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

Progress = Callable[[int, int], None]  # (done, total)
Stage = Callable[[str], None]  # the stage of the progress events changes (e.g. to "ocr")
Sink = Callable[["Segment"], None]  # each segment as soon as it is extracted


class MaterialFailed(Exception):
    """The material can't be ingested; `reason` is shown to the learner as is."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TransientError(Exception):
    """A fault that may pass: the task retries it with backoff."""


@dataclass(frozen=True)
class Segment:
    """A run of text with its place in the source: a PDF page (a slide, a scanned page), a
    transcript time span, or the section under a heading (DOCX, Markdown, HTML)."""

    text: str
    page: int | None = None
    start_s: float | None = None
    end_s: float | None = None
    section: str | None = None


@dataclass
class Extracted:
    segments: list[Segment] = field(default_factory=list)
    pages: int | None = None
    duration_s: float | None = None
    truncated: bool = False
    scanned_pages: int = 0  # pages (or images) whose text came from OCR


def clean(page_text: str) -> str:
    # Keep blank lines (paragraph breaks), squeeze runs of spaces, join hyphenated line breaks.
    page_text = page_text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    page_text = re.sub(r"(\w)-\n(\w)", r"\1\2", page_text)
    page_text = re.sub(r"[ \t\f\v\u00a0]+", " ", page_text)
    page_text = re.sub(r" *\n *", "\n", page_text)
    return re.sub(r"\n{3,}", "\n\n", page_text).strip()


NOT_TEXT = ("This file does not read as text in any encoding we know (UTF-8, UTF-16, "
            "Windows-1251…), so it could not be read.")


def decode_text(data: bytes) -> str:
    """The text of a text file: UTF-8 or UTF-16 with a byte order mark, UTF-8, else the
    encoding charset-normalizer finds most likely (Russian files are often Windows-1251)."""
    import codecs

    for bom, encoding in ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF32_LE, "utf-32"),
                          (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF16_LE, "utf-16"),
                          (codecs.BOM_UTF16_BE, "utf-16")):
        if data.startswith(bom):
            try:
                return data.decode(encoding)
            except UnicodeDecodeError as exc:
                raise MaterialFailed(NOT_TEXT) from exc
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    best = from_bytes(data).best()
    if best is None:
        raise MaterialFailed(NOT_TEXT)
    return str(best)


def tidy(text: str) -> str:
    """One line of a document: spaces squeezed, no control characters."""
    return re.sub(r"\s+", " ", text.replace("\x00", "")).strip()
