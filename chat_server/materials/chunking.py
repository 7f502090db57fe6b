"""Chunking: sentence- and paragraph-aware, with overlap; each chunk keeps its page or time span
and where in its text each page (or transcript line) begins, so a citation can name the page or
second of the very sentence it quotes.

Works on any script: sentence ends are found by punctuation followed by a capital letter,
digit or quote in Latin or Cyrillic, so Russian, English and mixed text split alike.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace

from chat_server.materials.formats import Segment

# A sentence ends at . ! ? … (plus closing quotes/brackets) followed by space and a
# capital (Latin or Cyrillic), a digit, an opening quote or a dash.
_SENTENCE_END = re.compile(r"(?<=[.!?…])[\"'»”)\]]*\s+(?=[A-ZА-ЯЁ0-9«\"“(\[—–-])")
_PARAGRAPH = re.compile(r"\n\s*\n")
_CYRILLIC = re.compile(r"[а-яёА-ЯЁ]")
_LATIN = re.compile(r"[a-zA-Z]")


@dataclass(frozen=True)
class Unit:
    text: str
    paragraph_start: bool
    page: int | None
    start_s: float | None
    end_s: float | None
    tokens: int = 0  # the embedding model's word pieces (0 when nobody counts)
    section: str | None = None  # the heading it lies under (DOCX, Markdown, HTML)


# Word pieces per text, without [CLS]/[SEP]. WordPiece splits at spaces and punctuation first,
# so the pieces of sentences joined by a space are the sum of each sentence's pieces.
Counter = Callable[[list[str]], list[int]]


# Where the parts of a chunk's text come from: (character offset in the chunk, page or start
# second), one entry where the place changes (PDF: a new page; transcript: every line).
Locations = tuple[tuple[int, float], ...]
# Where each section's part of a chunk begins: (character offset, heading).
Sections = tuple[tuple[int, str], ...]


@dataclass(frozen=True)
class TextChunk:
    text: str
    page_start: int | None
    page_end: int | None
    start_s: float | None
    end_s: float | None
    language: str  # Postgres text search configuration: russian | english | simple
    locations: Locations = ()
    sections: Sections = ()


def detect_language(text: str) -> str:
    """The text search configuration for a chunk: Cyrillic vs Latin letters decide.

    Postgres's `russian` configuration stems ASCII words with the English stemmer, so a
    chunk with a fair share of Cyrillic goes to `russian` even when it mixes in English.
    """
    cyrillic = len(_CYRILLIC.findall(text))
    latin = len(_LATIN.findall(text))
    if cyrillic and cyrillic * 3 >= latin:
        return "russian"
    if latin:
        return "english"
    return "russian" if cyrillic else "simple"


def split_sentences(paragraph: str) -> list[str]:
    flat = re.sub(r"\s+", " ", paragraph).strip()
    if not flat:
        return []
    return [s.strip() for s in _SENTENCE_END.split(flat) if s.strip()]


def _split_long(text: str, size: int) -> list[str]:
    """Hard-split a run longer than `size` at word boundaries (or anywhere, for no spaces)."""
    pieces: list[str] = []
    while len(text) > size:
        cut = text.rfind(" ", 0, size + 1)
        if cut < size // 2:
            cut = size
        pieces.append(text[:cut].strip())
        text = text[cut:].strip()
    if text:
        pieces.append(text)
    return pieces


def units(segments: list[Segment], size: int) -> list[Unit]:
    out: list[Unit] = []
    for segment in segments:
        if segment.start_s is not None:
            # Transcript lines are fragments of speech: each is a unit on its own.
            for piece in _split_long(re.sub(r"\s+", " ", segment.text).strip(), size):
                out.append(Unit(piece, False, None, segment.start_s, segment.end_s))
            continue
        for paragraph in _PARAGRAPH.split(segment.text):
            first = True
            for sentence in split_sentences(paragraph):
                for piece in _split_long(sentence, size):
                    out.append(Unit(piece, first, segment.page, None, None,
                                    section=segment.section))
                    first = False
    return out


def _emit(group: list[Unit]) -> TextChunk:
    parts: list[str] = []
    locations: list[tuple[int, float]] = []
    sections: list[tuple[int, str]] = []
    offset = 0
    for i, unit in enumerate(group):
        if i:
            parts.append("\n" if unit.paragraph_start else " ")
            offset += 1
        place = unit.start_s if unit.start_s is not None else unit.page
        if place is not None and (not locations or locations[-1][1] != place):
            locations.append((offset, place))
        if unit.section is not None and (not sections or sections[-1][1] != unit.section):
            sections.append((offset, unit.section))
        parts.append(unit.text)
        offset += len(unit.text)
    body = "".join(parts)
    pages = [u.page for u in group if u.page is not None]
    starts = [u.start_s for u in group if u.start_s is not None]
    ends = [u.end_s for u in group if u.end_s is not None]
    return TextChunk(
        text=body,
        page_start=min(pages) if pages else None,
        page_end=max(pages) if pages else None,
        start_s=min(starts) if starts else None,
        end_s=max(ends) if ends else None,
        language=detect_language(body),
        locations=tuple(locations),
        sections=tuple(sections),
    )


class Chunker:
    """Packs sentences into chunks of about `size` characters; consecutive chunks share whole
    trailing sentences of up to `overlap` characters. A new paragraph closes a chunk that is
    already more than half full. Fed segment by segment (pages as they are extracted), it
    gives the same chunks as one call over all segments: an emitted chunk is final.

    With `max_tokens` and `count`, a chunk also closes before it outgrows what the embedding
    model reads (all-MiniLM-L6-v2 cuts at 256 word pieces: 1000 characters of Russian are
    ~850 of them, so most of such a chunk would be missing from its vector)."""

    def __init__(self, size: int = 1000, overlap: int = 150, max_tokens: int | None = None,
                 count: Counter | None = None) -> None:
        self.size = max(size, 50)
        self.overlap = max(0, min(overlap, self.size // 2))
        self.max_tokens = max_tokens if count is not None and max_tokens else None
        self.count = count
        self.current: list[Unit] = []
        self.length = 0
        self.tokens = 0
        self.fresh = 0  # units in `current` not carried over from the previous chunk

    def _units(self, segments: list[Segment]) -> list[Unit]:
        found = units(segments, self.size)
        if self.max_tokens is None or self.count is None or not found:
            return found
        out: list[Unit] = []
        for unit, tokens in zip(found, self.count([u.text for u in found]), strict=True):
            if tokens <= self.max_tokens:
                out.append(replace(unit, tokens=tokens))
                continue
            # One sentence longer than the model reads: split it at words, by its own density.
            pieces = _split_long(unit.text, max(20, len(unit.text) * self.max_tokens // tokens))
            for i, (piece, n) in enumerate(zip(pieces, self.count(pieces), strict=True)):
                out.append(replace(unit, text=piece, tokens=n,
                                   paragraph_start=unit.paragraph_start and i == 0))
        return out

    def _over(self, length: int, tokens: int) -> bool:
        return length > self.size or (self.max_tokens is not None and tokens > self.max_tokens)

    def feed(self, segments: list[Segment]) -> list[TextChunk]:
        size, overlap = self.size, self.overlap
        out: list[TextChunk] = []
        for unit in self._units(segments):
            extra = len(unit.text) + (1 if self.current else 0)
            full = self._over(self.length + extra, self.tokens + unit.tokens)
            paragraph_break = unit.paragraph_start and self.length >= size // 2
            if self.current and self.fresh and (full or paragraph_break):
                out.append(_emit(self.current))
                tail: list[Unit] = []
                kept = kept_tokens = 0
                for previous in reversed(self.current):
                    if kept + len(previous.text) + 1 > overlap:
                        break
                    tail.insert(0, previous)
                    kept += len(previous.text) + 1
                    kept_tokens += previous.tokens
                if self._over(kept + len(unit.text) + 1, kept_tokens + unit.tokens):
                    tail, kept, kept_tokens = [], 0, 0
                self.current, self.length, self.tokens, self.fresh = tail, kept, kept_tokens, 0
                extra = len(unit.text) + (1 if self.current else 0)
            self.current.append(unit)
            self.length += extra
            self.tokens += unit.tokens
            self.fresh += 1
        return out

    def finish(self) -> list[TextChunk]:
        last = [_emit(self.current)] if self.current and self.fresh else []
        self.current, self.length, self.tokens, self.fresh = [], 0, 0, 0
        return last


def chunk(segments: list[Segment], size: int = 1000, overlap: int = 150) -> list[TextChunk]:
    """All chunks of `segments` (see Chunker)."""
    chunker = Chunker(size, overlap)
    return chunker.feed(segments) + chunker.finish()
