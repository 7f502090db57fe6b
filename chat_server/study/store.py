"""Writing a generation's results: what it generated replaces what was there, in one
transaction (a retried or repeated run never duplicates).

Flashcards are matched by their front and back: a card generated again unchanged keeps its id,
and so its review history; cards no longer generated go (with their history). A quiz keeps its
id and gets new questions (attempts keep their own snapshot; the tutor's quiz sessions on it
start over).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from chat_server.study.drafts import Generated


async def save(conn: AsyncConnection, material_id: uuid.UUID, user_id: uuid.UUID,
               kinds: set[str], generated: Generated) -> uuid.UUID | None:
    """Store what `kinds` asked for; returns the quiz id (when a quiz was generated)."""
    if kinds & {"summary", "notes"}:
        await conn.execute(
            text("update study_sets set summary = :s, notes = :n, citations = cast(:c as jsonb), "
                 "language = :l where material_id = :id"),
            {"s": generated.summary, "n": generated.notes,
             "c": json.dumps(generated.citations, ensure_ascii=False),
             "l": generated.language, "id": material_id})
    if "flashcards" in kinds:
        await _save_cards(conn, material_id, user_id, generated)
    if "quiz" in kinds:
        return await _save_quiz(conn, material_id, user_id, generated)
    return None


async def _save_cards(conn: AsyncConnection, material_id: uuid.UUID, user_id: uuid.UUID,
                      generated: Generated) -> None:
    cards = {card.key: card for card in generated.cards}  # one card per front and back
    await conn.execute(
        text("delete from flashcards where material_id = :id and not (key = any(:keys))"),
        {"id": material_id, "keys": list(cards)})
    rows: list[dict[str, Any]] = [
        {"id": uuid.uuid4(), "mid": material_id, "uid": user_id, "idx": i, "key": key,
         "kind": card.kind, "front": card.front, "back": card.back, "quote": card.at.quote,
         "passage": card.at.passage, "page": card.at.page, "start_s": card.at.start_s}
        for i, (key, card) in enumerate(cards.items())]
    if rows:
        await conn.execute(text(
            "insert into flashcards (id, material_id, user_id, idx, key, kind, front, back, "
            "quote, passage, page, start_s) values (:id, :mid, :uid, :idx, :key, :kind, "
            ":front, :back, :quote, :passage, :page, :start_s) "
            "on conflict (material_id, key) do update set idx = excluded.idx, "
            "kind = excluded.kind, quote = excluded.quote, passage = excluded.passage, "
            "page = excluded.page, start_s = excluded.start_s"), rows)


async def _save_quiz(conn: AsyncConnection, material_id: uuid.UUID, user_id: uuid.UUID,
                     generated: Generated) -> uuid.UUID:
    quiz_id: uuid.UUID = (await conn.execute(
        text("insert into quizzes (id, material_id, user_id, language) "
             "values (:id, :mid, :uid, :l) on conflict (material_id) do update "
             "set language = excluded.language, updated_at = now() returning id"),
        {"id": uuid.uuid4(), "mid": material_id, "uid": user_id,
         "l": generated.language})).scalar_one()
    await conn.execute(text("delete from quiz_questions where quiz_id = :q"), {"q": quiz_id})
    await conn.execute(text("delete from quiz_sessions where quiz_id = :q"), {"q": quiz_id})
    rows = [
        {"id": uuid.uuid4(), "q": quiz_id, "idx": i, "kind": question.kind,
         "prompt": question.prompt,
         "options": json.dumps(question.options, ensure_ascii=False)
         if question.options is not None else None,
         "answer": question.answer, "explanation": question.explanation,
         "quote": question.at.quote, "passage": question.at.passage, "page": question.at.page,
         "start_s": question.at.start_s}
        for i, question in enumerate(generated.questions)]
    if rows:
        await conn.execute(text(
            "insert into quiz_questions (id, quiz_id, idx, kind, prompt, options, answer, "
            "explanation, quote, passage, page, start_s) values (:id, :q, :idx, :kind, :prompt, "
            "cast(:options as jsonb), :answer, :explanation, :quote, :passage, :page, "
            ":start_s)"), rows)
    return quiz_id
