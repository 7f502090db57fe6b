"""The LLM study generator: structured output through the SDKs' public non-streaming APIs.

Anthropic: `messages.create` with one tool (`record_study`) the model must call; OpenAI (or any
compatible server): `chat.completions.create` with `response_format` = a JSON schema. The
output is validated with pydantic (`SectionOut`); an invalid one is sent back with what was
wrong (a `tool_result` with `is_error`, or a user message) and asked for again, up to
`study_llm_attempts` requests; then the generation fails with that reason. A refusal (Anthropic
`stop_reason: refusal`, OpenAI `message.refusal`) fails it at once. 429/5xx/connection faults
are left to the job's retries.

A long material is read in sections of `study_llm_section_chars` (whole pages, labelled), one
request each; their summaries, notes, cards and questions are merged. Every card and question
must quote the material and its answer must be in the quote (grounding.py): what is not is
dropped.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, model_validator

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
from chat_server.study.jobs import StudyFailed
from chat_server.study.material import MaterialText, Section

log = logging.getLogger(__name__)

TOOL = "record_study"
MAX_TOKENS = 4096


class Point(BaseModel):
    text: str = Field(min_length=1, description="One idea, in your own words.")
    quote: str = Field(min_length=8, description="The sentence of the material it comes from, "
                       "copied exactly.")


class CardOut(BaseModel):
    front: str = Field(min_length=3, description="A question or a sentence with _____.")
    back: str = Field(min_length=1, max_length=200, description="The answer: a short phrase "
                      "copied from the quote.")
    quote: str = Field(min_length=8, description="The sentence holding the answer, copied "
                       "exactly.")


class QuestionOut(BaseModel):
    kind: Literal["choice", "true_false", "short"]
    prompt: str = Field(min_length=3)
    options: list[str] | None = Field(None, description="choice only: 4 options, one right.")
    answer: str = Field(min_length=1, description="choice: the right option exactly; "
                        "true_false: true or false; short: a short phrase copied from the quote.")
    explanation: str = Field(min_length=1)
    quote: str = Field(min_length=8, description="The sentence that settles it, copied exactly.")

    @model_validator(mode="after")
    def _consistent(self) -> QuestionOut:
        if self.kind == "choice":
            options = [flat(o) for o in self.options or []]
            if not 3 <= len(options) <= 5 or len(set(options)) != len(options):
                raise ValueError("a choice question needs 3 to 5 different options")
            if options.count(flat(self.answer)) != 1:
                raise ValueError("a choice question's answer must be exactly one of its options")
        elif self.kind == "true_false" and self.answer.strip().lower() not in ("true", "false"):
            raise ValueError("a true_false question's answer must be true or false")
        return self


class SectionOut(BaseModel):
    summary: list[Point] = Field(max_length=10)
    notes: list[Point] = Field(max_length=12)
    flashcards: list[CardOut] = Field(max_length=30)
    questions: list[QuestionOut] = Field(max_length=30)


class Judgement(BaseModel):
    correct: bool


SYSTEM = """You write study material from a learner's document, in the document's language \
({language}). Use only what the text says. Every item quotes the sentence of the text it \
comes from, copied exactly (the quote is checked against the text: an item whose quote or \
answer is not in the text is dropped). Flashcards: the back is a short phrase (a term, a date, \
a name, a number) copied from the quote. Questions: kinds choice (4 options, exactly one \
right, the wrong ones of the same kind from the same text), true_false (answer true or \
false), short (a short phrase copied from the quote). Call the tool {tool} once with all of \
it."""


def section_text(section: Section) -> str:
    """The section's sentences, each page (or minute of a video) labelled."""
    lines: list[str] = []
    label = None
    for sentence in section.sentences:
        here = f"[page {sentence.page}]" if sentence.page is not None else \
            f"[at {int(sentence.start_s or 0) // 60}:{int(sentence.start_s or 0) % 60:02d}]" \
            if sentence.start_s is not None else None
        if here != label and here is not None:
            lines.append(f"\n{here}")
            label = here
        lines.append(sentence.text)
    return "\n".join(lines).strip()


