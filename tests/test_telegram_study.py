"""`/cards` and `/quiz` in Telegram (#19 with the study tools of #18), against the fake Bot API:
cards reviewed with inline buttons through the REST scheduler (FSRS, daily limits), a stale
press refused, another learner's press a 404, a course's cards and quiz in an enrolled
learner's /cards and /quiz; a quiz in Russian picked by a button, answered by buttons and by typing, with
feedback and the cited page after each question, the score at the end and the attempt stored
as the widget's is."""

from __future__ import annotations

import re
import uuid
from typing import Any

import asyncpg
import httpx
from fsrs import Card, Rating, Scheduler

from chat_server.db import libpq_url
from chat_server.settings import Settings
from chat_server.telegram.study import LETTERS
from tests.support.fake_telegram import FakeTelegram, Sent
from tests.support.ingest import make_pdf
from tests.support.study import study_ready
from tests.support.telegram import telegram_env
from tests.test_study_review import TEXT

CHAT = 701


def _pages() -> list[str]:
    sentences = re.split(r"(?<=\.) ", TEXT)
    return [" ".join(sentences[i:i + 5]) for i in range(0, len(sentences), 5)]


async def _answered(api: FakeTelegram, text: str) -> None:
    await api.wait_for(lambda: any(c.params.get("text") == text
                                   for c in api.of("answerCallbackQuery")))


async def _new_message(api: FakeTelegram, after: int, needle: str) -> Sent:
    def found() -> Sent | None:
        return next((m for m in api.messages[CHAT] if m.message_id > after and needle in m.text),
                    None)

    await api.wait_for(lambda: found() is not None)
    sent = found()
    assert sent is not None
    return sent


