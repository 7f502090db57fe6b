"""The `tutorhub` command as a user runs it: real subprocesses, a fresh data folder, a free port."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import psutil
from websockets.sync.client import connect as ws_connect

from tests.support.fake_providers import openai_stream
from tests.support.processes import (
    START_TIMEOUT_S,
    TUTORHUB,
    provider_in_thread,
    serve,
    tutorhub_env,
)
from tests.support.services import free_port


def _postmaster_pid(data_dir: Path) -> int:
    return int((data_dir / "pg" / "postmaster.pid").read_text().split()[0])


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_embedded_serve_lock_and_clean_sigterm(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = tutorhub_env(data)
    with serve(tmp_path, env, "first") as first:
        r = first.wait_ready()
        assert r.json()["checks"]["database"] == "ok"
        assert httpx.get(f"{first.url}/healthz").json() == {"status": "ok"}
        pg_pid = _postmaster_pid(data)
        assert "postgres" in psutil.Process(pg_pid).name()

        # A second serve on the same folder refuses, without disturbing the first.
        with serve(tmp_path, env, "second") as second:
            assert second.proc.wait(START_TIMEOUT_S) != 0
            out = second.output()
            assert "is already using the data folder" in out and str(data.resolve()) in out
            assert "Uvicorn running" not in out
        assert httpx.get(f"{first.url}/readyz").status_code == 200
        assert _postmaster_pid(data) == pg_pid

        assert first.stop() == 0, first.output()
        assert "Application shutdown complete" in first.output()
    assert not (data / "pg" / "postmaster.pid").exists()
    assert _gone(pg_pid)


def test_after_a_kill_9_the_folder_is_reused_and_postgres_still_stops(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = tutorhub_env(data)
    email, password = "survivor@example.com", "password-123"
    with serve(tmp_path, env, "killed") as killed:
        killed.wait_ready()
        r = httpx.post(f"{killed.url}/auth/register", json={"email": email, "password": password})
        assert r.status_code == 201
        killed.proc.kill()  # no cleanup at all: Postgres is left running
        killed.proc.wait(30)
    orphan = _postmaster_pid(data)
    assert not _gone(orphan)

    with serve(tmp_path, env, "again") as again:
        again.wait_ready()
        # Same data folder, same data; the key in data_dir/secret_key still signs tokens.
        r = httpx.post(f"{again.url}/auth/token", data={"username": email, "password": password})
        assert r.status_code == 200
        assert again.stop() == 0, again.output()
    assert _gone(orphan)
    assert not (data / "pg" / "postmaster.pid").exists()


def test_a_reply_cut_by_a_kill_9_keeps_its_text_and_ends_interrupted(tmp_path: Path) -> None:
    """The server dies mid-reply (no cleanup at all): the text its last checkpoint stored
    survives, and the restarted server marks the reply interrupted once its heartbeat is
    stale, without anyone touching the conversation."""
    slow = openai_stream([f"w{i} " for i in range(3000)], delay_s=0.02)  # a minute of tokens
    with provider_in_thread(slow) as provider:
        provider_url = provider.base_url
        env = tutorhub_env(tmp_path / "data", TUTORHUB_LLM_PROVIDER="openai",
                   TUTORHUB_OPENAI_BASE_URL=provider_url + "/v1",
                   TUTORHUB_OPENAI_API_KEY="sk-test", TUTORHUB_OPENAI_MODEL="gpt-test",
                   TUTORHUB_REPLY_CHECKPOINT_S="0.3")
        with serve(tmp_path, env, "crashing") as crashing:
            crashing.wait_ready()
            account = {"email": "crash@example.com", "password": "password-123"}
            assert httpx.post(f"{crashing.url}/auth/register", json=account).status_code == 201
            token = httpx.post(f"{crashing.url}/auth/token", data={
                "username": account["email"], "password": account["password"]}).json()[
                    "access_token"]
            with ws_connect(f"ws://127.0.0.1:{crashing.port}/ws/v1", open_timeout=10) as ws:
                ws.send(json.dumps({"type": "auth", "token": token}))
                assert json.loads(ws.recv(10))["type"] == "welcome"
                ws.send(json.dumps({"type": "chat.send", "id": "c1", "text": "Tell me all."}))
                streamed = ""
                while len(streamed.split()) < 30:
                    frame = json.loads(ws.recv(10))
                    if frame["type"] == "chat.ack":
                        conversation = frame["conversation_id"]
                    elif frame["type"] == "reply.delta":
                        streamed += frame["text"]
                time.sleep(1.0)  # a few checkpoints (0.3 s) store what streamed
                crashing.proc.kill()
                crashing.proc.wait(30)

        with serve(tmp_path, env, "restarted") as again:
            again.wait_ready()
            auth = {"authorization": f"Bearer {token}"}
            deadline = time.monotonic() + 90  # stale after 30 s without a heartbeat
            while True:
                messages = httpx.get(f"{again.url}/conversations/{conversation}",
                                     headers=auth).json()["messages"]
                answer = messages[-1]
                if answer["status"] != "streaming" or time.monotonic() > deadline:
                    break
                time.sleep(0.5)  # polling interval, not an assertion
            assert answer["role"] == "assistant" and answer["status"] == "interrupted"
            assert answer["content"].startswith(streamed)  # all of it, and what came after
            assert again.stop() == 0, again.output()
    assert "marked 1 replies of a stopped server interrupted" in again.output()


def _run(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([TUTORHUB, *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=START_TIMEOUT_S)


async def test_unmigrated_database_refuses_to_start_until_migrated(
    empty_database_url: str, tmp_path: Path
) -> None:
    env = tutorhub_env(tmp_path / "data", TUTORHUB_DATABASE_URL=empty_database_url)
    with serve(tmp_path, env, "unmigrated") as refused:
        code = await asyncio.to_thread(refused.proc.wait, START_TIMEOUT_S)
        out = refused.output()
    assert code == 1, out
    assert "Run `tutorhub migrate`" in out and "at migration none" in out
    # Refused before uvicorn started, and embedded Postgres was never involved.
    assert "Started server process" not in out and "Uvicorn running" not in out
    assert not (tmp_path / "data" / "pg").exists()

    migrated = await asyncio.to_thread(_run, "migrate", env=env, cwd=tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    assert "(head)" in migrated.stdout

    with serve(tmp_path, env, "migrated") as ok:
        await asyncio.to_thread(ok.wait_ready)
        assert await asyncio.to_thread(ok.stop) == 0


async def test_user_create_and_duplicate(
    database_url: str, tmp_path: Path, client: httpx.AsyncClient
) -> None:
    env = tutorhub_env(tmp_path / "data", TUTORHUB_DATABASE_URL=database_url)
    created = await asyncio.to_thread(
        _run, "user", "create", "Ученик@Example.com", "--password", "пароль-123", env=env, cwd=tmp_path
    )
    assert created.returncode == 0, created.stderr
    assert "created user" in created.stdout and "ученик@example.com" in created.stdout

    dup = await asyncio.to_thread(_run, "user", "create", "ученик@example.com",
                                  env={**env, "TUTORHUB_NEW_USER_PASSWORD": "another-pass"},
                                  cwd=tmp_path)
    assert dup.returncode == 1
    assert "already exists" in dup.stderr

    short = await asyncio.to_thread(_run, "user", "create", "x@example.com", "--password", "short",
                                    env=env, cwd=tmp_path)
    assert short.returncode == 2 and "at least 8 characters" in short.stderr

    # The CLI's user logs in through the API served on the same database.
    r = await client.post("/auth/token", data={"username": "ученик@example.com",
                                               "password": "пароль-123"})
    assert r.status_code == 200, r.text
    r = await client.post("/auth/token", data={"username": "ученик@example.com",
                                               "password": "another-pass"})
    assert r.status_code == 401


def test_unreachable_database_is_one_clear_line_not_a_traceback(tmp_path: Path) -> None:
    # A closed port on loopback: the connection is refused at once.
    url = f"postgresql://learner:s3cret-pw@127.0.0.1:{free_port()}/tutorhub"
    env = tutorhub_env(tmp_path / "data", TUTORHUB_DATABASE_URL=url)
    for args in (("serve", "--port", str(free_port())), ("migrate",)):
        r = _run(*args, env=env, cwd=tmp_path)
        assert r.returncode == 1, r.stderr
        assert "tutorhub: cannot connect to the database at postgresql+asyncpg://learner:***@" \
            in r.stderr, r.stderr
        assert "TUTORHUB_DATABASE_URL" in r.stderr
        assert "Traceback" not in r.stderr and "s3cret-pw" not in r.stderr


def test_serve_workers_refused_without_redis(tmp_path: Path) -> None:
    r = _run("serve", "--workers", "2", env=tutorhub_env(tmp_path / "data"), cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert "--workers N needs TUTORHUB_REDIS_URL" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "data" / "pg").exists()  # refused before anything started


def _ask_everywhere(url: str, token: str, sockets: int) -> list[str]:
    """One question on the first of several sockets of one user; each socket's reply text."""
    with ExitStack() as stack:
        conns = [stack.enter_context(ws_connect(url.replace("http", "ws") + "/ws/v1"))
                 for _ in range(sockets)]
        for ws in conns:
            ws.send(json.dumps({"type": "auth", "token": token}))
            assert json.loads(ws.recv(10))["type"] == "welcome"
        conns[0].send(json.dumps({"type": "chat.send", "id": "q1", "text": "What is mitosis?"}))
        texts = []
        for ws in conns:
            parts = []
            while (frame := json.loads(ws.recv(30)))["type"] != "reply.end":
                if frame["type"] == "reply.delta":
                    parts.append(frame["text"])
            texts.append("".join(parts))
        return texts


