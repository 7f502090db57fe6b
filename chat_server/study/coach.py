"""The tutor's quiz mode: "quiz me" / "проверь меня" (or `study: true` on chat.send) makes the
tutor ask the material's quiz questions one at a time, in the conversation, and answer each
reply with feedback and the citation of the sentence that settles it.

While a question waits, the learner's next message in that conversation is its answer ("stop"
/ "хватит" ends the quiz). The question asked is kept per conversation (`quiz_sessions`), so
the quiz goes on from any socket or instance. The reply streams like any other (a fixed text
as the "provider"), with `reply.citations` naming the quote, its passage and page.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from chat_server.models import QuizQuestion
from chat_server.settings import Settings
from chat_server.study.quizzes import grade_with_llm, truth
from chat_server.tutor.prompt import PromptRequest, detect_language

START = re.compile(r"\b(?:quiz|test) me\b|\bпроверь(?:те)? меня\b|\bпроэкзаменуй", re.I)
STOP = re.compile(r"^\s*(?:stop|quit|enough|end the quiz|стоп|хватит|закончим|"
                  r"достаточно)\b", re.I)
LETTERS = "ABCDE"

_TEXT = {
    "en": {"none": "There are no quiz questions for your materials yet: open Study on a "
                   "material to generate them, then say “quiz me” again.",
           "start": "Let's check what you remember: {n} questions from “{title}”. Answer each "
                    "in a message; say “stop” to end.",
           "question": "**Question {i} of {n}.** {prompt}",
           "options": "Answer with a letter or the option.",
           "tf": "Answer true or false.",
           "right": "Correct!", "wrong": "Not quite: the answer is **{answer}**.",
           "done": "That was the last question: you got {right} of {n} right.",
           "stopped": "Quiz stopped: {right} of {asked} right so far.",
           "true": "true", "false": "false"},
    "ru": {"none": "Для ваших материалов ещё нет вопросов: откройте «Учёба» у материала, чтобы "
                   "их создать, и снова скажите «проверь меня».",
           "start": "Проверим, что вы помните: {n} вопросов по «{title}». Отвечайте на каждый "
                    "сообщением; «хватит» — закончить.",
           "question": "**Вопрос {i} из {n}.** {prompt}",
           "options": "Ответьте буквой или вариантом.",
           "tf": "Ответьте «верно» или «неверно».",
           "right": "Верно!", "wrong": "Не совсем: правильный ответ — **{answer}**.",
           "done": "Это был последний вопрос: верных ответов {right} из {n}.",
           "stopped": "Проверка окончена: верно {right} из {asked}.",
           "true": "верно", "false": "неверно"},
}


@dataclass
class Coached:
    text: str
    citations: list[dict[str, Any]] = field(default_factory=list)


def wants_quiz(text: str) -> bool:
    return bool(START.search(text))


def _question(row: asyncpg.Record) -> QuizQuestion:
    return QuizQuestion(id=row["id"], quiz_id=row["quiz_id"], idx=row["idx"], kind=row["kind"],
                        prompt=row["prompt"], options=_options(row["options"]),
                        answer=row["answer"], explanation=row["explanation"],
                        quote=row["quote"], passage=row["passage"], page=row["page"],
                        start_s=row["start_s"])


def _options(raw: Any) -> list[str] | None:
    import json

    return json.loads(raw) if isinstance(raw, str) else raw


def _ask(q: QuizQuestion, i: int, n: int, words: dict[str, str]) -> str:
    text = words["question"].format(i=i, n=n, prompt=q.prompt)
    if q.kind == "choice" and q.options:
        text += "\n\n" + "\n".join(f"- {LETTERS[k]}) {o}" for k, o in enumerate(q.options))
        text += "\n\n" + words["options"]
    elif q.kind == "true_false":
        text += " " + words["tf"]
    return text


def _given(q: QuizQuestion, text: str) -> Any:
    said = text.strip().rstrip(".!")
    if q.kind == "choice" and q.options:
        letter = re.fullmatch(r"\(?([A-Ea-eАБВГДабвгд1-5])\)?", said)
        if letter:
            ch = letter.group(1).upper()
            index = ("ABCDE".find(ch) if ch in "ABCDE" else "АБВГД".find(ch)
                     if ch in "АБВГД" else int(ch) - 1)
            return index
        return said
    if q.kind == "true_false":
        return truth(said)
    return said


SELECT_QUESTIONS = ("select id, quiz_id, idx, kind, prompt, options, answer, explanation, quote, "
                    "passage, page, start_s from quiz_questions where quiz_id = $1 order by idx")


async def turn(pool: asyncpg.Pool, settings: Settings, user_id: uuid.UUID,
               conversation_id: uuid.UUID, text: str, material_ids: list[uuid.UUID] | None,
               study: bool, course_id: uuid.UUID | None = None) -> Coached | None:
    """The tutor's quiz reply to `text`, or None when this message is not part of a quiz.
    In a course conversation (`course_id`, membership checked by the send) the quiz is one of
    the course's materials'; the session and its score are the learner's own."""
    async with pool.acquire() as conn:
        session = await conn.fetchrow(
            "select s.quiz_id, s.position, s.correct, s.question_id, q.language, m.title, "
            "m.id as material_id, m.kind from quiz_sessions s join quizzes q on q.id = s.quiz_id "
            "join materials m on m.id = q.material_id "
            "where s.conversation_id = $1 and s.user_id = $2", conversation_id, user_id)
        if session is not None and session["question_id"] is not None \
                and not wants_quiz(text) and not study:
            return await _answer(conn, settings, conversation_id, session, text)
        if not (study or wants_quiz(text)):
            return None
        return await _start(conn, user_id, conversation_id, text, material_ids, course_id)


