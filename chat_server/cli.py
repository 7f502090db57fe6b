"""The `tutorhub` command: serve, worker, telegram, migrate, reembed, user create."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from chat_server.settings import Settings, get_settings

log = logging.getLogger("tutorhub")


@contextmanager
def database(settings: Settings, *, lock: bool) -> Iterator[Settings]:
    """Yield settings with a database URL: the configured one, or embedded Postgres."""
    if settings.database_url:
        yield settings
        return
    from chat_server.embedded import data_dir_lock, embedded_postgres

    if lock:
        with data_dir_lock(settings.data_dir), embedded_postgres(settings.data_dir) as url:
            yield settings.model_copy(update={"database_url": url,
                                              "auto_migrate": settings.should_migrate})
    else:
        with embedded_postgres(settings.data_dir) as url:
            yield settings.model_copy(update={"database_url": url,
                                              "auto_migrate": settings.should_migrate})


def listen_address(args: argparse.Namespace, settings: Settings) -> tuple[str, int]:
    """`--host`/`--port` override TUTORHUB_HOST/TUTORHUB_PORT."""
    host = args.host if args.host is not None else settings.host
    port = args.port if args.port is not None else settings.port
    return host, port


def _require_migrated(url: str) -> None:
    """Refuse an unmigrated database before uvicorn starts (raises DatabaseNotMigrated)."""
    from chat_server.db import check_migrated, open_database

    async def check() -> None:
        async with open_database(url, 1) as db:
            await check_migrated(db.engine)

    asyncio.run(check())


WORKERS_NEED_REDIS = (
    "tutorhub serve --workers N needs TUTORHUB_REDIS_URL: the in-process bus and task broker "
    "live inside one process, so a second process would not see the first one's sockets, "
    "replies or history. Start Redis and set TUTORHUB_REDIS_URL, or run one process."
)


def _uvicorn_options(settings: Settings) -> dict[str, Any]:
    from chat_server.hub.fastpath import uvicorn_ws

    # websockets-sansio, with the hub's pre-framed writes if uvicorn's internals match (named
    # by import string: `--workers` processes import it themselves, and check it again).
    ws = uvicorn_ws(settings)
    return dict(
        loop="uvloop", http="httptools",
        ws=ws if isinstance(ws, str) else "chat_server.hub.fastpath:HubWebSocketProtocol",
        ws_per_message_deflate=settings.ws_compression, ws_max_size=settings.ws_max_frame_bytes,
        ws_ping_interval=None, ws_ping_timeout=None,  # the hub runs its own keepalive
        log_level=settings.log_level, lifespan="on",
        timeout_graceful_shutdown=int(settings.shutdown_timeout_s) + 1,
    )


def serve_workers(settings: Settings, host: str, port: int, workers: int) -> int:
    """N uvicorn processes on one listening socket (uvicorn's supervisor). Each builds its app
    from the environment, which is completed here: the database (embedded Postgres is started by
    this parent), migrated once before any starts, and the secret key every process must share."""
    import uvicorn

    from chat_server.db import migrate

    with database(settings, lock=True) as resolved:
        assert resolved.database_url
        if resolved.should_migrate:
            migrate(resolved.database_url)
        else:
            _require_migrated(resolved.database_url)
        os.environ.update({
            "TUTORHUB_DATABASE_URL": resolved.database_url, "TUTORHUB_AUTO_MIGRATE": "false",
            "TUTORHUB_HOST": host, "TUTORHUB_PORT": str(port),
            "TUTORHUB_SECRET_KEY": resolved.resolved_secret_key()})
        log.info("starting %d processes on http://%s:%s", workers, host, port)
        uvicorn.run("chat_server.app:create_app", factory=True, host=host, port=port,
                    workers=workers, **_uvicorn_options(settings))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from chat_server.app import create_app

    settings = get_settings()
    host, port = listen_address(args, settings)
    if args.workers < 1:
        print("tutorhub serve: --workers must be at least 1.", file=sys.stderr)
        return 2
    if args.workers > 1:
        if not settings.redis_url:
            print(f"tutorhub: {WORKERS_NEED_REDIS}", file=sys.stderr)
            return 2
        return serve_workers(settings, host, port, args.workers)
    started = time.monotonic()
    with database(settings, lock=True) as resolved:
        if not resolved.should_migrate:
            assert resolved.database_url
            _require_migrated(resolved.database_url)
        # host/port as flags gave them: the Telegram bridge (webhook mode) calls this server.
        app = create_app(resolved.model_copy(update={"host": host, "port": port}))
        app.state.started_monotonic = started
        config = uvicorn.Config(app, host=host, port=port,
                                **_uvicorn_options(settings))
        server = uvicorn.Server(config)
        mode = "embedded Postgres" if settings.embedded else "DATABASE_URL"
        log.info("starting on http://%s:%s (%s)", host, port, mode)
        server.run()
        if not server.started:
            return 1
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    settings = get_settings()
    if not settings.redis_url:
        print("tutorhub worker needs TUTORHUB_REDIS_URL: without Redis, ingestion runs "
              "inside `tutorhub serve`.", file=sys.stderr)
        return 2
    from chat_server.jobs import run_worker

    with database(settings, lock=False) as resolved:
        return int(run_worker(resolved, workers=args.workers) or 0)


def cmd_telegram(args: argparse.Namespace) -> int:
    settings = get_settings()
    if settings.telegram_bot_token is None:
        print("tutorhub telegram needs TUTORHUB_TELEGRAM_BOT_TOKEN (from @BotFather).",
              file=sys.stderr)
        return 2
    if settings.telegram_mode == "webhook":
        print("TUTORHUB_TELEGRAM_MODE=webhook: the bridge runs inside `tutorhub serve`; "
              "`tutorhub telegram` is for long polling.", file=sys.stderr)
        return 2
    from chat_server.telegram.bridge import run_polling

    with database(settings, lock=False) as resolved:
        return asyncio.run(run_polling(resolved))


def cmd_migrate(args: argparse.Namespace) -> int:
    from chat_server.db import downgrade, head_revision, migrate

    settings = get_settings()
    with database(settings, lock=True) as resolved:
        assert resolved.database_url
        if args.downgrade:
            downgrade(resolved.database_url, args.downgrade)
            print(f"downgraded to {args.downgrade}")
        else:
            migrate(resolved.database_url)
            print(f"database is at {head_revision()} (head)")
    return 0


def cmd_user_create(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import IntegrityError

    from chat_server.auth import hash_password
    from chat_server.db import check_migrated, open_database
    from chat_server.models import User

    password = args.password or os.environ.get("TUTORHUB_NEW_USER_PASSWORD")
    if not password:
        password = getpass.getpass("Password: ")
    if len(password) < 8:
        print("The password must have at least 8 characters.", file=sys.stderr)
        return 2
    settings = get_settings()

    async def create(url: str) -> int:
        async with open_database(url, 1) as db:
            if settings.should_migrate:
                from chat_server.db import migrate_async

                await migrate_async(url)
            await check_migrated(db.engine)
            async with db.session() as session:
                user = User(email=args.email.lower(), password_hash=hash_password(password))
                session.add(user)
                try:
                    await session.commit()
                except IntegrityError:
                    print(f"A user with the email {args.email} already exists.", file=sys.stderr)
                    return 1
                print(f"created user {user.id} <{user.email}>")
                return 0

    with database(settings, lock=True) as resolved:
        assert resolved.database_url
        return asyncio.run(create(resolved.database_url))


def cmd_user_set_role(args: argparse.Namespace) -> int:
    from sqlalchemy import func, select

    from chat_server.courses import audit
    from chat_server.db import check_migrated, open_database
    from chat_server.models import User

    settings = get_settings()

    async def set_role(url: str) -> int:
        async with open_database(url, 1) as db:
            await check_migrated(db.engine)
            async with db.session() as session:
                user = await session.scalar(
                    select(User).where(func.lower(User.email) == args.email.strip().lower()))
                if user is None:
                    print(f"No user with the email {args.email}.", file=sys.stderr)
                    return 1
                if user.role != args.role:
                    audit.record(session, audit.Action.role_changed, actor=None,
                                 target_type="user", target_id=user.id, old=user.role,
                                 new=args.role, via="cli")
                    user.role = args.role
                    await session.commit()
                print(f"{user.email} is {args.role}")
                return 0

    with database(settings, lock=True) as resolved:
        assert resolved.database_url
        return asyncio.run(set_role(resolved.database_url))


def cmd_reembed(args: argparse.Namespace) -> int:
    from chat_server.db import check_migrated, open_database
    from chat_server.embeddings import reembed

    settings = get_settings()

    async def run(url: str) -> int:
        async with open_database(url, 2) as db:
            await check_migrated(db.engine)
            done = await reembed(db.engine, settings)
        print(f"re-embedded {done} chunks with {settings.embedding_provider}")
        return 0

    with database(settings, lock=True) as resolved:
        assert resolved.database_url
        return asyncio.run(run(resolved.database_url))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tutorhub", description="Tutorhub: chat with a tutor "
                                     "grounded in your own study materials.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the server (embedded Postgres unless DATABASE_URL)")
    serve.add_argument("--host", help="listen address (default: TUTORHUB_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (default: TUTORHUB_PORT or 8000)")
    serve.add_argument("--workers", type=int, default=1,
                       help="processes sharing the port (more than 1 needs TUTORHUB_REDIS_URL)")
    serve.set_defaults(func=cmd_serve)

    worker = sub.add_parser("worker", help="run ingestion workers (needs TUTORHUB_REDIS_URL)")
    worker.add_argument("--workers", type=int, default=1, help="worker processes")
    worker.set_defaults(func=cmd_worker)

    telegram = sub.add_parser("telegram", help="run the Telegram bridge with long polling "
                              "(needs TUTORHUB_TELEGRAM_BOT_TOKEN and a running server)")
    telegram.set_defaults(func=cmd_telegram)

    migrate = sub.add_parser("migrate", help="apply database migrations")
    migrate.add_argument(
        "--downgrade", metavar="REVISION", help="downgrade to REVISION (e.g. base)"
    )
    migrate.set_defaults(func=cmd_migrate)

    reembed = sub.add_parser("reembed", help="re-embed every chunk with the configured "
                             "embedding provider (required after changing it)")
    reembed.set_defaults(func=cmd_reembed)

    user = sub.add_parser("user", help="manage users")
    user_sub = user.add_subparsers(dest="user_command", required=True)
    create = user_sub.add_parser("create", help="create a user with email and password")
    create.add_argument("email")
    create.add_argument("--password", help="(default: TUTORHUB_NEW_USER_PASSWORD or a prompt)")
    create.set_defaults(func=cmd_user_create)
    set_role = user_sub.add_parser("set-role", help="give a user a role: learner (the default), "
                                   "instructor (creates courses) or admin")
    set_role.add_argument("email")
    set_role.add_argument("role", choices=["learner", "instructor", "admin"])
    set_role.set_defaults(func=cmd_user_set_role)
    return parser


def _exit_cleanly(signum: int, frame: object) -> None:
    # uvicorn re-raises SIGINT/SIGTERM once its graceful shutdown is done; the default action
    # would kill us before `database()` stops embedded Postgres. SystemExit(0) unwinds instead.
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from pydantic import ValidationError

    try:
        get_settings()
    except ValidationError as exc:  # say what is wrong, without a traceback
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"])
            message = error["msg"].removeprefix("Value error, ")
            print(f"tutorhub: invalid setting{' ' + where if where else ''}: {message}",
                  file=sys.stderr)
        return 2
    logging.basicConfig(
        level=get_settings().log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from chat_server import redact

    settings = get_settings()
    redact.install([settings.secret_key, settings.embed_secret, settings.anthropic_api_key,
                    settings.openai_api_key, settings.metrics_token])
    if get_settings().log_level.lower() != "debug":
        for noisy in ("pgserver", "alembic.runtime.plugins"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _exit_cleanly)
    from chat_server.db import DatabaseNotMigrated, connect_failure
    from chat_server.embedded import DataDirBusy

    try:
        return int(args.func(args) or 0)
    except (DataDirBusy, DatabaseNotMigrated) as exc:
        print(f"tutorhub: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        explained = connect_failure(exc, get_settings().database_url)
        if explained is None:
            raise
        print(f"tutorhub: {explained}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
