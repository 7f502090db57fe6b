"""The grounding evaluation set (tests/eval/grounding/): original multi-page documents in English
and Russian, rendered as real PDFs, with questions whose answer sits on exactly one page; and
how a tutor's replies are scored against it.

Question kinds: `direct` (the question shares its key words with the answer), `paraphrase`
(few shared words), `distractor` (a near-duplicate fact sits on another page), `after_break`
(the answer is the first thing on its page, right after a page break), `cross` (asked in the
other language than the document's) and `out_of_scope` (no document covers it: the tutor should
say so and cite nothing).

Used by tests/test_grounding_eval.py (in-process, floors) and load_tests/eval_tutor.py (a running
server, over the public protocol).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.ingest import make_pdf

EVAL = Path(__file__).resolve().parent.parent / "eval" / "grounding"
KINDS = ("direct", "paraphrase", "distractor", "after_break", "cross", "out_of_scope")


@dataclass(frozen=True)
class Document:
    name: str
    title: str
    language: str  # en | ru
    pages: tuple[str, ...]

    def pdf(self) -> bytes:
        return make_pdf(list(self.pages))


@dataclass(frozen=True)
class Question:
    text: str
    kind: str
    doc: str | None = None  # the document that answers it (None: out of scope)
    page: int | None = None
    fact: str | None = None  # a phrase of the document the answer must hold


def load() -> tuple[list[Document], list[Question]]:
    documents: list[Document] = []
    questions: list[Question] = []
    for path in sorted(EVAL.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        if "pages" not in data:
            continue
        documents.append(Document(data["name"], data["title"], data["language"],
                                  tuple(data["pages"])))
        questions += [Question(q["q"], q["kind"], data["name"], q["page"], q["fact"])
                      for q in data["questions"]]
    extra = json.loads((EVAL / "extra_questions.json").read_text(encoding="utf-8"))
    questions += [Question(q["q"], "cross", q["doc"], q["page"], q["fact"]) for q in extra["cross"]]
    questions += [Question(q["q"], "out_of_scope") for q in extra["out_of_scope"]]
    return documents, questions


def normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text.lower().replace("ё", "е")).strip()


_SENTENCE = re.compile(r"(?<=[.!?…])\s+")
_MARKERS = re.compile(r"\s*\[\d{1,3}\]")


def repeated_sentence(answer: str) -> bool:
    """Whether the answer says one sentence (of more than a few words) twice."""
    plain = _MARKERS.sub("", answer)
    said = Counter(normalise(s) for s in _SENTENCE.split(plain) if len(s.split()) > 3)
    return any(n > 1 for n in said.values())


@dataclass
class Outcome:
    """One question's reply: its text, its citations (in first-use order), when its first delta
    came, and which document each cited material is."""

    question: Question
    answer: str
    citations: list[dict[str, Any]]
    documents: dict[str, str]  # material_id -> document name
    first_delta_s: float | None = None

    def cited(self) -> list[tuple[str | None, int | None]]:
        return [(self.documents.get(str(c.get("material_id"))), c.get("page"))
                for c in self.citations]

    @property
    def says_not_covered(self) -> bool:
        return not self.citations


@dataclass
class Tally:
    asked: int = 0
    page_any: int = 0
    page_first: int = 0
    document: int = 0
    fact: int = 0
    repeats: int = 0
    not_covered: int = 0  # replies that cite nothing


@dataclass
class Scores:
    by_kind: dict[str, Tally] = field(default_factory=dict)
    first_delta_s: list[float] = field(default_factory=list)

    def tally(self, kinds: Iterable[str]) -> Tally:
        out = Tally()
        for kind in kinds:
            t = self.by_kind.get(kind)
            if t is None:
                continue
            for name in vars(out):
                setattr(out, name, getattr(out, name) + getattr(t, name))
        return out

    @property
    def in_scope(self) -> Tally:
        return self.tally(k for k in KINDS if k != "out_of_scope")

    def not_covered_precision_recall(self) -> tuple[float, float]:
        out = self.by_kind.get("out_of_scope", Tally())
        said = sum(t.not_covered for t in self.by_kind.values())
        precision = out.not_covered / said if said else 1.0
        recall = out.not_covered / out.asked if out.asked else 1.0
        return precision, recall


def score(outcomes: list[Outcome]) -> Scores:
    scores = Scores()
    for o in outcomes:
        q = o.question
        t = scores.by_kind.setdefault(q.kind, Tally())
        t.asked += 1
        t.repeats += repeated_sentence(o.answer)
        t.not_covered += o.says_not_covered
        if o.first_delta_s is not None:
            scores.first_delta_s.append(o.first_delta_s)
        if q.kind == "out_of_scope":
            continue
        cited = o.cited()
        t.page_any += any(c == (q.doc, q.page) for c in cited)
        t.page_first += bool(cited) and cited[0] == (q.doc, q.page)
        t.document += bool(cited) and cited[0][0] == q.doc
        t.fact += q.fact is not None and normalise(q.fact) in normalise(o.answer)
    return scores


def _pct(n: int, d: int) -> str:
    return f"{100 * n / d:.0f}%" if d else "—"


def table(scores: Scores) -> list[str]:
    """The report's Markdown table: one row per question kind, then all in-scope questions."""
    lines = ["| kind | questions | right page, any citation | right page, first citation "
             "| right document | key fact in the answer | cites nothing | repeats a sentence |",
             "|---|---|---|---|---|---|---|---|"]
    rows = [(k, scores.by_kind[k]) for k in KINDS if k in scores.by_kind]
    rows.append(("**all in scope**", scores.in_scope))
    for name, t in rows:
        if name == "out_of_scope":
            lines.append(f"| {name} | {t.asked} | | | | | {_pct(t.not_covered, t.asked)} "
                         f"| {t.repeats} |")
            continue
        lines.append(f"| {name} | {t.asked} | {_pct(t.page_any, t.asked)} "
                     f"| {_pct(t.page_first, t.asked)} | {_pct(t.document, t.asked)} "
                     f"| {_pct(t.fact, t.asked)} | {_pct(t.not_covered, t.asked)} "
                     f"| {t.repeats} |")
    precision, recall = scores.not_covered_precision_recall()
    lines.append("")
    lines.append(f"\"Not covered\" (a reply that cites nothing): precision {precision:.0%}, "
                 f"recall {recall:.0%} on the out-of-scope questions.")
    return lines


