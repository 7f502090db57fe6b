"""The offline tutor on small shipped documents (English and Russian), and the tutor lifespan."""

from __future__ import annotations

import hashlib
import uuid
from functools import partial
from pathlib import Path

import httpx
from sqlalchemy import select, text

from chat_server.app import create_app
from chat_server.db import open_database
from chat_server.models import Chunk, Material, MaterialKind, MaterialStatus, User
from chat_server.retrieval import Hit, sentence_relevance
from chat_server.settings import Settings
from chat_server.tutor.citations import resolve
from chat_server.tutor.offline import OfflineProvider
from chat_server.tutor.prompt import build_request, cited_numbers
from chat_server.tutor.service import Tutor
from tests.support.services import serve_app

DATA = Path(__file__).parent / "data" / "tutor"


async def _store_document(settings: Settings, user_id: uuid.UUID, name: str, title: str,
                          language: str) -> list[Hit]:
    """Store the document as one chunk per paragraph (the title line dropped), as ingestion would;
    return every chunk as a retrieval Hit, the relevant one not first."""
    body = (DATA / name).read_text(encoding="utf-8")
    paragraphs = [p.strip() for p in body.split("\n\n")[1:] if p.strip()]
    assert settings.database_url
    async with open_database(settings.database_url, 2) as db, db.session() as session:
        if await session.get(User, user_id) is None:
            session.add(User(id=user_id, email=f"{user_id.hex[:8]}@example.com"))
            await session.flush()
        material = Material(user_id=user_id, kind=MaterialKind.text, title=title,
                            status=MaterialStatus.ready, chunk_count=len(paragraphs),
                            content_hash=hashlib.sha256(body.encode()).hexdigest())
        session.add(material)
        await session.flush()
        for idx, para in enumerate(paragraphs):
            await session.execute(text(
                "INSERT INTO chunks (material_id, user_id, idx, text, language, tsv) "
                "VALUES (:m, :u, :i, :t, :l, to_tsvector(CAST(:c AS regconfig), :t))"),
                {"m": material.id, "u": user_id, "i": idx, "t": para, "l": language,
                 "c": language})
        await session.commit()
        rows = (await session.scalars(select(Chunk).where(Chunk.material_id == material.id)
                                      .order_by(Chunk.idx.desc()))).all()
    return [Hit(chunk_id=r.id, material_id=material.id, title=title, kind="text", source="",
                text=r.text, page=None, start_s=None, score=1.0, language=r.language)
            for r in rows]


async def _answer(question: str, hits: list[Hit], socratic: bool = False,
                  settings: Settings | None = None) -> str:
    """The offline answer; with `settings`, meaning is checked with their embedding model, as
    the tutor does."""
    request = build_request(question=question, hits=hits, history=[], socratic=socratic,
                            history_budget=2000, max_tokens=1024, temperature=0.3,
                            relevance=partial(sentence_relevance, settings) if settings else None)
    pieces: list[str] = []
    async with OfflineProvider().stream(request) as stream:
        async for piece in stream:
            pieces.append(piece)
        assert stream.finish_reason == "stop"
        assert stream.usage.output_tokens > 0 and stream.usage.input_tokens > 0
    assert len(pieces) > 5  # word by word
    return "".join(pieces)


async def test_offline_answers_english_question_citing_the_right_passage(
    settings: Settings,
) -> None:
    hits = await _store_document(settings, uuid.uuid4(), "photosynthesis_en.txt",
                                 "Photosynthesis", "english")
    answer = await _answer("Where does the oxygen released in photosynthesis come from?", hits,
                           settings=settings)
    assert answer.startswith("Here is what your materials say:")
    numbers = cited_numbers(answer, len(hits))
    water = next(n for n, h in enumerate(hits, 1) if "splitting of water" in h.text)
    assert water in numbers
    assert f"The oxygen we breathe comes from this splitting of water, not from carbon dioxide. " \
           f"[{water}]" in answer
    request = build_request(question="Where does the oxygen released in photosynthesis come from?",
                            hits=hits, history=[], socratic=False, history_budget=2000,
                            max_tokens=1024, temperature=0.3)
    cited = next(c for c in resolve(answer, request.sources) if c["n"] == water)
    assert cited["title"] == "Photosynthesis"
    # The citation shows the quoted span itself (every sentence quoted from it, here
    # neighbours), inside its whole passage.
    assert cited["text"].endswith("The oxygen we breathe comes from this splitting of water, not from carbon dioxide.")
    assert cited["text"] in cited["passage"]
    assert cited["passage"] == hits[water - 1].text
    assert cited["material_id"] == str(hits[0].material_id)

    nothing = await _answer("What is the capital of France?", hits)
    assert nothing.startswith("I couldn't find anything about this in your materials.")
    assert not cited_numbers(nothing, len(hits))


async def test_offline_answers_russian_question_in_russian_citing_the_right_passage(
    settings: Settings,
) -> None:
    hits = await _store_document(settings, uuid.uuid4(), "volga_ru.txt", "Река Волга", "russian")
    answer = await _answer("Куда впадает Волга?", hits)
    assert answer.startswith("Вот что сказано в ваших материалах:")
    caspian = next(n for n, h in enumerate(hits, 1) if "Каспийское море" in h.text)
    assert f"Волга впадает в Каспийское море, образуя обширную дельту. [{caspian}]" in answer
    assert cited_numbers(answer, len(hits))[0] == caspian

    socratic = await _answer("Куда впадает Волга?", hits, socratic=True)
    assert socratic.startswith("Давайте разберёмся вместе.")
    assert socratic.endswith("Как вы думаете, что из этого следует?")
    assert f"[{caspian}]" in socratic

    nothing = await _answer("Кто написал «Войну и мир»?", hits)
    assert nothing.startswith("В ваших материалах я не нашёл ничего об этом.")


async def test_lifespan_sets_the_tutor_and_clears_it_on_shutdown(settings: Settings) -> None:
    app = create_app(settings)
    async with serve_app(app) as base_url:
        tutor = app.state.tutor
        assert isinstance(tutor, Tutor)
        assert [p.name for p in tutor.providers] == ["offline"]
        async with httpx.AsyncClient(base_url=base_url) as client:
            assert (await client.get("/healthz")).status_code == 200
    assert app.state.tutor is None