async def test_cards_and_a_quiz_with_buttons_feedback_and_the_stored_score(
        settings: Settings) -> None:
    async with telegram_env(settings, study_on_ready=True, study_generator="offline",
                            study_new_cards_per_day=2, study_fsrs_fuzzing=False) as env:
        api = env.api
        user_id, auth = await env.linked(CHAT)
        async with httpx.AsyncClient(base_url=env.base_url, timeout=60) as c:
            r = await c.post("/materials", headers=auth, data={"title": "Baikal"},
                             files={"file": ("baikal.pdf", make_pdf(_pages()), "application/pdf")})
            mid = r.json()["id"]
            r = await c.post("/materials/text", headers=auth,
                             json={"title": "Other notes", "text": "Short notes on nothing."})
            assert r.status_code in (200, 202), r.text
            study = await study_ready(c, auth, mid)
            quiz = (await c.get(f"/quizzes/{study['quiz_id']}", headers=auth)).json()
        db = await asyncpg.connect(libpq_url(env.settings.database_url or ""))
        try:
            # /cards: a card (its answer under a spoiler) with four buttons; Good, then the
            # next card; a second press on the rated card is refused; Easy, then today's limit
            # of new cards (2) is reached.
            api.message(CHAT, "/cards")
            first = await api.wait_text(CHAT, "Flashcard")
            assert "2 to review today" in first.text and "_____" in first.text
            assert "<tg-spoiler>" in first.markup and "📖 p." in first.text
            assert [b["text"] for b in (first.keyboard or [[]])[0]] == [
                "Again", "Hard", "Good", "Easy"]
            again = first.button("Again")
            api.press(CHAT, first.message_id, first.button("Good"))
            second = await _new_message(api, first.message_id, "Flashcard")
            assert first.keyboard is None and "Good · next review in 10 min" in first.text
            api.press(CHAT, first.message_id, again)
            await _answered(api, "Already answered.")
            api.press(CHAT, second.message_id, second.button("Easy"))
            await api.wait_text(CHAT, "That was the last card due for now.")
            # Another learner pressing a button with this learner's card: a 404 for them.
            other_id, _ = await env.linked(CHAT + 1)
            linked = api.messages[CHAT + 1][0]
            api.press(CHAT + 1, linked.message_id, again)
            await api.wait_text(CHAT + 1, "This is no longer there")
            reviews = await db.fetch(
                "select r.card_id, r.rating, r.reviewed_at, r.due from flashcard_reviews r "
                "where r.user_id = $1 order by r.id", uuid.UUID(user_id))
            assert [r["rating"] for r in reviews] == [Rating.Good, Rating.Easy]
            # The REST scheduler's result: what the fsrs package gives for a new card.
            expected, _ = Scheduler(desired_retention=env.settings.study_desired_retention,
                                    enable_fuzzing=False).review_card(
                Card(), Rating.Good, review_datetime=reviews[0]["reviewed_at"])
            assert reviews[0]["due"] == expected.due

            # /quiz in Russian: the material by its button, every second answer right (by
            # button, or typed for a short answer), feedback with the cited page each time.
            rows = {str(r["id"]): r for r in await db.fetch(
                "select id, answer, page from quiz_questions where quiz_id = $1",
                uuid.UUID(quiz["id"]))}
            api.message(CHAT, "/quiz", language="ru")
            pick = await api.wait_text(CHAT, "Выберите материал для теста")
            assert sorted(b[0]["text"] for b in pick.keyboard or []) == ["Baikal", "Other notes"]
            api.press(CHAT, pick.message_id, pick.button("Baikal"), language="ru")
            total = len(quiz["questions"])
            await api.wait_text(CHAT, f"Тест: Baikal, вопросов: {total}")
            expected_score = 0
            first_question: Sent | None = None
            for i, q in enumerate(quiz["questions"]):
                asked = await _new_message(api, pick.message_id, f"Вопрос {i + 1} из {total}")
                first_question = first_question or asked
                row: dict[str, Any] = dict(rows[q["id"]])
                right = i % 2 == 0
                expected_score += right
                if q["kind"] == "choice":
                    k = q["options"].index(row["answer"])
                    pressed = k if right else (k + 1) % len(q["options"])
                    api.press(CHAT, asked.message_id, asked.button(LETTERS[pressed]), language="ru")
                elif q["kind"] == "true_false":
                    label = "Верно" if (row["answer"] == "true") == right else "Неверно"
                    api.press(CHAT, asked.message_id, asked.button(label), language="ru")
                else:
                    assert "Напишите ответ" in asked.text
                    api.message(CHAT, row["answer"] if right else "совсем не то", language="ru")
                if q["kind"] == "short":
                    feedback = await _new_message(api, asked.message_id, "Ваш ответ:")
                else:
                    await api.wait_for(lambda m=asked: "Ваш ответ:" in m.text)
                    feedback = asked
                    assert asked.keyboard is None
                assert ("✅ Верно!" in feedback.text) == right, feedback.text
                assert f"📖 с. {row['page']}: «" in feedback.text
            await api.wait_text(CHAT, f"🏁 Ваш результат: {expected_score} из {total}.")
            assert first_question is not None
            api.press(CHAT, first_question.message_id, "qa:" + uuid.UUID(quiz["id"]).hex + ":0:0",
                      language="ru")
            await _answered(api, "Ответ уже принят.")
            attempts = await db.fetch("select score, total from quiz_attempts where user_id = $1",
                                      uuid.UUID(user_id))
            assert [(a["score"], a["total"]) for a in attempts] == [(expected_score, total)]
            assert await db.fetchval("select count(*) from telegram_quizzes") == 0

            # A course's cards reach its learners' /cards (the same REST routes): Baikal moved
            # into a course the first user teaches, the second user enrolled in it.
            course = await db.fetchval(
                "insert into courses (id, owner_id, title) values (gen_random_uuid(), $1, 'C') "
                "returning id", uuid.UUID(user_id))
            await db.execute("update materials set course_id = $1 where id = $2", course,
                             uuid.UUID(mid))
            await db.execute("insert into enrollments (course_id, user_id, via) "
                             "values ($1, $2, 'invite')", course, uuid.UUID(other_id))
            api.message(CHAT + 1, "/cards")
            assert "2 to review today" in (await api.wait_text(CHAT + 1, "Flashcard")).text
            # ... and its quiz to their /quiz (GET /courses, then the course's materials),
            # labelled with the course's title, started by its button.
            api.message(CHAT + 1, "/quiz")
            offer = await api.wait_text(CHAT + 1, "Choose a material for the quiz")
            assert [b[0]["text"] for b in offer.keyboard or []] == ["C · Baikal"]
            api.press(CHAT + 1, offer.message_id, offer.button("C · Baikal"))
            await api.wait_text(CHAT + 1, f"Quiz: Baikal, {total} questions")
        finally:
            await db.close()
