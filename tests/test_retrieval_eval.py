"""Retrieval quality on our own small evaluation set (tests/eval/): three lecture notes, one of
them in Russian, 20 questions each with the passage that answers it. Recall@5 for
vector-only, keyword-only and hybrid; hybrid must not be worse than either."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

import httpx

from chat_server.app import create_app
from chat_server.retrieval import embed_query, keyword_search, retrieve, vector_search
from chat_server.settings import Settings
from tests.support.services import serve_app

EVAL = Path(__file__).parent / "eval"
LECTURES = ["cell_biology", "thermodynamics", "rome"]


async def test_recall_at_5_hybrid_not_worse_than_either(settings: Settings) -> None:
    # Small chunks so each lecture spans many of them and ranking matters.
    s = settings.model_copy(update={"chunk_size_chars": 160, "chunk_overlap_chars": 0})
    app = create_app(s)
    async with serve_app(app) as base, httpx.AsyncClient(base_url=base, timeout=60) as client:
        await client.post("/auth/register", json={"email": "eval@example.com", "password": "password123"})
        token = (await client.post("/auth/token", data={"username": "eval@example.com", "password": "password123"})).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        uid = uuid.UUID((await client.get("/me", headers=headers)).json()["id"])
        ids = []
        for name in LECTURES:
            lecture = json.loads((EVAL / f"{name}.json").read_text(encoding="utf-8"))
            r = await client.post("/materials/text", headers=headers, json=lecture)
            assert r.status_code == 202
            ids.append(r.json()["id"])
        deadline = time.monotonic() + 150
        for mid in ids:
            while (body := (await client.get(f"/materials/{mid}", headers=headers)).json())["status"] != "ready":
                assert body["status"] != "failed" and time.monotonic() < deadline, body
                await asyncio.sleep(0.1)

        found = {"vector": 0, "keyword": 0, "hybrid": 0}
        per_lecture: dict[str, dict[str, int]] = {}
        total = 0
        pool = app.state.db.pool
        async with pool.acquire() as conn, conn.transaction():
            chunk_count = sum([(await client.get(f"/materials/{m}", headers=headers)).json()["chunk_count"] for m in ids])
            for name in LECTURES:
                questions = json.loads((EVAL / f"{name}_questions.json").read_text(encoding="utf-8"))
                assert len(questions) == 20
                per_lecture[name] = {"vector": 0, "keyword": 0, "hybrid": 0}
                for question, answer in questions:
                    total += 1
                    vec_ids = await vector_search(conn, uid, await embed_query(s, question), 5)
                    kw_ids = await keyword_search(conn, uid, question, 5)
                    texts = {r["id"]: r["text"] for r in await conn.fetch(
                        "select id, text from chunks where id = any($1)", vec_ids + kw_ids)}
                    hybrid = [h.text for h in await retrieve(pool, s, uid, question, k=5)]
                    got = {
                        "vector": any(answer in texts[i] for i in vec_ids),
                        "keyword": any(answer in texts[i] for i in kw_ids),
                        "hybrid": any(answer in t for t in hybrid),
                    }
                    for kind, ok in got.items():
                        found[kind] += ok
                        per_lecture[name][kind] += ok
    recall = {kind: n / total for kind, n in found.items()}
    print(f"\nretrieval eval: {total} questions over {chunk_count} chunks (160-char chunks, no overlap)")
    for name, counts in per_lecture.items():
        print(f"  {name:15s} " + "  ".join(f"{k}={v / 20:.2f}" for k, v in counts.items()))
    print("  recall@5       " + "  ".join(f"{k}={v:.3f}" for k, v in recall.items()))
    assert chunk_count >= 30
    assert recall["hybrid"] >= recall["vector"]
    assert recall["hybrid"] >= recall["keyword"]
    assert recall["hybrid"] >= 0.8
