"""Upload → ingestion → ready/failed through the real app (in-process broker, real Postgres),
with progress events on the bus, dedup, limits, retries and per-user retrieval."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from chat_server.app import create_app
from chat_server.embeddings import get_embedder
from chat_server.materials.formats import ENCRYPTED, NO_TEXT, NO_TRANSCRIPT
from chat_server.materials.ingest import ingest
from chat_server.retrieval import retrieve
from chat_server.settings import Settings
from tests.support.ingest import (
    Video,
    encrypt_pdf,
    make_image_only_pdf,
    make_pdf,
    youtube_server,
)
from tests.support.services import serve_app

PAGES = [
    "Photosynthesis converts light energy into chemical energy. It takes place in the "
    "chloroplasts of plant cells, where chlorophyll absorbs mostly blue and red light.",
    "Митохондрии — энергетические станции клетки. В них происходит клеточное дыхание, "
    "при котором глюкоза окисляется до углекислого газа и воды.",
    "The Calvin cycle fixes carbon dioxide into sugars using ATP and NADPH made by the "
    "light reactions.",
]


@dataclass
class Ctx:
    app: FastAPI
    client: httpx.AsyncClient
    settings: Settings

    async def user(self, email: str) -> tuple[dict[str, str], uuid.UUID]:
        r = await self.client.post("/auth/register", json={"email": email, "password": "password123"})
        assert r.status_code == 201, r.text
        r = await self.client.post("/auth/token", data={"username": email, "password": "password123"})
        headers = {"Authorization": f"Bearer {r.json()['access_token']}"}
        me = (await self.client.get("/me", headers=headers)).json()
        return headers, uuid.UUID(me["id"])

    async def wait(self, headers: dict[str, str], material_id: str, within_s: float = 150) -> dict[str, Any]:
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            body = (await self.client.get(f"/materials/{material_id}", headers=headers)).json()
            if body["status"] in ("ready", "failed"):
                return body  # type: ignore[no-any-return]
            await asyncio.sleep(0.1)
        raise AssertionError(f"material {material_id} did not finish in {within_s}s: {body}")

    async def events(self, user_id: uuid.UUID, *, last: str, within_s: float = 10) -> list[dict[str, Any]]:
        """The user's event history once its last event is of type `last`: the worker stores a
        material's end, then publishes it, so the REST status can be seen a moment before."""
        bus = self.app.state.bus
        deadline = time.monotonic() + within_s
        while True:
            head = await bus.head(str(user_id))
            events = [json.loads(f) for f in await bus.since(str(user_id), 0, head.epoch)]
            if (events and events[-1]["type"] == last) or time.monotonic() > deadline:
                return events
            await asyncio.sleep(0.05)


async def _ctx(settings: Settings) -> AsyncIterator[Ctx]:
    # No study tools here: their study.* events would follow material.ready (tests/test_study_*).
    settings = settings.model_copy(update={"study_on_ready": False})
    app = create_app(settings)
    async with serve_app(app) as base, httpx.AsyncClient(base_url=base, timeout=60) as client:
        yield Ctx(app, client, settings)


@pytest.fixture
async def ctx(settings: Settings) -> AsyncIterator[Ctx]:
    async for c in _ctx(settings.model_copy(update={"task_retry_backoff_s": 0.05})):
        yield c


