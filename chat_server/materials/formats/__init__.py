"""One module per format, each turning a file (or a video id) into `Segment`s: text with its
place in the source (page, second)."""

from chat_server.materials.formats.base import (
    Extracted,
    MaterialFailed,
    Progress,
    Segment,
    Sink,
    TransientError,
)
from chat_server.materials.formats.pdf import CORRUPT, ENCRYPTED, NO_TEXT, extract_pdf
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
    "extract_pdf", "extract_text_file", "extract_youtube", "parse_video_id",
]
