"""The FastAPI application: routes, error handling and the lifespan that owns every resource."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from chat_server import redact
from chat_server.db import check_migrated, migrate_async, open_database
from chat_server.errors import BodyLimitMiddleware, BodyRule, install_error_handlers
from chat_server.materials import routes as materials
from chat_server.metrics import router as metrics_router
from chat_server.routes import auth, conversations, health
from chat_server.routes import static as static_routes
from chat_server.settings import Settings, get_settings

log = logging.getLogger(__name__)

# Each component opens its long-lived resources on entry and closes them in `finally`.
# They start in this order after the database and stop in reverse.
Component = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def components() -> list[Component]:
    from chat_server.hub.lifespan import hub_lifespan
    from chat_server.jobs import lifespan as broker_lifespan
    from chat_server.materials.storage import sweep_lifespan
    from chat_server.telegram.routes import lifespan as telegram_lifespan
    from chat_server.tutor import lifespan as tutor_lifespan

    # The tutor comes after the hub and broker: it publishes on the hub's bus and is stopped
    # before them. The Telegram bridge (webhook mode only) is a client of all: stopped first.
    return [auth_lifespan, hub_lifespan, broker_lifespan, sweep_lifespan, tutor_lifespan,
            telegram_lifespan]


@asynccontextmanager
async def auth_lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Password hashing threads and the login throttle."""
    from chat_server.auth import Passwords
    from chat_server.throttle import open_throttle

    settings: Settings = app.state.settings
    redact.add_secrets([settings.resolved_secret_key()])  # also when generated into data_dir
    passwords = Passwords(settings.password_hash_threads)
    try:
        async with open_throttle(settings) as throttle:
            app.state.passwords = passwords
            app.state.login_throttle = throttle
            yield
    finally:
        passwords.close()


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    if not settings.database_url:
        raise RuntimeError(
            "No database URL: start through `tutorhub serve` (embedded Postgres) "
            "or set TUTORHUB_DATABASE_URL."
        )
    async with AsyncExitStack() as stack:
        if settings.should_migrate:
            await migrate_async(settings.database_url)
        db = await stack.enter_async_context(
            open_database(settings.database_url, settings.db_pool_size)
        )
        await check_migrated(db.engine)
        app.state.db = db
        for component in components():
            await stack.enter_async_context(component(app))
        yield


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(
        title="Tutorhub",
        version="0.1.0",
        summary="Real-time chat with a streaming AI tutor grounded in your own study materials.",
        lifespan=lifespan,
        openapi_tags=[
            {"name": "auth", "description": "Accounts and tokens."},
            {"name": "conversations", "description": "Conversations with the tutor."},
            {"name": "materials", "description": "Study materials and their ingestion."},
            {"name": "study", "description": "Summaries, notes, flashcards and quizzes."},
            {"name": "courses", "description": "Courses, their tutor set-up, invites and "
             "enrollment."},
            {"name": "admin", "description": "The audit log (admins)."},
            {"name": "telegram", "description": "Linking a Telegram account to the bot."},
            {"name": "health", "description": "Probes and metrics."},
        ],
    )
    app.state.settings = settings
    app.state.readiness = {}
    redact.install([settings.secret_key, settings.embed_secret, settings.anthropic_api_key,
                    settings.openai_api_key, settings.metrics_token])
    install_error_handlers(app)
    app.add_middleware(
        BodyLimitMiddleware, default=BodyRule(settings.max_json_body_bytes), rules={
            # The upload: multipart, its own limit (the file and the form around it).
            ("POST", "/materials"): BodyRule(settings.max_upload_bytes + 65_536,
                                             multipart=True),
            # max_text_chars of any script (a \uXXXX escape is 6 bytes per character).
            ("POST", "/materials/text"): BodyRule(settings.max_text_chars * 6 + 65_536),
        },
    )
    if settings.cors_origins:
        # Outermost, so refusals (413…) carry CORS headers too. Bearer tokens, never cookies:
        # no credentials mode, so "*" is safe to allow too.
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.cors_origins, allow_credentials=False,
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type"], max_age=600,
            # The widget names a downloaded original after the server's Content-Disposition.
            expose_headers=["Content-Disposition"],
        )
    from chat_server.courses import account, audit
    from chat_server.courses import routes as courses
    from chat_server.study.routes import router as study_router
    from chat_server.telegram.routes import router as telegram_router

    for router in (auth.router, account.router, conversations.router, materials.router,
                   study_router, courses.router, audit.router, health.router, metrics_router,
                   telegram_router):
        app.include_router(router)
    app.include_router(static_routes.router)  # the widget and its demo page
    from chat_server.hub.lifespan import HubFastPath
    from chat_server.hub.lifespan import router as hub_router

    app.include_router(hub_router)  # GET /ws/v1 (in the schema; served by HubFastPath)
    app.add_middleware(HubFastPath)
    return app
