"""Background jobs: the taskiq broker, enqueueing a task by its name, and the processes that
run tasks.

The tasks themselves live in the `workers` package and call into chat_server; nothing here
imports them. The web side enqueues by task name (`enqueue`), so it never needs a task's code.
A process that runs tasks has taskiq import the task modules by name, as taskiq's own worker
command does: `tutorhub worker` (Redis: worker processes consume the queue) or, in embedded
mode, `tutorhub serve`, whose in-process broker runs each task as it is enqueued.

Either way a recovery sweep re-enqueues materials whose work stopped (a lost message, a killed
worker), so the queue is a wake-up call and the material row the source of truth.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI
from sqlalchemy import text
from taskiq import AsyncBroker, InMemoryBroker, TaskiqEvents, TaskiqState
from taskiq.kicker import AsyncKicker

from chat_server.bus import Bus, open_bus
from chat_server.db import Database, check_migrated, open_database
from chat_server.embeddings import check_provider
from chat_server.materials.formats import ocr
from chat_server.materials.ingest import recover
from chat_server.settings import Settings

log = logging.getLogger(__name__)

# Task names: the contract between the web side that enqueues and the worker that runs.
INGEST_MATERIAL = "tutorhub.ingest_material"
STUDY_MATERIAL = "tutorhub.study_material"
# The modules that define the tasks (taskiq shared tasks), imported by name only where tasks
# run, as `taskiq worker` imports its task modules.
TASK_MODULES = ("workers.ingest", "workers.study")
QUEUE = "tutorhub:ingest"


@dataclass
class Runtime:
    """What a task needs from the process it runs in (`context.state.runtime` in a task)."""

    settings: Settings
    db: Database
    bus: Callable[[], Bus | None]
    semaphore: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(2))


async def enqueue(broker: AsyncBroker, task_name: str, *args: Any) -> None:
    """Send task `task_name` with `args` (JSON-serialisable) to whichever process runs it."""
    await AsyncKicker(task_name=task_name, broker=broker, labels={}).kiq(*args)


def load_tasks() -> None:
    """Import the task modules (registering their tasks), in a process that runs tasks."""
    for name in TASK_MODULES:
        importlib.import_module(name)


class InProcessBroker(InMemoryBroker):
    """taskiq's in-memory broker whose shutdown also cancels and awaits running tasks."""

    async def shutdown(self) -> None:
        running = list(self._running_tasks)
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        await super().shutdown()


def _redis_broker(url: str) -> AsyncBroker:
    from redis.asyncio import Redis
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError
    from taskiq_redis import ListQueueBroker

    class RedisQueueBroker(ListQueueBroker):
        """ListQueueBroker whose listen survives redis-py's 5 s socket timeout (taskiq-redis
        blocks BRPOP forever, so an idle worker died every 5 s) and Redis restarts."""

        async def listen(self) -> AsyncGenerator[bytes, None]:
            delay = 0.2
            while True:
                try:
                    async with Redis(connection_pool=self.connection_pool) as conn:
                        item = await conn.brpop([self.queue_name], timeout=2)
                    delay = 0.2
                except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                    log.warning("task queue unreachable (%s); retrying in %.1fs", exc, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 10.0)
                    continue
                if item is not None:
                    value = item[1]
                    yield value if isinstance(value, bytes) else value.encode()

    return RedisQueueBroker(url, queue_name=QUEUE)


def make_broker(settings: Settings) -> AsyncBroker:
    if settings.redis_url:
        return _redis_broker(settings.redis_url)
    return InProcessBroker(max_async_tasks=max(1, settings.ingest_concurrency) * 4)


async def enqueue_ingestion(broker: AsyncBroker, material_id: uuid.UUID) -> None:
    """Enqueue the ingestion of a material."""
    await enqueue(broker, INGEST_MATERIAL, str(material_id))


async def enqueue_study(broker: AsyncBroker, material_id: uuid.UUID) -> None:
    """Enqueue the generation of a material's study tools (chat_server/study/jobs.py)."""
    await enqueue(broker, STUDY_MATERIAL, str(material_id))


async def request_study(runtime: Runtime, broker: AsyncBroker, material_id: uuid.UUID) -> None:
    """A material just became ready (`study_on_ready`): queue the generation of all its study
    tools. Called by the ingestion task once `ingest` made the material ready."""
    from chat_server.study import KINDS
    from chat_server.study.jobs import request

    try:
        async with runtime.db.engine.connect() as conn:
            user_id = await conn.scalar(text("select user_id from materials where id = :id"),
                                        {"id": material_id})
        if user_id is None:
            return
        await request(runtime.db, user_id, material_id, KINDS)
        await enqueue_study(broker, material_id)
    except Exception:  # the recovery sweep kicks a queued generation again
        log.warning("could not queue the study tools of %s", material_id, exc_info=True)


async def broker_ready(broker: AsyncBroker) -> bool:
    pool = getattr(broker, "connection_pool", None)
    if pool is None:
        return True
    from redis.asyncio import Redis

    async with Redis(connection_pool=pool) as client:
        return bool(await asyncio.wait_for(client.ping(), 2.0))


