"""One module per format, each turning a file (or a video id) into `Segment`s: text with its
place in the source (page or slide, second, section). `detect` tells the format of an upload
by its content; `archive` and `ocr` hold the limits against hostile files."""

from chat_server.materials.formats.base import (
    Extracted,
    MaterialFailed,
    Progress,
    Segment,
    Sink,
    TransientError,
)
from chat_server.materials.formats.docx import extract_docx
from chat_server.materials.formats.html import extract_html
from chat_server.materials.formats.image import extract_image
from chat_server.materials.formats.markdown import extract_markdown
from chat_server.materials.formats.pdf import CORRUPT, ENCRYPTED, NO_TEXT, extract_pdf
from chat_server.materials.formats.pptx import extract_pptx
from chat_server.materials.formats.text import extract_text_file
from chat_server.materials.formats.youtube import (
    AGE_RESTRICTED,
    NO_TRANSCRIPT,
    VIDEO_UNAVAILABLE,
    extract_youtube,
    parse_video_id,
)

__all__ = [
    "AGE_RESTRICTED", "CORRUPT", "ENCRYPTED", "NO_TEXT", "NO_TRANSCRIPT", "VIDEO_UNAVAILABLE",
    "Extracted", "MaterialFailed", "Progress", "Segment", "Sink", "TransientError",
    "extract_docx", "extract_html", "extract_image", "extract_markdown", "extract_pdf",
    "extract_pptx", "extract_text_file", "extract_youtube", "parse_video_id",
]
