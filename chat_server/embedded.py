"""Embedded mode: a real PostgreSQL 16 + pgvector from the pgserver package, in data_dir.

One `tutorhub serve` owns a data folder at a time; a second one is refused
(an exclusive lock on data_dir/serve.lock) instead of sharing or corrupting it.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)


class DataDirBusy(RuntimeError):
    pass


@contextmanager
def data_dir_lock(data_dir: Path) -> Iterator[None]:
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "serve.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            raise DataDirBusy(
                f"Another Tutorhub (pid {holder}) is already using the data folder "
                f"{data_dir.resolve()}. Stop it first, or choose another folder with "
                "TUTORHUB_DATA_DIR."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)


@contextmanager
def embedded_postgres(data_dir: Path) -> Iterator[str]:
    """Start (or reuse) Postgres in data_dir/pg and yield an asyncpg URL; stop it on exit."""
    os.environ.setdefault("XDG_RUNTIME_DIR", str(Path("/tmp") / f"tutorhub-run-{os.getuid()}"))
    Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(parents=True, exist_ok=True, mode=0o700)
    import pgserver

    pgdata = (data_dir / "pg").resolve()
    pgdata.mkdir(parents=True, exist_ok=True)
    _forget_dead_handles(pgdata)
    server = pgserver.get_server(pgdata, cleanup_mode="stop")
    try:
        server.psql("SET client_min_messages = warning; CREATE EXTENSION IF NOT EXISTS vector;")
        yield pg_uri_to_asyncpg(server.get_uri())
    finally:
        server._cleanup()  # stops Postgres now rather than at interpreter exit


def _forget_dead_handles(pgdata: Path) -> None:
    """Drop pgserver's handles of processes that died without cleanup (SIGKILL, crash).

    pgserver stops Postgres only when the last process in .handle_pids.json lets go; a dead
    pid left there would keep every later Postgres running after Tutorhub exits.
    """
    import psutil

    path = pgdata / ".handle_pids.json"
    try:
        pids = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return
    alive = [p for p in pids if isinstance(p, int) and p != os.getpid() and psutil.pid_exists(p)]
    if alive != pids:
        path.write_text(json.dumps(alive))


def pg_uri_to_asyncpg(uri: str) -> str:
    # pgserver gives postgresql://postgres:@/postgres?host=/socket/dir
    uri = uri.replace("postgresql://", "postgresql+asyncpg://", 1)
    return uri.replace("postgres:@", "postgres@", 1)
