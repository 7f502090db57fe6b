"""The offline tutor: an extractive answer from the learner's own passages, no network.

Every sentence of the retrieved passages is a candidate (a sentence that two overlapping chunks
share is one candidate, kept from the better-ranked passage). Each is scored against the
question by
- exact terms: the share of the question's content words (crude stems, so Russian inflections
  meet; numbers whole) that it holds, each word weighted by how rare it is among the candidates,
  so the word that tells two similar facts apart counts more than the words they share;
- meaning, when the words alone are weak evidence (a paraphrase, a question asked in the other
  language than the material): the cosine of the question and the sentences of the best-ranked
  passages, with the deployment's embedding model (PromptRequest.relevance);
- the rank retrieval gave its passage.
The answer leads with the best sentence and adds at most two more that score nearly as well
and bring something the ones before lack; each is followed by the marker of the passage it
quotes (citations.py turns that into its page or second). When even the best evidence is weak
it says plainly that the materials do not cover the question. The frame is in the question's
language.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

from chat_server.passages import Span, name_spellings, stem, terms
from chat_server.tutor.citations import Source
from chat_server.tutor.prompt import Language, PromptRequest, Relevance, estimate_tokens
from chat_server.tutor.providers import ReplyStream, Usage

MAX_SENTENCES = 3
# Below this share of the question's (weighted) words, the words alone do not show that a
# sentence answers it: meaning decides (when an embedding model is at hand).
WORDS_SUFFICE = 0.6
# Without a meaning check, a sentence must hold at least this share of the question's words.
WORDS_MINIMUM = 0.34
# Meaning is checked on the sentences of the passages ranked this high, and on the best few by
# words: a bounded number of short texts embedded per question (and cached).
MEANING_RANKS = 2
MEANING_CLOSEST = 3
MEANING_MAX_SENTENCES = 30
# An added sentence must score this close to the lead and not repeat what is already said.
ADD_RATIO = 0.7
SAME_CONTENT = 0.7  # share of its words already said: the same sentence again, in effect


@dataclass(eq=False)
class Candidate:
    source: Source
    span: Span
    text: str
    words: set[str]
    coverage: float = 0.0  # weighted share of the question's words it holds
    # Closeness in meaning to the question, when checked: 0 at the line above which a sentence
    # is on the question for the embedding model, 1 for the same meaning (retrieval.py).
    meaning: float | None = None
    score: float = 0.0


def _flat(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def candidates(sources: Sequence[Source], alias: dict[str, str] | None = None
               ) -> list[Candidate]:
    """Every sentence of the passages once, best-ranked passage first; `alias` maps a term to
    the question's term it stands for (a name spelt in Cyrillic)."""
    alias = alias or {}
    seen: set[str] = set()
    out: list[Candidate] = []
    for source in sorted(sources, key=lambda s: (s.rank, s.n)):
        for span in source.sentences():
            text = _flat(source.hit.text[span.start:span.end])
            key = text.lower()
            if key in seen:
                continue  # overlapping chunks: the same sentence from a worse-ranked passage
            seen.add(key)
            out.append(Candidate(source, span, text, {alias.get(t, t) for t in terms(text)}))
    return out


def _rank_weight(rank: int) -> float:
    return 1.0 / (1.0 + 0.25 * (rank - 1))


async def pick_sentences(question: str, sources: Sequence[Source],
                         relevance: Relevance | None = None, *,
                         limit: int = MAX_SENTENCES) -> list[Candidate]:
    """The sentences to answer with, best first; [] when the passages do not cover it."""
    alias = {stem(cyrillic): stem(latin.lower())
             for cyrillic, latin in name_spellings(question).items()}
    found = candidates(sources, alias)
    if not found:
        return []
    wanted = terms(question)
    df = {t: sum(t in c.words for c in found) for t in wanted}
    idf = {t: math.log(1 + (len(found) + 1) / (df[t] + 0.5)) for t in wanted}
    total = sum(idf.values())
    for c in found:
        c.coverage = sum(idf[t] for t in wanted & c.words) / total if total else 0.0
        c.score = c.coverage * (0.6 + 0.4 * _rank_weight(c.source.rank))
    best_words = max(c.coverage for c in found)
    checked = False
    if best_words < WORDS_SUFFICE and relevance is not None:
        by_words = sorted(found, key=lambda c: -c.score)[:4]
        # The passages retrieval ranked best, and those closest to the question by meaning
        # (a passage in another language than the question ranks low on words alone).
        hits = sorted({c.source.hit.chunk_id: c.source.hit for c in found}.values(),
                      key=lambda h: -(h.similarity or 0.0))
        closest = {h.chunk_id for h in hits[:MEANING_CLOSEST]}
        pool = [c for c in found if c.source.rank <= MEANING_RANKS
                or c.source.hit.chunk_id in closest]
        pool = list(dict.fromkeys(by_words + pool))[:MEANING_MAX_SENTENCES]
        for c, meaning in zip(pool, await relevance(question, [c.text for c in pool]),
                              strict=True):
            c.meaning = meaning
            c.score = max(c.score, (0.5 * c.coverage + max(0.0, meaning)) * (
                0.6 + 0.4 * _rank_weight(c.source.rank)))
        checked = True
    # Evidence: the words alone, or (where it was checked) the meaning.
    floor = WORDS_SUFFICE if checked else WORDS_MINIMUM
    ranked = [c for c in sorted(found, key=lambda c: -c.score)
              if c.score > 0 and (c.coverage >= floor or (c.meaning or -1.0) >= 0)]
    if not ranked:
        return []  # the materials do not cover the question
    lead = ranked[0]
    chosen = _with_its_context(lead)
    said = set().union(*(c.words for c in chosen))
    for c in ranked[1:]:
        if any(c.text.lower() == k.text.lower() for k in chosen):
            continue
        if len(chosen) >= limit or c.score < ADD_RATIO * lead.score:
            break
        new = c.words - said
        if not c.words or len(new) < (1 - SAME_CONTENT) * len(c.words):
            continue  # says again what is already said
        if not (wanted & new) and c.meaning is None:
            continue  # brings nothing the question asked about
        chosen.append(c)
        said |= c.words
    return chosen


