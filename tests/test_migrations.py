"""Alembic on a real server: upgrade, downgrade, upgrade again; models match the migrations."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from chat_server.db import (
    DatabaseNotMigrated,
    check_migrated,
    current_revision,
    downgrade,
    head_revision,
    libpq_url,
    migrate,
)
from chat_server.models import Base

TABLES = {"users", "conversations", "messages", "materials", "chunks", "meta", "study_sets",
          "flashcards", "flashcard_states", "flashcard_reviews", "quizzes", "quiz_questions",
          "quiz_attempts", "quiz_sessions", "telegram_quizzes"}
ENUMS = {"message_role", "message_status", "material_kind", "material_status"}


async def _schema(url: str) -> tuple[set[str], set[str], set[str]]:
    conn = await asyncpg.connect(libpq_url(url))
    try:
        tables = {r["tablename"] for r in await conn.fetch(
            "select tablename from pg_tables where schemaname = 'public'")}
        enums = {r["typname"] for r in await conn.fetch(
            "select typname from pg_type where typtype = 'e'")}
        indexes = {r["indexdef"] for r in await conn.fetch(
            "select indexdef from pg_indexes where schemaname = 'public'")}
    finally:
        await conn.close()
    return tables, enums, indexes


async def test_upgrade_downgrade_upgrade_on_a_fresh_database(empty_database_url: str) -> None:
    url = empty_database_url
    engine = create_async_engine(url)
    try:
        assert await current_revision(engine) is None
        with pytest.raises(DatabaseNotMigrated, match="tutorhub migrate"):
            await check_migrated(engine)

        await asyncio.to_thread(migrate, url)
        tables, enums, indexes = await _schema(url)
        assert TABLES <= tables
        assert ENUMS <= enums
        assert any("USING hnsw (embedding vector_cosine_ops)" in i for i in indexes), indexes
        assert any("ix_chunks_tsv" in i and "USING gin (tsv)" in i for i in indexes), indexes
        assert await current_revision(engine) == head_revision()
        await check_migrated(engine)

        await asyncio.to_thread(downgrade, url, "base")
        tables, enums, _ = await _schema(url)
        assert tables & TABLES == set()
        assert enums & ENUMS == set()
        assert await current_revision(engine) is None

        await asyncio.to_thread(migrate, url)
        tables, enums, _ = await _schema(url)
        assert TABLES <= tables and ENUMS <= enums
        await check_migrated(engine)
    finally:
        await engine.dispose()


async def test_models_match_the_migrations(database_url: str) -> None:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            diff = await conn.run_sync(
                lambda sync_conn: compare_metadata(
                    MigrationContext.configure(
                        sync_conn, opts={"compare_type": True, "compare_server_default": True}
                    ),
                    Base.metadata,
                )
            )
    finally:
        await engine.dispose()
    assert diff == []


async def test_vector_extension_and_dimension(database_url: str) -> None:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            assert await conn.scalar(
                text("select extname from pg_extension where extname = 'vector'")
            ) == "vector"
            typ = await conn.scalar(text(
                "select format_type(atttypid, atttypmod) from pg_attribute "
                "where attrelid = 'chunks'::regclass and attname = 'embedding'"
            ))
            assert typ == "vector(384)"
    finally:
        await engine.dispose()


async def test_0002_keeps_the_newest_streaming_reply_of_a_conversation(
    empty_database_url: str,
) -> None:
    """Replies a crashed process left `streaming` would break the new unique index: all but the
    newest of a conversation are marked interrupted first; a second one can't be stored after."""
    url = empty_database_url
    await asyncio.to_thread(migrate, url, "0001")
    conn = await asyncpg.connect(libpq_url(url))
    try:
        user = await conn.fetchval("insert into users (id) values (gen_random_uuid()) returning id")
        conv = await conn.fetchval("insert into conversations (id, user_id, title) values "
                                   "(gen_random_uuid(), $1, 't') returning id", user)
        for hours in (3, 2, 1):
            await conn.execute(
                "insert into messages (id, conversation_id, user_id, role, content, status, "
                "created_at) values (gen_random_uuid(), $1, $2, 'assistant', '', 'streaming', "
                "now() - $3::interval)",
                conv, user, timedelta(hours=hours))
        await asyncio.to_thread(migrate, url)
        rows = await conn.fetch("select status::text, finished_at is not null as ended "
                                "from messages order by created_at")
        assert [(r["status"], r["ended"]) for r in rows] == [
            ("interrupted", True), ("interrupted", True), ("streaming", False)]
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute(
                "insert into messages (id, conversation_id, user_id, role, content, status) "
                "values (gen_random_uuid(), $1, $2, 'assistant', '', 'streaming')", conv, user)
    finally:
        await conn.close()
