"""Study tools benchmark on real parts (pgserver Postgres + pgvector, the app under uvicorn with
the in-process broker, the default e5 embeddings, the offline generator).

1. A 100-page text PDF (the 26 pages of the grounding evaluation documents, in English and
   Russian, cycled, each page with a line of its own): `material.ready` → `study.ready` on the
   owner's socket (the goal: ≤ 30 s on 2 cores), and the share of the generated cards and
   questions whose answer is found on the page they cite (the goal: 100%), checked against the
   PDF's own page text (pypdf), not against what the generator read.
2. The shipped evaluation documents one by one (tests/eval/grounding: English and Russian):
   cards and questions made, and the same grounding share.

    .venv/bin/python load_tests/bench_study.py

Prints a report and writes load_tests/reports/study.md.
"""

from __future__ import annotations

import asyncio
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chat_server.app import create_app  # noqa: E402
from chat_server.settings import Settings  # noqa: E402
from load_tests.report import Report, bench_settings, cpu_probe  # noqa: E402
from tests.support.grounding import load  # noqa: E402
from tests.support.ingest import make_pdf  # noqa: E402
from tests.support.services import serve_app  # noqa: E402
from tests.support.study import on_page, page_texts, upload  # noqa: E402
from tests.support.ws import new_user, recv, socket  # noqa: E402

REPORT = ROOT / "load_tests" / "reports" / "study.md"
PAGES = 100


def hundred_pages() -> list[str]:
    pages = [p for doc in load()[0] for p in doc.pages]
    return [f"{pages[i % len(pages)]}\n\nArchive sheet {i + 1} was catalogued in {1700 + i}."
            for i in range(PAGES)]


async def grounded(client: httpx.AsyncClient, headers: dict[str, str], material_id: str,
                   pdf: bytes) -> dict[str, Any]:
    """Cards and questions of a material, and how many have their answer on the cited page."""
    pages = page_texts(pdf)
    study = (await client.get(f"/materials/{material_id}/study", headers=headers)).json()
    cards = (await client.get(f"/materials/{material_id}/flashcards", headers=headers)).json()
    cards_ok = sum(on_page(c["back"], c["quote"], c["passage"], c["page"], pages) for c in cards)
    questions_ok, kinds = 0, {"choice": 0, "true_false": 0, "short": 0}
    quiz = (await client.get(f"/quizzes/{study['quiz_id']}", headers=headers)).json()
    for q in quiz["questions"]:
        kinds[q["kind"]] += 1
        r = (await client.post(f"/quizzes/{quiz['id']}/check", headers=headers,
                               json={"question_id": q["id"], "answer": None})).json()
        answer = r["quote"] if q["kind"] == "true_false" else r["answer"]
        questions_ok += on_page(answer, r["quote"], r["passage"], r.get("page"), pages)
    notes_ok = sum(on_page(c["text"], c["text"], c["passage"], c.get("page"), pages)
                   for c in study["citations"])
    return {"cards": len(cards), "cards_ok": cards_ok, "questions": len(quiz["questions"]),
            "questions_ok": questions_ok, "kinds": kinds, "citations": len(study["citations"]),
            "citations_ok": notes_ok, "generator": study["generator"]}


async def until_event(ws: Any, kind: str, material_id: str, wait_s: float = 600
                      ) -> tuple[float, dict[str, Any]]:
    while True:
        event = await recv(ws, wait_s)
        if event.get("material_id") != material_id:
            continue
        assert not event["type"].endswith(".failed"), event
        if event["type"] == kind:
            return time.perf_counter(), event


async def run(settings: Settings, say: Any) -> None:
    pdf = make_pdf(hundred_pages())
    app = create_app(settings)
    async with serve_app(app) as base, httpx.AsyncClient(base_url=base, timeout=120) as client:
        _, token = await new_user(base, "bench@example.com")
        headers = {"Authorization": f"Bearer {token}"}
        async with socket(base, token) as (ws, _):
            mid = await upload(client, headers, "Hundred pages", pdf)
            ready_at, ready = await until_event(ws, "material.ready", mid)
            cpu0 = time.process_time()
            study_at, study = await until_event(ws, "study.ready", mid)
            cpu = time.process_time() - cpu0
        big = await grounded(client, headers, mid, pdf)
        say(f"## {PAGES}-page PDF: material.ready → study.ready (offline, e5)")
        say()
        say("| pages | chunks | material.ready → study.ready | process CPU meanwhile | cards "
            "on their page | questions on their page | summary/notes citations on their page |")
        say("|---|---|---|---|---|---|---|")
        say(f"| {PAGES} | {ready['chunks']} | **{study_at - ready_at:.1f} s** | {cpu:.1f} s | "
            f"{big['cards_ok']}/{big['cards']} | {big['questions_ok']}/{big['questions']} | "
            f"{big['citations_ok']}/{big['citations']} |")
        say()
        say(f"Questions by kind: {big['kinds']}; study.ready said {study.get('flashcards')} "
            f"cards and {study.get('questions')} questions.")
        say()

        say("## The shipped evaluation documents (tests/eval/grounding), one by one")
        say()
        say("| document | language | pages | cards (on their page) | questions (on their page) "
            "| choice / true-false / short | citations (on their page) |")
        say("|---|---|---|---|---|---|---|")
        totals: dict[str, list[int]] = {"en": [0, 0, 0, 0], "ru": [0, 0, 0, 0]}
        for doc in load()[0]:
            data = doc.pdf()
            async with socket(base, token) as (ws, _):
                mid = await upload(client, headers, doc.title, data)
                await until_event(ws, "study.ready", mid)
            got = await grounded(client, headers, mid, data)
            k = got["kinds"]
            say(f"| {doc.name} | {doc.language} | {len(doc.pages)} | {got['cards']} "
                f"({got['cards_ok']}) | {got['questions']} ({got['questions_ok']}) | "
                f"{k['choice']} / {k['true_false']} / {k['short']} | {got['citations']} "
                f"({got['citations_ok']}) |")
            t = totals[doc.language]
            for i, key in enumerate(("cards", "cards_ok", "questions", "questions_ok")):
                t[i] += got[key]
        say()
        for language, (cards, cards_ok, questions, questions_ok) in totals.items():
            say(f"- {language.upper()}: {cards} cards, {cards_ok / max(1, cards):.0%} on their "
                f"page; {questions} questions, {questions_ok / max(1, questions):.0%} on their page")
        say()


async def main_async() -> str:
    report = Report()
    say = report.say
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-study-") as tmp:
        work = Path(tmp)
        async with bench_settings(work) as settings:
            say(f"# Study tools benchmark ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)")
            say()
            say(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                f"Python {platform.python_version()}; CPU probe {cpu_probe():.0f} ms (a fixed "
                "loop: higher = a busier machine). Postgres 16 + pgvector (pgserver); the app "
                "under uvicorn with the in-process broker; e5 embeddings; offline generator; "
                f"{settings.study_flashcards} cards and {settings.study_quiz_questions} "
                "questions per material at most.")
            say()
            await run(settings, say)
            say(f"Whole benchmark: {time.perf_counter() - started:.0f} s.")
    return report.text()


def main() -> None:
    report = asyncio.run(main_async())
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(report, encoding="utf-8")
    print(f"\nwritten to {REPORT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
