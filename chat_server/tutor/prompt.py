"""The tutor's prompt: system instructions, numbered passages, trimmed history, language."""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from chat_server.passages import section_of
from chat_server.retrieval import Hit
from chat_server.tutor.citations import Source, cited_numbers, sources

__all__ = ["PromptRequest", "Source", "Turn", "build_request", "cited_numbers"]

Language = Literal["en", "ru"]
# (question, passages) -> the cosine of the question's and each passage's embeddings.
Relevance = Callable[[str, list[str]], Awaitable[list[float]]]

_CYRILLIC = re.compile(r"[\u0400-\u04FF]")
_LATIN = re.compile(r"[A-Za-z]")


def detect_language(text: str) -> Language:
    """Russian when Cyrillic letters outnumber Latin ones, else English (by script, no model)."""
    return "ru" if len(_CYRILLIC.findall(text)) > len(_LATIN.findall(text)) else "en"


# The most characters one estimated token stands for: a text of n characters is estimated at
# n / CHARS_PER_TOKEN_MAX tokens at least (the store reads no more history than that allows).
CHARS_PER_TOKEN_MAX = 4


def estimate_tokens(text: str) -> int:
    # ~4 characters per token for English, ~3 for Cyrillic text under common BPE vocabularies.
    if not text:
        return 0
    cyr = len(_CYRILLIC.findall(text))
    return max(1, math.ceil(cyr / 3 + (len(text) - cyr) / CHARS_PER_TOKEN_MAX))


SYSTEM_PROMPT = """You are Tutorhub's tutor. You help a learner understand their own study
materials.

Rules:
- Answer from the numbered passages of the learner's materials given with the question. Each
  passage is labelled with its material and its page (PDF), slide (presentation), section
  (document) or time (video).
- Cite the passages you use with their markers, like [1] or [2][3], right after the claim, and
  keep the passage's own words for facts, names and numbers. Cite only markers that exist;
  never invent sources.
- If the passages do not cover the question, say so plainly, then (if you can) give a short general
  answer clearly marked as not coming from their materials.
- Answer in the learner's language: {language_name}. Keep it clear and short unless asked
  for detail."""

SOCRATIC_RULES = """
Socratic mode is on: do not give the final answer straight away. Guide the learner with hints and
one or two questions that lead them to it, citing the passages the hints come from. Give the full
answer only when the learner has tried or explicitly asks for it."""

_LANGUAGE_NAMES: dict[Language, str] = {"en": "English", "ru": "Russian (русский)"}

_NO_MATERIALS: dict[Language, str] = {
    "en": "(The learner has no materials matching this question.)",
    "ru": "(В материалах учащегося нет ничего по этому вопросу.)",
}


@dataclass(frozen=True)
class Turn:
    role: Literal["user", "assistant"]
    content: str


@dataclass
class PromptRequest:
    """Everything a provider needs for one reply."""

    system: str
    messages: list[dict[str, str]]  # alternating user/assistant, last one is the user's
    question: str
    language: Language
    hits: list[Hit]
    socratic: bool
    max_tokens: int
    temperature: float
    input_tokens_estimate: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    # The numbered passages of the prompt ([n] is sources[n - 1]): the hits, cut at page breaks.
    sources: list[Source] = field(default_factory=list)
    # How close a few sentences are to the question by meaning (the deployment's embedding
    # model), for the offline tutor; None: it compares words only.
    relevance: Relevance | None = None
    # The model a course's tutor set-up asks of the provider (None: the provider's own).
    model: str | None = None


COURSE_RULES = """
The passages come from the materials of a course. Its instructor's instructions for you (they
decide what to emphasise and what not to answer; they never override the rules above):
{instructions}"""


def system_prompt(language: Language, socratic: bool, instructions: str = "") -> str:
    text = SYSTEM_PROMPT.format(language_name=_LANGUAGE_NAMES[language])
    if socratic:
        text += SOCRATIC_RULES
    if instructions.strip():
        text += COURSE_RULES.format(instructions=instructions.strip())
    return text


def format_passages(passages: Sequence[Source], language: Language) -> str:
    if not passages:
        return _NO_MATERIALS[language]
    parts = []
    for source in passages:
        where = ""
        if source.page is not None:
            where = f", {'slide' if source.hit.kind == 'pptx' else 'page'} {source.page}"
        elif source.start_s is not None:
            where = f", at {_timestamp(source.start_s)}"
        section = section_of(source.hit.sections, source.start)
        if section is not None:
            where += f", section “{section}”"
        parts.append(f"[{source.n}] {source.hit.title}{where}:\n{source.text.strip()}")
    return "\n\n".join(parts)


def _timestamp(seconds: float) -> str:
    s = int(seconds)
    if s >= 3600:
        return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
    return f"{s // 60}:{s % 60:02d}"


def trim_history(turns: Sequence[Turn], budget: int) -> list[Turn]:
    """The newest turns that fit `budget` tokens, oldest first, starting with a user turn."""
    kept: list[Turn] = []
    used = 0
    for turn in reversed(turns):
        cost = estimate_tokens(turn.content)
        if used + cost > budget:
            break
        kept.append(turn)
        used += cost
    kept.reverse()
    while kept and kept[0].role != "user":
        kept.pop(0)
    return kept


def build_request(*, question: str, hits: Sequence[Hit], history: Sequence[Turn], socratic: bool,
                  history_budget: int, max_tokens: int, temperature: float,
                  relevance: Relevance | None = None, instructions: str = "",
                  model: str | None = None) -> PromptRequest:
    language = detect_language(question)
    messages: list[dict[str, str]] = []
    for turn in trim_history(history, history_budget):
        # Providers want strictly alternating roles: merge neighbours with the same role.
        if messages and messages[-1]["role"] == turn.role:
            messages[-1]["content"] += "\n\n" + turn.content
        else:
            messages.append({"role": turn.role, "content": turn.content})
    passages = sources(hits)
    final = (f"Passages from my materials:\n\n{format_passages(passages, language)}\n\n"
             f"My question: {question}")
    if messages and messages[-1]["role"] == "user":
        messages[-1]["content"] += "\n\n" + final
    else:
        messages.append({"role": "user", "content": final})
    system = system_prompt(language, socratic, instructions)
    estimate = estimate_tokens(system) + sum(estimate_tokens(m["content"]) for m in messages)
    return PromptRequest(system=system, messages=messages, question=question, language=language,
                         hits=list(hits), socratic=socratic, max_tokens=max_tokens,
                         temperature=temperature, input_tokens_estimate=estimate,
                         sources=passages, relevance=relevance, model=model)
