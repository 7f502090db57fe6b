"""Retrieval for the tutor: a learner's most relevant passages for a question.

Hybrid search (pgvector cosine + Postgres full-text, fused by reciprocal rank
fusion), always scoped to one user's own materials.

- Vector: `embedding <=> query` on the HNSW index. HNSW filters *after* its graph walk, so
  for a user who owns a small share of all chunks it may return too few rows; then the
  exact distance over the user's own chunks (found by the user_id index) is used instead.
- Keyword: each chunk's `tsv` was built with its own configuration (russian / english /
  simple); the question becomes an OR of its words under both the russian and english
  configurations, so a question in either language (or mixed) matches what it shares
  with a passage, ranked by ts_rank (at most KEYWORD_SCAN matches are ranked).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.ext.asyncio import AsyncSession

from chat_server.settings import Settings


@dataclass(frozen=True)
class Hit:
    chunk_id: int
    material_id: uuid.UUID
    title: str
    kind: str  # pdf | youtube | text
    source: str  # PDF filename, YouTube video id, or ""
    text: str
    page: int | None  # first page of the chunk (PDF)
    start_s: float | None  # start second (YouTube)
    score: float
    language: str  # text search configuration of the chunk: english | russian | simple


_MIDS = bindparam("mids", type_=ARRAY(UUID(as_uuid=True)))


def _scope(a: str) -> str:
    return f"{a}.user_id = :uid and (cast(:mids as uuid[]) is null or {a}.material_id = any(:mids))"


# Each side is an array of chunk ids, best first (ARRAY(subquery) keeps the subquery's order).
_ANN = ("array(select c.id from chunks c where " + _scope("c") + " and c.embedding is not null "
        "order by c.embedding <=> cast(:vec as vector) limit :n)")
# `+ 0` keeps the planner off the HNSW index: an exact scan of the user's own chunks.
_EXACT = ("array(select c.id from chunks c where " + _scope("c") + " and c.embedding is not null "
          "order by (c.embedding <=> cast(:vec as vector)) + 0 limit :n)")
# HNSW filters after its graph walk: when it found fewer than n of the user's chunks, the exact
# scan runs instead (an uncorrelated subquery in CASE is only evaluated when its branch is taken).
_VECTOR_IDS = (f"(select case when cardinality(a.ids) >= :n then a.ids else {_EXACT} end "
               f"from (select {_ANN} as ids) a)")
# Ranking reads every matching tsv: a question made of words common in a large library would
# rank tens of thousands of rows. At most KEYWORD_SCAN matches are ranked (the vector side
# still sees everything), which keeps the worst case bounded.
KEYWORD_SCAN = 4000
_TSQUERY = "(websearch_to_tsquery('english', :q) || websearch_to_tsquery('russian', :q))"
_KEYWORD_IDS = (
    "array(select m.id from (select c.id, c.tsv from chunks c where " + _scope("c") +
    f" and c.tsv @@ {_TSQUERY} limit :scan) m "
    f"order by ts_rank(m.tsv, {_TSQUERY}) desc, m.id limit :n)"
)
_VECTOR = text(f"select {_VECTOR_IDS}").bindparams(_MIDS)
_VECTOR_EXACT = text(f"select {_EXACT}").bindparams(_MIDS)
_KEYWORD = text(f"select {_KEYWORD_IDS}").bindparams(_MIDS)
# Both sides, reciprocal rank fusion and the hits with their material in one round trip.
_HYBRID = text(
    f"with v as (select {_VECTOR_IDS} as ids), k as (select {_KEYWORD_IDS} as ids), "
    "f as (select r.id, sum(1.0::float8 / (:rrf + r.rank)) as score from ("
    "select u.id, u.rank from v, unnest(v.ids) with ordinality as u(id, rank) union all "
    "select u.id, u.rank from k, unnest(k.ids) with ordinality as u(id, rank)) r "
    "group by r.id order by score desc, r.id limit :k) "
    "select c.id, f.score, c.material_id, c.text, c.page_start, c.start_s, c.language, "
    "m.title, m.kind, m.source from f join chunks c on c.id = f.id "
    "join materials m on m.id = c.material_id order by f.score desc, f.id"
).bindparams(_MIDS)

_WORD = re.compile(r"\w+", re.UNICODE)
MAX_QUERY_WORDS = 64


def or_query(question: str) -> str:
    """websearch_to_tsquery input that ORs the question's words (operators stripped)."""
    words = [w for w in _WORD.findall(question) if w.lower() not in ("or", "and", "not")]
    return " or ".join(words[:MAX_QUERY_WORDS])


