"""What an uploaded file is, by its content (magic bytes, the parts of a ZIP), never by its name.

The name only tells plain text from Markdown (both are just text) and is checked against the
content: a file whose name claims a format its content is not gets a clear refusal naming both.
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

from chat_server.materials.formats.archive import directory_fits
from chat_server.models import MaterialKind
from chat_server.settings import Settings

HEAD_BYTES = 64 * 1024


@dataclass(frozen=True)
class FileType:
    kind: MaterialKind
    suffix: str  # of the stored file
    content_type: str
    name: str  # for people


PDF = FileType(MaterialKind.pdf, ".pdf", "application/pdf", "PDF")
DOCX = FileType(MaterialKind.docx, ".docx",
                "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
                "Word document (.docx)")
PPTX = FileType(MaterialKind.pptx, ".pptx",
                "application/vnd.openxmlformats-officedocument.presentationml.presentation",
                "PowerPoint presentation (.pptx)")
PNG = FileType(MaterialKind.image, ".png", "image/png", "PNG image")
JPEG = FileType(MaterialKind.image, ".jpg", "image/jpeg", "JPEG image")
HTML = FileType(MaterialKind.html, ".html", "text/html; charset=utf-8", "HTML page")
MARKDOWN = FileType(MaterialKind.markdown, ".md", "text/markdown; charset=utf-8", "Markdown file")
TEXT = FileType(MaterialKind.text, ".txt", "text/plain; charset=utf-8", "text file")
TYPES = (PDF, DOCX, PPTX, PNG, JPEG, HTML, MARKDOWN, TEXT)

# What a name's extension claims. Any readable file passes for text, so a name that promises a
# binary format must be met by its content; between binary formats the content decides.
_CLAIMS = {".pdf": "a PDF", ".docx": "a Word document (.docx)",
           ".pptx": "a PowerPoint presentation (.pptx)", ".png": "a PNG image",
           ".jpg": "a JPEG image", ".jpeg": "a JPEG image",
           ".doc": "an old Word document (.doc)", ".ppt": "an old PowerPoint presentation (.ppt)"}
_MARKDOWN_NAMES = (".md", ".markdown", ".mdown", ".mkd")
_HTML_START = re.compile(
    rb"^\s*(?:<!--.*?-->\s*)*<(?:!doctype\s+html|html[\s>]|head[\s>]|body[\s>])",
    re.IGNORECASE | re.DOTALL)
_MARKDOWN_HEADING = re.compile(r"^#{1,6} \S", re.MULTILINE)

SUPPORTED = ("We read PDF (with text or scanned), Word (.docx), PowerPoint (.pptx), Markdown, "
             "HTML and text files, and PNG or JPEG images.")


class Refused(Exception):
    """The upload is not a file we read; `status` 415 (or 422) and a message for the learner."""

    def __init__(self, message: str, status: int = 415, code: str = "unsupported_media_type"
                 ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code


ENCRYPTED_OFFICE = ("This document is password-protected. Remove the password (save it without "
                    "one) and upload it again.")


def sniff(path: Path, filename: str, settings: Settings) -> FileType:
    """The type of the file at `path` (uploaded as `filename`), or Refused."""
    with path.open("rb") as f:
        head = f.read(HEAD_BYTES)
    found, what = _by_content(path, head, settings)
    suffix = Path(filename).suffix.lower()
    claim = _CLAIMS.get(suffix)
    if found is None:
        prefix = f"“{filename}” is not {claim}: its content is {what}. " if claim else \
            f"This file is {what}, not one we can read. "
        raise Refused(prefix + SUPPORTED)
    if claim and found.kind in (MaterialKind.text, MaterialKind.markdown, MaterialKind.html):
        raise Refused(f"“{filename}” is not {claim}: its content is {found.name}. "
                      f"Upload the {claim.removeprefix('a ').removeprefix('an ')} itself, or "
                      "give the file a name that says what it is.")
    if found.kind is MaterialKind.text and (suffix in _MARKDOWN_NAMES
                                            or _looks_like_markdown(head)):
        return MARKDOWN
    return found


def _by_content(path: Path, head: bytes, settings: Settings) -> tuple[FileType | None, str]:
    """(the type, or None with what the content is instead)."""
    if b"%PDF-" in head[:1024]:  # the PDF header may sit anywhere in the first kilobyte
        return PDF, "a PDF"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG, "a PNG image"
    if head.startswith(b"\xff\xd8\xff"):
        return JPEG, "a JPEG image"
    if head.startswith(b"PK\x03\x04"):
        return _office(path, head, settings)
    if head.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"):
        if _encrypted_office(path):
            raise Refused(ENCRYPTED_OFFICE, 422, "password_protected")
        return None, "an old Office file (.doc, .ppt or .xls): save it as .docx or .pptx"
    if _is_text(head):
        if _HTML_START.match(head.lstrip(b"\xef\xbb\xbf")):
            return HTML, "an HTML page"
        return TEXT, "text"
    return None, "of a kind we do not read"


def _office(path: Path, head: bytes, settings: Settings) -> tuple[FileType | None, str]:
    names: list[str]
    if directory_fits(path, settings):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError, ValueError, EOFError):
            return None, "a damaged ZIP archive"
    else:
        # Too large a directory to read here: the parts named at the start tell the format,
        # and ingestion refuses the archive with its reason.
        names = [m.decode("utf-8", "replace") for m in re.findall(rb"(?:word|ppt)/\w+\.xml", head)]
    if any(n == "word/document.xml" for n in names):
        return DOCX, DOCX.name
    if any(n == "ppt/presentation.xml" for n in names):
        return PPTX, PPTX.name
    return None, "a ZIP archive, not a Word or PowerPoint file"


def _encrypted_office(path: Path) -> bool:
    """An OLE compound file holding an encrypted Office Open XML package (how Word and
    PowerPoint save a document with a password)."""
    import olefile

    try:
        with olefile.OleFileIO(str(path)) as ole:
            return bool(ole.exists("EncryptedPackage"))
    except Exception:  # not a compound file olefile can read: an unknown old format
        return False


def _is_text(head: bytes) -> bool:
    if not head:
        return False
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return True  # UTF-16 with a byte order mark
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
        return True
    except UnicodeDecodeError as exc:
        if exc.start >= len(head) - 3:
            return True  # a character cut at the end of the head
    from charset_normalizer import from_bytes

    return from_bytes(head).best() is not None


def _looks_like_markdown(head: bytes) -> bool:
    return bool(_MARKDOWN_HEADING.search(head.decode("utf-8", "replace")))
