"""Ingestion and retrieval benchmark on real parts (pgserver Postgres + pgvector, the app under
uvicorn with the in-process broker, local MiniLM embeddings on CPU).

1. A 100-page text PDF: POST /materials → material.ready on the owner's socket (wall time,
   pages/s, chunks, CPU, stage times, longest gap between progress events).
2. Embedding throughput of the local model (chunks/s, 1000-character chunks).
3. Query embedding: µs per embed_query() for one short question, English and Russian, new
   and repeated (the cache).
4. Retrieval latency p50/p99 with 100,000 chunks owned by one user, and with 100,000 chunks
   spread over 1,000 users (100 each). Synthetic chunks (Zipf-distributed pseudo-words,
   random unit vectors) are bulk-loaded with COPY, then the HNSW and GIN indexes built.
   Reported for the SQL part of hybrid search (vector + keyword + fusion, query vector
   given) and for `retrieve()` end to end (including embedding the question).

    .venv/bin/python load_tests/bench_ingest.py [--chunks 100000] [--queries 300] [--no-retrieval]

Prints a report and writes load_tests/reports/ingest.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chat_server.app import create_app  # noqa: E402
from chat_server.db import migrate  # noqa: E402
from chat_server.retrieval import (  # noqa: E402
    embed_query,
    fuse,
    keyword_search,
    retrieve,
    vector_search,
)
from chat_server.settings import Settings  # noqa: E402
from tests.support.ingest import make_pdf  # noqa: E402
from tests.support.services import database_uri, postgres_server, serve_app  # noqa: E402
from tests.support.ws import new_user, recv, socket  # noqa: E402
from workers.embeddings import LocalEmbedder, load_local_model  # noqa: E402

REPORT = ROOT / "load_tests" / "reports" / "ingest.md"
SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "zo", "be", "da", "fu", "go", "ha",
             "ji", "pe", "qu", "ri", "su", "wa"]


def vocabulary(n: int, rng: random.Random) -> list[str]:
    words: set[str] = set()
    while len(words) < n:
        # Ending in a consonant keeps the English stemmer from changing the word.
        words.add("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4))) + rng.choice("kxzm"))
    return sorted(words)


def lecture_pages(pages: int, rng: random.Random) -> list[str]:
    subjects = ["the enzyme", "the cell membrane", "the mitochondrion", "entropy", "the heat engine",
                "the Roman senate", "the consul", "the ribosome", "the Calvin cycle", "the gas"]
    verbs = ["regulates", "transforms", "depends on", "limits", "explains", "produces", "absorbs"]
    objects = ["the energy balance", "chemical reactions", "the pressure of the system",
               "the flow of ions", "the political order", "protein synthesis", "the temperature"]
    out = []
    for p in range(pages):
        sentences = []
        while sum(len(s) + 1 for s in sentences) < 2600:
            sentences.append(f"In section {p + 1}.{len(sentences) + 1}, {rng.choice(subjects)} "
                             f"{rng.choice(verbs)} {rng.choice(objects)} under condition {rng.randint(1, 999)}.")
        paragraphs = [" ".join(sentences[i:i + 5]) for i in range(0, len(sentences), 5)]
        out.append("\n\n".join(paragraphs))
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def bench_pdf(settings: Settings) -> dict[str, float]:
    """Upload → `material.ready` as the owner's socket sees it (no REST polling competing with
    the ingestion for the same cores); also the longest gap between progress events."""
    pages = 100
    pdf = make_pdf(lecture_pages(pages, random.Random(1)))
    app = create_app(settings)
    async with serve_app(app) as base, httpx.AsyncClient(base_url=base, timeout=60) as client:
        _, token = await new_user(base, "bench@example.com")
        headers = {"Authorization": f"Bearer {token}"}
        async with socket(base, token) as (ws, _):
            cpu0 = time.process_time()
            t0 = time.perf_counter()
            r = await client.post("/materials", headers=headers,
                                  files={"file": ("bench.pdf", pdf, "application/pdf")})
            assert r.status_code == 202, r.text
            mid = r.json()["id"]
            seen: list[tuple[float, dict[str, object]]] = []
            while True:
                event = await recv(ws, 300)
                if event.get("material_id") != mid:
                    continue
                seen.append((time.perf_counter() - t0, event))
                if event["type"] in ("material.ready", "material.failed"):
                    break
            wall = time.perf_counter() - t0
            cpu = time.process_time() - cpu0
        assert seen[-1][1]["type"] == "material.ready", seen[-1]
        stage_at = {}
        for at, event in seen:
            stage_at.setdefault(str(event.get("stage", event["type"])), at)
        gaps = [b[0] - a[0] for a, b in zip(seen, seen[1:], strict=False)]
    return {"pdf_bytes": len(pdf), "pages": pages, "wall_s": wall, "pages_per_s": pages / wall,
            "chunks": int(seen[-1][1]["chunks"]), "cpu_s": cpu, "max_gap_s": max(gaps),
            "events": len(seen), **{f"at_{k}": v for k, v in stage_at.items()}}


def bench_embedding(batch: int) -> dict[str, float]:
    rng = random.Random(2)
    texts = [" ".join(lecture_pages(1, rng)[0].split()[:160])[:1000] for _ in range(256)]
    embedder = LocalEmbedder(batch)
    embedder.embed_sync(texts[:64])  # warm-up
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    embedder.embed_sync(texts)
    wall = time.perf_counter() - t0
    return {"chunks": len(texts), "chunks_per_s": len(texts) / wall,
            "cpu_ms_per_chunk": (time.process_time() - cpu0) * 1000 / len(texts)}


def eval_questions() -> dict[str, list[str]]:
    """The retrieval evaluation's questions (tests/eval), English and Russian."""
    out: dict[str, list[str]] = {"EN": [], "RU": []}
    for path in sorted((ROOT / "tests" / "eval").glob("*_questions.json")):
        for question, _ in json.loads(path.read_text(encoding="utf-8")):
            out["RU" if re.search("[а-яё]", question, re.I) else "EN"].append(question)
    return out


