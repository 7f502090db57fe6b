"""Retrieval for the tutor: a learner's most relevant passages for a question.

Hybrid search (pgvector cosine + Postgres full-text, fused by reciprocal rank
fusion), always scoped to one user's own materials. One statement sets the search options
and reads what the keyword side needs, one does both searches, the fusion and loading the
hits. `retrieve` runs the keyword side on its own while the question is being embedded (the
embedding takes a core of ours, the keyword search one of the database's), then the rest.

Plain asyncpg, like the tutor's other hot-path SQL (tutor/store.py): through a SQLAlchemy
session (pool pre-ping, statement building, greenlet hops) a search cost ~3 ms of client CPU,
on asyncpg ~1 ms. The statements are written with `:name` parameters and numbered for asyncpg
once, at import. The search options are transaction-local (`set_config(..., true)`),
so one search's statements run in one transaction: `retrieve` opens it, callers of the other
searches pass a connection inside one.

- Vector: `embedding <=> query` on the HNSW index. HNSW filters *after* its graph walk, so
  for a user who owns a small share of all chunks it may return too few rows (pgvector >= 0.8
  keeps walking: iterative scan); then the exact distance over the user's own chunks (found by
  the user_id index) is used instead.
- Keyword: each chunk's `tsv` was built with its own configuration (russian / english /
  simple); the question becomes an OR of its words under both the russian and english
  configurations, so a question in either language (or mixed) matches what it shares
  with a passage, ranked by ts_rank. In a large library the candidates are found by the
  question's rarer words and pairs of its common ones (at most KEYWORD_SCAN are ranked).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg

from chat_server.passages import (
    Locations,
    Sections,
    name_spellings,
    parse_locations,
    parse_sections,
)
from chat_server.settings import Settings


@dataclass(frozen=True)
class Hit:
    chunk_id: int
    material_id: uuid.UUID
    title: str
    kind: str  # pdf | pptx | docx | markdown | html | image | youtube | text
    source: str  # PDF filename, YouTube video id, or ""
    text: str
    page: int | None  # first page of the chunk (PDF; a presentation's slide)
    start_s: float | None  # start second (YouTube)
    score: float
    language: str  # text search configuration of the chunk: english | russian | simple
    # Where each page / transcript line begins in `text` (chat_server/passages.py); empty for
    # text materials and for chunks stored before migration 0004.
    locations: Locations = ()
    # Cosine of the question's and the chunk's embeddings (plus the model's cross-language gap
    # for a chunk in another language than the question: comparable across languages).
    similarity: float | None = None
    # The chunk's sentences (spans of `text`) with their cosine to the question, best evidence
    # first; empty when the hits were not re-scored by sentence (rescore()).
    sentences: tuple[ScoredSpan, ...] = ()
    # Where each section (its heading) begins in `text`: DOCX, Markdown and HTML.
    sections: Sections = ()


@dataclass(frozen=True)
class ScoredSpan:
    start: int
    end: int
    similarity: float


@dataclass(frozen=True)
class _Statement:
    """A statement as asyncpg takes it: `sql` with $1, $2, ... for the parameters `names`."""

    sql: str
    names: tuple[str, ...]

    def args(self, params: Mapping[str, Any]) -> list[Any]:
        return [params[name] for name in self.names]


_PARAM = re.compile(r"(?<![:\w]):(\w+)")  # `:name`; the `::` of a cast is left alone


def _numbered(sql: str) -> _Statement:
    """`sql` with its `:name` parameters numbered in order of first use (a name used twice is
    one parameter)."""
    names: list[str] = []

    def number(found: re.Match[str]) -> str:
        if found[1] not in names:
            names.append(found[1])
        return f"${names.index(found[1]) + 1}"

    return _Statement(_PARAM.sub(number, sql), tuple(names))


# The chunks a learner's tutor may read: their own library (when $own), and the course's
# materials when they are its owner or enrolled in it. The membership is checked here, in the
# statement that reads, so no chunk of a course the learner is not in can be returned.
COURSE_MEMBER = ("{cid} in (select e.course_id from enrollments e where e.user_id = {uid} "
                 "union all select co.id from courses co where co.owner_id = {uid})")


def chunk_scope(a: str, uid: str, own: str, cid: str) -> str:
    """SQL: chunk (or material, for `a`.user_id/`a`.course_id) alias `a` is in scope."""
    return (f"(({a}.user_id = {uid} and {a}.course_id is null and {own}) or "
            f"({a}.course_id = {cid} and {COURSE_MEMBER.format(cid=cid, uid=uid)}))")


def _scope(a: str, material: str = "material_id") -> str:
    """The learner's own chunks (unless a course excludes them) and, in a course, the course's
    chunks if the learner is in it (tutor/store.py: chunk_scope); then the material filter."""
    return (chunk_scope(a, "cast(:uid as uuid)", "cast(:own as boolean)", "cast(:cid as uuid)")
            + f" and (cast(:mids as uuid[]) is null or {a}.{material} = any(:mids))")


# Each side is an array of chunk ids, best first (ARRAY(subquery) keeps the subquery's order).
_ANN = ("array(select c.id from chunks c where " + _scope("c") + " and c.embedding is not null "
        "order by c.embedding <=> cast(:vec as vector) limit :n)")
# `+ 0` keeps the planner off the HNSW index: an exact scan of the user's own chunks.
_EXACT = ("array(select c.id from chunks c where " + _scope("c") + " and c.embedding is not null "
          "order by (c.embedding <=> cast(:vec as vector)) + 0 limit :n)")
# HNSW filters after its graph walk: when it found fewer than n of the user's chunks, the exact
# scan runs instead (an uncorrelated subquery in CASE is only evaluated when its branch is taken;
# `offset 0` stops the planner from inlining `a`, which would run the HNSW walk twice).
_VECTOR_IDS = (f"(select case when cardinality(a.ids) >= :n then a.ids else {_EXACT} end "
               f"from (select {_ANN} as ids offset 0) a)")
# Ranking reads each candidate's tsv from the heap, so the candidates are bounded (at most
# KEYWORD_SCAN are ranked) and chosen like IDF would: the question's words and pairs of words,
# those expected to match the fewest chunks first (shares of chunks from the planner's
# statistics of `tsv`, times the chunks in scope; a word the statistics don't list counts as
# rare) while the expected matches stay within KEYWORD_SCAN. Words common in a large library
# then only find chunks that have two of them; every question word still counts in the
# ranking. A small library keeps every word.
KEYWORD_SCAN = 1000
STATS_TTL_S = 300.0
_TSQUERY = "(websearch_to_tsquery('english', :q) || websearch_to_tsquery('russian', :q))"
_LEXEME_SHARES = _numbered(
    "select cast(cast(most_common_elems as text) as text[]) as lexemes, "
    "most_common_elem_freqs as shares from pg_stats where schemaname = current_schema() "
    "and tablename = 'chunks' and attname = 'tsv'"
)
# (server address, database) -> (loaded at, shares)
_shares: dict[tuple[str, str], tuple[float, dict[str, float]]] = {}
_KEYWORD_IDS = (
    "array(select m.id from (select c.id, c.tsv from chunks c where " + _scope("c") + " and c.tsv "
    "@@ (websearch_to_tsquery('english', :kq) || websearch_to_tsquery('russian', :kq)) "
    f"limit :scan) m order by ts_rank(m.tsv, {_TSQUERY}) desc, m.id limit :n)"
)
# Transaction-local settings, the question's lexemes per word and the chunks in scope, in one
# round trip. The HNSW walk keeps ef_search candidates (default 40 < 2n). pgvector >= 0.8 walks
# on (iterative scan) until n rows pass the user filter, so the exact fallback is rarely needed
# (older versions reject the setting: CASE only evaluates it when supported). Custom plans: one
# user may own most chunks and another a hundred, so a generic plan (the plan cache's choice
# after 5 runs of a prepared statement) would fit one of them badly.
_PREPARE = _numbered(
    "select set_config('hnsw.ef_search', :ef, true), "
    "case when (select cast(string_to_array(extversion, '.') as int[]) >= '{0,8}' "
    "from pg_extension where extname = 'vector') "
    "then set_config('hnsw.iterative_scan', 'strict_order', true) end, "
    "set_config('plan_cache_mode', 'force_custom_plan', true), "
    "array(select array_to_string(tsvector_to_array(to_tsvector('english', w.word) || "
    "to_tsvector('russian', w.word)), ' ') from unnest(cast(:words as text[])) with ordinality "
    "as w(word, ord) order by w.ord) as lexemes, "
    "(select coalesce(sum(mt.chunk_count), 0) from materials mt where " + _scope("mt", "id")
    + ") as chunks"
)
_VECTOR = _numbered(f"select {_VECTOR_IDS}")
_VECTOR_EXACT = _numbered(f"select {_EXACT}")
_KEYWORD = _numbered(f"select {_KEYWORD_IDS}")


def _fused(keyword_ids: str) -> str:
    """Both sides, reciprocal rank fusion and the hits with their material in one statement;
    `keyword_ids` is the keyword side's array of ids (a subquery or a parameter)."""
    return (
        f"with v0 as (select {_VECTOR_IDS} as ids), "
        # The vector candidates in another language than the question's move up by the
        # embedding model's cross-language gap (0: unchanged order).
        "v as (select array(select c.id from v0, chunks c where c.id = any(v0.ids) order by "
        "(c.embedding <=> cast(:vec as vector)) - case when c.language = :qlang then 0 "
        "else cast(:gap as float8) end, c.id) as ids), "
        f"k as (select {keyword_ids} as ids), "
        "f as (select r.id, sum(1.0::float8 / (:rrf + r.rank)) as score from ("
        "select u.id, u.rank from v, unnest(v.ids) with ordinality as u(id, rank) union all "
        "select u.id, u.rank from k, unnest(k.ids) with ordinality as u(id, rank)) r "
        "group by r.id order by score desc, r.id limit :k) "
        "select c.id, f.score, c.material_id, c.text, c.page_start, c.start_s, c.language, "
        "c.locations, c.sections, 1 - (c.embedding <=> cast(:vec as vector)) + case when "
        "c.language = :qlang then 0 else cast(:gap as float8) end as similarity, "
        "m.title, m.kind, m.source from f join chunks c on c.id = f.id "
        "join materials m on m.id = c.material_id order by f.score desc, f.id")


