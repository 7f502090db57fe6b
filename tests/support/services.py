"""Real services for tests: PostgreSQL (pgserver), redis-server, and the app under uvicorn."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from chat_server.hub.fastpath import uvicorn_ws


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if not found:
        raise RuntimeError("redis-server is not installed: run scripts/setup.sh --test "
                           "(or apt-get install redis-server)")
    return found


class RedisServer:
    """A throwaway redis-server on a free loopback port that can be killed and restarted.

    With `tls=(certificate, key)` it speaks only TLS (the certificate is also its CA file;
    clients are not asked for one) and its URL is rediss://; with `password`, AUTH is
    required."""

    def __init__(self, workdir: Path, *, tls: tuple[Path, Path] | None = None,
                 password: str | None = None) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.tls = tls
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"{'rediss' if self.tls else 'redis'}://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        listen = ["--port", str(self.port)]
        if self.tls:
            cert, key = self.tls
            listen = ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(cert),
                      "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert),
                      "--tls-auth-clients", "no"]
        if self.password:
            listen += ["--requirepass", self.password]
        self.proc = subprocess.Popen(
            [redis_binary(), *listen, "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir), "--protected-mode", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if self._answers():
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def _answers(self) -> bool:
        answers = (b"+PONG", b"-NOAUTH")
        with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as raw:
            if not self.tls:
                raw.sendall(b"PING\r\n")
                return raw.recv(16).startswith(answers)
            context = ssl.create_default_context(cafile=self.tls[0])
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(answers)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(5)
            self.proc = None


@contextmanager
def redis_server(workdir: Path) -> Iterator[RedisServer]:
    server = RedisServer(workdir)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def postgres_server(workdir: Path) -> Iterator[str]:
    """Yield a libpq URI (unix socket) of a fresh pgserver PostgreSQL with pgvector."""
    os.environ.setdefault("XDG_RUNTIME_DIR", str(workdir / "run"))
    Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(parents=True, exist_ok=True, mode=0o700)
    import pgserver

    server = pgserver.get_server(workdir / "pg", cleanup_mode="delete")
    try:
        yield server.get_uri()
    finally:
        server._cleanup()


def database_uri(base_uri: str, name: str) -> str:
    # pgserver URIs look like postgresql://postgres:@/postgres?host=/dir
    head, _, query = base_uri.partition("?")
    head = head.rsplit("/", 1)[0] + "/" + name
    return head.replace("postgresql://", "postgresql+asyncpg://", 1).replace(
        "postgres:@", "postgres@", 1
    ) + ("?" + query if query else "")


@asynccontextmanager
async def serve_app(app: FastAPI, port: int | None = None, **config: object) -> AsyncIterator[str]:
    """Run `app` under a real uvicorn on 127.0.0.1 in this event loop; yield its base URL."""
    port = port or free_port()
    # A host site in the widget tests is a plain app without Tutorhub's settings: uvicorn's own.
    settings = getattr(app.state, "settings", None)
    options: dict[str, object] = {
        "ws": uvicorn_ws(settings) if settings is not None else "auto", "ws_ping_interval": None,
        "ws_ping_timeout": None, "ws_per_message_deflate": False, **config,
    }  # as `tutorhub serve` runs it; tests may override any of these
    cfg = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan="on",
        **options,  # type: ignore[arg-type]
    )
    server = uvicorn.Server(cfg)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign,attr-defined]
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("server did not start")
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)
