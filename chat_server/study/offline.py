"""The offline study generator: no network, only the material's own sentences.

- Summary and notes are extractive: sentences chosen by centrality over their embeddings (the
  deployment's embedding model; cosine to the centroid of the section's or the material's
  candidate sentences), with a penalty for saying what an earlier pick said (maximal marginal
  relevance), in the material's order. Candidates are first narrowed by how much of the
  section's frequent vocabulary they carry, so only a few sentences per section are embedded.
- Flashcards are cloze cards on defining sentences: a term being defined, a year or a range of
  years, a number with its unit, a name; the item is blanked out and is the answer.
- Quiz questions use the same kind of items: multiple choice whose distractors are other items
  of the same kind from the same material (other years, other names, other lengths in metres),
  true/false (the sentence, or the sentence with its item swapped for another of the same
  kind), short answer (the blank typed in).

Russian and English: patterns for both; a question's wording follows its sentence's language.
Every card and question is grounded (grounding.py) before it is kept. Deterministic: the same
material gives the same cards and questions (a seed from its id).
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import numpy as np

from chat_server.passages import terms
from chat_server.settings import Settings
from chat_server.study.drafts import (
    CardDraft,
    Citations,
    Generated,
    Progress,
    QuestionDraft,
    explanation,
)
from chat_server.study.grounding import Passages, flat
from chat_server.study.material import MaterialText, Sentence

BLANK = "_____"

# --- items: what a card or question asks for ---------------------------------------------------

_BACK_REFERENCES = frozenset("""it its this these those they them he she his her such there then
also however thus therefore it's это этот эта эти этого этой он она оно они его её ее их там
тогда такой такая такие также однако поэтому""".split())

_YEAR_AFTER = re.compile(r"^\s*(?:год\w*|гг?\.|BC|AD|BCE|CE|до\s+н\.\s*э\.|н\.\s*э\.)", re.I)
# Before a three-digit number, what makes it a year ("in 868", "под 859 годом" is seen after).
_YEAR_BEFORE = re.compile(r"\b(?:in|since|year|в|во|под|с)\s+(?:the\s+(?:year\s+)?)?$", re.I)
_YEAR = re.compile(r"(?<![\w.,/])(\d{3,4})(?:\s*[-–—]\s*(\d{2,4}))?(?![\w,/]|\.\d)")
_UNIT = (r"%|percent|per\s+cent|°C|°F|°|km/h|km²|km|kilometres|kilometers|metres|meters|m|cm|mm|"
         r"kg|tonnes|tons|litres|liters|million|billion|thousand|years|days|hours|minutes|"
         r"seconds|species|times|people|degrees|"
         r"процент\w*|км/ч|км²|км|километр\w*|метр\w*|м|см|мм|кг|тонн\w*|литр\w*|л|млн|млрд|"
         r"тыс\.|тысяч\w*|миллион\w*|миллиард\w*|лет|год\w*|дн\w*|день|час\w*|минут\w*|"
         r"секунд\w*|вид\w*|раз|человек|градус\w*")
_NUMBER = re.compile(r"(?<![\w.,/–-])(\d+(?:[.,]\d+)?(?:[ \u00a0\u202f]\d{3})*"
                     r"(?:\s?[–-]\s?\d+(?:[.,]\d+)?)?)[ \u00a0\u202f]?"
                     r"(" + _UNIT + r")(?![\w²])", re.I)
_NAME_EN = re.compile(r"\b[A-Z][a-zà-öø-ÿ]+(?:(?:\s+(?:of|de|von|van|the|da|del))?"
                      r"\s+[A-Z][a-zà-öø-ÿ]+)*")
_NAME_RU = re.compile(r"\b[А-ЯЁ][а-яё]+(?:(?:[\s-])[А-ЯЁ][а-яё]+)*")
_NOT_NAMES = frozenset("""January February March April May June July August September October
November December Monday Tuesday Wednesday Thursday Friday Saturday Sunday The This That These
Those It Its In On At By For With From As If When While After Before During Celsius
Fahrenheit""".split())
_DEFINED_EN = [
    re.compile(r"^(?:The |An? )?(?P<t>[A-Za-z][\w'-]*(?: [a-z][\w'-]*){0,2}) (?:is|are) "
               r"(?:an? |the |called |defined as |known as )"),
    re.compile(r"\b(?:is|are|was|were) (?:called|known as|termed|named) (?:the |an? )?"
               r"(?P<t>[\w'-]+(?: [\w'-]+){0,2}?)(?=[,.;:]| \()"),
]
_DEFINED_RU = [
    re.compile(r"^(?P<t>[А-ЯЁ][\w-]*(?: [а-яё][\w-]*){0,2}) — это\b"),
    # "Самый сильный ветер Байкала — сарма.": the short part after the dash is the answer.
    re.compile(r"^[А-ЯЁ][^—,]{8,} — (?P<t>[а-яё][\w-]*(?: [а-яё][\w-]*){0,2})\.$"),
    re.compile(r"^(?P<t>[А-ЯЁ][\w-]*) — (?:это\s)?(?=[а-яё])"),
    re.compile(r"\s(?P<t>[а-яё][\w-]{3,}) — (?:это\s)?(?=[а-яё])"),
    re.compile(r"\bназыва\w+ (?P<t>[«\"]?[\w-]+(?: [\w-]+)?[»\"]?)(?=[,.;:]| \(|$)"),
]
_HINTS = {
    "en": {"term": "term", "date": "year", "range": "years", "number": "number", "name": "name"},
    "ru": {"term": "термин", "date": "год", "range": "годы", "number": "число",
           "name": "название или имя"},
}
_WORDS = {
    "en": {"blank": "Fill in the blank", "tf": "True or false", "true": "True",
           "false": "False", "choose": "Choose the right answer"},
    "ru": {"blank": "Заполните пропуск", "tf": "Верно или неверно", "true": "Верно",
           "false": "Неверно", "choose": "Выберите правильный ответ"},
}
KIND_BONUS = {"term": 0.06, "date": 0.05, "range": 0.04, "number": 0.04, "name": 0.0}


@dataclass(frozen=True)
class Item:
    kind: str  # term | date | range | number | name
    text: str  # as written in the sentence
    unit: str = ""  # numbers: the unit's first letters, so distractors share it

    @property
    def group(self) -> str:
        return f"{self.kind}:{self.unit}" if self.unit else self.kind


def _year_context(text: str, start: int, end: int, value: int) -> bool:
    if _YEAR_AFTER.match(text[end:end + 12]):
        return True
    if len(str(value)) == 4 and 1000 <= value <= 2100:
        return True
    return bool(_YEAR_BEFORE.search(text[max(0, start - 16):start]))


def items(sentence: str) -> list[Item]:
    """The items of a sentence that a card could ask for, best kind first."""
    out: list[Item] = []
    ru = sentence.count(" ") and sum("а" <= c.lower() <= "я" for c in sentence) > len(sentence) / 4
    for pattern in _DEFINED_RU if ru else _DEFINED_EN:
        if (m := pattern.search(sentence)) is not None:
            term = m.group("t").strip("«»\" ")
            if term.lower() not in _BACK_REFERENCES and len(term) >= 3 \
                    and term.split()[0].lower() not in _BACK_REFERENCES:
                out.append(Item("term", term))
                break
    numbers = []
    for m in _NUMBER.finditer(sentence):
        unit = m.group(2).lower()
        if unit.startswith(("год", "year")) and _YEAR.fullmatch(m.group(1)):
            continue  # "в 1045 году" is a year
        numbers.append(m)
        out.append(Item("number", m.group(0).strip(), re.sub(r"\W", "", unit)[:3]))
    for m in _YEAR.finditer(sentence):
        if any(n.start() <= m.start() < n.end() for n in numbers):
            continue
        value = int(m.group(1))
        if not _year_context(sentence, m.start(), m.end(), value):
            continue
        out.append(Item("range" if m.group(2) else "date", m.group(0)))
    pattern = _NAME_RU if ru else _NAME_EN
    for m in pattern.finditer(sentence):
        if m.start() == 0 or sentence[:m.start()].rstrip().endswith((".", "!", "?", "—", ":")):
            continue  # a capital that opens the sentence says nothing
        name = m.group(0)
        if name in _NOT_NAMES or len(name) < 4:
            continue
        out.append(Item("name", name))
    return out


def cloze(sentence: str, item: Item) -> str | None:
    """The sentence with the item blanked out, or None when that gives the answer away or
    leaves too little to go on."""
    front = re.sub(r"(?<!\w)" + re.escape(item.text) + r"(?!\w)", BLANK, sentence)
    if BLANK not in front:
        return None
    rest = front.replace(BLANK, " ")
    if len(terms(rest)) < 3 or terms(item.text) & terms(rest) and item.kind in ("term", "name"):
        return None
    return front


# --- centrality ----------------------------------------------------------------------------------


def _term_scores(sentences: Sequence[Sentence]) -> list[float]:
    """How much of the group's frequent vocabulary each sentence carries."""
    bags = [terms(s.text) for s in sentences]
    counts = Counter(t for bag in bags for t in bag)
    return [sum(counts[t] for t in bag) / math.sqrt(len(bag) + 1) for bag in bags]


