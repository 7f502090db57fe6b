"""OCR: scanned PDF pages and images through Tesseract (Debian's `tesseract-ocr` with its
language packages) via pytesseract, within a material's page and time budget.

Scanned pages are rendered with PDFium (pypdfium2). PDFium is not thread-safe, and two materials
may be ingested at once in one process, so every PDFium call holds one lock; Tesseract runs
outside it, as its own process.
"""

from __future__ import annotations

import math
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chat_server.materials.formats.base import MaterialFailed
from chat_server.settings import Settings

if TYPE_CHECKING:
    from PIL.Image import Image

NO_TESSERACT = ("This file needs OCR (it is a scan or an image), but this server has no "
                "Tesseract installed. Ask its administrator to install tesseract-ocr.")
NO_LANGUAGE = ("This file needs OCR, but this server's Tesseract lacks the language data for "
               "{missing}. Ask its administrator to install tesseract-ocr-{first}.")
TOO_MANY_PAGES = ("This file has {pages} scanned pages to read by OCR, more than the {limit} a "
                  "material may have. Split it into smaller files.")
TOO_SLOW = ("Reading this scan by OCR took longer than the {limit} seconds a material may "
            "take. Split it into smaller files or upload a PDF with selectable text.")
TOO_MANY_PIXELS = ("This image is {width} × {height} pixels, more than the {limit} million "
                   "pixels we read: it is refused as a possible decompression bomb.")
BAD_IMAGE = "This image is damaged or not a PNG or JPEG we can read."

_PDFIUM = threading.Lock()


@cache
def tesseract_languages() -> frozenset[str] | None:
    """The languages the installed Tesseract reads; None without Tesseract."""
    import pytesseract

    try:
        return frozenset(pytesseract.get_languages(config=""))
    except (pytesseract.TesseractNotFoundError, OSError):
        return None


def describe() -> str:
    """For the start-up log: what OCR can do here."""
    languages = tesseract_languages()
    if languages is None:
        return "OCR unavailable: no tesseract (install tesseract-ocr)"
    return "OCR: tesseract with " + ", ".join(sorted(languages - {"osd"}))


class OcrBudget:
    """One material's OCR: at most `ocr_max_pages` pages in `ocr_timeout_s` seconds."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pages = 0
        self.spent = 0.0

    def admit(self, pages: int) -> None:
        """Refuse a material that needs more pages of OCR than one may have."""
        limit = self.settings.ocr_max_pages
        if pages > limit:
            raise MaterialFailed(TOO_MANY_PAGES.format(pages=pages, limit=limit))

    def read(self, image: Image) -> str:
        """The text of one page or image."""
        import pytesseract

        self.pages += 1
        self.admit(self.pages)
        limit = self.settings.ocr_timeout_s
        left = limit - self.spent
        if left <= 0:
            raise MaterialFailed(TOO_SLOW.format(limit=round(limit)))
        started = time.monotonic()
        try:
            return str(pytesseract.image_to_string(image, lang=self._languages(),
                                                   timeout=max(1, math.ceil(left))))
        except RuntimeError as exc:  # pytesseract's "Tesseract process timeout"
            if "timeout" in str(exc).lower():
                raise MaterialFailed(TOO_SLOW.format(limit=round(limit))) from exc
            raise
        except pytesseract.TesseractNotFoundError as exc:
            raise MaterialFailed(NO_TESSERACT) from exc
        except pytesseract.TesseractError as exc:
            raise MaterialFailed(BAD_IMAGE) from exc
        finally:
            self.spent += time.monotonic() - started

    def _languages(self) -> str:
        available = tesseract_languages()
        if available is None:
            raise MaterialFailed(NO_TESSERACT)
        wanted = self.settings.ocr_languages or ["eng"]
        missing = [lang for lang in wanted if lang not in available]
        if missing:
            raise MaterialFailed(NO_LANGUAGE.format(missing=", ".join(missing), first=missing[0]))
        return "+".join(wanted)


def check_pixels(width: int, height: int, settings: Settings) -> None:
    if width * height > settings.max_image_pixels:
        raise MaterialFailed(TOO_MANY_PIXELS.format(
            width=width, height=height, limit=round(settings.max_image_pixels / 1e6)))


def open_image(path: Path, settings: Settings) -> Image:
    """A PNG or JPEG, checked against the pixel limit before it is decoded, upright (a
    photo's EXIF orientation applied) and grey."""
    from PIL import Image as PILImage
    from PIL import ImageOps, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            # Pillow's own bomb check warns (or raises, past twice its limit): ours decides.
            warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
            image = PILImage.open(path)
            check_pixels(image.width, image.height, settings)
            image.load()
    except MaterialFailed:
        raise
    except PILImage.DecompressionBombError as exc:
        raise MaterialFailed(TOO_MANY_PIXELS.format(
            width="?", height="?", limit=round(settings.max_image_pixels / 1e6))) from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise MaterialFailed(BAD_IMAGE) from exc
    return ImageOps.exif_transpose(image).convert("L")


class PdfPages:
    """Scanned pages of one PDF rendered for OCR, each after its images passed the pixel
    limit, at `ocr_dpi` but never above `max_image_pixels`."""

    def __init__(self, path: Path, settings: Settings) -> None:
        self.path = path
        self.settings = settings
        self._doc: Any = None

    def render(self, number: int) -> Image:
        import pypdfium2 as pdfium

        with _PDFIUM:
            if self._doc is None:
                self._doc = pdfium.PdfDocument(str(self.path))
            page = self._doc[number - 1]
            try:
                for obj in page.get_objects(filter=(pdfium.raw.FPDF_PAGEOBJ_IMAGE,), max_depth=4):
                    try:
                        width, height = obj.get_px_size()
                    except pdfium.PdfiumError:
                        continue
                    check_pixels(width, height, self.settings)
                width_pt, height_pt = page.get_size()
                scale = self.settings.ocr_dpi / 72
                area = max(width_pt * height_pt, 1.0)
                scale = min(scale, math.sqrt(self.settings.max_image_pixels / area))
                bitmap = page.render(scale=scale, grayscale=True)
                image = bitmap.to_pil()
                bitmap.close()
            finally:
                page.close()
        return image

    def close(self) -> None:
        with _PDFIUM:
            if self._doc is not None:
                self._doc.close()
                self._doc = None


@contextmanager
def pdf_pages(path: Path, settings: Settings) -> Iterator[PdfPages]:
    pages = PdfPages(path, settings)
    try:
        yield pages
    finally:
        pages.close()