async def _sweep(runtime: Runtime, broker: AsyncBroker, stale_s: float, every_s: float) -> None:
    async def kick_one(material_id: uuid.UUID) -> None:
        await enqueue_ingestion(broker, material_id)

    async def kick_study_one(material_id: uuid.UUID) -> None:
        await enqueue_study(broker, material_id)

    from chat_server.study.jobs import recover as recover_study

    while True:
        try:
            found = await recover(runtime, kick_one, stale_s)
            if found:
                log.info("recovery sweep re-kicked %d stalled materials", found)
            found = await recover_study(runtime.db, kick_study_one, stale_s)
            if found:
                log.info("recovery sweep re-kicked %d stalled study generations", found)
        except Exception:
            log.warning("recovery sweep failed", exc_info=True)
        await asyncio.sleep(every_s)


@asynccontextmanager
async def _owned(coro: Any) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(coro)
    try:
        yield task
    finally:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Set `app.state.broker` and the "broker" readiness probe; in embedded mode run tasks."""
    settings: Settings = app.state.settings
    db: Database = app.state.db
    await check_provider(db.engine, settings)
    broker = make_broker(settings)
    async with AsyncExitStack() as stack:
        if not settings.redis_url:
            load_tasks()  # this process runs them
            log.info("%s", await asyncio.to_thread(ocr.describe))
            if getattr(app.state, "bus", None) is None:
                # No hub in this app: keep events in an in-process bus nobody reads live.
                app.state.bus = await stack.enter_async_context(
                    open_bus(None, lambda *a: None, max_events=settings.history_max_events))
            runtime = Runtime(settings, db, lambda: getattr(app.state, "bus", None),
                              asyncio.Semaphore(max(1, settings.ingest_concurrency)))
            broker.state.runtime = runtime
        await broker.startup()
        stack.push_async_callback(broker.shutdown)
        app.state.broker = broker
        app.state.readiness["broker"] = lambda: broker_ready(broker)
        if not settings.redis_url:
            # One process owns the data folder: whatever was mid-way when it stopped, resume.
            await recover(runtime, lambda m: enqueue_ingestion(broker, m), 0.0)
            await stack.enter_async_context(_owned(_sweep(
                runtime, broker, settings.ingest_stale_s, max(1.0, settings.ingest_stale_s))))
        yield


# --- worker processes -------------------------------------------------------------


async def _preflight(settings: Settings) -> None:
    assert settings.database_url
    async with open_database(settings.database_url, 1) as db:
        await check_migrated(db.engine)
        await check_provider(db.engine, settings)


def _install_worker_hooks(broker: AsyncBroker, settings: Settings) -> None:
    stacks: dict[str, AsyncExitStack] = {}

    async def startup(state: TaskiqState) -> None:
        assert settings.database_url
        stack = AsyncExitStack()
        stacks["main"] = stack
        db = await stack.enter_async_context(
            open_database(settings.database_url, max(2, settings.ingest_concurrency + 2)))
        # Publish-only: a worker never subscribes, so deliver is a no-op.
        bus: Bus = await stack.enter_async_context(open_bus(
            settings.redis_url, lambda *a: None, max_events=settings.history_max_events,
            ttl_s=settings.history_ttl_s))
        runtime = Runtime(settings, db, lambda: bus,
                          asyncio.Semaphore(max(1, settings.ingest_concurrency)))
        state.runtime = runtime
        log.info("%s", await asyncio.to_thread(ocr.describe))
        await stack.enter_async_context(_owned(_sweep(
            runtime, broker, settings.ingest_stale_s, max(1.0, settings.ingest_stale_s / 2))))

    async def shutdown(state: TaskiqState) -> None:
        stack = stacks.pop("main", None)
        if stack is not None:
            await stack.aclose()

    broker.add_event_handler(TaskiqEvents.WORKER_STARTUP, startup)
    broker.add_event_handler(TaskiqEvents.WORKER_SHUTDOWN, shutdown)


def run_worker(settings: Settings, workers: int = 1) -> int:
    """Run `workers` processes consuming the Redis queue until SIGTERM/SIGINT."""
    from taskiq.cli.worker.args import WorkerArgs
    from taskiq.cli.worker.run import run_worker as taskiq_run_worker

    if not settings.redis_url:
        raise ValueError("run_worker needs settings.redis_url")
    asyncio.run(_preflight(settings))
    broker = make_broker(settings)
    _install_worker_hooks(broker, settings)
    args = WorkerArgs(
        broker=broker,  # type: ignore[arg-type]  # taskiq accepts an instance (forked workers)
        modules=list(TASK_MODULES),
        workers=max(1, workers),
        configure_logging=False,
        max_async_tasks=max(1, settings.ingest_concurrency),
        shutdown_timeout=settings.shutdown_timeout_s,
    )
    return int(taskiq_run_worker(args) or 0)
