"""Documents made of headed sections (DOCX, Markdown, HTML): one segment per section, its text
opening with the heading, so chunks know which heading each part of them lies under."""

from __future__ import annotations

from chat_server.materials.formats.base import Extracted, Segment
from chat_server.settings import Settings

MAX_HEADING_CHARS = 200


class Sections:
    """Collects paragraphs under the latest heading, up to max_extracted_chars."""

    def __init__(self, settings: Settings) -> None:
        self.room = settings.max_extracted_chars
        self.title: str | None = None
        self.paragraphs: list[str] = []
        self.segments: list[Segment] = []
        self.truncated = False

    def heading(self, title: str) -> None:
        self._close()
        self.title = title[:MAX_HEADING_CHARS]
        self.paragraphs = [title]

    def add_paragraphs(self, paragraphs: list[str]) -> None:
        for paragraph in paragraphs:
            if self.room <= 0:
                self.truncated = True
                return
            if len(paragraph) > self.room:
                paragraph = paragraph[:self.room]
                self.truncated = True
            self.room -= len(paragraph)
            self.paragraphs.append(paragraph)

    def _close(self) -> None:
        # A heading with nothing under it (the next heading follows at once) is left out.
        body = [p for p in self.paragraphs if p]
        if len(body) > (1 if self.title is not None else 0):
            self.segments.append(Segment("\n\n".join(body), section=self.title))
        self.paragraphs = []

    def result(self) -> Extracted:
        self._close()
        return Extracted(segments=self.segments, truncated=self.truncated)