async def _start(conn: asyncpg.Connection, user_id: uuid.UUID, conversation_id: uuid.UUID,
                 text: str, material_ids: list[uuid.UUID] | None,
                 course_id: uuid.UUID | None) -> Coached:
    words = _TEXT[detect_language(text)]
    quiz = await conn.fetchrow(
        "select q.id, q.language, m.title from quizzes q join materials m on m.id = q.material_id "
        "where (case when cast($3 as uuid) is null then q.user_id = $1 "
        "else m.course_id = $3 end) "
        "and (cast($2 as uuid[]) is null or q.material_id = any($2)) "
        "and exists (select 1 from quiz_questions qq where qq.quiz_id = q.id) "
        "order by q.updated_at desc limit 1", user_id, material_ids or None, course_id)
    if quiz is None:
        return Coached(words["none"])
    questions = [_question(r) for r in await conn.fetch(SELECT_QUESTIONS, quiz["id"])]
    first = questions[0]
    await conn.execute(
        "insert into quiz_sessions (conversation_id, user_id, quiz_id, position, correct, "
        "question_id) values ($1, $2, $3, 0, 0, $4) on conflict (conversation_id) do update "
        "set quiz_id = excluded.quiz_id, position = 0, correct = 0, "
        "question_id = excluded.question_id, updated_at = now()",
        conversation_id, user_id, quiz["id"], first.id)
    words = _TEXT[quiz["language"] if quiz["language"] in _TEXT else "en"]
    intro = words["start"].format(n=len(questions), title=quiz["title"])
    return Coached(f"{intro}\n\n{_ask(first, 1, len(questions), words)}")


async def _answer(conn: asyncpg.Connection, settings: Settings, conversation_id: uuid.UUID,
                  session: asyncpg.Record, text: str) -> Coached:
    words = _TEXT[session["language"] if session["language"] in _TEXT else "en"]
    questions = [_question(r) for r in await conn.fetch(SELECT_QUESTIONS, session["quiz_id"])]
    position, correct = session["position"], session["correct"]
    if STOP.match(text):
        await conn.execute("delete from quiz_sessions where conversation_id = $1",
                           conversation_id)
        return Coached(words["stopped"].format(right=correct, asked=position))
    current = next((q for q in questions if q.id == session["question_id"]), None)
    if current is None:  # the quiz was regenerated under us: start it again
        await conn.execute("delete from quiz_sessions where conversation_id = $1",
                           conversation_id)
        return Coached(words["none"]) if not questions else Coached(
            _ask(questions[0], 1, len(questions), words))
    verdict = await grade_with_llm(settings, current, _given(current, text))
    correct += verdict.correct
    answer = current.answer
    if current.kind == "true_false":
        answer = words["true"] if answer == "true" else words["false"]
    feedback = words["right"] if verdict.correct else words["wrong"].format(answer=answer)
    citation: dict[str, Any] = {
        "n": 1, "material_id": str(session["material_id"]), "title": session["title"],
        "kind": str(session["kind"]), "text": current.quote, "passage": current.passage}
    if current.page is not None:
        citation["page"] = current.page
    if current.start_s is not None:
        citation["start_s"] = current.start_s
    reply = f"{feedback} {current.explanation} [1]"
    position += 1
    following = questions[position] if position < len(questions) else None
    await conn.execute(
        "update quiz_sessions set position = $2, correct = $3, question_id = $4, "
        "updated_at = now() where conversation_id = $1",
        conversation_id, position, correct, following.id if following else None)
    if following is None:
        reply += "\n\n" + words["done"].format(right=correct, n=len(questions))
    else:
        reply += "\n\n" + _ask(following, position + 1, len(questions), words)
    return Coached(reply, [citation])


class _FixedStream:
    """A ready text as a reply stream, word by word (as the offline tutor streams)."""

    def __init__(self, text: str) -> None:
        from chat_server.tutor.providers import Usage

        self._text = text
        self.usage = Usage()
        self.finish_reason: str | None = None
        self.merge_reads = False

    def polled(self) -> None:
        return None

    async def __aiter__(self) -> AsyncIterator[str]:
        words = self._text.split(" ")
        for i, word in enumerate(words):
            yield word if i == 0 else " " + word
            await asyncio.sleep(0)
        self.usage.output_tokens = max(1, len(self._text) // 4)
        self.finish_reason = "stop"


class FixedProvider:
    """The tutor's provider for a quiz turn: the coach's text, nothing asked of an LLM."""

    name = "study"
    model = "quiz"

    def __init__(self, text: str) -> None:
        self.text = text

    @asynccontextmanager
    async def stream(self, request: PromptRequest) -> AsyncIterator[_FixedStream]:
        yield _FixedStream(self.text)

    async def aclose(self) -> None:
        return None