_HYBRID = _numbered(_fused(_KEYWORD_IDS))
# The keyword side already ran (while the question was being embedded): its ids are given.
_HYBRID_GIVEN = _numbered(_fused("cast(:kids as bigint[])"))

_WORD = re.compile(r"\w+", re.UNICODE)
MAX_QUERY_WORDS = 64


def words(question: str) -> list[str]:
    """The question's words for websearch_to_tsquery (its operators left out), and the names
    in an English question spelt in Cyrillic too (a question about Novgorod meets "Новгород")."""
    found = [w for w in _WORD.findall(question) if w.lower() not in ("or", "and", "not")]
    found += [w for w in name_spellings(question) if w not in found]
    return found[:MAX_QUERY_WORDS]


_CYRILLIC = re.compile(r"[\u0400-\u04FF]")
_LATIN = re.compile(r"[A-Za-z]")


def question_language(question: str) -> str:
    """The text search configuration a chunk in the question's language has."""
    cyrillic = len(_CYRILLIC.findall(question))
    return "russian" if cyrillic and cyrillic * 3 >= len(_LATIN.findall(question)) else "english"


def cross_language_gap(settings: Settings) -> float:
    """How much lower the embedding model's cosine is for the same meaning in another language
    (0: the model has no common space for them, or none is known)."""
    from chat_server.embeddings import get_embedder

    return float(getattr(get_embedder(settings), "cross_language_gap", 0.0))