def _ask_for(cards: int, questions: int, kinds: Sequence[str]) -> str:
    parts = []
    if "summary" in kinds:
        parts.append("a summary of 2-4 points and notes of 2-5 points")
    if "flashcards" in kinds and cards:
        parts.append(f"{cards} flashcards")
    if "quiz" in kinds and questions:
        parts.append(f"{questions} quiz questions (mix the kinds)")
    return "Write " + ", ".join(parts or ["nothing"]) + " (use empty lists for the rest) from "\
        "this text:\n\n"


def _client(name: str, settings: Settings) -> Any:
    if name == "anthropic":
        import anthropic

        return anthropic.AsyncAnthropic(
            api_key=settings.anthropic_api_key or "unset", base_url=settings.anthropic_base_url,
            max_retries=0, timeout=settings.llm_timeout_s)
    import openai

    return openai.AsyncOpenAI(
        api_key=settings.openai_api_key or "unset", base_url=settings.openai_base_url,
        max_retries=0, timeout=settings.llm_timeout_s)


def _model(name: str, settings: Settings) -> str:
    return settings.anthropic_model if name == "anthropic" else settings.openai_model


def _rejected(name: str, exc: Exception) -> StudyFailed | None:
    """A non-retryable status from the provider as the reason the generation failed."""
    import anthropic
    import openai

    if isinstance(exc, anthropic.APIStatusError | openai.APIStatusError):
        status = exc.status_code
        if status in (408, 409, 429) or status >= 500:
            return None
        return StudyFailed(f"The {name} provider rejected the request (HTTP {status}).")
    return None


async def structured(name: str, settings: Settings, client: Any, system: str, prompt: str,
                     schema: type[BaseModel], attempts: int) -> BaseModel:
    """One structured answer from the model, validated; invalid output is sent back with what
    was wrong, up to `attempts` requests in all."""
    problem = ""
    if name == "anthropic":
        messages: list[dict[str, Any]] = [{"role": "user", "content": prompt}]
        tool = {"name": TOOL, "description": "Record the study material.",
                "input_schema": schema.model_json_schema()}
        for _ in range(attempts):
            try:
                response = await client.messages.create(
                    model=_model(name, settings), max_tokens=MAX_TOKENS, system=system,
                    messages=messages, tools=[tool], tool_choice={"type": "tool", "name": TOOL})
            except Exception as exc:
                raise _rejected(name, exc) or exc from exc
            if response.stop_reason == "refusal":
                said = " ".join(b.text for b in response.content if b.type == "text").strip()
                raise StudyFailed(f"The {name} model declined to write study material for this "
                                  f"material{': ' + said[:200] if said else '.'}")
            use = next((b for b in response.content if b.type == "tool_use"), None)
            messages.append({"role": "assistant",
                             "content": [b.model_dump(exclude_none=True)
                                         for b in response.content]})
            if use is None:
                problem = "it did not call the tool"
                messages.append({"role": "user", "content": f"Call the {TOOL} tool."})
                continue
            try:
                return schema.model_validate(use.input)
            except ValidationError as exc:
                problem = _brief(exc)
                messages.append({"role": "user", "content": [{
                    "type": "tool_result", "tool_use_id": use.id, "is_error": True,
                    "content": f"Invalid: {problem}. Call {TOOL} again with valid input."}]})
    else:
        chat: list[dict[str, Any]] = [{"role": "system", "content": system},
                                      {"role": "user", "content": prompt}]
        response_format = {"type": "json_schema", "json_schema": {
            "name": "study_material", "schema": schema.model_json_schema()}}
        for _ in range(attempts):
            try:
                completion = await client.chat.completions.create(
                    model=_model(name, settings), messages=chat,
                    response_format=response_format, max_tokens=MAX_TOKENS,
                    temperature=settings.llm_temperature)
            except Exception as exc:
                raise _rejected(name, exc) or exc from exc
            message = completion.choices[0].message
            if getattr(message, "refusal", None):
                raise StudyFailed(f"The {name} model declined to write study material for this "
                                  f"material: {str(message.refusal)[:200]}")
            content = message.content or ""
            chat.append({"role": "assistant", "content": content})
            try:
                return schema.model_validate(json.loads(content))
            except (ValueError, ValidationError) as exc:
                problem = _brief(exc) if isinstance(exc, ValidationError) \
                    else f"not JSON ({exc})"
                chat.append({"role": "user", "content": f"That was invalid: {problem}. Reply "
                             "again with only the JSON object the schema describes."})
    raise StudyFailed(f"The {name} model returned invalid study material {attempts} times "
                      f"(last: {problem[:200]}).")


