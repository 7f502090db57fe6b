"""PDF: page by page (pypdf); each page's text goes on as soon as it is read."""

from __future__ import annotations

from pathlib import Path

from chat_server.materials.formats.base import (
    Extracted,
    MaterialFailed,
    Progress,
    Segment,
    Sink,
    clean,
)
from chat_server.settings import Settings

NO_TEXT = "This PDF has no extractable text — is it a scan? Upload a PDF with selectable text."
ENCRYPTED = "This PDF is password-protected. Remove the password and upload it again."
CORRUPT = "This file is damaged or is not a valid PDF, so it could not be read."


def extract_pdf(path: Path, settings: Settings, progress: Progress | None = None,
                sink: Sink | None = None) -> Extracted:
    """The PDF's pages; `sink` gets each page's text as soon as it is read (so chunking and
    embedding can start before the last page)."""
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
    chars = 0
    readable = 0
    for number in range(1, pages + 1):
        try:
            page_text = reader.pages[number - 1].extract_text() or ""
            readable += 1
        except FileNotDecryptedError as exc:
            raise MaterialFailed(ENCRYPTED) from exc
        except Exception:
            page_text = ""  # one broken page should not sink the rest of the document
        page_text = clean(page_text)
        if page_text:
            room = settings.max_extracted_chars - chars
            if len(page_text) > room:
                page_text = page_text[:room]
                result.truncated = True
            chars += len(page_text)
            result.segments.append(Segment(page_text, page=number))
            if sink:
                sink(result.segments[-1])
        if progress:
            progress(number, pages)
        if chars >= settings.max_extracted_chars:
            result.truncated = True
            break
    if readable == 0:
        raise MaterialFailed(CORRUPT)
    if not any(s.text.strip() for s in result.segments):
        raise MaterialFailed(NO_TEXT)
    return result
