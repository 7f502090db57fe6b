"""What a generator hands over: the study tools of one material before they are stored."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from chat_server.study.grounding import Grounded
from chat_server.study.material import MaterialText


@dataclass
class CardDraft:
    kind: str  # term | date | range | number | name | llm
    front: str
    back: str
    at: Grounded

    @property
    def key(self) -> str:
        return hashlib.sha256(f"{self.front}\n{self.back}".encode()).hexdigest()


@dataclass
class QuestionDraft:
    kind: str  # choice | true_false | short
    prompt: str
    answer: str
    explanation: str
    at: Grounded
    options: list[str] | None = None


@dataclass
class Generated:
    generator: str  # offline | anthropic:<model> | openai:<model>
    language: str
    summary: str | None = None
    notes: str | None = None
    citations: list[dict[str, Any]] = field(default_factory=list)
    cards: list[CardDraft] = field(default_factory=list)
    questions: list[QuestionDraft] = field(default_factory=list)


Progress = Callable[[str, int, int], Awaitable[None]]


class Generator(Protocol):
    """What writes study tools (offline.OfflineGenerator, llm.LLMGenerator)."""

    name: str

    async def generate(self, material: MaterialText, kinds: Sequence[str],
                       progress: Progress) -> Generated: ...


class Citations:
    """Numbered citations of a summary and its notes, in the shape of `reply.citations`: one
    number per quoted sentence, the same number when it is quoted again."""

    def __init__(self, material: MaterialText) -> None:
        self.material = material
        self.items: list[dict[str, Any]] = []
        self._numbers: dict[tuple[int, int, int], int] = {}

    def cite(self, at: Grounded) -> int:
        key = (at.chunk.idx, at.start, at.end)
        if key not in self._numbers:
            n = len(self.items) + 1
            self._numbers[key] = n
            item: dict[str, Any] = {
                "n": n, "material_id": str(self.material.material_id),
                "title": self.material.title, "kind": self.material.kind,
                "text": at.quote, "passage": at.passage}
            if at.page is not None:
                item["page"] = at.page
            if at.start_s is not None:
                item["start_s"] = at.start_s
            self.items.append(item)
        return self._numbers[key]


def place_label(page: int | None, start_s: float | None, language: str) -> str:
    """"p. 3" / "с. 3", or "1:05" for a second of a video; "" for neither."""
    if page is not None:
        return f"с. {page}" if language == "ru" else f"p. {page}"
    if start_s is not None:
        s = int(start_s)
        clock = f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else \
            f"{s // 60}:{s % 60:02d}"
        return clock
    return ""


def explanation(quote: str, at: Grounded, language: str) -> str:
    """"The text says (p. 3): “…”" in the learner's language."""
    where = place_label(at.page, at.start_s, language)
    quote = " ".join(quote.split())
    if language == "ru":
        return f"В тексте{f' ({where})' if where else ''}: «{quote}»"
    return f"The text says{f' ({where})' if where else ''}: “{quote}”"