def _brief(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                     for e in exc.errors()[:5])


class LLMGenerator:
    def __init__(self, settings: Settings, name: str) -> None:
        self.settings = settings
        self.name = name

    async def generate(self, material: MaterialText, kinds: Sequence[str],
                       progress: Progress) -> Generated:
        settings = self.settings
        out = Generated(f"{self.name}:{_model(self.name, settings)}", material.language)
        sections = material.sections(settings.study_llm_section_chars)
        passages = Passages(material.chunks)
        citations = Citations(material)
        share = max(1, len(sections))
        cards_each = -(-settings.study_flashcards // share) if "flashcards" in kinds else 0
        questions_each = -(-settings.study_quiz_questions // share) if "quiz" in kinds else 0
        language = "Russian" if material.language == "ru" else "English"
        system = SYSTEM.format(language=language, tool=TOOL)
        summary: list[str] = []
        notes: list[str] = []
        cards: list[CardDraft] = []
        questions: list[QuestionDraft] = []
        client = _client(self.name, settings)
        try:
            for i, section in enumerate(sections):
                await progress("sections", i, len(sections))
                got = await structured(
                    self.name, settings, client, system,
                    _ask_for(cards_each, questions_each, kinds) + section_text(section),
                    SectionOut, settings.study_llm_attempts)
                assert isinstance(got, SectionOut)
                self._merge(got, passages, citations, summary, notes, cards, questions,
                            material, section)
            await progress("sections", len(sections), len(sections))
        finally:
            await client.close()
        if "summary" in kinds:
            out.summary = " ".join(summary[:10]) or None
            out.notes = "\n\n".join(notes) or None
            out.citations = citations.items
        by_answer: dict[str, CardDraft] = {}
        for card in cards:
            by_answer.setdefault(flat(card.back), card)  # one card per answer
        out.cards = list(by_answer.values())[:settings.study_flashcards]
        out.questions = questions[:settings.study_quiz_questions]
        if ("flashcards" in kinds or "quiz" in kinds) and not (out.cards or out.questions):
            raise StudyFailed(f"The {self.name} model's cards and questions could not be found "
                              "in the material (each must quote it), so none were kept.")
        return out

    def _merge(self, got: SectionOut, passages: Passages, citations: Citations,
               summary: list[str], notes: list[str], cards: list[CardDraft],
               questions: list[QuestionDraft], material: MaterialText, section: Section) -> None:
        language = material.language
        for point in got.summary:
            if (at := passages.ground(point.quote, None)) is not None:
                summary.append(f"{point.text} [{citations.cite(at)}]")
        lines = [f"- {p.text} [{citations.cite(at)}]" for p in got.notes
                 if (at := passages.ground(p.quote, None)) is not None]
        if lines:
            notes.append(f"**{section.title(material)}**\n\n" + "\n".join(lines))
        for card in got.flashcards:
            if (at := passages.ground(card.quote, card.back)) is not None:
                cards.append(CardDraft("llm", card.front.strip(), card.back.strip(), at))
        for q in got.questions:
            answer = q.answer.strip().lower() if q.kind == "true_false" else q.answer.strip()
            at = passages.ground(q.quote, None if q.kind == "true_false" else answer)
            if at is None:
                continue
            why = q.explanation.strip()
            if flat(at.quote) not in flat(why):
                why = f"{why} {explanation(at.quote, at, language)}"
            questions.append(QuestionDraft(q.kind, q.prompt.strip(), answer, why, at,
                                           q.options if q.kind == "choice" else None))


async def judge_short_answer(settings: Settings, name: str, prompt: str, expected: str,
                             given: str) -> bool:
    """Whether the LLM takes `given` as a right answer to `prompt` (expected: `expected`)."""
    client = _client(name, settings)
    try:
        got = await structured(
            name, settings, client,
            "You grade a learner's short answer leniently: right if it means the same as the "
            f"expected answer (spelling, word forms, synonyms allowed). Call {TOOL} with "
            "{\"correct\": true|false}.",
            f"Question: {prompt}\nExpected answer: {expected}\nLearner's answer: {given}",
            Judgement, 1)
    finally:
        await client.close()
    assert isinstance(got, Judgement)
    return got.correct