async def test_pdf_upload_to_ready_with_progress_in_order(ctx: Ctx) -> None:
    headers, uid = await ctx.user("pdf@example.com")
    r = await ctx.client.post("/materials", headers=headers, data={"title": "Биология / Biology"},
                              files={"file": ("bio.pdf", make_pdf(PAGES), "application/pdf")})
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "queued" and r.json()["title"] == "Биология / Biology"
    mid = r.json()["id"]
    body = await ctx.wait(headers, mid)
    assert body["status"] == "ready", body
    assert body["pages"] == 3 and body["chunk_count"] >= 1 and body["error"] is None
    assert body["progress_done"] == body["progress_total"] == body["chunk_count"]

    events = [e for e in await ctx.events(uid, last="material.ready") if e.get("material_id") == mid]
    offsets = [e["o"] for e in events]
    assert offsets == sorted(offsets)
    assert events[-1] == {"type": "material.ready", "material_id": mid, "chunks": body["chunk_count"],
                          "pages": 3, "o": offsets[-1]}
    stages = [e["stage"] for e in events if e["type"] == "material.progress"]
    order = ["extracting", "chunking", "embedding", "indexing"]
    assert [s for i, s in enumerate(stages) if i == 0 or stages[i - 1] != s] == order
    embedding = [e for e in events if e.get("stage") == "embedding"]
    assert embedding[-1]["done"] == embedding[-1]["total"] == body["chunk_count"]

    async with ctx.app.state.db.session() as session:
        rows = (await session.execute(text(
            "select page_start, page_end, language, embedding is not null as has_vec, "
            "tsv is not null as has_tsv from chunks where material_id = :m"), {"m": mid})).all()
        assert all(r.has_vec and r.has_tsv for r in rows)
        assert min(r.page_start for r in rows) == 1 and max(r.page_end for r in rows) == 3
    hits = await retrieve(ctx.app.state.db.pool, ctx.settings, uid, "Где происходит клеточное дыхание?", k=1)
    assert hits and hits[0].material_id == uuid.UUID(mid) and hits[0].title == "Биология / Biology"
    assert "Митохондрии" in hits[0].text and hits[0].page is not None and hits[0].page <= 2
    assert hits[0].kind == "pdf" and hits[0].source == "bio.pdf"


async def test_same_content_twice_is_the_same_material(ctx: Ctx) -> None:
    headers, _ = await ctx.user("dup@example.com")
    pdf = make_pdf(["Only one copy of this lecture should exist."])
    first = await ctx.client.post("/materials", headers=headers, files={"file": ("a.pdf", pdf, "application/pdf")})
    again = await ctx.client.post("/materials", headers=headers, files={"file": ("b.pdf", pdf, "application/pdf")})
    assert first.status_code == 202 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    t1 = await ctx.client.post("/materials/text", headers=headers, json={"title": "T", "text": "Один текст."})
    t2 = await ctx.client.post("/materials/text", headers=headers, json={"title": "T2", "text": "Один текст."})
    assert (t1.status_code, t2.status_code) == (202, 200) and t1.json()["id"] == t2.json()["id"]
    # Another user uploading the same file gets their own material.
    other, _ = await ctx.user("dup2@example.com")
    mine = await ctx.client.post("/materials", headers=other, files={"file": ("a.pdf", pdf, "application/pdf")})
    assert mine.status_code == 202 and mine.json()["id"] != first.json()["id"]
    listed = (await ctx.client.get("/materials", headers=headers)).json()
    assert len(listed) == 2
    for m in (first.json()["id"], t1.json()["id"]):
        assert (await ctx.wait(headers, m))["status"] == "ready"


async def test_upload_checks(settings: Settings) -> None:
    small = settings.model_copy(update={"max_upload_bytes": 20_000, "max_text_chars": 100})
    async for ctx in _ctx(small):
        headers, _ = await ctx.user("limits@example.com")
        big = b"%PDF-1.4\n" + b"0" * 30_000
        r = await ctx.client.post("/materials", headers=headers, files={"file": ("big.pdf", big, "application/pdf")})
        assert r.status_code == 413 and r.json()["error"] == "too_large"

        async def chunked() -> AsyncIterator[bytes]:
            boundary = b"--xyz"
            yield boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="s.pdf"\r\n\r\n%PDF-1.4\n'
            for _ in range(10):
                yield b"1" * 4096
            yield b"\r\n" + boundary + b"--\r\n"

        r = await ctx.client.post("/materials", headers={**headers, "Content-Type": "multipart/form-data; boundary=xyz"},
                                  content=chunked())
        assert r.status_code == 413, r.text
        r = await ctx.client.post("/materials", headers=headers, files={"file": ("x.pdf", b"PK\x03\x04 a zip", "application/pdf")})
        assert r.status_code == 415 and "not a PDF" in r.json()["message"]
        r = await ctx.client.post("/materials", headers=headers, files={"other": ("x.pdf", b"%PDF-1.4", "application/pdf")})
        assert r.status_code == 422
        r = await ctx.client.post("/materials", headers=headers, json={"file": "nope"})
        assert r.status_code == 415
        r = await ctx.client.post("/materials/text", headers=headers, json={"title": "long", "text": "я" * 101})
        assert r.status_code == 413 and "100 characters" in r.json()["message"]
        r = await ctx.client.post("/materials/text", headers=headers, content=b'{"title": "x", "text": "' + b"a" * 20_000 + b'"}')
        assert r.status_code == 413
        r = await ctx.client.post("/materials/text", headers=headers, json={"title": "", "text": "x"})
        assert r.status_code == 422
        r = await ctx.client.post("/materials/youtube", headers=headers, json={"url": "https://example.com/v"})
        assert r.status_code == 422 and r.json()["error"] == "invalid_request"
        r = await ctx.client.post("/materials/text", json={"title": "x", "text": "y"})
        assert r.status_code == 401
        assert (await ctx.client.get("/materials", headers=headers)).json() == []
        leftovers = list((small.data_dir / "uploads").glob("*"))
        assert leftovers == []


