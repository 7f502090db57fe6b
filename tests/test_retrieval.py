"""Retrieval SQL on a real Postgres + pgvector with synthetic chunks (no embedding model): the
one-statement hybrid search equals fusing the two sides, the HNSW post-filter gap is covered by
the exact scan, scoping by user and material holds, and word-less questions still get hits."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import numpy as np
import pytest
from pgvector.asyncpg import register_vector

from chat_server import retrieval
from chat_server.db import Database, libpq_url, open_database
from chat_server.retrieval import (
    candidate_query,
    fuse,
    hybrid_search,
    keyword_search,
    vector_search,
)
from chat_server.settings import Settings

WORDS = ["entropy", "enzyme", "senate", "ribosome", "photon", "glacier", "consul", "membrane",
         "volcano", "tariff", "orbit", "lattice"]


@dataclass
class Library:
    url: str  # libpq
    db: Database
    small: uuid.UUID  # owns 12 chunks in two materials
    big: uuid.UUID  # owns 400 chunks
    small_materials: list[uuid.UUID]
    vectors: dict[int, np.ndarray]  # chunk id -> embedding
    texts: dict[int, str]


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, 384)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.fixture
async def library(settings: Settings) -> AsyncIterator[Library]:
    rng = np.random.default_rng(11)
    small, big = uuid.uuid4(), uuid.uuid4()
    mats = {uuid.uuid4(): small, uuid.uuid4(): small, uuid.uuid4(): big}
    rows = []
    for m, u in mats.items():
        count = 6 if u == small else 400
        for i, vector in enumerate(_unit(rng, count)):
            words = [WORDS[int(j)] for j in rng.integers(0, len(WORDS), 5)]
            rows.append((m, u, i, f"Chunk {i}: " + " ".join(words) + ".", vector))
    by_key = {(m, i): vector for m, _, i, _, vector in rows}
    assert settings.database_url
    libpq = libpq_url(settings.database_url)
    conn = await asyncpg.connect(libpq)
    try:
        await register_vector(conn)
        await conn.executemany("insert into users (id, email) values ($1, $2)",
                               [(u, f"{u.hex}@x.test") for u in (small, big)])
        await conn.executemany(
            "insert into materials (id, user_id, kind, title, status, content_hash) "
            "values ($1, $2, 'text', $3, 'ready', $4)",
            [(m, u, f"Material {m.hex[:6]}", m.hex) for m, u in mats.items()])
        await conn.executemany(
            "insert into chunks (material_id, user_id, idx, text, language, embedding, tsv) "
            "values ($1, $2, $3, $4, 'english', $5, to_tsvector('english', $4))", rows)
        await conn.execute("analyze chunks")
        stored = await conn.fetch("select id, material_id, idx, text from chunks")
    finally:
        await conn.close()
    async with open_database(settings.database_url, 2) as db:
        yield Library(url=libpq, db=db, small=small, big=big,
                      small_materials=[m for m, u in mats.items() if u == small],
                      vectors={r["id"]: by_key[r["material_id"], r["idx"]] for r in stored},
                      texts={r["id"]: r["text"] for r in stored})


def _nearest(lib: Library, query: np.ndarray, ids: set[int], n: int) -> list[int]:
    return sorted(ids, key=lambda i: (1 - float(lib.vectors[i] @ query), i))[:n]


async def test_small_owner_gets_all_nearest_chunks_despite_the_hnsw_post_filter(
        library: Library, settings: Settings) -> None:
    lib = library
    query = _unit(np.random.default_rng(5), 1)[0]
    mine = await _owned(lib, lib.small)
    # Make the planner walk the HNSW index for this user too (as it would for one who owns a
    # small share of a large table): no user_id index, sequential scans priced out.
    conn = await asyncpg.connect(lib.url)
    try:
        await conn.execute("drop index ix_chunks_user_id")
        await conn.execute(f'alter database "{await conn.fetchval("select current_database()")}" '
                           "set enable_seqscan = off")
    finally:
        await conn.close()
    assert settings.database_url
    params = {"uid": lib.small, "mids": None, "vec": retrieval._vec(query.tolist()), "n": 10,
              **retrieval.OWN.params()}
    explain = retrieval._numbered(f"explain select {retrieval._ANN}")
    walk = retrieval._numbered(f"select {retrieval._ANN}")
    async with open_database(settings.database_url, 1) as db, db.pool.acquire() as conn, \
            conn.transaction():
        plan = "\n".join(r[0] for r in await conn.fetch(explain.sql, *explain.args(params)))
        assert "ix_chunks_embedding_hnsw" in plan
        # The HNSW walk alone: only a few of the user's 12 chunks.
        assert len(await conn.fetchval(walk.sql, *walk.args(params))) < 10
        got = await vector_search(conn, lib.small, query.tolist(), 10)
        exact = await vector_search(conn, lib.small, query.tolist(), 10, exact=True)
    assert got == exact == _nearest(lib, query, mine, 10)


async def test_hybrid_equals_fusing_both_sides_and_loads_the_hits(library: Library,
                                                                  settings: Settings) -> None:
    lib = library
    query = _unit(np.random.default_rng(6), 1)[0].tolist()
    question = "What does entropy do to the ribosome?"
    async with lib.db.pool.acquire() as conn, conn.transaction():
        by_vector = await vector_search(conn, lib.big, query, settings.retrieval_candidates)
        by_keyword = await keyword_search(conn, lib.big, question, settings.retrieval_candidates)
        hits = await hybrid_search(conn, settings, lib.big, question, query, k=8)

        async def still_embedding() -> list[float]:  # as in retrieve(): the vector comes later
            await asyncio.sleep(0.01)
            return query

        overlapped = await hybrid_search(conn, settings, lib.big, question, still_embedding(),
                                         k=8)
        # Embedded already (the embedder's cache): the options, then one statement for the rest.
        embedded = asyncio.get_running_loop().create_future()
        embedded.set_result(query)
        statements: list[str] = []
        conn.add_query_logger(lambda record: statements.append(record.query))
        cached = await hybrid_search(conn, settings, lib.big, question, embedded, k=8)
        await asyncio.sleep(0)  # asyncpg calls the logger with call_soon
        assert statements == [retrieval._PREPARE.sql, retrieval._HYBRID.sql]
    assert overlapped == hits == cached
    assert by_keyword and all({"entropy", "ribosome"} & set(lib.texts[i].rstrip(".").split())
                              for i in by_keyword)
    scores = fuse([by_vector, by_keyword], settings.retrieval_rrf_k)
    expected = sorted(scores, key=lambda i: (-scores[i], i))[:8]
    assert [h.chunk_id for h in hits] == expected
    assert [h.score for h in hits] == pytest.approx([scores[i] for i in expected])
    assert all(h.text == lib.texts[h.chunk_id] and h.title.startswith("Material ") for h in hits)


async def test_scoped_to_the_user_and_the_chosen_materials(library: Library, settings: Settings) -> None:
    lib = library
    query = _unit(np.random.default_rng(7), 1)[0].tolist()
    small_ids = await _owned(lib, lib.small)
    async with lib.db.pool.acquire() as conn, conn.transaction():
        hits = await hybrid_search(conn, settings, lib.small, "entropy senate orbit", query, k=50)
        assert {h.chunk_id for h in hits} == small_ids
        one = await hybrid_search(conn, settings, lib.small, "entropy senate orbit", query, k=50,
                                  material_ids=[lib.small_materials[0]])
        assert len(one) == 6 and {h.material_id for h in one} == {lib.small_materials[0]}
        # Someone else's material id gives nothing, not their chunks.
        big_material = await conn.fetchval("select material_id from chunks where user_id = $1 limit 1", lib.big)
        assert await hybrid_search(conn, settings, lib.small, "entropy", query,
                                   material_ids=[big_material]) == []


async def test_question_without_searchable_words_falls_back_to_vectors(library: Library,
                                                                       settings: Settings) -> None:
    lib = library
    query = _unit(np.random.default_rng(8), 1)[0]
    async with lib.db.pool.acquire() as conn, conn.transaction():
        assert await keyword_search(conn, lib.big, "?!", 5) == []
        hits = await hybrid_search(conn, settings, lib.big, "the of and?", query.tolist(), k=3)
    assert [h.chunk_id for h in hits] == _nearest(lib, query, await _owned(lib, lib.big), 3)


async def _owned(lib: Library, user: uuid.UUID) -> set[int]:
    return {r["id"] for r in await lib.db.pool.fetch("select id from chunks where user_id = $1", user)}


def test_candidate_query_takes_the_rarest_words_then_pairs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retrieval, "KEYWORD_SCAN", 1000)
    found = ["Энтропия", "heat", "the", "engine", "Carnot"]
    lexemes = ["энтроп энтропия", "heat", "", "engin", "carnot"]
    shares = {"heat": 0.05, "engin": 0.004, "энтроп": 0.001}
    # 100,000 chunks: carnot (unlisted: rare), энтроп (100), engin (400) fit in 1000; heat doesn't.
    assert candidate_query(found, lexemes, 100_000, shares) == "Энтропия or the or engine or Carnot"
    # Two common words are searched together: a chunk with both (≈ 250 expected) still fits.
    shares["engin"] = 0.05
    assert candidate_query(found, lexemes, 100_000, shares) == "Энтропия or heat engine or the or Carnot"
    # A small library keeps every word; a word alone is kept however common.
    assert candidate_query(found, lexemes, 1_000, shares) == "Энтропия or heat or the or engine or Carnot"
    assert candidate_query(["heat"], ["heat"], 10**7, shares) == "heat"


async def test_keyword_candidates_skip_words_common_in_a_large_library(
        library: Library, monkeypatch: pytest.MonkeyPatch) -> None:
    lib = library
    # 400 chunks with 12 words: each word is in ~35 % of them. With a bound of 30 candidates,
    # "entropy" (~140 expected matches) is dropped from the candidate search, "zyxwort" is kept.
    rare = sorted(lib.texts)[-3:]
    conn = await asyncpg.connect(lib.url)
    try:
        await conn.execute("update chunks set text = text || ' zyxwort', "
                           "tsv = to_tsvector('english', text || ' zyxwort') where id = any($1)", rare)
        await conn.execute("update materials set chunk_count = (select count(*) from chunks c "
                           "where c.material_id = materials.id)")
        await conn.execute("analyze chunks")
    finally:
        await conn.close()
    retrieval._shares.clear()
    monkeypatch.setattr(retrieval, "KEYWORD_SCAN", 30)
    async with lib.db.pool.acquire() as conn, conn.transaction():
        bounded = await keyword_search(conn, lib.big, "entropy zyxwort", 40)
        every = await keyword_search(conn, lib.big, "entropy zyxwort", 40, exhaustive=True)
    big_rare = [i for i in rare if i in await _owned(lib, lib.big)]
    assert sorted(bounded) == sorted(big_rare)
    assert len(every) == 40 and not set(every) <= set(big_rare)  # "entropy" matches ranked too


def test_named_parameters_are_numbered_once_and_casts_left_alone() -> None:
    numbered = retrieval._numbered("select :a, cast(:b as int[]), (:a + 1.0::float8) where x = any(:b)")
    assert numbered.sql == "select $1, cast($2 as int[]), ($1 + 1.0::float8) where x = any($2)"
    assert numbered.args({"b": [1], "a": 2, "unused": 3}) == [2, [1]]
