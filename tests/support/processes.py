"""Real processes for fault tests: `tutorhub serve` and `tutorhub worker` as a user runs them,
a PostgreSQL that can be stopped and started again, and a loopback LLM provider on a thread."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

from chat_server.settings import Settings
from tests.support.fake_providers import FakeProvider, Scripted
from tests.support.services import free_port
from tests.support.threaded import loop_thread

ROOT = Path(__file__).resolve().parent.parent.parent
TUTORHUB = str(Path(sys.executable).parent / "tutorhub")
START_TIMEOUT_S = 90  # cold start: initdb + migrations, on a shared 2-core machine


def tutorhub_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """This process's environment without its TUTORHUB_ settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUTORHUB_")}
    env.update(TUTORHUB_DATA_DIR=str(data_dir), TUTORHUB_LOG_LEVEL="info",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONDONTWRITEBYTECODE="1")
    env.update(extra)
    return env


def settings_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a process configured like `settings` (database, Redis, data folder,
    keys and the few knobs tests turn)."""
    return tutorhub_env(
        settings.data_dir, TUTORHUB_DATABASE_URL=str(settings.database_url),
        TUTORHUB_REDIS_URL=str(settings.redis_url or ""),
        TUTORHUB_SECRET_KEY=str(settings.secret_key),
        TUTORHUB_INGEST_STALE_S=str(settings.ingest_stale_s),
        TUTORHUB_EMBEDDING_BATCH_SIZE=str(settings.embedding_batch_size), **extra)


@dataclass
class Serve:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self) -> httpx.Response:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"serve exited with {self.proc.returncode}:\n{self.output()}")
            try:
                r = httpx.get(f"{self.url}/readyz", timeout=2)
                if r.status_code == 200:
                    return r
            except httpx.TransportError:
                pass
            time.sleep(0.05)  # polling interval, not an assertion
        pytest.fail(f"not ready in {START_TIMEOUT_S}s:\n{self.output()}")

    def stop(self) -> int:
        """SIGTERM (a graceful shutdown) and its exit code."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)

    def kill(self) -> None:
        """SIGKILL: no cleanup at all."""
        self.proc.kill()
        self.proc.wait(30)


@contextmanager
def serve(workdir: Path, env: dict[str, str], name: str = "serve", *args: str
          ) -> Iterator[Serve]:
    port = free_port()
    log = workdir / f"{name}-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([TUTORHUB, "serve", "--port", str(port), *args], cwd=workdir,
                                env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield Serve(proc, port, log)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


@contextmanager
def worker(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`tutorhub worker --workers 1` in its own session: `os.killpg(proc.pid, …)` reaches the
    taskiq parent and its worker child together."""
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "chat_server.cli", "worker", "--workers", "1"],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


@contextmanager
def provider_in_thread(reply: Scripted | None = None) -> Iterator[FakeProvider]:
    """A loopback OpenAI/Anthropic-compatible provider on its own event loop thread (for
    synchronous tests, or servers in subprocesses); `.base_url` is where it listens."""
    with loop_thread() as thread:
        yield thread.enter(FakeProvider(default=reply))


class Postgres:
    """A PostgreSQL of its own (pgserver: PostgreSQL 16 + pgvector) that a test may stop and
    start again under traffic, at the same socket."""

    def __init__(self, workdir: Path) -> None:
        import pgserver

        os.environ.setdefault("XDG_RUNTIME_DIR", str(workdir / "run"))
        Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(parents=True, exist_ok=True, mode=0o700)
        self.server = pgserver.get_server(workdir / "pg", cleanup_mode="delete")
        # PostgreSQL's own pg_ctl, beside the postgres binary that runs.
        self.pg_ctl = Path(psutil.Process(self.server.get_pid()).exe()).with_name("pg_ctl")

    @property
    def uri(self) -> str:
        return str(self.server.get_uri())

    def database(self, name: str) -> str:
        """Create a database `name` on this server and migrate it; its URL. (Blocking: from
        a coroutine, call it in a thread.)"""
        import asyncio

        import asyncpg

        from chat_server.db import libpq_url, migrate
        from tests.support.services import database_uri

        async def create() -> None:
            conn = await asyncpg.connect(libpq_url(database_uri(self.uri, "postgres")))
            try:
                await conn.execute(f'CREATE DATABASE "{name}"')
            finally:
                await conn.close()

        asyncio.run(create())
        url = database_uri(self.uri, name)
        migrate(url)
        return url

    def stop(self) -> None:
        """`pg_ctl stop -m fast`: sessions are ended, the server shuts down cleanly."""
        subprocess.run([str(self.pg_ctl), "-D", str(self.server.pgdata),
                        "-w", "-m", "fast", "stop"], user=self.server.system_user, check=True,
                       timeout=30, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def start(self) -> None:
        self.server.ensure_postgres_running()

    def close(self) -> None:
        self.server.cleanup()


@contextmanager
def postgres(workdir: Path) -> Iterator[Postgres]:
    server = Postgres(workdir)
    try:
        yield server
    finally:
        server.close()