async def test_serve_workers_share_the_port_over_redis(
        database_url: str, redis_url: str, tmp_path: Path) -> None:
    env = tutorhub_env(tmp_path / "data", TUTORHUB_DATABASE_URL=database_url,
               TUTORHUB_REDIS_URL=redis_url, TUTORHUB_LLM_PROVIDER="loopback",
               TUTORHUB_LLM_LOOPBACK_ALLOWED="true", TUTORHUB_LLM_LOOPBACK_REPLY_TOKENS="20")
    with serve(tmp_path, env, "workers", "--workers", "2") as two:
        await asyncio.to_thread(two.wait_ready)
        servers = [p for p in psutil.Process(two.proc.pid).children()
                   if "spawn_main" in " ".join(p.cmdline())]
        assert len(servers) == 2, two.output()
        async with httpx.AsyncClient(base_url=two.url, timeout=30) as client:
            from tests.conftest import register

            token = await register(client, "workers@example.com")
        # Eight sockets land on both processes (the kernel spreads accepts); every one of them
        # gets the whole reply through Redis, whichever process streams it.
        texts = await asyncio.to_thread(_ask_everywhere, two.url, token, 8)
        assert len(set(texts)) == 1 and len(texts[0].split(" ")) == 20, texts
        assert await asyncio.to_thread(two.stop) == 0, two.output()
    assert all(not p.is_running() for p in servers)


def test_unknown_subcommand_is_a_usage_error(tmp_path: Path) -> None:
    r = _run("frobnicate", env=tutorhub_env(tmp_path / "data"), cwd=tmp_path)
    assert r.returncode == 2 and "invalid choice" in r.stderr


async def test_docs_tag_and_describe_every_route(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    declared = {t["name"]: t.get("description") for t in spec["tags"]}
    assert all(declared.values()), declared
    operations = [(method.upper(), path, op) for path, ops in spec["paths"].items()
                  for method, op in ops.items()]
    assert len(operations) >= 15
    for method, path, op in operations:
        assert op.get("summary"), f"{method} {path} has no summary"
        assert op.get("tags") and set(op["tags"]) <= set(declared), f"{method} {path}: {op.get('tags')}"
    assert {(m, p) for m, p, _ in operations} >= {
        ("POST", "/auth/register"), ("POST", "/auth/token"), ("POST", "/auth/refresh"),
        ("GET", "/me"), ("GET", "/conversations"), ("GET", "/materials"),
        ("GET", "/healthz"), ("GET", "/readyz"),
    }
    docs = await client.get("/docs")
    assert docs.status_code == 200 and "swagger-ui" in docs.text and "/openapi.json" in docs.text
