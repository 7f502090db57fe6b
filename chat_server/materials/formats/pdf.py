"""PDF: page by page (pypdf); a page without a text layer (a scan) is read by OCR.

Each page's text goes on as soon as it is read, so chunking and embedding start before the last
page; pages stay in order when some of them wait for OCR.
"""

from __future__ import annotations

import re
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from chat_server.materials.formats.base import (
    Extracted,
    MaterialFailed,
    Progress,
    Segment,
    Sink,
    Stage,
    clean,
)
from chat_server.materials.formats.ocr import (
    NO_TESSERACT,
    OcrBudget,
    pdf_pages,
    tesseract_languages,
    workers,
)
from chat_server.settings import Settings

NO_TEXT = ("This PDF has no text we could read: no text layer, and no scanned page with text "
           "on it.")
ENCRYPTED = "This PDF is password-protected. Remove the password and upload it again."
CORRUPT = "This file is damaged or is not a valid PDF, so it could not be read."


def extract_pdf(path: Path, settings: Settings, progress: Progress | None = None,
                sink: Sink | None = None, stage: Stage | None = None) -> Extracted:
    """The PDF's pages; `sink` gets each page's text as soon as it is read (so chunking and
    embedding can start before the last page). Scanned pages are read by OCR after the text
    layer of every page was read (`stage("ocr")`, then progress over the scanned pages)."""
    from pypdf import PdfReader
    from pypdf.errors import FileNotDecryptedError, PdfReadError

    try:
        reader = PdfReader(str(path), strict=False)
        if reader.is_encrypted:
            try:
                # Many "protected" PDFs only restrict printing: they open with an empty password.
                if not reader.decrypt(""):
                    raise MaterialFailed(ENCRYPTED)
            except MaterialFailed:
                raise
            except Exception as exc:
                raise MaterialFailed(ENCRYPTED) from exc
        total_pages = len(reader.pages)
    except MaterialFailed:
        raise
    except FileNotDecryptedError as exc:
        raise MaterialFailed(ENCRYPTED) from exc
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError, IndexError,
            RecursionError, OSError, AssertionError) as exc:
        raise MaterialFailed(CORRUPT) from exc
    if total_pages == 0:
        raise MaterialFailed(CORRUPT)

    pages = min(total_pages, settings.max_pdf_pages)
    result = Extracted(pages=pages)
    result.truncated = total_pages > settings.max_pdf_pages
    texts: list[str] = []
    scanned: list[bool] = []
    readable = 0
    out = _Out(result, settings, sink)
    for number in range(1, pages + 1):
        try:
            page_text = reader.pages[number - 1].extract_text() or ""
            readable += 1
        except FileNotDecryptedError as exc:
            raise MaterialFailed(ENCRYPTED) from exc
        except Exception:
            page_text = ""  # one broken page should not sink the rest of the document
        texts.append(clean(page_text))
        scanned.append(_scanned(texts[-1], reader.pages[number - 1]))
        if not out.held and scanned[-1]:
            out.held = True  # from here on pages wait, in order, for the scans before them
        if not out.held:
            out.page(number, texts[-1])
        if progress:
            progress(number, pages)
        if out.full:
            break
    if readable == 0:
        raise MaterialFailed(CORRUPT)
    scans = [n for n, flag in enumerate(scanned, 1) if flag]
    if scans and not out.full:
        _read_scans(path, settings, texts, scans, out, progress, stage)
    if not any(s.text.strip() for s in result.segments):
        raise MaterialFailed(NO_TEXT)
    return result


# A page with an image and fewer letters and digits than this in its text layer is taken for a
# scan (a scanner's stamp or a page number may be all the text layer has). OCR's text replaces
# the layer's only when it has this many more.
SCANNED_BELOW = 32
_WORD_CHARS = re.compile(r"\w")


def _word_chars(text: str) -> int:
    return len(_WORD_CHARS.findall(text))


def _scanned(page_text: str, page: Any) -> bool:
    return _word_chars(page_text) < SCANNED_BELOW and _has_image(page)


def _has_image(page: Any, depth: int = 0) -> bool:
    """The page (or a form on it) draws an image XObject: what a scan is made of."""
    try:
        resources = page.get("/Resources")
        xobjects = resources.get_object().get("/XObject") if resources is not None else None
        for ref in (xobjects.get_object() if xobjects is not None else {}).values():
            obj = ref.get_object()
            subtype = obj.get("/Subtype")
            if subtype == "/Image" or (subtype == "/Form" and depth < 3
                                       and _has_image(obj, depth + 1)):
                return True
    except Exception:  # a malformed resource dictionary: no scan to read there
        return False
    return False


class _Out:
    """Pages into the result (and the sink) in order, until max_extracted_chars."""

    def __init__(self, result: Extracted, settings: Settings, sink: Sink | None) -> None:
        self.result = result
        self.room = settings.max_extracted_chars
        self.sink = sink
        self.held = False
        self.next = 1  # the page that goes out next

    @property
    def full(self) -> bool:
        return self.room <= 0

    def page(self, number: int, page_text: str) -> None:
        self.next = number + 1
        if not page_text or self.full:
            return
        if len(page_text) > self.room:
            page_text = page_text[:self.room]
            self.result.truncated = True
        self.room -= len(page_text)
        self.result.segments.append(Segment(page_text, page=number))
        if self.sink:
            self.sink(self.result.segments[-1])
        if self.full:
            self.result.truncated = True


def _read_scans(path: Path, settings: Settings, texts: list[str], scans: list[int], out: _Out,
                progress: Progress | None, stage: Stage | None) -> None:
    """OCR the scanned pages (several at once, taken in order), then let every held page go
    out in order."""
    budget = OcrBudget(settings)
    if tesseract_languages() is None:
        if any(_word_chars(t) for t in texts):
            scans = []  # no OCR here: the pages with text still teach something
        else:
            raise MaterialFailed(NO_TESSERACT)
    budget.admit(len(scans))
    if scans and stage:
        stage("ocr")
    if scans and progress:
        progress(0, len(scans))
    with pdf_pages(path, settings) as rendered, \
            ThreadPoolExecutor(workers(settings), thread_name_prefix="ocr") as pool:

        def read(number: int) -> str:
            return clean(budget.read(*rendered.render(number)))

        # At most one page per worker waits rendered in memory (a page is ~9 MB at 300 dpi).
        window: deque[tuple[int, Future[str]]] = deque()
        done = 0
        try:
            for number in scans:
                window.append((number, pool.submit(read, number)))
                while window and (len(window) >= workers(settings) or number == scans[-1]):
                    page, found = window.popleft()
                    text = found.result()
                    if _word_chars(text) >= _word_chars(texts[page - 1]) + SCANNED_BELOW:
                        texts[page - 1] = text
                        out.result.scanned_pages += 1
                    done += 1
                    if progress:
                        progress(done, len(scans))
        finally:
            for _, future in window:
                future.cancel()
    for number in range(out.next, len(texts) + 1):
        out.page(number, texts[number - 1])
