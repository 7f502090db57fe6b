"""Is an answer where its card or question says it is?

Every generated card and question names a quote (a sentence of the material) and an answer.
It is kept only when the quote is found in one of the material's passages (chunks) and the
answer is found in the quote; its page or second is then where the answer itself is — so a
card's answer can always be checked on the page it cites. LLM output is matched leniently
(case, spacing, quote marks and dashes, ё/е; an answer all of whose words' stems are in the
quote); the offline generator's answers are the quote's own words.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from chat_server.passages import terms
from chat_server.study.material import Chunk

_SAME = str.maketrans({"“": '"', "”": '"', "«": '"', "»": '"', "„": '"', "’": "'", "‘": "'",
                       "–": "-", "—": "-", "ё": "е", "Ё": "Е", "\u00a0": " "})


def normalised(text: str) -> tuple[str, list[int]]:
    """`text` lower-cased with one space for any run of whitespace and quote marks, dashes and ё
    made alike; with, for each character of the result, its offset in `text`."""
    out: list[str] = []
    where: list[int] = []
    space = True  # drop leading whitespace
    for i, ch in enumerate(text.translate(_SAME).lower()):
        if ch.isspace():
            if not space:
                out.append(" ")
                where.append(i)
            space = True
            continue
        out.append(ch)
        where.append(i)
        space = False
    if out and out[-1] == " ":
        out.pop()
        where.pop()
    return "".join(out), where


def flat(text: str) -> str:
    return normalised(text)[0]


@dataclass(frozen=True)
class Grounded:
    """Where a quote and its answer are: the chunk, the quote's span in it, the page/second."""

    chunk: Chunk
    start: int
    end: int
    page: int | None
    start_s: float | None

    @property
    def quote(self) -> str:
        """The quoted span as the passage has it (so it can be found and marked in it)."""
        return self.chunk.text[self.start:self.end]

    @property
    def passage(self) -> str:
        return self.chunk.text


class Passages:
    """A material's chunks, normalised once, to ground many quotes in."""

    def __init__(self, chunks: Sequence[Chunk]) -> None:
        self.chunks = list(chunks)
        self._normalised = [normalised(c.text) for c in self.chunks]
        self._position = {id(c): i for i, c in enumerate(self.chunks)}

    def locate(self, quote: str, hint: Chunk | None = None) -> tuple[Chunk, int, int] | None:
        """The first chunk holding `quote` (compared normalised; `hint` tried first) and the
        quote's span in it."""
        needle = flat(quote).strip(" .")
        if len(needle) < 8:
            return None
        order = range(len(self.chunks))
        if hint is not None and id(hint) in self._position:
            first = self._position[id(hint)]
            order = [first, *(i for i in order if i != first)]  # type: ignore[assignment]
        for i in order:
            hay, where = self._normalised[i]
            at = hay.find(needle)
            if at >= 0:
                text = self.chunks[i].text
                end = where[at + len(needle) - 1] + 1
                while end < len(text) and text[end] in ".!?…»\"”)":
                    end += 1  # the sentence's own end, which the comparison left out
                return self.chunks[i], where[at], end
        return None

    def ground(self, quote: str, answer: str | None, hint: Chunk | None = None
               ) -> Grounded | None:
        """Where `quote` is in the material with `answer` inside it (None: not grounded).
        Without an answer (a true/false statement, a note) the quote alone must be found."""
        found = self.locate(quote, hint)
        if found is None:
            return None
        chunk, start, end = found
        span = (start, end) if answer is None else _answer_span(chunk, start, end, answer)
        if span is None:
            return None
        page, start_s = chunk.place(*span)
        return Grounded(chunk, start, end, page, start_s)


def _answer_span(chunk: Chunk, start: int, end: int, answer: str) -> tuple[int, int] | None:
    hay, where = normalised(chunk.text[start:end])
    needle = flat(answer).strip(" .")
    if not needle:
        return None
    # Whole words only: "12" is not found in "1245".
    found = re.search(r"(?<!\w)" + re.escape(needle) + r"(?!\w)", hay)
    if found is not None:
        return start + where[found.start()], start + where[found.end() - 1] + 1
    wanted = terms(answer)
    if wanted and wanted <= terms(chunk.text[start:end]):
        return start, end  # the answer's words are all in the quote, in other forms
    return None
