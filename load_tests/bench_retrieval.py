"""Retrieval latency at 100,000 chunks (pgserver Postgres + pgvector, the real retrieval code).

Two databases are loaded: 100,000 chunks owned by one user, and 100,000 chunks spread over
1,000 users (100 each). Synthetic chunks (45 Zipf-distributed pseudo-words, unit vectors
clustered around 1,000 topics) are bulk-loaded with COPY, then the HNSW and GIN indexes are
built as the migrations define them. Per case, `--queries` questions are asked by the owners of
randomly sampled chunks: 3 words of the chunk and 3 from the vocabulary, the chunk's vector moved
by noise. Timed:

- vector: `vector_search` (HNSW, exact fallback), candidates ids only;
- keyword: `keyword_search` (full-text OR query, ranked);
- hybrid SQL: `hybrid_search` — both sides, fusion and loading the hits in one statement, the
  query vector given (= `retrieve()` without embedding the question), and the client CPU it
  takes (time.process_time: our side of the round trips, asyncpg and retrieval.py);
- embed: embedding the question with the configured provider (local MiniLM on CPU);
- retrieve(): end to end, embedding included.

Also reported: the vector side's overlap with the exact top-n (recall of the approximate search).

    .venv/bin/python load_tests/bench_retrieval.py [--chunks 100000] [--queries 300]
        [--keep DIR]   # keep the loaded databases in DIR and reuse them on the next run

Prints a report and writes load_tests/reports/retrieval.md (with the default sizes).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chat_server.db import libpq_url, migrate, open_database  # noqa: E402
from chat_server.retrieval import (  # noqa: E402
    KEYWORD_SCAN,
    embed_query,
    hybrid_search,
    keyword_search,
    retrieve,
    vector_search,
)
from chat_server.settings import Settings  # noqa: E402
from load_tests.report import Report, pct  # noqa: E402
from tests.support.services import database_uri  # noqa: E402

REPORT = ROOT / "load_tests" / "reports" / "retrieval.md"
SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "zo", "be", "da", "fu", "go", "ha",
             "ji", "pe", "qu", "ri", "su", "wa"]
CASES = (1, 1000)
WARMUP = 10  # queries per case not counted


def vocabulary(n: int, rng: random.Random) -> list[str]:
    words: set[str] = set()
    while len(words) < n:
        # Ending in a consonant keeps the English stemmer from changing the word.
        words.add("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4))) + rng.choice("kxzm"))
    return sorted(words)


def zipf_weights(n: int) -> list[float]:
    # Zipf-like, without the top 200 ranks: in real text those are stop words, which the text
    # search configuration drops.
    return [0.0 if r < 200 else 1.0 / (r + 1) ** 1.07 for r in range(n)]


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


# Embeddings of real text cluster by topic: each chunk lies near one of TOPICS random directions
# (cosine ≈ 0.7 to its topic, ≈ 0.5 to a chunk of the same topic, ≈ 0 to others). Uniformly
# random vectors would make every distance alike, so "nearest" would mean nothing.
TOPICS = 1000
NOISE = 1.0 / np.sqrt(384)  # per dimension: the noise vector has norm ≈ 1


def topic_vectors() -> np.ndarray:
    return unit(np.random.default_rng(99).standard_normal((TOPICS, 384)))


def chunk_vectors(nprng: np.random.Generator, centers: np.ndarray, n: int) -> np.ndarray:
    topics = nprng.integers(0, len(centers), n)
    return unit(centers[topics] + nprng.standard_normal((n, 384)) * NOISE)


async def load_chunks(url: str, owners: list[uuid.UUID], per_owner: int, seed: int,
                      vocab: list[str], weights: list[float]) -> float:
    """COPY users, materials and chunks (tsv computed in the server), then build the indexes."""
    from pgvector.asyncpg import register_vector

    t0 = time.perf_counter()
    nprng = np.random.default_rng(seed)
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
            "materials", columns=["id", "user_id", "kind", "title", "status", "content_hash",
                                  "chunk_count"],
            records=[(m, u, "text", f"Material {i}", "ready", m.hex, per_owner)
                     for i, (m, u) in enumerate(materials)])
        await conn.execute("create unlogged table if not exists stage (material_id uuid, user_id uuid, "
                           "idx int, text text, embedding vector(384))")
        await conn.execute("truncate stage")
        words = np.array(vocab, dtype=object)
        p = np.array(weights) / sum(weights)
        rows: list[tuple[object, ...]] = []
        for m, u in materials:
            for i in range(per_owner):
                rows.append((m, u, i))
                if len(rows) == 10_000:
                    await _flush(conn, rows, nprng, words, p)
        if rows:
            await _flush(conn, rows, nprng, words, p)
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
        await conn.execute("vacuum analyze materials")
        await conn.execute("create table bench_loaded (chunks int, users int)")
        await conn.execute("insert into bench_loaded values ($1, $2)", per_owner * len(owners), len(owners))
    finally:
        await conn.close()
    return time.perf_counter() - t0


async def _flush(conn: asyncpg.Connection, rows: list[tuple[object, ...]],
                 nprng: np.random.Generator, words: np.ndarray, p: np.ndarray) -> None:
    vectors = chunk_vectors(nprng, topic_vectors(), len(rows))
    texts = [" ".join(t) for t in words[nprng.choice(len(words), size=(len(rows), 45), p=p)]]
    await conn.copy_records_to_table(
        "stage", records=[(*row, texts[j], vectors[j]) for j, row in enumerate(rows)])
    rows.clear()


@dataclass(frozen=True)
class Question:
    user: uuid.UUID
    text: str
    vector: list[float]
    source: int  # the chunk it was made from: the passage that answers it


async def questions(url: str, count: int, seed: int, vocab: list[str],
                    cum_weights: list[float]) -> list[Question]:
    """Questions near random chunks, asked by their owners: 3 words of the chunk and 3 from the
    vocabulary; its embedding moved by noise (cosine ≈ 0.8), as a question is near its answer."""
    from pgvector.asyncpg import register_vector

    conn = await asyncpg.connect(url)
    try:
        await register_vector(conn)
        rows = await conn.fetch(
            "select id, user_id, text, embedding from chunks where id in (select id from chunks "
            "order by md5(id::text || $1) limit $2) order by md5(id::text || $1)", str(seed), count)
    finally:
        await conn.close()
    rng = random.Random(seed)
    nprng = np.random.default_rng(seed)
    out = []
    for r in rows:
        vector = unit(r["embedding"].to_numpy() + nprng.standard_normal(384) * NOISE * 0.7)
        words = rng.sample(r["text"].split(), 3) + rng.choices(vocab, cum_weights=cum_weights, k=3)
        rng.shuffle(words)
        out.append(Question(r["user_id"], " ".join(words), vector.tolist(), r["id"]))
    assert len(out) == count, "sample too small"
    return out


async def loaded(url: str, chunks: int, users: int) -> bool:
    """Whether this database already holds the requested data set (--keep)."""
    conn = await asyncpg.connect(url)
    try:
        if await conn.fetchval("select to_regclass('bench_loaded')") is None:
            return False
        return tuple(await conn.fetchrow("select chunks, users from bench_loaded")) == (chunks, users)
    finally:
        await conn.close()


async def bench_case(settings: Settings, queries: list[Question]) -> dict[str, float]:
    series: dict[str, list[float]] = {
        k: [] for k in ("vector", "keyword", "hybrid", "hybrid_cpu", "embed", "retrieve")}
    found: dict[str, list[bool]] = {k: [] for k in ("vector", "keyword", "hybrid", "keyword_all")}
    overlap: dict[str, list[float]] = {"vector": [], "keyword": []}
    n = settings.retrieval_candidates
    assert settings.database_url
    async with open_database(settings.database_url, 2) as db:
        for q, question in enumerate(queries):
            user, words, vector = question.user, question.text, question.vector
            timings: dict[str, float] = {}
            # retrieve() first: the embedder keeps recent questions in a small cache, so this
            # question is embedded here for the first time (as a learner's new question is).
            t0 = time.perf_counter()
            assert await retrieve(db.pool, settings, user, words)
            timings["retrieve"] = (time.perf_counter() - t0) * 1000
            # One transaction for the searches (their options are transaction-local), as in
            # retrieve(); taking the connection and BEGIN are not in their timings.
            async with db.pool.acquire() as conn, conn.transaction():
                t0 = time.perf_counter()
                by_vector = await vector_search(conn, user, vector, n)
                t1 = time.perf_counter()
                by_keyword = await keyword_search(conn, user, words, n)
                t2 = time.perf_counter()
                cpu = time.process_time()
                hits = await hybrid_search(conn, settings, user, words, vector)
                timings["hybrid_cpu"] = (time.process_time() - cpu) * 1000
                t3 = time.perf_counter()
                # The same words in reverse order: as long, not in the embedder's cache.
                await embed_query(settings, " ".join(reversed(words.split())))
                t4 = time.perf_counter()
                timings.update(vector=(t1 - t0) * 1000, keyword=(t2 - t1) * 1000,
                               hybrid=(t3 - t2) * 1000, embed=(t4 - t3) * 1000)
                found["vector"].append(question.source in by_vector)
                found["keyword"].append(question.source in by_keyword)
                found["hybrid"].append(question.source in [h.chunk_id for h in hits])
                if q % 10 == 0:  # the exhaustive searches are slow: every 10th question
                    exact = await vector_search(conn, user, vector, n, exact=True)
                    overlap["vector"].append(len(set(exact) & set(by_vector)) / max(1, len(exact)))
                    every = await keyword_search(conn, user, words, n, exhaustive=True)
                    overlap["keyword"].append(len(set(every) & set(by_keyword)) / max(1, len(every)))
                    found["keyword_all"].append(question.source in every)
            if q >= WARMUP:
                for name, ms in timings.items():
                    series[name].append(ms)
    out = {f"{k}_overlap": statistics.mean(v) for k, v in overlap.items()}
    out.update({f"{k}_found": statistics.mean(v) for k, v in found.items()})
    for name, values in series.items():
        out[f"{name}_p50"] = statistics.median(values)
        out[f"{name}_p99"] = pct(values, 0.99)
    return out


async def main_async(args: argparse.Namespace) -> str:
    report = Report()
    say = report.say
    started = time.perf_counter()
    keep = Path(args.keep) if args.keep else None
    with tempfile.TemporaryDirectory(prefix="bench-retrieval-") as tmp:
        work = keep or Path(tmp)
        os.environ.setdefault("XDG_RUNTIME_DIR", str(work / "run"))
        os.makedirs(os.environ["XDG_RUNTIME_DIR"], mode=0o700, exist_ok=True)
        import pgserver

        # --keep: stop the server at the end but keep its data for the next run.
        server = pgserver.get_server(work / "pg", cleanup_mode="stop" if keep else "delete")
        try:
            base_uri = server.get_uri()
            admin = await asyncpg.connect(database_uri(base_uri, "postgres").replace("+asyncpg", ""))
            try:
                existing = {r["datname"] for r in await admin.fetch("select datname from pg_database")}
                for users in CASES:
                    if f"bench_{users}" not in existing:
                        await admin.execute(f"create database bench_{users}")
                version = await admin.fetchval("show server_version")
                shared_buffers = await admin.fetchval("show shared_buffers")
            finally:
                await admin.close()

            from chat_server.embeddings import load_local_model

            t0 = time.perf_counter()
            await asyncio.to_thread(load_local_model)
            model_s = time.perf_counter() - t0
            rng = random.Random(6)
            vocab = vocabulary(20_000, rng)
            weights = zipf_weights(len(vocab))
            results: list[tuple[str, float | None, dict[str, float]]] = []
            pgvector = "?"
            for users in CASES:
                url = database_uri(base_uri, f"bench_{users}")
                libpq = libpq_url(url)
                await asyncio.to_thread(migrate, url)
                load_s: float | None = None
                if not await loaded(libpq, args.chunks, users):
                    ids = random.Random(users)
                    owners = sorted(uuid.UUID(int=ids.getrandbits(128), version=4) for _ in range(users))
                    load_s = await load_chunks(libpq, owners, args.chunks // users, 7 + users, vocab, weights)
                conn = await asyncpg.connect(libpq)
                pgvector = await conn.fetchval("select extversion from pg_extension where extname = 'vector'")
                await conn.close()
                settings = Settings(_env_file=None, database_url=url, data_dir=work / "data",  # type: ignore[call-arg]
                                    secret_key="bench-secret-key-0123456789-0123456789", auto_migrate=False)
                asked = await questions(libpq, args.queries + WARMUP, 11, vocab,
                                        list(itertools.accumulate(weights)))
                r = await bench_case(settings, asked)
                results.append((f"{users:,} user(s) × {args.chunks // users:,}", load_s, r))
                print(f"  {users} user(s): {r}", flush=True)
        finally:
            server._cleanup()

        s = settings
        say(f"# Retrieval benchmark ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)")
        say()
        say(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}; Postgres {version} (pgserver, shared_buffers "
            f"{shared_buffers}) + pgvector {pgvector}; local all-MiniLM-L6-v2 on CPU "
            f"(chat_server/embeddings.py); model load {model_s:.1f} s.")
        say()
        say(f"## {args.chunks:,} chunks, {args.queries} queries per case (k={s.retrieval_top_k}, "
            f"{s.retrieval_candidates} candidates per side), p50 / p99 in ms")
        say()
        say("| case | load+index | vector | keyword | hybrid SQL | hybrid SQL, client CPU "
            "| embed question | retrieve() |")
        say("|---|---|---|---|---|---|---|---|")
        for label, load_s, r in results:
            load = f"{load_s:.0f} s" if load_s is not None else "reused"
            say(f"| {label} | {load} | " + " | ".join(
                f"{r[f'{k}_p50']:.1f} / {r[f'{k}_p99']:.1f}"
                for k in ("vector", "keyword", "hybrid", "hybrid_cpu", "embed", "retrieve")) + " |")
        say()
        say("vector = `vector_search`, keyword = `keyword_search` (each alone, ids only); hybrid SQL "
            "= `hybrid_search`: both sides, reciprocal rank fusion and the hits with their titles in "
            "one statement, query vector given (client CPU: time.process_time around the call, "
            "our side of its round trips); embed question = the configured embedder on one "
            "question not seen before; retrieve() = embed + hybrid SQL, end to end, on a new "
            "question. Each search includes its round trip that sets the search options; the "
            "searches of one question share a transaction (taking the connection and BEGIN not "
            "timed), retrieve() includes both. Wall-clock per call from the client (asyncpg).")
        say()
        say(f"## Quality at this scale: the question's source chunk found (vector and keyword: in the "
            f"top {s.retrieval_candidates}; hybrid: in the top {s.retrieval_top_k}), and the "
            "bounded searches' overlap with exhaustive ones (every 10th question)")
        say()
        say("| case | vector found | keyword found (exhaustive) | hybrid found "
            "| vector overlap with exact | keyword overlap with exhaustive |")
        say("|---|---|---|---|---|---|")
        for label, _, r in results:
            say(f"| {label} | {r['vector_found']:.3f} | {r['keyword_found']:.3f} "
                f"({r['keyword_all_found']:.3f}) | {r['hybrid_found']:.3f} | "
                f"{r['vector_overlap']:.3f} | {r['keyword_overlap']:.3f} |")
        say()
        say("Exact = cosine distance over all the user's chunks (no index); exhaustive keyword = "
            "ts_rank over every match; the bounded keyword search ranks at most "
            f"{KEYWORD_SCAN} candidates found by the question's rarest words. Synthetic chunks: 45 "
            "Zipf-distributed pseudo-words each (the 200 most frequent, stop-word-like ranks left "
            f"out), unit vectors around {TOPICS} random topic directions (cosine ≈ 0.7 to the "
            "topic); questions from sampled chunks: 3 of its words + 3 Zipf words, its vector plus "
            "noise (cosine ≈ 0.8), asked by its owner.")
        say()
        say(f"Whole benchmark: {time.perf_counter() - started:.0f} s.")
    return report.text()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--keep", help="keep the databases in this folder and reuse them")
    args = parser.parse_args()
    if args.keep:
        args.keep = str(Path(args.keep).resolve())
        Path(args.keep).mkdir(parents=True, exist_ok=True)
    report = asyncio.run(main_async(args))
    if (args.chunks, args.queries) == (100_000, 300):
        REPORT.parent.mkdir(parents=True, exist_ok=True)
        REPORT.write_text(report, encoding="utf-8")
        print(f"\nwritten to {REPORT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
