"""Quizzes: reading one, grading answers, storing attempts.

Grading: a choice must be the right option (its text or its index); true/false takes a bool or
the words for it in English or Russian; a short answer is graded leniently — compared after
normalising (case, ё/е, punctuation, articles, spacing), as a number, by its words' stems, or
with a typo's worth of difference — and, when an LLM provider writes the study tools, by the
LLM when the lenient comparison says no (its failure leaves the lenient verdict).

Plain functions over a session, so any client (REST, the tutor, the Telegram bridge) calls the
same.
"""

from __future__ import annotations

import difflib
import logging
import re
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from chat_server.models import Quiz, QuizAttempt, QuizQuestion
from chat_server.passages import terms
from chat_server.settings import Settings

log = logging.getLogger(__name__)

_TRUE = {"true", "t", "yes", "y", "верно", "правда", "да", "истина", "1"}
_FALSE = {"false", "f", "no", "n", "неверно", "ложь", "нет", "неправда", "0"}
_ARTICLES = re.compile(r"^(?:the|a|an)\s+")


class QuizNotFound(LookupError):
    pass


def normalise(text: str) -> str:
    text = text.lower().replace("ё", "е").replace("–", "-").replace("—", "-")
    text = re.sub(r"[^\w\s-]", " ", text)
    text = re.sub(r"\s*-\s*", "-", " ".join(text.split()))
    return _ARTICLES.sub("", text).strip()


def _numbers(text: str) -> list[float]:
    # "1,642" and "1 642" are thousands; "2,5" is a decimal comma.
    text = re.sub(r"(?<=\d)[,\s\u00a0\u202f](?=\d{3}\b)", "", text)
    return [float(n.replace(",", ".")) for n in re.findall(r"\d+(?:[.,]\d+)?", text)]


def lenient_match(given: str, expected: str) -> bool:
    """A short answer is right when it says the expected answer, give or take spelling."""
    a, b = normalise(given), normalise(expected)
    if not a:
        return False
    if a == b:
        return True
    numbers = _numbers(b)
    if numbers and _numbers(a) == numbers:
        return True  # "1 200 m" for "1,200 metres"; "1045-1050" for "1045–1050 годах"
    wanted = terms(expected)
    if wanted and wanted == terms(given):
        return True  # other inflections
    short, long = sorted((a, b), key=len)
    if len(short) >= 4 and long.startswith(short) and len(long) - len(short) <= 3 \
            and not short.isdigit():
        return True  # an ending more or less: "рифт" for "рифтом", "sable" for "sables"
    return len(b) >= 5 and difflib.SequenceMatcher(None, a, b).ratio() >= 0.85


def truth(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        word = normalise(value)
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    return None


@dataclass
class Verdict:
    correct: bool
    graded_by: str  # exact | lenient | llm | unanswered


def grade(question: QuizQuestion, given: Any) -> Verdict:
    if given is None or given == "":
        return Verdict(False, "unanswered")
    if question.kind == "choice":
        options = question.options or []
        if isinstance(given, int) and not isinstance(given, bool):
            chosen = options[given] if 0 <= given < len(options) else None
        else:
            chosen = next((o for o in options if normalise(o) == normalise(str(given))), None)
        return Verdict(chosen is not None and normalise(chosen) == normalise(question.answer),
                       "exact")
    if question.kind == "true_false":
        said = truth(given)
        return Verdict(said is not None and said == (question.answer == "true"), "exact")
    if not isinstance(given, str):
        return Verdict(False, "exact")
    if normalise(given) == normalise(question.answer):
        return Verdict(True, "exact")
    return Verdict(lenient_match(given, question.answer), "lenient")


async def grade_with_llm(settings: Settings, question: QuizQuestion, given: Any) -> Verdict:
    """grade(); a short answer the lenient comparison refused goes to the LLM when one writes
    the study tools."""
    verdict = grade(question, given)
    if verdict.correct or question.kind != "short" or verdict.graded_by == "unanswered":
        return verdict
    from chat_server.study.jobs import generator_name

    name = generator_name(settings)
    if name == "offline":
        return verdict
    from chat_server.study.llm import judge_short_answer

    try:
        if await judge_short_answer(settings, name, question.prompt, question.answer, str(given)):
            return Verdict(True, "llm")
    except Exception as exc:  # the lenient verdict stands
        log.warning("the LLM could not grade a short answer: %s", type(exc).__name__)
    return verdict


def result(question: QuizQuestion, given: Any, verdict: Verdict) -> dict[str, Any]:
    """What a learner sees after answering: right or not, the answer, why, where."""
    out: dict[str, Any] = {
        "question_id": str(question.id), "kind": question.kind, "prompt": question.prompt,
        "given": given, "correct": verdict.correct, "graded_by": verdict.graded_by,
        "answer": question.answer, "explanation": question.explanation,
        "quote": question.quote, "passage": question.passage}
    if question.page is not None:
        out["page"] = question.page
    if question.start_s is not None:
        out["start_s"] = question.start_s
    return out


async def find_quiz(session: AsyncSession, quiz_id: uuid.UUID
                    ) -> tuple[Quiz, list[QuizQuestion]]:
    """A quiz and its questions. Who may take it is the caller's check (the routes: its
    material through `get_owned_material(..., "view")`; a course's quiz is its learners')."""
    quiz = await session.get(Quiz, quiz_id)
    if quiz is None:
        raise QuizNotFound(quiz_id)
    questions = list(await session.scalars(
        select(QuizQuestion).where(QuizQuestion.quiz_id == quiz.id).order_by(QuizQuestion.idx)))
    return quiz, questions


async def check(session: AsyncSession, settings: Settings, user_id: uuid.UUID,
                quiz_id: uuid.UUID, question_id: uuid.UUID, given: Any) -> dict[str, Any]:
    """Grade one answer now (nothing stored): the immediate feedback of a quiz."""
    _, questions = await find_quiz(session, quiz_id)
    question = next((q for q in questions if q.id == question_id), None)
    if question is None:
        raise QuizNotFound(question_id)
    return result(question, given, await grade_with_llm(settings, question, given))


async def attempt(session: AsyncSession, settings: Settings, user_id: uuid.UUID,
                  quiz_id: uuid.UUID, answers: dict[uuid.UUID, Any]) -> QuizAttempt:
    """Grade and store the user's attempt; a question not answered counts as wrong."""
    quiz, questions = await find_quiz(session, quiz_id)
    results = []
    for question in questions:
        given = answers.get(question.id)
        results.append(result(question, given,
                              await grade_with_llm(settings, question, given)))
    stored = QuizAttempt(quiz_id=quiz.id, user_id=user_id, results=results,
                         score=sum(r["correct"] for r in results), total=len(results))
    session.add(stored)
    await session.commit()
    await session.refresh(stored)
    return stored


async def attempts(session: AsyncSession, user_id: uuid.UUID, quiz_id: uuid.UUID
                   ) -> list[QuizAttempt]:
    """The user's own attempts at a quiz, newest first (a course quiz's other learners'
    attempts are theirs alone)."""
    return list(await session.scalars(
        select(QuizAttempt).where(QuizAttempt.quiz_id == quiz_id, QuizAttempt.user_id == user_id)
        .order_by(QuizAttempt.created_at.desc(), QuizAttempt.id)))