def _studyable(s: Sentence, *, most_words: int = 45) -> bool:
    first = re.findall(r"\w+", s.text)[:2]
    return s.whole and 6 <= s.words <= most_words and not s.text.endswith("?") \
        and not any(w.lower() in _BACK_REFERENCES for w in first)


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.asarray(vectors / np.maximum(norms, 1e-9))


def _centrality(vectors: np.ndarray) -> np.ndarray:
    centroid = vectors.mean(axis=0)
    centroid /= max(float(np.linalg.norm(centroid)), 1e-9)
    return np.asarray(vectors @ centroid)


def _mmr(scores: np.ndarray, vectors: np.ndarray, count: int, *, diversity: float = 0.3,
         allowed: Callable[[int, list[int]], bool] | None = None) -> list[int]:
    """Indices of `count` picks by maximal marginal relevance (central, not alike)."""
    picked: list[int] = []
    left = set(range(len(scores)))
    while left and len(picked) < count:
        best, best_value = -1, -math.inf
        for i in left:
            similar = max((float(vectors[i] @ vectors[j]) for j in picked), default=0.0)
            value = (1 - diversity) * float(scores[i]) - diversity * similar
            if value > best_value:
                best, best_value = i, value
        left.discard(best)
        if allowed is None or allowed(best, picked):
            picked.append(best)
    return picked