async def bench_query(settings: Settings, n: int) -> dict[str, float]:
    """embed_query() for one short question from the event loop, as retrieve() calls it: µs
    per call for new questions (model + hop to the query thread) and for repeated ones."""
    out: dict[str, float] = {}
    for lang, questions in eval_questions().items():
        # Distinct texts so none is answered by the cache: the question with a counter.
        fresh = [f"{questions[i % len(questions)]} ({i})" for i in range(n)]
        for q in questions[:10]:
            await embed_query(settings, q)  # warm-up
        # Repeated: the latest 100, still in the cache (an LRU scanned in order keeps the tail).
        for label, texts in (("new", fresh), ("repeat", fresh[-100:])):
            us = []
            cpu0 = time.process_time()
            for q in texts:
                t0 = time.perf_counter()
                await embed_query(settings, q)
                us.append((time.perf_counter() - t0) * 1e6)
            out[f"{lang}_{label}_cpu"] = (time.process_time() - cpu0) * 1e6 / len(texts)
            out[f"{lang}_{label}_p50"] = statistics.median(us)
            out[f"{lang}_{label}_p99"] = pct(us, 0.99)
        out[f"{lang}_n"] = len(fresh)
    return out


async def load_chunks(url: str, owners: list[uuid.UUID], per_owner: int, rng: random.Random,
                      vocab: list[str], weights: list[float]) -> float:
    from pgvector.asyncpg import register_vector

    t0 = time.perf_counter()
    conn = await asyncpg.connect(url)
    try:
        await register_vector(conn)
        await conn.execute("drop index if exists ix_chunks_embedding_hnsw")
        await conn.execute("drop index if exists ix_chunks_tsv")
        await conn.execute("truncate chunks, materials, users cascade")
        await conn.copy_records_to_table("users", columns=["id", "email"], records=[
            (u, f"{u.hex}@bench.local") for u in owners])
        materials = [(uuid.uuid4(), u) for u in owners]
        await conn.copy_records_to_table(
            "materials", columns=["id", "user_id", "kind", "title", "status", "content_hash"],
            records=[(m, u, "text", f"Material {i}", "ready", m.hex) for i, (m, u) in enumerate(materials)])
        await conn.execute("create unlogged table if not exists stage (material_id uuid, user_id uuid, "
                           "idx int, text text, embedding vector(384))")
        await conn.execute("truncate stage")
        nprng = np.random.default_rng(3)
        batch = 10_000
        rows: list[tuple[object, ...]] = []
        for m, u in materials:
            for i in range(per_owner):
                words = rng.choices(vocab, weights=weights, k=45)
                rows.append((m, u, i, " ".join(words), None))
                if len(rows) == batch:
                    await _flush(conn, rows, nprng)
        if rows:
            await _flush(conn, rows, nprng)
        await conn.execute(
            "insert into chunks (material_id, user_id, idx, text, language, embedding, tsv) "
            "select material_id, user_id, idx, text, 'english', embedding, "
            "to_tsvector('english', text) from stage")
        await conn.execute("drop table stage")
        await conn.execute("set maintenance_work_mem = '1GB'")
        await conn.execute("set max_parallel_maintenance_workers = 1")
        await conn.execute("create index ix_chunks_embedding_hnsw on chunks using hnsw "
                           "(embedding vector_cosine_ops) with (m = 16, ef_construction = 64)")
        await conn.execute("create index ix_chunks_tsv on chunks using gin (tsv)")
        await conn.execute("vacuum analyze chunks")
    finally:
        await conn.close()
    return time.perf_counter() - t0


