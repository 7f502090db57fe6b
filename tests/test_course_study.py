"""Study tools of a course material: shared with the course (its learners read, review and
take them), while each learner keeps their own schedule, review log, daily limits and quiz
attempts; outsiders and unenrolled learners get 404; deleting a learner's account leaves no
study row of theirs and the shared cards in place."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from typing import Any

import asyncpg
import httpx

from chat_server.app import create_app
from chat_server.db import libpq_url
from chat_server.settings import Settings
from tests.support.services import serve_app
from tests.support.study import learner, study_ready, study_routes
from tests.support.ws import socket
from tests.test_study_coach import _reply
from tests.test_study_review import TEXT


async def _all_404(client: httpx.AsyncClient, headers: dict[str, str],
                   calls: list[tuple[str, str, dict[str, Any] | None]]) -> None:
    for method, path, payload in calls:
        r = await client.request(method, path, headers=headers, json=payload)
        assert r.status_code == 404 and r.json()["error"] == "not_found", (path, r.text)


async def test_course_study_tools_are_shared_and_progress_is_per_learner(
        settings: Settings) -> None:
    settings.study_fsrs_fuzzing = False
    settings.study_new_cards_per_day = 3
    app = create_app(settings)
    db = await asyncpg.connect(libpq_url(settings.database_url or ""))
    try:
        async with serve_app(app) as base, \
                httpx.AsyncClient(base_url=base, timeout=60) as client:
            teacher, tid = await learner(client)
            await db.execute("update users set role = 'instructor' where id = $1", tid)
            (a, aid), (b, bid), (outsider, _) = [await learner(client) for _ in range(3)]
            cid = (await client.post("/courses", headers=teacher,
                                     json={"title": "Baikal"})).json()["id"]
            r = await client.post("/materials/text", headers=teacher, params={"course_id": cid},
                                  json={"title": "Baikal", "text": TEXT})
            assert r.status_code == 202, r.text
            mid = r.json()["id"]
            study = await study_ready(client, teacher, mid)
            qid = study["quiz_id"]
            code = (await client.post(f"/courses/{cid}/invites", headers=teacher,
                                      json={})).json()["code"]
            for who in (a, b):
                r = await client.post("/enroll", headers=who, json={"code": code})
                assert r.status_code == 201, r.text

            # Shared: the learners read the same study tools; generating stays the teacher's.
            assert (await client.get(f"/materials/{mid}/study", headers=a)).json() == study
            r = await client.post(f"/materials/{mid}/study", headers=a, json={})
            assert r.status_code == 404
            # /flashcards/due without a material: the course's cards too, limits per learner.
            due_a = (await client.get("/flashcards/due", headers=a)).json()
            assert due_a["new"] == study["flashcards"] and len(due_a["cards"]) == 3
            assert {c["material_id"] for c in due_a["cards"]} == {mid}
            card = due_a["cards"][0]["id"]

            # The same card, two ratings: two schedules.
            got_a = (await client.post(f"/flashcards/{card}/review", headers=a,
                                       json={"rating": "again"})).json()
            got_b = (await client.post(f"/flashcards/{card}/review", headers=b,
                                       json={"rating": "easy"})).json()
            assert got_a["reps"] == got_b["reps"] == 1
            assert datetime.fromisoformat(got_a["due"]) < datetime.fromisoformat(got_b["due"])
            assert got_a["state"] == "learning" and got_b["state"] == "review"
            for who, got in ((a, got_a), (b, got_b)):
                listed = (await client.get(f"/materials/{mid}/flashcards", headers=who)).json()
                (reviewed,) = [c for c in listed if c["review"]]
                assert reviewed["id"] == card and reviewed["review"]["due"] == got["due"]
                assert (await client.get("/flashcards/due", headers=who)).json()["new_left"] == 2
            listed = (await client.get(f"/materials/{mid}/flashcards", headers=teacher)).json()
            assert not any(c["review"] for c in listed)
            assert (await client.get("/flashcards/due", headers=teacher)).json()["new_left"] == 3
            rows = await db.fetch("select user_id from flashcard_states where card_id = $1",
                                  uuid.UUID(card))
            assert sorted(r["user_id"] for r in rows) == sorted([aid, bid])
            # Two first reviews of one card by one learner at once (two tabs): both recorded,
            # one after the other (the state row is made once, not raced into a 500).
            second = due_a["cards"][1]["id"]
            both = await asyncio.gather(*(
                client.post(f"/flashcards/{second}/review", headers=a, json={"rating": "good"})
                for _ in range(2)))
            assert [r.status_code for r in both] == [200, 200], [r.text for r in both]
            assert sorted(r.json()["reps"] for r in both) == [1, 2]

            # A's quiz attempt is A's alone.
            quiz = (await client.get(f"/quizzes/{qid}", headers=b)).json()
            question = quiz["questions"][0]["id"]
            r = await client.post(f"/quizzes/{qid}/attempts", headers=a, json={"answers": []})
            assert r.status_code == 201 and r.json()["score"] == 0
            assert [x["id"] for x in (await client.get(f"/quizzes/{qid}/attempts",
                                                       headers=a)).json()] == [r.json()["id"]]
            for who in (b, teacher):
                assert (await client.get(f"/quizzes/{qid}/attempts", headers=who)).json() == []

            # Not enrolled: 404 on every study route, nothing of the course is due.
            calls = study_routes(mid, qid, card, question)
            await _all_404(client, outsider, calls)
            assert (await client.get("/flashcards/due", headers=outsider)).json()["new"] == 0
            # Unenrolled: the same, at once (B's state stays B's, unreachable).
            r = await client.delete(f"/courses/{cid}/enrollments/{bid}", headers=teacher)
            assert r.status_code == 204, r.text
            await _all_404(client, b, calls)
            due_b = (await client.get("/flashcards/due", headers=b)).json()
            assert due_b["new"] == due_b["due"] == 0 and due_b["cards"] == []

            # The tutor's "quiz me" in a course conversation: the course's quiz, A's session.
            async with socket(base, a["Authorization"].split()[1]) as (ws, _):
                text, _ = await _reply(ws, {"type": "chat.send", "id": "q", "text": "quiz me",
                                            "course_id": cid})
            assert "questions from “Baikal”" in text and "Question 1 of" in text, text
            assert await db.fetchval("select user_id from quiz_sessions where quiz_id = $1",
                                     uuid.UUID(qid)) == aid

            # A's account goes: none of A's study rows stay, the shared card does.
            assert (await client.delete("/me", headers=a)).status_code == 204
            for table in ("flashcard_states", "flashcard_reviews", "quiz_attempts",
                          "quiz_sessions"):
                n = await db.fetchval(f"select count(*) from {table} where user_id = $1", aid)
                assert n == 0, table
            assert await db.fetchval("select count(*) from flashcards where id = $1",
                                     uuid.UUID(card)) == 1
    finally:
        await db.close()
