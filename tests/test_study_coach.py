"""The tutor quizzes a learner from the material's quiz over the socket: "quiz me" / "проверь
меня" (or `study: true`), one question at a time, feedback with the citation, the final score."""

from __future__ import annotations

import json
from typing import Any

import httpx

from chat_server.app import create_app
from chat_server.settings import Settings
from tests.support.services import serve_app
from tests.support.study import learner, study_ready
from tests.support.ws import recv, socket

TEXT = ("Новгород впервые упоминается в летописи под 859 годом. В 1136 году новгородцы изгнали "
        "князя Всеволода Мстиславича. В 1240 году князь Александр Ярославич разбил шведов на "
        "реке Неве. В 1242 году он победил рыцарей Ливонского ордена на льду Чудского озера. "
        "В 1478 году Новгород окончательно потерял независимость. В 1570 году Новгород разорило "
        "опричное войско Ивана Грозного. В 1862 году в кремле открыли памятник «Тысячелетие "
        "России». В 1999 году городу вернули историческое название Великий Новгород.")


async def _reply(ws: Any, frame: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    await ws.send(json.dumps(frame))
    text, citations = "", []
    while True:
        event = await recv(ws, 30)
        if event["type"] == "reply.delta":
            text += event["text"]
        elif event["type"] == "reply.citations":
            citations = event["citations"]
        elif event["type"] == "reply.end":
            assert event["finish_reason"] == "stop", event
            return text, citations
        elif event["type"] == "error":
            raise AssertionError(event)


async def test_quiz_me_asks_one_question_at_a_time_with_feedback_and_citation(
        settings: Settings) -> None:
    app = create_app(settings)
    async with serve_app(app) as base, httpx.AsyncClient(base_url=base, timeout=60) as client:
        headers, _ = await learner(client)
        token = headers["Authorization"].split()[1]
        async with socket(base, token) as (ws, _):
            text, _ = await _reply(ws, {"type": "chat.send", "id": "q0", "text": "quiz me"})
            assert "no quiz questions" in text  # nothing generated yet
            mid = (await client.post("/materials/text", headers=headers,
                                     json={"title": "Новгород", "text": TEXT})).json()["id"]
            study = await study_ready(client, headers, mid)
            quiz = (await client.get(f"/quizzes/{study['quiz_id']}", headers=headers)).json()
            questions = quiz["questions"]

            text, citations = await _reply(ws, {"type": "chat.send", "id": "q1",
                                                "text": "Проверь меня, пожалуйста"})
            assert "Вопрос 1 из" in text and questions[0]["prompt"] in text and not citations
            conversation = (await client.get("/conversations", headers=headers)).json()[0]["id"]

            first = (await client.post(f"/quizzes/{quiz['id']}/check", headers=headers, json={
                "question_id": questions[0]["id"], "answer": None})).json()
            right = first["answer"]
            if questions[0]["kind"] == "true_false":
                right = "верно" if right == "true" else "неверно"
            text, citations = await _reply(ws, {"type": "chat.send", "id": "q2", "text": right,
                                                "conversation_id": conversation})
            assert text.startswith("Верно!") and "[1]" in text and "Вопрос 2 из" in text
            assert citations[0]["text"] == first["quote"] and citations[0]["material_id"] == mid

            text, citations = await _reply(ws, {"type": "chat.send", "id": "q3",
                                                "text": "совсем не то",
                                                "conversation_id": conversation})
            assert text.startswith("Не совсем") and citations and "Вопрос 3 из" in text

            text, _ = await _reply(ws, {"type": "chat.send", "id": "q4", "text": "хватит",
                                        "conversation_id": conversation})
            assert "верно 1 из 2" in text
            # After the quiz the tutor answers questions again (the offline tutor cites).
            text, citations = await _reply(ws, {"type": "chat.send", "id": "q5",
                                                "text": "Когда открыли памятник?",
                                                "conversation_id": conversation})
            assert "1862" in text

            # `study: true` starts a quiz whatever the text says.
            text, _ = await _reply(ws, {"type": "chat.send", "id": "q6", "text": "поехали",
                                        "study": True})
            assert "Вопрос 1 из" in text
