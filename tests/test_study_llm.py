"""The LLM study generator through the real anthropic and openai SDKs against a loopback server
(tests/support/fake_structured.py): valid structured output (tool use, JSON schema), invalid
JSON then a valid retry, invalid output every time, a refusal; ungrounded items dropped."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

from chat_server.app import create_app
from chat_server.settings import Settings
from tests.support.fake_structured import (
    StructuredServer,
    anthropic_refusal,
    anthropic_tool_use,
    openai_content,
)
from tests.support.services import serve_app
from tests.support.study import learner, study_ready
from tests.support.ws import until

TEXT = ("Photosynthesis converts light energy into chemical energy. It takes place in the "
        "chloroplasts of plant cells. Chlorophyll absorbs mostly blue and red light. The Calvin "
        "cycle fixes carbon dioxide into sugars. Jan Ingenhousz showed in 1779 that plants need "
        "light to make oxygen.")

GOOD = {
    "summary": [{"text": "Plants turn light into chemical energy.",
                 "quote": "Photosynthesis converts light energy into chemical energy."}],
    "notes": [{"text": "Where: chloroplasts.",
               "quote": "It takes place in the chloroplasts of plant cells."},
              {"text": "Invented fact.", "quote": "Photosynthesis happens on the Moon at night."}],
    "flashcards": [
        {"front": "Who showed in 1779 that plants need light to make oxygen?",
         "back": "Jan Ingenhousz",
         "quote": "Jan Ingenhousz showed in 1779 that plants need light to make oxygen."},
        {"front": "What does chlorophyll absorb?", "back": "blue and red light",
         "quote": "Chlorophyll absorbs mostly blue and red light."},
        {"front": "What colour is the sky?", "back": "green",  # not in its quote: dropped
         "quote": "Chlorophyll absorbs mostly blue and red light."}],
    "questions": [
        {"kind": "choice", "prompt": "What does the Calvin cycle fix?",
         "options": ["carbon dioxide", "oxygen", "nitrogen", "water"],
         "answer": "carbon dioxide", "explanation": "It fixes carbon dioxide.",
         "quote": "The Calvin cycle fixes carbon dioxide into sugars."},
        {"kind": "true_false", "prompt": "Photosynthesis takes place in the mitochondria.",
         "answer": "false", "explanation": "In the chloroplasts.",
         "quote": "It takes place in the chloroplasts of plant cells."},
        {"kind": "short", "prompt": "In which year did Ingenhousz show it?", "answer": "1779",
         "explanation": "1779.",
         "quote": "Jan Ingenhousz showed in 1779 that plants need light to make oxygen."}],
}
INVALID = {**GOOD, "questions": [{"kind": "choice", "prompt": "Which one?", "options": ["a", "a"],
                                  "answer": "b", "explanation": "-", "quote": "x" * 10}]}


async def test_llm_study_tools_through_the_sdks(settings: Settings) -> None:

    settings.study_on_ready = False
    settings.study_llm_attempts = 2
    settings.task_retries = 0
    async with StructuredServer() as fake:
        settings.anthropic_base_url = fake.base_url
        settings.openai_base_url = fake.base_url + "/v1"
        app = create_app(settings)
        async with serve_app(app) as base, httpx.AsyncClient(base_url=base, timeout=60) as client:
            headers, _ = await learner(client)
            mid = (await client.post("/materials/text", headers=headers,
                                     json={"title": "Leaves", "text": TEXT})).json()["id"]
            await until(lambda: _ready(client, headers, mid))

            # Anthropic: tool use, valid at once.
            settings.study_generator = "anthropic"
            fake.script.append(anthropic_tool_use(GOOD))
            assert (await client.post(f"/materials/{mid}/study", headers=headers,
                                      json={})).status_code == 202
            study = await study_ready(client, headers, mid)
            request = fake.requests[-1]
            assert request["path"] == "/v1/messages"
            assert request["body"]["tool_choice"] == {"type": "tool", "name": "record_study"}
            assert request["body"]["tools"][0]["input_schema"]["properties"]["flashcards"]
            assert study["generator"].startswith("anthropic:")
            assert "[1]" in study["summary"] and "Invented" not in study["notes"]
            cards = (await client.get(f"/materials/{mid}/flashcards", headers=headers)).json()
            assert [c["back"] for c in cards] == ["Jan Ingenhousz", "blue and red light"]
            quiz = (await client.get(f"/quizzes/{study['quiz_id']}", headers=headers)).json()
            assert [q["kind"] for q in quiz["questions"]] == ["choice", "true_false", "short"]

            # OpenAI-compatible: JSON schema; invalid JSON first, then a valid retry.
            settings.study_generator = "openai"
            fake.script.extend([openai_content("{\"summary\": [oops"),
                                openai_content(json.dumps(GOOD))])
            before = len(fake.requests)
            await client.post(f"/materials/{mid}/study", headers=headers, json={})
            study = await study_ready(client, headers, mid, after=study["updated_at"])
            assert study["generator"].startswith("openai:")
            first, retry = fake.requests[before:]
            assert first["path"] == "/v1/chat/completions"
            assert first["body"]["response_format"]["type"] == "json_schema"
            assert "not JSON" in retry["body"]["messages"][-1]["content"]

            # Invalid every time: the generation fails, saying why.
            fake.script.extend([openai_content(json.dumps(INVALID))] * 2)
            await client.post(f"/materials/{mid}/study", headers=headers, json={})
            failed = await _failed(client, headers, mid)
            assert "invalid study material 2 times" in failed["error"]
            assert "options" in failed["error"]

            # A refusal: reported at once, not retried.
            settings.study_generator = "anthropic"
            fake.script.append(anthropic_refusal("I can't help with that."))
            before = len(fake.requests)
            await client.post(f"/materials/{mid}/study", headers=headers, json={})
            failed = await _failed(client, headers, mid, failed["updated_at"])
            assert "declined" in failed["error"] and "can't help" in failed["error"]
            assert len(fake.requests) == before + 1
            # What the last good generation made is still there.
            cards = (await client.get(f"/materials/{mid}/flashcards", headers=headers)).json()
            assert len(cards) == 2


async def _ready(client: httpx.AsyncClient, headers: dict[str, str], mid: str) -> bool:
    r = await client.get(f"/materials/{mid}", headers=headers)
    return bool(r.json()["status"] == "ready")


async def _failed(client: httpx.AsyncClient, headers: dict[str, str], mid: str,
                  after: str | None = None) -> dict[str, Any]:

    async with asyncio.timeout(60):
        while True:
            body = (await client.get(f"/materials/{mid}/study", headers=headers)).json()
            if body["status"] == "failed" and body["updated_at"] != after:
                return dict(body)
            await asyncio.sleep(0.05)