async def ask_in_process(settings: Any, *, questions: list[Question] | None = None
                         ) -> tuple[list[Outcome], float]:
    """Ingest every document (real PDFs through REST and the in-process broker) for a new
    learner, then answer each question as the tutor does — retrieval, the prompt's passages,
    the offline tutor, citations — in this process (no socket: fast enough for the suite).
    Returns the outcomes and the ingestion time."""
    import asyncio
    import time
    import uuid
    from functools import partial

    import httpx

    from chat_server.app import create_app
    from chat_server.retrieval import retrieve, sentence_relevance
    from chat_server.tutor.citations import resolve
    from chat_server.tutor.offline import OfflineProvider
    from chat_server.tutor.prompt import build_request
    from tests.support.services import serve_app

    documents, every = load()
    questions = every if questions is None else questions
    app = create_app(settings)
    async with serve_app(app) as base, httpx.AsyncClient(base_url=base, timeout=60) as client:
        email = f"eval-{uuid.uuid4().hex[:8]}@example.com"
        await client.post("/auth/register", json={"email": email, "password": "password-123"})
        token = (await client.post("/auth/token", data={
            "username": email, "password": "password-123"})).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        uid = uuid.UUID((await client.get("/me", headers=headers)).json()["id"])
        started = time.perf_counter()
        names: dict[str, str] = {}
        for doc in documents:
            r = await client.post("/materials", headers=headers, data={"title": doc.title},
                                  files={"file": (f"{doc.name}.pdf", doc.pdf(), "application/pdf")})
            assert r.status_code == 202, r.text
            names[str(r.json()["id"])] = doc.name
        async with asyncio.timeout(300):
            for mid in names:
                while (m := (await client.get(f"/materials/{mid}", headers=headers)).json())[
                        "status"] != "ready":
                    assert m["status"] != "failed", m
                    await asyncio.sleep(0.1)
        ingest_s = time.perf_counter() - started
        outcomes: list[Outcome] = []
        provider = OfflineProvider()
        for q in questions:
            sent = time.perf_counter()
            hits = await retrieve(app.state.db.pool, settings, uid, q.text,
                                  k=settings.retrieval_top_k)
            request = build_request(question=q.text, hits=hits, history=[], socratic=False,
                                    history_budget=0, max_tokens=1024, temperature=0.3,
                                    relevance=partial(sentence_relevance, settings))
            pieces: list[str] = []
            first: float | None = None
            async with provider.stream(request) as stream:
                async for piece in stream:
                    first = first or time.perf_counter() - sent
                    pieces.append(piece)
            answer = "".join(pieces)
            outcomes.append(Outcome(q, answer, resolve(answer, request.sources), names, first))
    return outcomes, ingest_s
