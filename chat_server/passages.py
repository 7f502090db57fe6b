"""What a retrieved passage is made of: its sentences, and where in the source each one is.

A chunk's `locations` say at which character each page (PDF) or transcript line (YouTube)
begins. A quoted span is placed on the page that holds most of its characters (a sentence that
runs across a page break counts for the page where most of it is), or at the second of the
transcript line it starts in.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

Locations = tuple[tuple[int, float], ...]
# Where each section of a chunk begins: (character offset, heading) (DOCX, Markdown, HTML).
Sections = tuple[tuple[int, str], ...]
# The kinds whose locations are pages: a PDF's pages (scanned ones too), a presentation's slides.
PAGED_KINDS = frozenset({"pdf", "pptx"})

# A sentence ends at . ! ? … (plus closing quotes/brackets) followed by space and a capital
# (Latin or Cyrillic), a digit, an opening quote or a dash — so "e.g. the" and "т. е. это" do not
# end one; a blank line ends one too.
_SENTENCE_END = re.compile(
    r"(?<=[.!?…])[\"'»”)\]]*\s+(?=[A-ZА-ЯЁ0-9«\"“(\[—–-])|\n\s*\n")
MIN_SENTENCE_CHARS = 3


@dataclass(frozen=True)
class Span:
    start: int
    end: int


def sentence_spans(text: str, start: int = 0, end: int | None = None) -> list[Span]:
    """The sentences of text[start:end] as spans of `text`, surrounding whitespace left out."""
    end = len(text) if end is None else end
    spans: list[Span] = []
    at = start
    for found in _SENTENCE_END.finditer(text, start, end):
        spans.append(Span(at, found.start()))
        at = found.end()
    spans.append(Span(at, end))
    out = []
    for span in spans:
        piece = text[span.start:span.end]
        lead = len(piece) - len(piece.lstrip())
        trail = len(piece) - len(piece.rstrip())
        if len(piece.strip()) >= MIN_SENTENCE_CHARS:
            out.append(Span(span.start + lead, span.end - trail))
    return out


# --- terms: what exact-term matching compares ------------------------------------------------

_WORD = re.compile(r"\w+", re.UNICODE)
_CYRILLIC_WORD = re.compile(r"[\u0400-\u04FF]")
_RU_ENDING = re.compile(r"[аеёиоуыэюяйь]{1,2}$")
_EN_ENDING = re.compile(r"(?:ing|ed|(?<=[sxz])es|(?<=[cs]h)es|(?<![su])s)$")

STOPWORDS = frozenset("""
a an the and or but if of to in on at by for with from as is are was were be been being it its
this that these those what which who whom whose when where why how do does did can could would
should will shall may might must not no yes i you he she we they me my your our their them his her
about into than then there here so such very just also any some all each more most other only own
same too s t don tell explain please describe mean means many much long
и в во не что он на я с со как а то все она так его но да ты к у же вы за бы по только ее мне было
вот от меня еще нет о из ему теперь когда даже ну вдруг ли если уже или ни быть был него до вас
нибудь опять уж вам ведь там потом себя ничего ей может они тут где есть надо ней для мы тебя их чем
была сам чтобы без будто чего раз тоже себе под будет ж тогда кто этот того потому этого какой
совсем ним здесь этом один почти мой тем чтобы нее сейчас были куда зачем всех никогда можно при
наконец два об другой хоть после над больше тот через эти нас про всего них какая много разве три
эту моя впрочем хорошо свою этой перед иногда лучше чуть том нельзя такой им более всегда конечно
всю между такое это расскажи объясни что-такое значит такое почему каком какие какая каков какова
сколько
""".split())


def stem(word: str) -> str:
    """Crude and language-agnostic enough: drop a common ending, keep five letters (so Russian
    inflections meet: "фотосинтез", "фотосинтеза")."""
    if _CYRILLIC_WORD.match(word):
        word = _RU_ENDING.sub("", word) if len(word) > 4 else word
    elif len(word) > 4:
        word = _EN_ENDING.sub("", word)
    return word[:5]


def terms(text: str) -> set[str]:
    """The stems of the content words of `text` (numbers kept whole: years and sizes match)."""
    out = set()
    for word in (m.lower().replace("ё", "е") for m in _WORD.findall(text)):
        if word in STOPWORDS or len(word) < 2:
            continue
        out.add(word if word.isdigit() else stem(word))
    return out


# Latin letters to Cyrillic the way Russian names are usually spelt in English ("Novgorod",
# "Baikal", "Kharkov"), longest groups first: enough for a name in an English question to meet
# the same name in a Russian text.
_TO_CYRILLIC = [
    ("shch", "щ"), ("kh", "х"), ("zh", "ж"), ("ch", "ч"), ("sh", "ш"), ("ts", "ц"), ("yu", "ю"),
    ("ya", "я"), ("yo", "ё"), ("ye", "е"), ("ai", "ай"), ("ei", "ей"), ("oi", "ой"),
    ("a", "а"), ("b", "б"), ("c", "к"), ("d", "д"), ("e", "е"), ("f", "ф"), ("g", "г"),
    ("h", "х"), ("i", "и"), ("j", "дж"), ("k", "к"), ("l", "л"), ("m", "м"), ("n", "н"),
    ("o", "о"), ("p", "п"), ("q", "к"), ("r", "р"), ("s", "с"), ("t", "т"), ("u", "у"),
    ("v", "в"), ("w", "в"), ("x", "кс"), ("y", "ы"), ("z", "з"),
]
_NAME = re.compile(r"(?<!^)(?<![.!?] )\b[A-Z][a-z]{3,}\b")


def _to_cyrillic(word: str) -> str:
    out, i, low = [], 0, word.lower()
    while i < len(low):
        for latin, cyrillic in _TO_CYRILLIC:
            if low.startswith(latin, i):
                out.append(cyrillic)
                i += len(latin)
                break
        else:
            i += 1
    return "".join(out)


def name_spellings(question: str) -> dict[str, str]:
    """Capitalised Latin words inside an English question (names, most likely) spelt in
    Cyrillic: {Cyrillic: Latin}, so a question about Novgorod meets "Новгород"."""
    return {_to_cyrillic(name): name for name in _NAME.findall(question)}


def parse_locations(raw: Sequence[Sequence[float]] | None) -> Locations:
    return tuple((int(offset), place) for offset, place in raw or ())


def place_of(locations: Locations, start: int, end: int) -> float | None:
    """The page or second of text[start:end]: the place holding most of its characters (the
    first of them on a tie); None without locations."""
    if not locations:
        return None
    best: float | None = None
    best_chars = -1
    for i, (offset, place) in enumerate(locations):
        stop = locations[i + 1][0] if i + 1 < len(locations) else max(end, offset + 1)
        lo = offset if i else min(offset, start)  # text before the first entry is its place
        chars = min(end, stop) - max(start, lo)
        if chars > best_chars:
            best, best_chars = place, chars
    return best


def second_of(locations: Locations, start: int) -> float | None:
    """The start second of the transcript line holding character `start`."""
    found: float | None = locations[0][1] if locations else None
    for offset, place in locations:
        if offset > start:
            break
        found = place
    return found


def parse_sections(raw: Sequence[Sequence[object]] | None) -> Sections:
    return tuple((int(str(offset)), str(heading)) for offset, heading in raw or ())


def section_of(sections: Sections, start: int) -> str | None:
    """The heading of the section holding character `start`; None before the first one."""
    found: str | None = None
    for offset, heading in sections:
        if offset > start:
            break
        found = heading
    return found