async def _flush(conn: asyncpg.Connection, rows: list[tuple[object, ...]], nprng: np.random.Generator) -> None:
    vectors = nprng.standard_normal((len(rows), 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    records = [(m, u, i, t, vectors[j]) for j, (m, u, i, t, _) in enumerate(rows)]
    await conn.copy_records_to_table("stage", records=records)
    rows.clear()


async def bench_retrieval(settings: Settings, owners: list[uuid.UUID], queries: int,
                          vocab: list[str], weights: list[float]) -> dict[str, float]:
    from chat_server.db import open_database

    rng = random.Random(4)
    nprng = np.random.default_rng(5)
    sql_ms: list[float] = []
    e2e_ms: list[float] = []
    vec_ms: list[float] = []
    kw_ms: list[float] = []
    assert settings.database_url
    async with open_database(settings.database_url, 2) as db:
        for q in range(queries + 10):
            user = rng.choice(owners)
            question = " ".join(rng.choices(vocab, weights=weights, k=6))
            vector = nprng.standard_normal(384).astype(np.float32)
            vector = (vector / np.linalg.norm(vector)).tolist()
            async with db.session() as session:
                t0 = time.perf_counter()
                by_vec = await vector_search(session, user, vector, settings.retrieval_candidates)
                t1 = time.perf_counter()
                by_kw = await keyword_search(session, user, question, settings.retrieval_candidates)
                fuse([by_vec, by_kw], settings.retrieval_rrf_k)
                t2 = time.perf_counter()
            async with db.session() as session:
                t3 = time.perf_counter()
                hits = await retrieve(session, settings, user, question)
                t4 = time.perf_counter()
            assert hits, "every synthetic user has chunks"
            if q >= 10:  # warm-up excluded
                vec_ms.append((t1 - t0) * 1000)
                kw_ms.append((t2 - t1) * 1000)
                sql_ms.append((t2 - t0) * 1000)
                e2e_ms.append((t4 - t3) * 1000)
    return {name: value for series, label in ((vec_ms, "vector"), (kw_ms, "keyword"),
                                               (sql_ms, "hybrid_sql"), (e2e_ms, "retrieve"))
            for name, value in ((f"{label}_p50", statistics.median(series)),
                                (f"{label}_p99", pct(series, 0.99)))}


async def main_async(args: argparse.Namespace) -> str:
    lines: list[str] = []

    def say(line: str = "") -> None:
        print(line, flush=True)
        lines.append(line)

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        work = Path(tmp)
        os.environ.setdefault("XDG_RUNTIME_DIR", str(work / "run"))
        with postgres_server(work) as base_uri:
            conn = await asyncpg.connect(database_uri(base_uri, "postgres").replace("+asyncpg", ""))
            await conn.execute('create database bench')
            await conn.close()
            url = database_uri(base_uri, "bench")
            await asyncio.to_thread(migrate, url)
            settings = Settings(_env_file=None, database_url=url, data_dir=work / "data",  # type: ignore[call-arg]
                                secret_key="bench-secret-key-0123456789-0123456789", auto_migrate=False)
            libpq = url.replace("postgresql+asyncpg://", "postgresql://")

            t0 = time.perf_counter()
            model = await asyncio.to_thread(load_local_model, settings.embedding_threads)
            model_s = time.perf_counter() - t0
            say(f"# Ingestion benchmark ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)")
            say()
            say(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                f"Python {platform.python_version()}; Postgres 16 + pgvector (pgserver); "
                f"local all-MiniLM-L6-v2 on CPU ({model.pool._max_workers} batches at once, one "
                f"torch thread each). Model load (sha256 check + load): {model_s:.1f} s.")
            say()
            pdf = await bench_pdf(settings)
            say("## 100-page text PDF, upload → material.ready (in-process broker, local embeddings)")
            say()
            say("| pages | PDF size | chunks | wall time | pages/s | process CPU | longest gap between events |")
            say("|---|---|---|---|---|---|---|")
            say(f"| {pdf['pages']} | {pdf['pdf_bytes'] / 1024:.0f} KB | {pdf['chunks']} | "
                f"{pdf['wall_s']:.1f} s | {pdf['pages_per_s']:.1f} | {pdf['cpu_s']:.1f} s | "
                f"{pdf['max_gap_s']:.2f} s |")
            say()
            say("Stages began at (s after the upload, from the socket's events): " + ", ".join(
                f"{k.removeprefix('at_')} {v:.1f}" for k, v in pdf.items() if k.startswith("at_"))
                + f"; {pdf['events']} events. Pages are chunked as they are read and embedded in "
                "batches while later pages are still being read.")
            say()
            emb = await asyncio.to_thread(bench_embedding, settings.embedding_batch_size)
            say(f"## Embedding throughput (local, batch {settings.embedding_batch_size}, "
                "~1000-character chunks)")
            say()
            say(f"{emb['chunks_per_s']:.1f} chunks/s over {emb['chunks']} chunks; "
                f"{emb['cpu_ms_per_chunk']:.0f} ms of CPU per chunk")
            say()
            q = await bench_query(settings, args.queries)
            say("## Query embedding, one short question (embed_query from the event loop)")
            say()
            say("| questions | new: p50 / p99 | new: process CPU per question | "
                "repeated (cache), 100: p50 / p99 |")
            say("|---|---|---|---|")
            for lang in ("EN", "RU"):
                say(f"| {lang}, {q[f'{lang}_n']:.0f} | {q[f'{lang}_new_p50']:.0f} / "
                    f"{q[f'{lang}_new_p99']:.0f} µs | {q[f'{lang}_new_cpu']:.0f} µs | "
                    f"{q[f'{lang}_repeat_p50']:.1f} / {q[f'{lang}_repeat_p99']:.1f} µs |")
            say()
            if args.no_retrieval:
                say(f"Whole benchmark: {time.perf_counter() - started:.0f} s.")
                return "\n".join(lines) + "\n"

            rng = random.Random(6)
            vocab = vocabulary(20_000, rng)
            # Zipf-like, without the top 200 ranks: in real text those are stop words, which the
            # text search configuration drops.
            weights = [0.0 if r < 200 else 1.0 / (r + 1) ** 1.07 for r in range(len(vocab))]
            say(f"## Retrieval latency, {args.chunks:,} chunks, {args.queries} queries per case "
                f"(k={settings.retrieval_top_k}, {settings.retrieval_candidates} candidates per side)")
            say()
            say("| case | load+index | vector p50/p99 | keyword p50/p99 | hybrid SQL p50/p99 | retrieve() p50/p99 |")
            say("|---|---|---|---|---|---|")
            for n_users in (1, 1000):
                label = f"{n_users:,} user(s) × {args.chunks // n_users:,}"
                owners = [uuid.uuid4() for _ in range(n_users)]
                load_s = await load_chunks(libpq, owners, args.chunks // n_users, rng, vocab, weights)
                r = await bench_retrieval(settings, owners, args.queries, vocab, weights)
                say(f"| {label} | {load_s:.0f} s | {r['vector_p50']:.1f} / {r['vector_p99']:.1f} ms | "
                    f"{r['keyword_p50']:.1f} / {r['keyword_p99']:.1f} ms | "
                    f"{r['hybrid_sql_p50']:.1f} / {r['hybrid_sql_p99']:.1f} ms | "
                    f"{r['retrieve_p50']:.1f} / {r['retrieve_p99']:.1f} ms |")
            say()
            say("Hybrid SQL = vector search + keyword search + fusion with the query vector given; "
                "retrieve() adds embedding the question on CPU and loading the hits. Synthetic "
                "chunks: 45 Zipf-distributed pseudo-words each (the 200 most frequent, stop-word-like "
                "ranks left out), random unit vectors; questions: 6 words from the same "
                "distribution, random query vectors. Keyword ranking reads at most "
                "KEYWORD_SCAN matches per question.")
            say()
            say(f"Whole benchmark: {time.perf_counter() - started:.0f} s.")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--no-retrieval", action="store_true",
                        help="stop after ingestion and embedding (retrieval: bench_retrieval.py)")
    args = parser.parse_args()
    report = asyncio.run(main_async(args))
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(report, encoding="utf-8")
    print(f"\nwritten to {REPORT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