# Words that point back at something said just before: a sentence opening with one leans on the
# sentence before it ("Fust sued him", "Эти рачки составляют…").
_BACK_REFERENCES = frozenset("""
it its this these those they their them he his him she her such there then that
он она оно они его её ее их ним ней нём нем этот эта это эти этого этой этих этом там тогда
такой такая такие
""".split())


def _leans_back(text: str) -> bool:
    return any(w.lower() in _BACK_REFERENCES for w in re.findall(r"\w+", text)[:3])


def _with_its_context(lead: Candidate) -> list[Candidate]:
    """The lead with its neighbours on the same page that it cannot be read without: the
    sentence before when the lead opens by pointing back, the sentence after when that one
    opens by pointing back at the lead (where the fact often is: "…the Circum-Baikal railway
    was finished in 1905. On its ninety kilometres, thirty-nine tunnels were built.")."""
    spans = lead.source.sentences()
    at = next((i for i, s in enumerate(spans) if s == lead.span), None)
    if at is None:
        return [lead]
    text = lead.source.hit.text
    group = [lead]

    def neighbour(i: int) -> Candidate:
        words = _flat(text[spans[i].start:spans[i].end])
        return Candidate(lead.source, spans[i], words, terms(words), lead.coverage, lead.meaning,
                         lead.score)

    if at > 0 and _leans_back(lead.text):
        group.insert(0, neighbour(at - 1))
    if at + 1 < len(spans) and _leans_back(text[spans[at + 1].start:spans[at + 1].end]):
        group.append(neighbour(at + 1))
    return group


_TEXT: dict[str, dict[Language, str]] = {
    "no_materials": {
        "en": "I don't have any of your materials yet, so I can't answer from them. "
              "Upload a PDF, a text or a YouTube link, then ask me again.",
        "ru": "У меня пока нет ваших материалов, поэтому ответить по ним я не могу. "
              "Загрузите PDF, текст или ссылку на YouTube и спросите снова.",
    },
    "not_found": {
        "en": "I couldn't find anything about this in your materials. They do not cover this "
              "question. Try rephrasing it, or add a material that covers it.",
        "ru": "В ваших материалах я не нашёл ничего об этом. Этот вопрос в них не освещён. "
              "Попробуйте переформулировать вопрос или добавьте материал по этой теме.",
    },
    "lead": {
        "en": "Here is what your materials say:",
        "ru": "Вот что сказано в ваших материалах:",
    },
    "socratic_lead": {
        "en": "Let's work it out together. A hint from your materials:",
        "ru": "Давайте разберёмся вместе. Подсказка из ваших материалов:",
    },
    "socratic_question": {
        "en": "What do you think follows from this?",
        "ru": "Как вы думаете, что из этого следует?",
    },
}


async def compose(request: PromptRequest) -> str:
    lang = request.language
    if not request.hits:
        return _TEXT["no_materials"][lang]
    picks = await pick_sentences(request.question, request.sources, request.relevance)
    if not picks:
        return _TEXT["not_found"][lang]
    if request.socratic:
        first = picks[0]
        return (f"{_TEXT['socratic_lead'][lang]} {first.text} [{first.source.n}] "
                f"{_TEXT['socratic_question'][lang]}")
    body = " ".join(f"{p.text} [{p.source.n}]" for p in picks)
    return f"{_TEXT['lead'][lang]} {body}"


class _OfflineStream:
    def __init__(self, request: PromptRequest) -> None:
        self._request = request
        self.usage = Usage(input_tokens=request.input_tokens_estimate)
        self.finish_reason: str | None = None

    async def __aiter__(self) -> AsyncIterator[str]:
        answer = await compose(self._request)
        words = answer.split(" ")
        budget = self._request.max_tokens
        sent = ""
        for i, word in enumerate(words):
            piece = word if i == 0 else " " + word
            if estimate_tokens(sent + piece) > budget:
                self.finish_reason = "length"
                break
            sent += piece
            self.usage.output_tokens = estimate_tokens(sent)
            yield piece
            await asyncio.sleep(0)  # word by word: let every delta go out on its own
        self.finish_reason = self.finish_reason or "stop"


class OfflineProvider:
    name = "offline"
    model = "extractive"

    @asynccontextmanager
    async def stream(self, request: PromptRequest) -> AsyncIterator[ReplyStream]:
        yield _OfflineStream(request)

    async def aclose(self) -> None:
        return None
