"""Shared fixtures: a real PostgreSQL (pgserver) with a migrated template database, a real
redis-server, settings pointing at them, and the app served by uvicorn on loopback."""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from chat_server.app import create_app
from chat_server.db import libpq_url, migrate
from chat_server.settings import Settings
from tests.support.services import (
    RedisServer,
    database_uri,
    postgres_server,
    redis_server,
    serve_app,
)

TEMPLATE = "tutorhub_template"
_db_counter = itertools.count()


@pytest.fixture(scope="session")
def pg_base_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("pg")
    with postgres_server(workdir) as uri:
        migrate(_create_template(uri))
        yield uri


def _create_template(uri: str) -> str:
    import asyncio

    async def create() -> None:
        conn = await asyncpg.connect(libpq_url(database_uri(uri, "postgres")))
        try:
            await conn.execute(f'CREATE DATABASE "{TEMPLATE}"')
        finally:
            await conn.close()

    asyncio.run(create())
    return database_uri(uri, TEMPLATE)


@pytest.fixture
async def database_url(pg_base_uri: str) -> str:
    """A fresh, migrated database for one test (cloned from the template: fast)."""
    name = f"t_{os.getpid()}_{next(_db_counter)}"
    conn = await asyncpg.connect(libpq_url(database_uri(pg_base_uri, "postgres")))
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}"')
    finally:
        await conn.close()
    return database_uri(pg_base_uri, name)


@pytest.fixture
async def empty_database_url(pg_base_uri: str) -> AsyncIterator[str]:
    """A brand-new database with nothing in it: not migrated, not even the vector extension."""
    name = f"e_{os.getpid()}_{next(_db_counter)}"
    admin = libpq_url(database_uri(pg_base_uri, "postgres"))
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    yield database_uri(pg_base_uri, name)
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def redis_proc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with redis_server(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
async def redis_url(redis_proc: RedisServer) -> str:
    """The shared redis-server, flushed for this test."""
    import redis.asyncio as aioredis

    if redis_proc.proc is None or redis_proc.proc.poll() is not None:
        redis_proc.start()
    client = aioredis.from_url(redis_proc.url)
    try:
        await client.flushall()
    finally:
        await client.aclose()
    return redis_proc.url


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """Embedded-style settings (no Redis) on a fresh database."""
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=database_url,
        data_dir=tmp_path / "data",
        secret_key="test-secret-key-with-enough-length-0123456789",
        embed_secret="embed-secret-for-tests-0123456789",
        auto_migrate=False,
    )


@pytest.fixture
async def server(settings: Settings) -> AsyncIterator[str]:
    """The app under a real uvicorn on loopback; yields its base URL."""
    async with serve_app(create_app(settings)) as base_url:
        yield base_url


@pytest.fixture
async def client(server: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server, timeout=30) as c:
        yield c


async def register(client: httpx.AsyncClient, email: str, password: str = "correct horse battery") -> str:
    """Register a user and return an access token."""
    r = await client.post("/auth/register", json={"email": email, "password": password})
    assert r.status_code == 201, r.text
    r = await client.post("/auth/token", data={"username": email, "password": password})
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


@pytest.fixture
def register_user():  # type: ignore[no-untyped-def]
    return register