@pytest.mark.parametrize(("data", "reason"), [
    (encrypt_pdf(make_pdf(["locked lecture"])), ENCRYPTED),
    (make_image_only_pdf(), NO_TEXT),
], ids=["encrypted", "scan"])
async def test_unreadable_pdf_fails_with_learner_reason(ctx: Ctx, data: bytes, reason: str) -> None:
    headers, uid = await ctx.user(f"fail-{uuid.uuid4().hex[:6]}@example.com")
    r = await ctx.client.post("/materials", headers=headers, files={"file": ("f.pdf", data, "application/pdf")})
    assert r.status_code == 202
    body = await ctx.wait(headers, r.json()["id"])
    assert body["status"] == "failed" and body["error"] == reason and body["chunk_count"] == 0
    events = await ctx.events(uid, last="material.failed")
    assert events[-1]["type"] == "material.failed" and events[-1]["reason"] == reason


async def test_youtube_ready_after_transient_faults_and_failed_without_captions(settings: Settings) -> None:
    videos = {
        "lecture0001": Video([(i * 4.0, 4.0, f"Part {i}: entropy always increases in an isolated system.")
                              for i in range(30)]),
        "nocaption01": Video([], captions=False),
    }
    with youtube_server(videos, fail_first=2) as yt:
        s = settings.model_copy(update={"youtube_base_url": yt.base_url, "task_retry_backoff_s": 0.05})
        async for ctx in _ctx(s):
            headers, uid = await ctx.user("yt@example.com")
            r = await ctx.client.post("/materials/youtube", headers=headers,
                                      json={"url": "https://youtu.be/lecture0001?t=3"})
            assert r.status_code == 202 and r.json()["source"] == "lecture0001"
            body = await ctx.wait(headers, r.json()["id"])
            assert body["status"] == "ready", body
            assert body["duration_s"] == 120.0
            # Two 503s were answered before the transcript came through.
            assert sum(1 for q in yt.requests if q.startswith("GET /watch")) >= 2
            ready = (await ctx.events(uid, last="material.ready"))[-1]
            assert ready["type"] == "material.ready" and ready["duration_s"] == 120.0
            hits = await retrieve(ctx.app.state.db.pool, ctx.settings, uid, "entropy isolated system", k=3)
            assert hits and all(h.start_s is not None and h.kind == "youtube" for h in hits)

            r = await ctx.client.post("/materials/youtube", headers=headers, json={"url": "nocaption01"})
            body = await ctx.wait(headers, r.json()["id"])
            assert body["status"] == "failed" and body["error"] == NO_TRANSCRIPT


