"""Citations that point where the answer is.

The prompt's numbered passages are `Source`s: a retrieved chunk, cut where its page changes
(so every numbered passage of a PDF lies on one page and is labelled with it). When a reply
ends, each `[n]` marker in it becomes one citation naming the span of passage n that the reply
quotes (or, for a reply that words it its own way, the sentence of passage n closest to the
claim the marker follows) and the page or second where that span is — not where its chunk
starts.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from chat_server.passages import (
    PAGED_KINDS,
    Span,
    place_of,
    second_of,
    section_of,
    sentence_spans,
    terms,
)
from chat_server.retrieval import Hit

_MARKER = re.compile(r"\[(\d{1,3})\]")
_CLAIM_END = re.compile(r"(?<=[.!?…])\s+|\n+")


@dataclass(frozen=True)
class Source:
    """One numbered passage of the prompt: `hit.text[start:end]`."""

    n: int
    hit: Hit
    rank: int  # the hit's retrieval rank, from 1
    start: int
    end: int
    page: int | None
    start_s: float | None

    @property
    def text(self) -> str:
        return self.hit.text[self.start:self.end]

    def sentences(self) -> list[Span]:
        return sentence_spans(self.hit.text, self.start, self.end)


def _page(value: float | None) -> int | None:
    return None if value is None else int(value)


def sources(hits: Sequence[Hit]) -> list[Source]:
    """The hits as numbered passages, best first; a PDF chunk that runs across a page break
    (a presentation's across slides) becomes one passage per page (each sentence on the page
    that holds most of it)."""
    out: list[Source] = []
    for rank, hit in enumerate(hits, 1):
        pages = {place for _, place in hit.locations}
        paged = hit.kind in PAGED_KINDS
        if not paged or len(pages) < 2:
            page = _page(hit.locations[0][1]) if paged and hit.locations else hit.page
            out.append(Source(len(out) + 1, hit, rank, 0, len(hit.text), page, hit.start_s))
            continue
        groups: list[list[Any]] = []  # [start, end, page]
        for span in sentence_spans(hit.text):
            page = _page(place_of(hit.locations, span.start, span.end))
            if groups and groups[-1][2] == page:
                groups[-1][1] = span.end
            else:
                groups.append([span.start, span.end, page])
        for start, end, page in groups:
            out.append(Source(len(out) + 1, hit, rank, start, end, page, None))
    return out


def cited_numbers(text: str, available: int) -> list[int]:
    """Markers [n] in `text` that point at one of `available` passages, in first-use order."""
    seen: list[int] = []
    for m in _MARKER.finditer(text):
        n = int(m.group(1))
        if 1 <= n <= available and n not in seen:
            seen.append(n)
    return seen


def _flat(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def _claims(answer: str, n: int) -> list[str]:
    """The sentences of the answer that carry marker [n] (the text before the marker)."""
    out: list[str] = []
    start = 0
    for m in _MARKER.finditer(answer):
        if int(m.group(1)) == n:
            # The claim runs back from the marker to the previous sentence end or marker.
            before = answer[start:m.start()]
            parts = [p for p in _CLAIM_END.split(before) if p.strip()]
            if parts:
                out.append(parts[-1])
        start = m.end()
    return out


def quoted_spans(answer: str, source: Source) -> list[Span]:
    """The sentences of `source` that the answer quotes word for word; failing that, the one
    sharing the most terms with the claims its marker follows (none if it shares nothing)."""
    spans = source.sentences()
    flat = _flat(_MARKER.sub(" ", answer))
    quoted = [s for s in spans if _flat(source.hit.text[s.start:s.end]) in flat]
    if quoted or not spans:
        return quoted
    claim = terms(" ".join(_claims(answer, source.n)))
    best, overlap = spans[0], 0
    for span in spans:
        shared = len(claim & terms(source.hit.text[span.start:span.end]))
        if shared > overlap:
            best, overlap = span, shared
    return [best] if overlap else []


def citation(source: Source, spans: Sequence[Span] = ()) -> dict[str, Any]:
    """The wire form of a citation of `source` quoting `spans` (the whole passage if none):
    `text` is the quoted span (non-adjacent sentences joined by " … "), `passage` the whole
    retrieved passage around it, and `page` / `start_s` where the quote begins (`page` is a
    slide of a presentation); `section` the heading the quote lies under (DOCX, Markdown,
    HTML)."""
    hit = source.hit
    if spans:
        parts = [hit.text[spans[0].start:spans[0].end]]
        for previous, span in zip(spans, spans[1:], strict=False):
            gap = hit.text[previous.end:span.start]
            piece = hit.text[span.start:span.end]
            parts.append(gap + piece if not gap.strip() else " … " + piece)
        text = "".join(parts)
        start, end = spans[0].start, spans[-1].end
    else:
        text, start, end = source.text, source.start, source.end
    out: dict[str, Any] = {"n": source.n, "material_id": str(hit.material_id),
                           "title": hit.title, "kind": hit.kind, "text": text.strip(),
                           "passage": hit.text}
    if source.page is not None:
        # Sources of a PDF lie on one page each; without locations, the chunk's first page.
        page = _page(place_of(hit.locations, start, end)) if hit.kind in PAGED_KINDS else None
        out["page"] = page if page is not None else source.page
    if source.start_s is not None:
        second = second_of(hit.locations, start) if hit.locations else None
        out["start_s"] = second if second is not None else source.start_s
    section = section_of(hit.sections, start)
    if section is not None:
        out["section"] = section
    return out


def resolve(answer: str, sources: Sequence[Source]) -> list[dict[str, Any]]:
    """One citation per [n] marker of the answer, in order of first use."""
    return [citation(sources[n - 1], quoted_spans(answer, sources[n - 1]))
            for n in cited_numbers(answer, len(sources))]
