"""The offline tutor: an extractive answer from the learner's own passages, no network.

It scores every sentence of the retrieved passages by word overlap with the question
(crude prefix stemming so Russian inflections match: "фотосинтез", "фотосинтеза"),
keeps the best few, and streams them word by word with [n] markers pointing at the
passage each came from. The frame around them is in the question's language.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from chat_server.retrieval import Hit
from chat_server.tutor.prompt import Language, PromptRequest, estimate_tokens
from chat_server.tutor.providers import ReplyStream, Usage

MAX_SENTENCES = 3

_WORD = re.compile(r"\w+", re.UNICODE)
_CYRILLIC_WORD = re.compile(r"[\u0400-\u04FF]")
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+|\n{2,}")

_STOPWORDS = frozenset("""
a an the and or but if of to in on at by for with from as is are was were be been being it its
this that these those what which who whom whose when where why how do does did can could would
should will shall may might must not no yes i you he she we they me my your our their them his her
about into than then there here so such very just also any some all each more most other only own
same too s t don tell explain please describe mean means
и в во не что он на я с со как а то все она так его но да ты к у же вы за бы по только ее мне было
вот от меня еще нет о из ему теперь когда даже ну вдруг ли если уже или ни быть был него до вас
нибудь опять уж вам ведь там потом себя ничего ей может они тут где есть надо ней для мы тебя их чем
была сам чтобы без будто чего раз тоже себе под будет ж тогда кто этот того потому этого какой
совсем ним здесь этом один почти мой тем чтобы нее сейчас были куда зачем всех никогда можно при
наконец два об другой хоть после над больше тот через эти нас про всего них какая много разве три
эту моя впрочем хорошо свою этой перед иногда лучше чуть том нельзя такой им более всегда конечно
всю между такое это расскажи объясни что-такое значит такое почему
""".split())


_RU_ENDING = re.compile(r"[аеёиоуыэюяйь]{1,2}$")
_EN_ENDING = re.compile(r"(?:ing|ed|s)$")


def _stem(word: str) -> str:
    """Crude and language-agnostic enough: drop a common ending, keep five letters."""
    if _CYRILLIC_WORD.match(word):
        word = _RU_ENDING.sub("", word) if len(word) > 4 else word
    elif len(word) > 4:
        word = _EN_ENDING.sub("", word)
    return word[:5]


def terms(text: str) -> set[str]:
    return {_stem(w) for w in (m.lower() for m in _WORD.findall(text))
            if w not in _STOPWORDS and not w.isdigit() and len(w) > 1}


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text.replace("\r", "")) if len(s.strip()) > 2]


@dataclass(frozen=True)
class Pick:
    n: int
    order: int
    score: float
    text: str


def pick_sentences(question: str, hits: list[Hit], limit: int = MAX_SENTENCES) -> list[Pick]:
    """The sentences sharing the most question terms, best first; [] when none share any."""
    wanted = terms(question)
    if not wanted:
        return []
    scored: list[Pick] = []
    order = 0
    for n, hit in enumerate(hits, 1):
        for sentence in sentences(hit.text):
            order += 1
            overlap = len(wanted & terms(sentence))
            if overlap:
                # Earlier-ranked passages win ties; long sentences don't win by length alone.
                scored.append(Pick(n, order, overlap - 0.01 * n, " ".join(sentence.split())))
    if not scored:
        return []
    best = max(round(p.score) for p in scored)
    # More than half the best overlap: a sentence sharing one word of three is noise.
    keep = [p for p in scored if round(p.score) * 2 > best]
    return sorted(keep, key=lambda p: (-p.score, p.order))[:limit]


_TEXT: dict[str, dict[Language, str]] = {
    "no_materials": {
        "en": "I don't have any of your materials yet, so I can't answer from them. "
              "Upload a PDF, a text or a YouTube link, then ask me again.",
        "ru": "У меня пока нет ваших материалов, поэтому ответить по ним я не могу. "
              "Загрузите PDF, текст или ссылку на YouTube и спросите снова.",
    },
    "not_found": {
        "en": "I couldn't find anything about this in your materials. "
              "Try rephrasing the question, or add a material that covers it.",
        "ru": "В ваших материалах я не нашёл ничего об этом. "
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


def compose(request: PromptRequest) -> str:
    lang = request.language
    if not request.hits:
        return _TEXT["no_materials"][lang]
    picks = pick_sentences(request.question, request.hits)
    if not picks:
        return _TEXT["not_found"][lang]
    if request.socratic:
        first = picks[0]
        return (f"{_TEXT['socratic_lead'][lang]} {first.text} [{first.n}] "
                f"{_TEXT['socratic_question'][lang]}")
    body = " ".join(f"{p.text} [{p.n}]" for p in picks)
    return f"{_TEXT['lead'][lang]} {body}"


class _OfflineStream:
    def __init__(self, request: PromptRequest) -> None:
        self._request = request
        self.usage = Usage(input_tokens=request.input_tokens_estimate)
        self.finish_reason: str | None = None
        self.merge_reads = False  # one word per iteration either way

    def polled(self) -> None:
        return None  # no socket: iterated word by word

    async def __aiter__(self) -> AsyncIterator[str]:
        answer = compose(self._request)
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