def _vec(vector: list[float]) -> str:
    # One %-format for the whole vector: the same text as formatting each number with
    # f"{x:.7g}", in half the CPU (~0.15 ms per 384 numbers otherwise).
    return ("[" + ",".join(["%.7g"] * len(vector)) + "]") % tuple(vector)


def _ef_search(n: int) -> str:
    return str(min(1000, max(40, 2 * n)))


def candidate_query(found: list[str], lexemes: list[str], chunks: int,
                    shares: dict[str, float]) -> str:
    """websearch_to_tsquery input for the keyword candidates.

    Clauses are the question's words and pairs of them; a clause's expected matches are the
    product of its words' shares of all chunks times the chunks in scope (the smaller, the
    larger its summed IDF). Clauses are taken from the fewest expected matches up while the
    total stays within KEYWORD_SCAN (at least one); a pair is dropped when one of its words
    is taken alone. Words without lexemes (stop words) only appear alone.
    """
    share = [max((shares.get(lex, 0.0) for lex in lexs.split()), default=0.0) for lexs in lexemes]
    clauses: list[tuple[float, tuple[int, ...]]] = [
        (share[i] * chunks, (i,)) for i in range(len(found))]
    clauses += [(share[a] * share[b] * chunks, (a, b))
                for a, b in itertools.combinations(range(len(found)), 2)
                if lexemes[a].strip() and lexemes[b].strip()]
    chosen: list[tuple[int, ...]] = []
    expected = 0.0
    for matches, clause in sorted(clauses, key=lambda c: (c[0], len(c[1]), c[1])):
        if chosen and expected + matches > KEYWORD_SCAN:
            break
        chosen.append(clause)
        expected += matches
    alone = {c[0] for c in chosen if len(c) == 1}
    chosen = sorted(c for c in chosen if len(c) == 1 or not alone.intersection(c))
    # websearch_to_tsquery: words side by side must all match, "or" separates alternatives.
    return " or ".join(" ".join(found[i] for i in clause) for clause in chosen)


