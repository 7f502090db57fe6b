"""What the benchmarks share: percentiles, and a report printed as it is written."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx


def pct(values: list[float], q: float) -> float:
    """The q-quantile (0 ≤ q ≤ 1) by nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def cpu_probe() -> float:
    """Milliseconds of CPU a fixed pure-Python loop takes here now (best of 3). On a shared VM
    the same loop varies by half within a minute: printed beside a benchmark's figures, it
    says how fast the machine was while they were taken."""
    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        x = 0
        for i in range(2_000_000):
            x += i & 7
        best = min(best, time.process_time() - started)
    return best * 1000


@contextmanager
def no_gc_pauses() -> Iterator[None]:
    """The load generator's own cyclic collector off while it measures: holding every frame
    it received (~150,000 in the streaming phase), a full collection paused the clients'
    loop ~190 ms in the middle of a phase, and every frame arriving meanwhile was stamped
    late: the server's latency, as measured, with the clients' pause added to it."""
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.unfreeze()


class Report:
    """Markdown lines, each printed as it is added (a long run shows its progress)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def say(self, line: str = "") -> None:
        print(line, flush=True)
        self.lines.append(line)

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def wait_http(url: str, wait_s: float = 120) -> None:
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


@contextmanager
def serve_checkout(code: Path, port: int, **env: str) -> Iterator[subprocess.Popen[bytes]]:
    """`tutorhub serve` from the checkout `code` (its chat_server on PYTHONPATH) on embedded
    PostgreSQL and the in-process bus, in a throwaway data folder, with `env` added; ready."""
    with tempfile.TemporaryDirectory() as tmp:
        environ = {**os.environ, "PYTHONPATH": str(code), "TUTORHUB_DATA_DIR": f"{tmp}/data",
                   "TUTORHUB_LOG_LEVEL": "warning",
                   "TUTORHUB_SECRET_KEY": "bench-secret-key-0123456789abcdef0123456789", **env}
        for var in ("TUTORHUB_DATABASE_URL", "TUTORHUB_REDIS_URL"):
            environ.pop(var, None)
        proc = subprocess.Popen([sys.executable, "-m", "chat_server.cli", "serve", "--port",
                                 str(port)], env=environ, cwd=tmp)
        try:
            wait_http(f"http://127.0.0.1:{port}/readyz")
            yield proc
        finally:
            proc.terminate()
            proc.wait(60)


def commit_of(code: Path) -> str:
    return subprocess.run(["git", "-C", str(code), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True).stdout.strip() or "?"


@asynccontextmanager
async def bench_settings(work: Path) -> AsyncIterator[Any]:
    """Settings on a fresh, migrated Postgres (pgserver in `work`) for an in-process server."""
    import asyncio

    import asyncpg

    from chat_server.db import migrate
    from chat_server.settings import Settings
    from tests.support.services import database_uri, postgres_server

    os.environ.setdefault("XDG_RUNTIME_DIR", str(work / "run"))
    with postgres_server(work) as base_uri:
        conn = await asyncpg.connect(database_uri(base_uri, "postgres").replace("+asyncpg", ""))
        await conn.execute("create database bench")
        await conn.close()
        url = database_uri(base_uri, "bench")
        await asyncio.to_thread(migrate, url)
        yield Settings(_env_file=None, database_url=url, data_dir=work / "data",  # type: ignore[call-arg]
                       secret_key="bench-secret-key-0123456789-0123456789", auto_migrate=False)