# --- the generator --------------------------------------------------------------------------------

PER_SECTION = 10  # candidates per section embedded for the notes
NOTES_PER_SECTION = 3


@dataclass
class _Candidate:
    sentence: Sentence
    item: Item
    front: str
    score: float = 0.0
    second: bool = False  # the sentence's second item


class OfflineGenerator:
    name = "offline"

    def __init__(self, settings: Settings,
                 embed: Callable[[list[str]], Awaitable[list[list[float]]]]) -> None:
        self.settings = settings
        self.embed = embed

    async def generate(self, material: MaterialText, kinds: Sequence[str],
                       progress: Progress) -> Generated:
        out = Generated("offline", material.language)
        passages = Passages(material.chunks)
        sections = material.sections()
        rng = random.Random(material.material_id.int)
        guide = "summary" in kinds or "notes" in kinds
        cards_wanted = self.settings.study_flashcards if "flashcards" in kinds else 0
        questions_wanted = self.settings.study_quiz_questions if "quiz" in kinds else 0

        # Which sentences to embed: a few per section for the notes and summary, the likeliest
        # cards and questions.
        per_section: list[list[Sentence]] = []
        if guide:
            for section in sections:
                group = [s for s in section.sentences if _studyable(s)]
                ranked = sorted(zip(_term_scores(group), group, strict=True),
                                key=lambda p: -p[0])
                per_section.append(sorted((s for _, s in ranked[:PER_SECTION]),
                                          key=lambda s: s.n))
        candidates = self._item_candidates(material) if cards_wanted or questions_wanted else []
        candidates = candidates[:4 * (cards_wanted + questions_wanted) + 8]
        wanted = {s.n: s for group in per_section for s in group}
        wanted.update({c.sentence.n: c.sentence for c in candidates})
        order = sorted(wanted)
        vectors: dict[int, np.ndarray] = {}
        batch = max(8, self.settings.embedding_batch_size * 2)
        for start in range(0, len(order), batch):
            await progress("reading", start, len(order))
            part = order[start:start + batch]
            embedded = _unit(np.asarray(await self.embed([wanted[n].text for n in part]),
                                        dtype=np.float32))
            vectors.update(zip(part, embedded, strict=True))
        await progress("reading", len(order), len(order))
        all_vectors = _unit(np.stack([vectors[n] for n in order])) if order else None
        material_centre = None
        if all_vectors is not None:
            centre = all_vectors.mean(axis=0)
            material_centre = centre / max(float(np.linalg.norm(centre)), 1e-9)

        if guide:
            await progress("summary", 0, len(sections))
            citations = Citations(material)
            notes_by_section = [self._notes(group, vectors, citations, passages)
                                for group in per_section]
            if "summary" in kinds:
                out.summary = self._summary(per_section, vectors, len(sections), citations,
                                            passages)
            if "notes" in kinds:
                out.notes = "\n\n".join(
                    f"**{section.title(material)}**\n\n{body}"
                    for section, body in zip(sections, notes_by_section, strict=True) if body)
            out.citations = citations.items
            await progress("summary", len(sections), len(sections))

        if candidates and material_centre is not None:
            await progress("flashcards", 0, cards_wanted + questions_wanted)
            for c in candidates:
                v = vectors[c.sentence.n]
                c.score = float(v @ material_centre) + KIND_BONUS[c.item.kind] - 0.2 * c.second
            candidates.sort(key=lambda c: -c.score)
            pool = self._distractor_pool(material)
            out.cards = self._cards(candidates, vectors, cards_wanted, passages)
            used = {flat(card.at.quote) for card in out.cards}
            fresh = [c for c in candidates if flat(c.sentence.text) not in used]
            again = [c for c in candidates if flat(c.sentence.text) in used]
            out.questions = self._questions(fresh + again, vectors, questions_wanted, pool,
                                            passages, rng)
            await progress("flashcards", cards_wanted + questions_wanted,
                           cards_wanted + questions_wanted)
        return out

    # --- summary and notes -------------------------------------------------------------------

    def _central(self, pool: list[Sentence], vectors: dict[int, np.ndarray], count: int,
                 diversity: float, citations: Citations, passages: Passages) -> list[str]:
        """The `count` most central sentences of `pool` (not alike), in the material's order,
        each with its citation marker."""
        if not pool:
            return []
        matrix = np.stack([vectors[s.n] for s in pool])
        picks = sorted(_mmr(_centrality(matrix), matrix, count, diversity=diversity),
                       key=lambda i: pool[i].n)
        out = []
        for i in picks:
            at = passages.ground(pool[i].text, None, pool[i].chunk)
            if at is not None:
                out.append(f"{pool[i].text} [{citations.cite(at)}]")
        return out

    def _notes(self, group: list[Sentence], vectors: dict[int, np.ndarray],
               citations: Citations, passages: Passages) -> str:
        count = min(NOTES_PER_SECTION, max(1, math.ceil(len(group) / 3)))
        return "\n".join(f"- {line}" for line in
                         self._central(group, vectors, count, 0.3, citations, passages))

    def _summary(self, per_section: list[list[Sentence]], vectors: dict[int, np.ndarray],
                 sections: int, citations: Citations, passages: Passages) -> str:
        pool = [s for group in per_section for s in group]
        count = max(3, min(10, 3 + sections // 2))
        return " ".join(self._central(pool, vectors, count, 0.4, citations, passages))

    # --- cards and questions -----------------------------------------------------------------

    def _item_candidates(self, material: MaterialText) -> list[_Candidate]:
        """Sentences with an item to ask for, on one page each, the likeliest first (by how
        much of the material's frequent vocabulary they carry, and by kind)."""
        usable = [s for s in material.sentences if _studyable(s, most_words=50) and s.one_place]
        scores = _term_scores(usable)
        top = max(scores, default=1.0) or 1.0
        out: list[_Candidate] = []
        for sentence, score in zip(usable, scores, strict=True):
            taken = 0
            for item in items(sentence.text):
                front = cloze(sentence.text, item)
                if front is not None:
                    # A second item of a sentence only when the first ones run out.
                    out.append(_Candidate(sentence, item, front,
                                          score / top + KIND_BONUS[item.kind] * 4 - taken,
                                          second=taken > 0))
                    taken += 1
                if taken == 2:
                    break
        out.sort(key=lambda c: -c.score)
        return out

    def _distractor_pool(self, material: MaterialText) -> dict[str, list[Item]]:
        """Every item of the material by group (kind and unit), each text once."""
        pool: dict[str, dict[str, Item]] = {}
        for sentence in material.sentences:
            for item in items(sentence.text):
                pool.setdefault(item.group, {}).setdefault(flat(item.text), item)
        return {group: list(found.values()) for group, found in pool.items()}

    def _pick(self, candidates: list[_Candidate], vectors: dict[int, np.ndarray], count: int,
              taken: set[str]) -> list[_Candidate]:
        if not candidates or count <= 0:
            return []
        matrix = np.stack([vectors[c.sentence.n] for c in candidates])
        scores = np.asarray([c.score for c in candidates])

        def allowed(i: int, picked: list[int]) -> bool:
            answer = flat(candidates[i].item.text)
            if answer in taken:
                return False
            taken.add(answer)
            return True

        return [candidates[i] for i in _mmr(scores, matrix, count, diversity=0.25,
                                            allowed=allowed)]

    def _cards(self, candidates: list[_Candidate], vectors: dict[int, np.ndarray], count: int,
               passages: Passages) -> list[CardDraft]:
        cards = []
        for c in self._pick(candidates, vectors, count, set()):
            at = passages.ground(c.sentence.text, c.item.text, c.sentence.chunk)
            if at is None:
                continue  # not where it should be: dropped
            hint = _HINTS[c.sentence.language][c.item.kind]
            cards.append(CardDraft(c.item.kind, f"{c.front} ({hint})", c.item.text, at))
        cards.sort(key=lambda card: (card.at.chunk.idx, card.at.start))
        return cards

    def _questions(self, candidates: list[_Candidate], vectors: dict[int, np.ndarray],
                   count: int, pool: dict[str, list[Item]], passages: Passages,
                   rng: random.Random) -> list[QuestionDraft]:
        pattern = ["choice", "true_false", "choice", "short"]
        out: list[QuestionDraft] = []
        for c in self._pick(candidates, vectors, count, set()):
            at = passages.ground(c.sentence.text, c.item.text, c.sentence.chunk)
            if at is None:
                continue
            language = c.sentence.language
            words = _WORDS[language]
            others = _distractors(c.item, c.sentence.text, pool.get(c.item.group, []), rng)
            kind = pattern[len(out) % len(pattern)]
            if kind == "choice" and len(others) < 3:
                kind = "true_false" if others else "short"
            if kind == "true_false" and not others:
                kind = "short"
            why = explanation(at.quote, at, language)
            hint = _HINTS[language][c.item.kind]
            if kind == "choice":
                options = [c.item.text, *others[:3]]
                rng.shuffle(options)
                out.append(QuestionDraft("choice", f"{words['choose']}: {c.front}", c.item.text,
                                         why, at, options))
            elif kind == "true_false":
                true = rng.random() < 0.5
                statement = c.sentence.text if true else re.sub(
                    r"(?<!\w)" + re.escape(c.item.text) + r"(?!\w)", others[0], c.sentence.text)
                out.append(QuestionDraft("true_false", f"{words['tf']}: {statement}",
                                         "true" if true else "false", why, at))
            else:
                out.append(QuestionDraft("short", f"{words['blank']} ({hint}): {c.front}",
                                         c.item.text, why, at))
        return out


def _distractors(item: Item, sentence: str, group: list[Item], rng: random.Random) -> list[str]:
    """Other items of the same kind (and unit) from the material, distinct from the answer and
    from each other and absent from the sentence; the most alike first (years near the
    answer's; names with its ending and length), ties broken by the material's seed."""
    answer = flat(item.text)
    said = flat(sentence)
    seen = {answer}
    options: list[tuple[float, float, str]] = []
    for other in group:
        key = flat(other.text)
        if key in seen or key in said or answer in key or key in answer:
            continue
        seen.add(key)
        options.append((_likeness(item, other), rng.random(), other.text))
    options.sort()
    return [text for _, _, text in options]


def _likeness(item: Item, other: Item) -> float:
    """Lower is more alike."""
    a, b = _number(item.text), _number(other.text)
    if a is not None and b is not None:
        return abs(math.log10(abs(a) + 1) - math.log10(abs(b) + 1))
    ending = 0.0 if item.text[-2:] == other.text[-2:] else 1.0
    return ending + abs(len(item.text.split()) - len(other.text.split())) * 0.5


def _number(text: str) -> float | None:
    found = re.match(r"\d+(?:[.,]\d+)?", text.replace("\u00a0", "").replace("\u202f", ""))
    return float(found.group(0).replace(",", ".")) if found else None