async def _ids(conn: asyncpg.Connection, statement: _Statement,
               params: Mapping[str, Any]) -> list[int]:
    return list(await conn.fetchval(statement.sql, *statement.args(params)))


async def _lexeme_shares(conn: asyncpg.Connection) -> dict[str, float]:
    """Lexeme -> share of chunks containing it (the planner's statistics; cached a while)."""
    # Per database (tests and benchmarks use several in one process). asyncpg has no public
    # accessor for where a connection points: its address and connect parameters; should
    # those private names go, all databases share one cache (shares only steer candidates).
    try:
        key = (str(conn._addr), str(conn._params.database))
    except AttributeError:
        key = ("", "")
    now = time.monotonic()
    cached = _shares.get(key)
    if cached is None or now - cached[0] > STATS_TTL_S:
        row = await conn.fetchrow(_LEXEME_SHARES.sql)
        shares = dict(zip(row["lexemes"], row["shares"], strict=False)) if row else {}
        cached = _shares[key] = (now, shares)
    return cached[1]


@dataclass(frozen=True)
class Scope:
    """Whose chunks: `course` (the learner must be its owner or enrolled; checked in SQL) and
    the learner's own library when `own`."""

    course: uuid.UUID | None = None
    own: bool = True

    def params(self) -> dict[str, Any]:
        return {"cid": self.course, "own": self.own}


OWN = Scope()


async def _prepare(conn: asyncpg.Connection, user_id: uuid.UUID, found: list[str], n: int,
                   material_ids: list[uuid.UUID] | None, scope: Scope = OWN) -> str:
    """Set this transaction's search options; the keyword candidates' websearch query."""
    params = {"ef": _ef_search(n), "words": found, "uid": user_id, "mids": material_ids or None,
              **scope.params()}
    row = await conn.fetchrow(_PREPARE.sql, *_PREPARE.args(params))
    if not found:
        return ""
    chunks: int = row["chunks"]
    shares = await _lexeme_shares(conn) if chunks > KEYWORD_SCAN else {}
    return candidate_query(found, row["lexemes"], chunks, shares)


async def vector_search(conn: asyncpg.Connection, user_id: uuid.UUID, vector: list[float],
                        n: int, material_ids: list[uuid.UUID] | None = None, *,
                        exact: bool = False, scope: Scope = OWN) -> list[int]:
    """The user's n chunks nearest to `vector` (cosine), best first; `exact` skips the index.
    `conn` is in a transaction (the search options are set for it)."""
    params = {"uid": user_id, "mids": material_ids or None, "vec": _vec(vector), "n": n,
              **scope.params()}
    if exact:
        return await _ids(conn, _VECTOR_EXACT, params)
    await _prepare(conn, user_id, [], n, material_ids, scope)
    return await _ids(conn, _VECTOR, params)


async def keyword_search(conn: asyncpg.Connection, user_id: uuid.UUID, question: str, n: int,
                         material_ids: list[uuid.UUID] | None = None, *,
                         exhaustive: bool = False, scope: Scope = OWN) -> list[int]:
    """The user's n chunks ranked best for the question's words; `exhaustive` ranks every
    match (no candidate bound: for measuring what the bound costs). `conn` is in a transaction.
    """
    found = words(question)
    if not found:
        return []
    kq = await _prepare(conn, user_id, found, n, material_ids, scope)
    params = {"uid": user_id, "mids": material_ids or None, "q": " or ".join(found),
              "kq": " or ".join(found) if exhaustive else kq, "n": n,
              "scan": 2**31 - 1 if exhaustive else KEYWORD_SCAN, **scope.params()}
    return await _ids(conn, _KEYWORD, params)