def _vec(vector: list[float]) -> str:
    return "[" + ",".join(f"{x:.7g}" for x in vector) + "]"


def _ef_search(n: int) -> str:
    return str(min(1000, max(40, 2 * n)))


async def _set_ef_search(session: AsyncSession, n: int) -> None:
    # Transaction-local: the HNSW walk keeps this many candidates (default 40 < 2n).
    await session.execute(text("select set_config('hnsw.ef_search', :ef, true)"),
                          {"ef": _ef_search(n)})


async def vector_search(session: AsyncSession, user_id: uuid.UUID, vector: list[float], n: int,
                        material_ids: list[uuid.UUID] | None = None, *,
                        exact: bool = False) -> list[int]:
    """The user's n chunks nearest to `vector` (cosine), best first; `exact` skips the index."""
    params = {"uid": user_id, "mids": material_ids or None, "vec": _vec(vector), "n": n}
    if exact:
        return list((await session.execute(_VECTOR_EXACT, params)).scalar_one())
    await _set_ef_search(session, n)
    return list((await session.execute(_VECTOR, params)).scalar_one())


async def keyword_search(session: AsyncSession, user_id: uuid.UUID, question: str, n: int,
                         material_ids: list[uuid.UUID] | None = None) -> list[int]:
    q = or_query(question)
    if not q:
        return []
    params = {"uid": user_id, "mids": material_ids or None, "q": q, "n": n, "scan": KEYWORD_SCAN}
    return list((await session.execute(_KEYWORD, params)).scalar_one())


def fuse(rankings: list[list[int]], k: int) -> dict[int, float]:
    """Reciprocal rank fusion: score = Σ 1 / (k + rank), rank counted from 1."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, chunk_id in enumerate(ranking, start=1):
            scores[chunk_id] = scores.get(chunk_id, 0.0) + 1.0 / (k + rank)
    return scores


async def embed_query(settings: Settings, query: str) -> list[float]:
    from workers.embeddings import get_embedder

    return (await get_embedder(settings).embed([query]))[0]


async def hybrid_search(
    session: AsyncSession,
    settings: Settings,
    user_id: uuid.UUID,
    query: str,
    vector: list[float],
    *,
    material_ids: list[uuid.UUID] | None = None,
    k: int | None = None,
) -> list[Hit]:
    """The user's top-k passages for `query` whose embedding is `vector`, best first.

    Vector and keyword candidates, their fusion (same scores as `fuse`) and the hits with their
    material are one statement: one round trip after setting the HNSW search width.
    """
    k = k or settings.retrieval_top_k
    n = max(settings.retrieval_candidates, k)
    await _set_ef_search(session, n)
    params = {"uid": user_id, "mids": material_ids or None, "vec": _vec(vector), "n": n,
              "q": or_query(query), "scan": KEYWORD_SCAN, "rrf": settings.retrieval_rrf_k, "k": k}
    return [
        Hit(chunk_id=r.id, material_id=r.material_id, title=r.title, kind=str(r.kind),
            source=r.source, text=r.text, page=r.page_start, start_s=r.start_s,
            score=r.score, language=r.language)
        for r in (await session.execute(_HYBRID, params)).all()
    ]


async def retrieve(
    session: AsyncSession,
    settings: Settings,
    user_id: uuid.UUID,
    query: str,
    *,
    material_ids: list[uuid.UUID] | None = None,
    k: int | None = None,
) -> list[Hit]:
    """The user's top-k passages for `query`, best first."""
    query = query.strip()
    if not query:
        return []
    vector = await embed_query(settings, query)
    return await hybrid_search(session, settings, user_id, query, vector,
                               material_ids=material_ids, k=k)