async def test_retrieval_is_scoped_to_the_user_and_chosen_materials(ctx: Ctx) -> None:
    a_headers, a = await ctx.user("a@example.com")
    b_headers, b = await ctx.user("b@example.com")
    secret = "The secret launch code of the zebra project is pineapple-42."
    rb = await ctx.client.post("/materials/text", headers=b_headers, json={"title": "B's", "text": secret})
    ra1 = await ctx.client.post("/materials/text", headers=a_headers, json={"title": "A1", "text": "Zebras are striped horses of Africa."})
    ra2 = await ctx.client.post("/materials/text", headers=a_headers, json={"title": "A2", "text": "Launch windows depend on orbital mechanics."})
    for h, r in ((b_headers, rb), (a_headers, ra1), (a_headers, ra2)):
        assert (await ctx.wait(h, r.json()["id"]))["status"] == "ready"
    pool = ctx.app.state.db.pool
    hits_a = await retrieve(pool, ctx.settings, a, secret, k=10)
    hits_b = await retrieve(pool, ctx.settings, b, secret, k=10)
    only_a2 = await retrieve(pool, ctx.settings, a, "zebra launch", k=10,
                             material_ids=[uuid.UUID(ra2.json()["id"])])
    none = await retrieve(pool, ctx.settings, a, "zebra", material_ids=[uuid.UUID(rb.json()["id"])])
    assert {h.title for h in hits_a} == {"A1", "A2"}
    assert all("pineapple" not in h.text for h in hits_a)
    assert hits_b[0].text == secret
    assert [h.title for h in only_a2] == ["A2"]
    assert none == []
    # B's material is invisible to A over REST too.
    assert (await ctx.client.get(f"/materials/{rb.json()['id']}", headers=a_headers)).status_code == 404


async def test_rerun_and_interrupted_run_end_with_one_set_of_chunks(ctx: Ctx) -> None:
    headers, uid = await ctx.user("rerun@example.com")
    body_text = " ".join(f"Fact {i}: the mitochondrion has an inner membrane with cristae." for i in range(60))
    r = await ctx.client.post("/materials/text", headers=headers, json={"title": "R", "text": body_text})
    mid = uuid.UUID(r.json()["id"])
    first = await ctx.wait(headers, str(mid))
    assert first["chunk_count"] > 1
    runtime = ctx.app.state.broker.state.runtime
    async with ctx.app.state.db.engine.begin() as conn:
        # As if a worker died half-way through a run: stray rows, status back to processing.
        await conn.execute(text("update materials set status = 'processing', file_path = :p where id = :m"),
                           {"m": mid, "p": str(ctx.settings.data_dir / "uploads" / f"{mid}.txt")})
    (ctx.settings.data_dir / "uploads" / f"{mid}.txt").write_text(body_text, encoding="utf-8")
    await ingest(runtime, mid)
    async with ctx.app.state.db.engine.connect() as conn:
        rows = (await conn.execute(text("select idx from chunks where material_id = :m order by idx"), {"m": mid})).all()
        status = await conn.scalar(text("select status from materials where id = :m"), {"m": mid})
    assert [r.idx for r in rows] == list(range(first["chunk_count"]))
    assert status == "ready"
    # A material already ready is left alone by a duplicate message.
    await ingest(runtime, mid)
    async with ctx.app.state.db.engine.connect() as conn:
        assert await conn.scalar(text("select count(*) from chunks where material_id = :m"), {"m": mid}) == first["chunk_count"]


async def test_chunks_embedded_while_reading_keep_their_own_vectors(settings: Settings) -> None:
    # Batches of 3 start while later pages are still being read and finish out of order; each
    # stored vector must still be its own chunk's.
    pages = [f"Lecture page {p}. " + " ".join(f"Topic {p}-{i}: the enzyme number {p * 10 + i} "
                                               "binds its substrate." for i in range(8))
             for p in range(1, 13)]
    s = settings.model_copy(update={"embedding_batch_size": 3, "chunk_size_chars": 200,
                                    "chunk_overlap_chars": 0})
    async for ctx in _ctx(s):
        headers, _ = await ctx.user("stream@example.com")
        r = await ctx.client.post("/materials", headers=headers,
                                  files={"file": ("s.pdf", make_pdf(pages), "application/pdf")})
        body = await ctx.wait(headers, r.json()["id"])
        assert body["status"] == "ready" and body["chunk_count"] > 12
        async with ctx.app.state.db.engine.connect() as conn:
            rows = (await conn.execute(text(
                "select idx, text, page_start, embedding::text as e from chunks "
                "where material_id = :m order by idx"), {"m": r.json()["id"]})).all()
    assert [row.idx for row in rows] == list(range(body["chunk_count"]))
    assert [row.page_start for row in rows] == sorted(row.page_start for row in rows)
    expected = await get_embedder(s).embed([row.text for row in rows])
    for row, vector in zip(rows, expected, strict=True):
        stored = json.loads(row.e)
        assert max(abs(a - b) for a, b in zip(stored, vector, strict=True)) < 1e-5