def fuse(rankings: list[list[int]], k: int) -> dict[int, float]:
    """Reciprocal rank fusion: score = Σ 1 / (k + rank), rank counted from 1."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, chunk_id in enumerate(ranking, start=1):
            scores[chunk_id] = scores.get(chunk_id, 0.0) + 1.0 / (k + rank)
    return scores


# Sentences embedded for sentence_relevance(), by embedding model and text: the same passages
# come back for a learner's follow-up questions.
SENTENCE_CACHE = 4096
_sentences: OrderedDict[tuple[str, str], list[float]] = OrderedDict()


async def sentence_relevance(settings: Settings, question: str,
                             texts: list[str]) -> list[float]:
    """How close each text (a passage) is to the question in meaning, with the embedding model
    of `settings`: 0 at the cosine above which a text is on the question for that model (its
    `on_topic_cosine`), 1 for the same meaning, below 0 off the question. Costs one embedding
    of every text not seen lately: callers keep `texts` few."""
    from chat_server.embeddings import get_embedder

    embedder = get_embedder(settings)
    model = str(embedder.identity.get("model"))
    query = await embedder.embed_query(question)
    missing = [t for t in dict.fromkeys(texts) if (model, t) not in _sentences]
    if missing:
        for text, vector in zip(missing, await embedder.embed(missing), strict=True):
            _sentences[(model, text)] = vector
            while len(_sentences) > SENTENCE_CACHE:
                _sentences.popitem(last=False)
    line = embedder.on_topic_cosine
    gap = cross_language_gap(settings)
    language = question_language(question)
    out = []
    for text in texts:
        vector = _sentences[(model, text)]
        _sentences.move_to_end((model, text))
        cosine = sum(a * b for a, b in zip(query, vector, strict=True))
        if question_language(text) != language:
            cosine += gap
        out.append((cosine - line) / (1.0 - line))
    return out


async def embed_query(settings: Settings, query: str) -> list[float]:
    from chat_server.embeddings import get_embedder

    return await get_embedder(settings).embed_query(query)


async def hybrid_search(
    conn: asyncpg.Connection,
    settings: Settings,
    user_id: uuid.UUID,
    query: str,
    vector: list[float] | Awaitable[list[float]],
    *,
    material_ids: list[uuid.UUID] | None = None,
    k: int | None = None,
    scope: Scope = OWN,
) -> list[Hit]:
    """The user's top-k passages for `query` whose embedding is `vector`, best first.

    Vector and keyword candidates, their fusion (same scores as `fuse`) and the hits with their
    material are one statement, after one that sets the search options and picks the words
    for the keyword candidates. When `vector` is still being computed (an awaitable), the
    keyword side runs first, on the database's core, while the question is embedded on ours
    (unless a future `vector` is done by then). `conn` is in a transaction (the search options
    are set for it).
    """
    k = k or settings.retrieval_top_k
    n = max(settings.retrieval_candidates, k)
    found = words(query)
    kq = await _prepare(conn, user_id, found, n, material_ids, scope)
    params: dict[str, Any] = {
        "uid": user_id, "mids": material_ids or None, "n": n, "q": " or ".join(found),
        "kq": kq, "scan": KEYWORD_SCAN, "rrf": settings.retrieval_rrf_k, "k": k,
        "qlang": question_language(query), "gap": cross_language_gap(settings),
        **scope.params()}
    statement = _HYBRID
    if isinstance(vector, asyncio.Future) and vector.done():
        # Embedded while the options were set (a question asked again: the embedder's cache):
        # the keyword side needs no round trip of its own.
        vector = vector.result()
    if not isinstance(vector, list):
        params["kids"] = await _ids(conn, _KEYWORD, params) if kq else []
        vector = await vector
        statement = _HYBRID_GIVEN
    params["vec"] = _vec(vector)
    return [
        Hit(chunk_id=r["id"], material_id=r["material_id"], title=r["title"], kind=str(r["kind"]),
            source=r["source"], text=r["text"], page=r["page_start"], start_s=r["start_s"],
            score=r["score"], language=r["language"],
            locations=parse_locations(json.loads(r["locations"]) if r["locations"] else None),
            sections=parse_sections(json.loads(r["sections"]) if r["sections"] else None),
            similarity=r["similarity"])
        for r in await conn.fetch(statement.sql, *statement.args(params))
    ]


async def retrieve(
    pool: asyncpg.Pool,
    settings: Settings,
    user_id: uuid.UUID,
    query: str,
    *,
    material_ids: list[uuid.UUID] | None = None,
    k: int | None = None,
    scope: Scope = OWN,
) -> list[Hit]:
    """The user's top-k passages for `query`, best first: one connection of `pool` and one
    transaction, the question embedded meanwhile."""
    query = query.strip()
    if not query:
        return []
    embedding = asyncio.ensure_future(embed_query(settings, query))
    try:
        async with pool.acquire() as conn, conn.transaction():
            return await hybrid_search(conn, settings, user_id, query, embedding,
                                       material_ids=material_ids, k=k, scope=scope)
    finally:
        if not embedding.done():
            embedding.cancel()  # the search failed first: don't leave the task unowned
