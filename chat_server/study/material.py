"""A material as the study generators read it: its chunks, their sentences (each with its page
or second), and sections of it (runs of pages, of transcript time, or of paragraphs).

Chunks overlap, so a sentence may be in two of them: it is kept once, where it is first whole.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from chat_server.passages import Locations, parse_locations, place_of, second_of, sentence_spans
from chat_server.tutor.prompt import detect_language

# A sentence worth studying starts like one (a capital, a digit, a quote) and ends like one.
_STARTS = re.compile(r"^[\"«“(]?[A-ZА-ЯЁ0-9]")
_ENDS = re.compile(r"[.!?…][\"'»”)\]]*$")
# A material is read in about SECTIONS sections (whole pages, transcript lines or paragraphs),
# each of SECTION_CHARS characters at least and SECTION_MAX_CHARS at most.
SECTIONS = 12
SECTION_CHARS = 1200
SECTION_MAX_CHARS = 12_000


@dataclass(frozen=True)
class Chunk:
    idx: int
    text: str
    kind: str  # pdf | youtube | text
    page: int | None
    start_s: float | None
    locations: Locations

    def place(self, start: int, end: int) -> tuple[int | None, float | None]:
        """The page (PDF) or second (YouTube) of text[start:end]."""
        if self.kind == "pdf":
            found = place_of(self.locations, start, end)
            return (int(found) if found is not None else self.page), None
        if self.kind == "youtube":
            second = second_of(self.locations, start) if self.locations else None
            return None, second if second is not None else self.start_s
        return None, None

    def one_place(self, start: int, end: int) -> bool:
        """Whether text[start:end] lies on one page (or within one transcript line's start)."""
        inside = [offset for offset, _ in self.locations if start < offset < end]
        return not inside


@dataclass(frozen=True)
class Sentence:
    n: int  # position in the material
    chunk: Chunk
    start: int
    end: int
    page: int | None
    start_s: float | None
    language: str  # en | ru
    whole: bool  # starts and ends like a sentence
    one_place: bool  # lies on one page

    @property
    def text(self) -> str:
        return " ".join(self.chunk.text[self.start:self.end].split())

    @property
    def words(self) -> int:
        return len(self.text.split())


@dataclass
class Section:
    n: int
    sentences: list[Sentence] = field(default_factory=list)

    @property
    def pages(self) -> tuple[int | None, int | None]:
        pages = [s.page for s in self.sentences if s.page is not None]
        return (min(pages), max(pages)) if pages else (None, None)

    @property
    def seconds(self) -> tuple[float | None, float | None]:
        seconds = [s.start_s for s in self.sentences if s.start_s is not None]
        return (min(seconds), max(seconds)) if seconds else (None, None)

    def text(self) -> str:
        return " ".join(s.text for s in self.sentences)

    def title(self, material: MaterialText) -> str:
        """"Pages 3–5" / "Страницы 3–5", "1:00–4:59" for a video, "Part 2" otherwise."""
        from chat_server.study.drafts import place_label

        ru = material.language == "ru"
        first, last = self.pages
        if first is not None and last is not None:
            if first == last:
                return f"Страница {first}" if ru else f"Page {first}"
            return f"Страницы {first}–{last}" if ru else f"Pages {first}–{last}"
        start, end = self.seconds
        if start is not None and end is not None:
            return f"{place_label(None, start, 'en')}–{place_label(None, end, 'en')}"
        return f"Часть {self.n + 1}" if ru else f"Part {self.n + 1}"


@dataclass
class MaterialText:
    material_id: uuid.UUID
    user_id: uuid.UUID
    title: str
    kind: str
    chunks: list[Chunk]
    sentences: list[Sentence]
    language: str  # en | ru: the material's own

    def sections(self, size: int | None = None) -> list[Section]:
        """Consecutive sentences in sections of about `size` characters (by default about
        SECTIONS of them), cut where a page ends (PDF), never inside a page."""
        if size is None:
            total = sum(len(s.text) + 1 for s in self.sentences)
            size = min(SECTION_MAX_CHARS, max(SECTION_CHARS, total // SECTIONS))
        out: list[Section] = [Section(0)]
        chars = 0
        for sentence in self.sentences:
            current = out[-1]
            previous = current.sentences[-1] if current.sentences else None
            boundary = previous is None or self.kind != "pdf" or sentence.page != previous.page
            if chars >= size and boundary:
                out.append(Section(len(out)))
                chars = 0
            out[-1].sentences.append(sentence)
            chars += len(sentence.text) + 1
        return [s for s in out if s.sentences]


def _flat(text: str) -> str:
    return " ".join(text.lower().split())


async def load(conn: AsyncConnection, material_id: uuid.UUID) -> MaterialText | None:
    """The material's text as sentences (None if it is gone or has no chunks)."""
    material = (await conn.execute(
        text("select id, user_id, title, kind from materials where id = :id"),
        {"id": material_id})).first()
    if material is None:
        return None
    rows = (await conn.execute(
        text("select idx, text, page_start, start_s, locations from chunks "
             "where material_id = :id order by idx"), {"id": material_id})).all()
    kind = str(material.kind.value if hasattr(material.kind, "value") else material.kind)
    chunks = [Chunk(r.idx, r.text, kind, r.page_start, r.start_s,
                    parse_locations(r.locations if not isinstance(r.locations, str)
                                    else json.loads(r.locations)))
              for r in rows]
    if not chunks:
        return None
    return from_chunks(material.id, material.user_id, material.title, kind, chunks)


def from_chunks(material_id: uuid.UUID, user_id: uuid.UUID, title: str, kind: str,
                chunks: list[Chunk]) -> MaterialText:
    seen: set[str] = set()
    sentences: list[Sentence] = []
    for chunk in chunks:
        for span in sentence_spans(chunk.text):
            piece = chunk.text[span.start:span.end]
            key = _flat(piece)
            whole = bool(_STARTS.match(piece)) and bool(_ENDS.search(piece))
            if key in seen or not whole and any(key in k for k in seen):
                continue  # the overlap of the previous chunk: already read there
            seen.add(key)
            page, start_s = chunk.place(span.start, span.end)
            sentences.append(Sentence(
                len(sentences), chunk, span.start, span.end, page, start_s,
                detect_language(piece), whole, chunk.one_place(span.start, span.end)))
    language = detect_language(" ".join(c.text for c in chunks[:20]))
    return MaterialText(material_id, user_id, title, kind, chunks, sentences, language)
