"""Flashcard scheduling matches the `fsrs` package; daily limits; quiz grading; isolation:
another learner's material, cards and quizzes are 404 everywhere."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
from fsrs import Card, Rating, Scheduler

from chat_server.app import create_app
from chat_server.models import QuizQuestion
from chat_server.settings import Settings
from chat_server.study import quizzes, scheduling
from tests.support.services import serve_app
from tests.support.study import learner, study_ready, study_routes

TEXT = ("Lake Baikal is the deepest lake on Earth. Its deepest point lies 1,642 metres below "
        "the surface. The lake formed about 25 million years ago in a rift valley. In 1996 the "
        "lake was listed as a World Heritage Site. The omul is a fish found only in Baikal. "
        "The Selenga River brings almost half of the water that flows into the lake. In 1916 "
        "the Barguzin reserve was founded to save the sable. The Circum-Baikal Railway was "
        "finished in 1905. A rift is a place where the crust of the Earth is pulled apart. "
        "In 1904 a railway was laid across the ice of the lake. Seals live in Baikal, although "
        "it lies 1,700 kilometres from the nearest sea. The Angara River is the only river that "
        "flows out of the lake. In 1966 a paper mill opened on the southern shore.")


def _question(kind: str, answer: str, options: list[str] | None = None) -> QuizQuestion:
    return QuizQuestion(id=uuid.uuid4(), kind=kind, prompt="?", options=options, answer=answer,
                        explanation="", quote="", passage="")


def test_grading_is_exact_for_choices_and_lenient_for_short_answers() -> None:
    choice = _question("choice", "1904", ["1905", "1904", "1966", "1916"])
    assert quizzes.grade(choice, "1904").correct and quizzes.grade(choice, 1).correct
    assert not quizzes.grade(choice, "1905").correct and not quizzes.grade(choice, 7).correct
    assert not quizzes.grade(choice, None).correct
    assert quizzes.grade(choice, None).graded_by == "unanswered"
    tf = _question("true_false", "false")
    assert quizzes.grade(tf, False).correct and quizzes.grade(tf, "Неверно").correct
    assert not quizzes.grade(tf, "true").correct and not quizzes.grade(tf, "maybe").correct
    short = _question("short", "1,642 metres")
    for given in ("1,642 metres", "1642 m", " 1 642 ", "1,642 Metres."):
        assert quizzes.grade(short, given).correct, given
    assert not quizzes.grade(short, "1700 metres").correct
    term = _question("short", "рифтом")
    assert quizzes.grade(term, "Рифтом").correct and quizzes.grade(term, "рифт").correct
    typo = _question("short", "incunabula")
    assert quizzes.grade(typo, "incunabla").correct and quizzes.grade(typo, "the incunabula").correct
    assert not quizzes.grade(typo, "manuscripts").correct
    years = _question("short", "1045–1050")
    assert quizzes.grade(years, "1045-1050").correct and not quizzes.grade(years, "1045").correct


async def test_reviews_follow_fsrs_within_daily_limits_and_others_get_404(
        settings: Settings) -> None:
    settings.study_fsrs_fuzzing = False
    settings.study_new_cards_per_day = 3
    app = create_app(settings)
    async with serve_app(app) as base, httpx.AsyncClient(base_url=base, timeout=60) as client:
        headers, uid = await learner(client)
        r = await client.post("/materials/text", headers=headers,
                              json={"title": "Baikal", "text": TEXT})
        mid = r.json()["id"]
        study = await study_ready(client, headers, mid)
        assert study["flashcards"] >= 5 and study["quiz_id"]

        # Daily limit of new cards: 3 of them today.
        due = (await client.get(f"/flashcards/due?material_id={mid}", headers=headers)).json()
        assert len(due["cards"]) == 3 and due["new"] == study["flashcards"]
        assert due["new_left"] == 3 and due["due"] == 0
        card_id = uuid.UUID(due["cards"][0]["id"])

        # A sequence of reviews at chosen times gives what fsrs gives for the same sequence.
        reference = Scheduler(desired_retention=settings.study_desired_retention,
                              enable_fuzzing=False)
        card = Card()
        at = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
        sequence = ["good", "again", "good", "good", "hard", "easy", "good"]
        async with app.state.db.session() as session:
            for rating in sequence:
                got = await scheduling.review(session, settings, uid, card_id, rating, now=at)
                card, _ = reference.review_card(card, scheduling.RATINGS[rating],
                                                review_datetime=at)
                assert got.due == card.due and got.state == card.state.name.lower()
                assert got.stability == card.stability and got.difficulty == card.difficulty
                at = card.due + timedelta(hours=1)
        # Over REST: the same scheduler, now.
        second = due["cards"][1]["id"]
        r = await client.post(f"/flashcards/{second}/review", headers=headers,
                              json={"rating": "easy"})
        assert r.status_code == 200, r.text
        body = r.json()
        fresh, _ = reference.review_card(Card(), Rating.Easy)
        assert body["state"] == fresh.state.name.lower() == "review" and body["reps"] == 1
        assert datetime.fromisoformat(body["due"]) > datetime.now(UTC) + timedelta(days=1)
        bad = await client.post(f"/flashcards/{second}/review", headers=headers,
                                json={"rating": "perfect"})
        assert bad.status_code == 422

        # Quiz: check one answer, then an attempt with every answer.
        quiz = (await client.get(f"/quizzes/{study['quiz_id']}", headers=headers)).json()
        first_q = quiz["questions"][0]
        checked = (await client.post(f"/quizzes/{quiz['id']}/check", headers=headers,
                                     json={"question_id": first_q["id"], "answer": "zzz"})).json()
        assert checked["correct"] is False and checked["answer"] and checked["quote"]
        right = {"question_id": first_q["id"], "answer": checked["answer"]
                 if first_q["kind"] != "true_false" else checked["answer"] == "true"}
        r = await client.post(f"/quizzes/{quiz['id']}/attempts", headers=headers,
                              json={"answers": [right]})
        assert r.status_code == 201, r.text
        attempt = r.json()
        assert attempt["score"] == 1 and attempt["total"] == len(quiz["questions"])
        assert attempt["results"][0]["correct"] and not attempt["results"][1]["correct"]
        assert attempt["results"][1]["graded_by"] == "unanswered"

        # Exports.
        csv_text = (await client.get(f"/materials/{mid}/flashcards.csv", headers=headers)).text
        assert csv_text.lstrip("\ufeff").startswith("front,back,page,start_s,quote")
        apkg = await client.get(f"/materials/{mid}/flashcards.apkg", headers=headers)
        assert apkg.status_code == 200 and apkg.content[:2] == b"PK"
        assert "attachment" in apkg.headers["content-disposition"]

        # Another learner: 404 for every id of the first, the same body as a missing one.
        other, _ = await learner(client)
        qid, cid = quiz["id"], due["cards"][2]["id"]
        calls = study_routes(mid, qid, cid, first_q["id"])
        for method, path, payload in calls:
            r = await client.request(method, path, headers=other, json=payload)
            assert r.status_code == 404 and r.json()["error"] == "not_found", (path, r.text)
        mine = (await client.get("/flashcards/due", headers=other)).json()
        assert mine["cards"] == [] and mine["new"] == 0
        # ...and the first learner's state did not move.
        r = await client.get(f"/materials/{mid}/flashcards", headers=headers)
        assert sum(1 for c in r.json() if c["review"]) == 2
