"""Offline study tools on the shipped English and Russian evaluation PDFs (tests/eval/grounding),
through the real app: upload → ingestion → study generation on the in-process broker, with
`study.*` events on the socket; every card and question grounded on its cited page."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx

from chat_server.app import create_app
from chat_server.settings import Settings
from chat_server.study.grounding import flat
from tests.support.grounding import load
from tests.support.services import serve_app
from tests.support.study import learner, on_page, option_kind, page_texts, study_ready, upload
from tests.support.ws import recv, socket

DOCS = ("printing", "novgorod")  # English, Russian


async def _events(ws: Any, until: str, material_id: str, wait_s: float = 90
                  ) -> list[dict[str, Any]]:
    seen = []
    async with asyncio.timeout(wait_s):
        while True:
            frame = await recv(ws, wait_s)
            seen.append(frame)
            if frame.get("type") == until and frame.get("material_id") == material_id:
                return seen


async def test_offline_study_tools_are_grounded_and_regenerating_replaces(settings: Settings) -> None:
    documents = {d.name: d for d in load()[0] if d.name in DOCS}
    app = create_app(settings)
    async with serve_app(app) as base, httpx.AsyncClient(base_url=base, timeout=60) as client:
        headers, _ = await learner(client)
        token = headers["Authorization"].split()[1]
        async with socket(base, token) as (ws, _):
            ids = {name: await upload(client, headers, doc.title, doc.pdf())
                   for name, doc in documents.items()}
            events = await _events(ws, "study.ready", ids["novgorod"])
            studies = {name: await study_ready(client, headers, mid) for name, mid in ids.items()}

        progress = [e for e in events if e["type"] == "study.progress"]
        assert progress and all(isinstance(e["o"], int) for e in progress)
        ready = next(e for e in events if e["type"] == "study.ready")
        assert ready["generator"] == "offline" and ready["flashcards"] >= 10
        assert {"summary", "notes", "flashcards", "quiz"} <= set(ready["kinds"])

        for name, mid in ids.items():
            doc, study = documents[name], studies[name]
            pages = page_texts(doc.pdf())
            language = "ru" if name == "novgorod" else "en"
            assert study["language"] == language
            # Summary and notes: Markdown with [n] citing a sentence of the passage on its page.
            assert study["summary"] and study["notes"] and study["citations"]
            for c in study["citations"]:
                assert f"[{c['n']}]" in study["summary"] + study["notes"]
                assert on_page(c["text"], c["text"], c["passage"], c["page"], pages), c
                assert c["text"] in c["passage"]  # as it stands there: the widget marks it
            heading = "**Страниц" if language == "ru" else "**Page"
            assert heading in study["notes"]

            cards = (await client.get(f"/materials/{mid}/flashcards", headers=headers)).json()
            assert 10 <= len(cards) <= settings.study_flashcards, (name, len(cards))
            for card in cards:
                assert "_____" in card["front"] and card["back"] not in card["front"]
                assert on_page(card["back"], card["quote"], card["passage"], card["page"],
                               pages), card
                assert card["quote"] in card["passage"] and card["quote"][-1] in ".!?…»\"”)"
            assert len({c["back"].lower() for c in cards}) == len(cards)

            quiz = (await client.get(f"/quizzes/{study['quiz_id']}", headers=headers)).json()
            questions = quiz["questions"]
            assert 6 <= len(questions) <= settings.study_quiz_questions
            assert {q["kind"] for q in questions} == {"choice", "true_false", "short"}
            for q in questions:
                assert "answer" not in q
                checked = (await client.post(
                    f"/quizzes/{quiz['id']}/check", headers=headers,
                    json={"question_id": q["id"], "answer": None})).json()
                answer = checked["answer"]
                if q["kind"] == "true_false":
                    assert answer in ("true", "false")
                    key = next(a for a in (c["back"] for c in cards) if a in checked["quote"]) \
                        if answer == "false" and any(c["back"] in checked["quote"]
                                                     for c in cards) else None
                    assert key is None or key not in q["prompt"]  # a false statement says otherwise
                    assert on_page(checked["quote"], checked["quote"], checked["passage"],
                                   checked["page"], pages)
                    continue
                assert on_page(answer, checked["quote"], checked["passage"], checked["page"],
                               pages), checked
                if q["kind"] == "choice":
                    options = q["options"]
                    assert len(options) == 4 and len({o.lower() for o in options}) == 4
                    assert [o for o in options if o == answer] == [answer]  # exactly one right
                    assert len({option_kind(o) for o in options}) == 1, options
                    for wrong in (o for o in options if o != answer):
                        assert wrong.lower() not in checked["quote"].lower()
                assert flat(checked["quote"]) in flat(checked["explanation"])

        # Regenerating replaces: the same cards (same ids, so their review state stays), the
        # same quiz, nothing duplicated.
        mid, first = ids["novgorod"], studies["novgorod"]
        cards = (await client.get(f"/materials/{mid}/flashcards", headers=headers)).json()
        r = await client.post(f"/flashcards/{cards[0]['id']}/review", headers=headers,
                              json={"rating": "good"})
        assert r.status_code == 200, r.text

        r = await client.post(f"/materials/{mid}/study", headers=headers, json={})
        assert r.status_code == 202 and r.json()["status"] in ("queued", "running", "ready")
        again = await study_ready(client, headers, mid, after=first["updated_at"])
        cards_again = (await client.get(f"/materials/{mid}/flashcards", headers=headers)).json()
        # Same cards (no duplicates), the same ids, so the review state stayed.
        assert [c["id"] for c in cards_again] == [c["id"] for c in cards]
        assert cards_again[0]["review"] and cards_again[0]["review"]["reps"] == 1
        assert again["quiz_id"] == first["quiz_id"] and again["questions"] == first["questions"]
        assert again["summary"] == first["summary"] and again["citations"] == first["citations"]

        # Only the quiz: the cards are left alone.
        r = await client.post(f"/materials/{mid}/study", headers=headers,
                              json={"kinds": ["quiz"]})
        assert r.status_code == 202
        third = await study_ready(client, headers, mid, after=again["updated_at"])
        assert third["kinds"] == ["quiz"] and third["flashcards"] == len(cards)
        bad = await client.post(f"/materials/{mid}/study", headers=headers,
                                json={"kinds": ["poems"]})
        assert bad.status_code == 422 and bad.json()["error"] == "invalid_request"
        missing = await client.post(f"/materials/{uuid.uuid4()}/study", headers=headers, json={})
        assert missing.status_code == 404
