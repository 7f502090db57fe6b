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
_SCOPE = "user_id = :uid and (cast(:mids as uuid[]) is null or material_id = any(:mids))"

_VECTOR_ANN = text(
    f"select id from chunks where {_SCOPE} and embedding is not null "
    "order by embedding <=> cast(:vec as vector) limit :n"
).bindparams(_MIDS)
# `+ 0` keeps the planner off the HNSW index: an exact scan of the user's own chunks.
_VECTOR_EXACT = text(
    f"select id from chunks where {_SCOPE} and embedding is not null "
    "order by (embedding <=> cast(:vec as vector)) + 0 limit :n"
).bindparams(_MIDS)
# Ranking reads every matching tsv: a question made of words common in a large library would
# rank tens of thousands of rows. At most KEYWORD_SCAN matches are ranked (the vector side
# still sees everything), which keeps the worst case bounded.
KEYWORD_SCAN = 4000
_KEYWORD = text(
    "with q as (select websearch_to_tsquery('english', :q) "
    "|| websearch_to_tsquery('russian', :q) as query), "
    "m as (select c.id, c.tsv from chunks c, q "
    f"where c.{_SCOPE.replace('material_id', 'c.material_id')} and c.tsv @@ q.query "
    "limit :scan) "
    "select m.id from m, q order by ts_rank(m.tsv, q.query) desc, m.id limit :n"
).bindparams(_MIDS)
_LOAD = text(
    "select c.id, c.material_id, c.text, c.page_start, c.start_s, c.language, "
    "m.title, m.kind, m.source from chunks c join materials m on m.id = c.material_id "
    "where c.user_id = :uid and c.id = any(:ids)"
)

_WORD = re.compile(r"\w+", re.UNICODE)
MAX_QUERY_WORDS = 64


def or_query(question: str) -> str:
    """websearch_to_tsquery input that ORs the question's words (operators stripped)."""
    words = [w for w in _WORD.findall(question) if w.lower() not in ("or", "and", "not")]
    return " or ".join(words[:MAX_QUERY_WORDS])


def _vec(vector: list[float]) -> str:
    return "[" + ",".join(f"{x:.7g}" for x in vector) + "]"


async def vector_search(session: AsyncSession, user_id: uuid.UUID, vector: list[float], n: int,
                        material_ids: list[uuid.UUID] | None = None) -> list[int]:
    params = {"uid": user_id, "mids": material_ids or None, "vec": _vec(vector), "n": n}
    await session.execute(text("select set_config('hnsw.ef_search', :ef, true)"),
                          {"ef": str(min(1000, max(40, 2 * n)))})
    ids = list((await session.scalars(_VECTOR_ANN, params)).all())
    if len(ids) < n:
        ids = list((await session.scalars(_VECTOR_EXACT, params)).all())
    return ids


async def keyword_search(session: AsyncSession, user_id: uuid.UUID, question: str, n: int,
                         material_ids: list[uuid.UUID] | None = None) -> list[int]:
    q = or_query(question)
    if not q:
        return []
    params = {"uid": user_id, "mids": material_ids or None, "q": q, "n": n, "scan": KEYWORD_SCAN}
    return list((await session.scalars(_KEYWORD, params)).all())


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
    k = k or settings.retrieval_top_k
    n = max(settings.retrieval_candidates, k)
    by_vector = await vector_search(session, user_id, await embed_query(settings, query), n,
                                    material_ids)
    by_keyword = await keyword_search(session, user_id, query, n, material_ids)
    scores = fuse([by_vector, by_keyword], settings.retrieval_rrf_k)
    best = sorted(scores, key=lambda i: (-scores[i], i))[:k]
    if not best:
        return []
    rows = {r.id: r for r in (await session.execute(_LOAD, {"uid": user_id, "ids": best})).all()}
    return [
        Hit(chunk_id=r.id, material_id=r.material_id, title=r.title, kind=str(r.kind),
            source=r.source, text=r.text, page=r.page_start, start_s=r.start_s,
            score=scores[r.id], language=r.language)
        for r in (rows[i] for i in best if i in rows)
    ]
