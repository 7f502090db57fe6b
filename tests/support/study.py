"""Helpers for the study tests: a learner with materials, waiting for their study tools, and
checking a card's or question's answer against the page of the PDF it cites."""

from __future__ import annotations

import asyncio
import io
import re
import time
import uuid
from typing import Any

import httpx

from chat_server.study.grounding import flat


async def learner(client: httpx.AsyncClient, email: str | None = None
                  ) -> tuple[dict[str, str], uuid.UUID]:
    email = email or f"s{uuid.uuid4().hex[:10]}@example.com"
    r = await client.post("/auth/register", json={"email": email, "password": "password-123"})
    assert r.status_code == 201, r.text
    r = await client.post("/auth/token", data={"username": email, "password": "password-123"})
    headers = {"Authorization": f"Bearer {r.json()['access_token']}"}
    me = (await client.get("/me", headers=headers)).json()
    return headers, uuid.UUID(me["id"])


def study_routes(mid: str, qid: str, card: str, question: str
                 ) -> list[tuple[str, str, dict[str, Any] | None]]:
    """Every study route of a material, its quiz and one of its cards (method, path, body):
    what someone who may not see the material gets 404 on."""
    return [
        ("GET", f"/materials/{mid}/study", None),
        ("POST", f"/materials/{mid}/study", {}),
        ("GET", f"/materials/{mid}/flashcards", None),
        ("GET", f"/materials/{mid}/flashcards.csv", None),
        ("GET", f"/materials/{mid}/flashcards.apkg", None),
        ("GET", f"/flashcards/due?material_id={mid}", None),
        ("POST", f"/flashcards/{card}/review", {"rating": "good"}),
        ("GET", f"/quizzes/{qid}", None),
        ("POST", f"/quizzes/{qid}/check", {"question_id": question, "answer": "x"}),
        ("POST", f"/quizzes/{qid}/attempts", {"answers": []}),
        ("GET", f"/quizzes/{qid}/attempts", None),
    ]


async def upload(client: httpx.AsyncClient, headers: dict[str, str], title: str,
                 pdf: bytes) -> str:
    r = await client.post("/materials", headers=headers, data={"title": title},
                          files={"file": (f"{title}.pdf", pdf, "application/pdf")})
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


async def study_ready(client: httpx.AsyncClient, headers: dict[str, str], material_id: str,
                      within_s: float = 120, after: str | None = None) -> dict[str, Any]:
    """The material's study tools once generated (after `after`, an earlier updated_at)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        r = await client.get(f"/materials/{material_id}/study", headers=headers)
        if r.status_code == 200:
            body: dict[str, Any] = r.json()
            assert body["status"] != "failed", body
            if body["status"] == "ready" and body["updated_at"] != after:
                return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"no study tools for {material_id} within {within_s} s")


def page_texts(pdf: bytes) -> list[str]:
    """Each page's text as pypdf reads it, normalised like the grounding check does."""
    from pypdf import PdfReader

    return [flat(page.extract_text() or "") for page in PdfReader(io.BytesIO(pdf)).pages]


def on_page(answer: str, quote: str, passage: str, page: int | None, pages: list[str]) -> bool:
    """The answer is in its quote, the quote in its passage, and the answer on the cited page."""
    if page is None or not 1 <= page <= len(pages):
        return False
    return flat(answer) in flat(quote) and flat(quote) in flat(passage) \
        and flat(answer) in pages[page - 1]


def option_kind(text: str) -> str:
    """What kind of item an option is, judged from its text alone."""
    if re.fullmatch(r"\d{3,4}", text):
        return "year"
    if re.fullmatch(r"\d{3,4}\s*[-–—]\s*\d{2,4}", text):
        return "years"
    unit = re.fullmatch(r"[\d.,\s\u00a0–-]+\s?(\S{1,3})\S*", text)
    if unit:
        return "number:" + unit.group(1).lower()
    return "words"
