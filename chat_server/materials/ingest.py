"""The ingestion pipeline: extract → chunk → embed → index one material, publishing progress.

The material row is the job; a broker message only says "look at it". A task holds a
Postgres advisory lock on the material for as long as it works (a killed worker's lock goes
with its connection), skips materials that are done, and writes the material's chunks in one
transaction that first deletes any earlier set — so a killed and re-run task ends with
exactly one set of chunks. Transient faults are retried with exponential backoff.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import openai
import sqlalchemy.exc as sa_exc
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from chat_server.embeddings import (
    E5Embedder,
    Embedder,
    LocalEmbedder,
    get_embedder,
    vector_literal,
)
from chat_server.materials.chunking import Chunker, TextChunk
from chat_server.materials.formats import (
    Extracted,
    MaterialFailed,
    Segment,
    TransientError,
    extract_docx,
    extract_html,
    extract_image,
    extract_markdown,
    extract_pdf,
    extract_pptx,
    extract_text_file,
    extract_youtube,
)
from chat_server.materials.storage import remove_files
from chat_server.settings import Settings

if TYPE_CHECKING:
    from chat_server.jobs import Runtime

log = logging.getLogger(__name__)

TRANSIENT_REASON = ("We could not process this material because a service we depend on "
                    "was unreachable. Please try again later.")
UNEXPECTED_REASON = "Something went wrong while processing this material. Please try again."
MISSING_FILE = "The uploaded file is no longer on the server. Please upload it again."
INSERT_BATCH = 200
EMBED_IN_FLIGHT = 4


def lock_key(material_id: uuid.UUID) -> int:
    return int.from_bytes(material_id.bytes[:8], "big", signed=True)


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, TransientError | ConnectionError | TimeoutError):
        return True
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError):
        return True
    if isinstance(exc, asyncpg.PostgresConnectionError | asyncpg.InterfaceError
                  | asyncpg.CannotConnectNowError):
        return True
    if isinstance(exc, openai.APIConnectionError | openai.RateLimitError
                  | openai.InternalServerError):
        return True
    return isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError | PermissionError)


async def publish(runtime: Runtime, user_id: uuid.UUID, event: dict[str, Any]) -> None:
    bus = runtime.bus()
    if bus is None:
        return
    try:
        await bus.publish(str(user_id), event)
    except Exception:  # progress is best effort: a bus outage must not fail ingestion
        log.warning("could not publish %s for user %s", event.get("type"), user_id, exc_info=True)


class Reporter:
    """Publishes `material.progress` on every stage change and at least once a second while
    a stage runs, and mirrors it into the material row (so REST shows the same)."""

    def __init__(self, runtime: Runtime, material_id: uuid.UUID, user_id: uuid.UUID) -> None:
        self.runtime = runtime
        self.material_id = material_id
        self.user_id = user_id
        self.stage = "extracting"
        self.done = 0
        self.total = 0
        self._sent: tuple[str, int, int] | None = None
        self.pages: list[tuple[str, int, int]] = []
        self._sent_at = 0.0
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    def advance(self, done: int, total: int | None = None) -> None:
        # Called from worker threads too: plain attribute writes, read by the loop below.
        self.done = done
        if total is not None:
            self.total = total
        if self.stage == "ocr":
            # A page read by OCR takes a second or more, and pages finish together when read
            # at once: each count goes out (list.append is atomic across threads).
            self.pages.append((self.stage, done, self.total))

    def switch(self, stage: str) -> None:
        """A new stage within extraction (from its thread): "ocr" once scans are read; the
        tick below sends it."""
        self.stage, self.done, self.total = stage, 0, 0

    async def begin(self, stage: str, total: int, done: int = 0) -> None:
        await self._send_pages()
        if self._sent is not None:
            await self.flush(force=False)  # the previous stage's last count goes out first
        self.stage, self.done, self.total = stage, done, total
        await self.flush()

    async def flush(self, *, force: bool = True, spacing: float = 0.0,
                    state: tuple[str, int, int] | None = None) -> None:
        async with self._lock:
            state = state or (self.stage, self.done, self.total)
            now = time.monotonic()
            # An unchanged count is repeated after 0.75 s: with the 0.25 s tick below, no gap
            # between events exceeds a second. The tick sends a new count at most every `spacing`.
            wait = 0.75 if state == self._sent else spacing
            if not force and now - self._sent_at < wait:
                return
            self._sent, self._sent_at = state, now
            try:
                async with self.runtime.db.engine.begin() as conn:
                    await conn.execute(
                        text("update materials set stage = :s, progress_done = :d, "
                             "progress_total = :t, updated_at = now() "
                             "where id = :id and status = 'processing'"),
                        {"s": state[0], "d": state[1], "t": state[2], "id": self.material_id},
                    )
            except Exception:
                log.warning("could not record progress of %s", self.material_id, exc_info=True)
            await publish(self.runtime, self.user_id, {
                "type": "material.progress", "material_id": str(self.material_id),
                "stage": state[0], "done": state[1], "total": state[2],
            })

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(0.25)
            await self._send_pages()
            await self.flush(force=False, spacing=0.5)

    async def _send_pages(self) -> None:
        while self.pages:
            await self.flush(state=self.pages.pop(0))

    async def __aenter__(self) -> Reporter:
        self._task = asyncio.create_task(self._loop())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass


class Pipeline:
    """Embeds a material's chunks while its PDF is still being read: the extraction thread
    chunks each page as it comes out, and every full batch goes to the embedder at once, so
    the CPU that pypdf leaves idle embeds. At most EMBED_IN_FLIGHT batches wait at a time
    (the local model runs `embedding_threads` of them; OpenAI gets that many requests)."""

    def __init__(self, embedder: Embedder, settings: Settings, reporter: Reporter) -> None:
        self.embedder = embedder
        self.reporter = reporter
        self.batch = max(1, settings.embedding_batch_size)
        # Chunks no longer than the local model reads (OpenAI's model reads 8k tokens).
        local = embedder if isinstance(embedder, LocalEmbedder | E5Embedder) else None
        self.chunker = Chunker(settings.chunk_size_chars, settings.chunk_overlap_chars,
                               local.max_tokens if local else None, local.count if local else None)
        self.chunks: list[TextChunk] = []
        self.embedded = 0
        self.streamed = False
        self._sent = 0
        self._results: dict[int, list[list[float]]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._slots = asyncio.Semaphore(EMBED_IN_FLIGHT)

    def sink(self) -> Callable[[Segment], None]:
        """For the extraction thread: chunk each segment there, hand new chunks to the loop."""
        loop = asyncio.get_running_loop()

        def take(segment: Segment) -> None:
            self.streamed = True
            new = self.chunker.feed([segment])
            if new:
                # Callbacks run in order, all before the extraction's own result arrives.
                loop.call_soon_threadsafe(self.add, new)

        return take

    def add(self, chunks: list[TextChunk]) -> None:
        self.chunks.extend(chunks)
        while len(self.chunks) - self._sent >= self.batch:
            self._start(self._sent + self.batch)

    def _start(self, end: int) -> None:
        self._tasks.append(asyncio.create_task(self._embed(self._sent, end)))
        self._sent = end

    async def _embed(self, start: int, end: int) -> None:
        async with self._slots:
            vectors = await self.embedder.embed([c.text for c in self.chunks[start:end]])
        self._results[start] = vectors
        self.embedded += len(vectors)
        if self.reporter.stage == "embedding":
            self.reporter.advance(self.embedded)

    async def vectors(self) -> list[list[float]]:
        """Every chunk's vector, in order, once the last chunk has been added."""
        if self._sent < len(self.chunks):
            self._start(len(self.chunks))
        await asyncio.gather(*self._tasks)
        return [v for start in sorted(self._results) for v in self._results[start]]

    async def __aenter__(self) -> Pipeline:
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def ingest(runtime: Runtime, material_id: uuid.UUID) -> bool:
    """Ingest one material with retries; ends with the material ready or failed. True when
    this run made it ready."""
    settings = runtime.settings
    async with runtime.semaphore:
        for attempt in range(settings.task_retries + 1):
            try:
                return await _ingest_once(runtime, material_id)
            except MaterialFailed as exc:
                await _fail(runtime, material_id, exc.reason)
                return False
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not is_transient(exc):
                    log.exception("ingestion of %s failed", material_id)
                    await _fail(runtime, material_id, UNEXPECTED_REASON)
                    return False
                if attempt == settings.task_retries:
                    log.warning("ingestion of %s failed after %d attempts: %r",
                                material_id, attempt + 1, exc)
                    await _fail(runtime, material_id, TRANSIENT_REASON)
                    return False
                delay = settings.task_retry_backoff_s * (2 ** attempt)
                delay = min(delay, 60.0) * (0.5 + random.random() / 2)
                log.info("ingestion of %s: transient fault %r; retry in %.1fs",
                         material_id, exc, delay)
                await asyncio.sleep(delay)
        return False


async def _fail(runtime: Runtime, material_id: uuid.UUID, reason: str) -> None:
    try:
        async with runtime.db.engine.begin() as conn:
            row = (await conn.execute(
                text("update materials set status = 'failed', error = :e, stage = null, "
                     "file_path = null, file_size = 0, updated_at = now() where id = :id "
                     "returning user_id, file_path"),
                {"e": reason, "id": material_id},
            )).first()
    except Exception:
        # The material stays `processing`; the recovery sweep will run it again.
        log.exception("could not mark %s failed", material_id)
        return
    if row is None:
        return
    await publish(runtime, row.user_id, {
        "type": "material.failed", "material_id": str(material_id), "reason": reason,
    })
    remove_files(runtime.settings, material_id)


async def _ingest_once(runtime: Runtime, material_id: uuid.UUID) -> bool:
    engine = runtime.db.engine
    async with engine.connect() as lock_conn:
        got = await lock_conn.scalar(text("select pg_try_advisory_lock(:k)"),
                                     {"k": lock_key(material_id)})
        await lock_conn.commit()
        if not got:
            log.info("material %s is being ingested elsewhere; skipping", material_id)
            return False
        try:
            return await _work(runtime, material_id)
        finally:
            try:
                await lock_conn.execute(text("select pg_advisory_unlock(:k)"),
                                        {"k": lock_key(material_id)})
                await lock_conn.commit()
            except Exception:  # the lock goes with the connection anyway
                await lock_conn.invalidate()


async def _work(runtime: Runtime, material_id: uuid.UUID) -> bool:
    settings = runtime.settings
    engine = runtime.db.engine
    async with engine.begin() as conn:
        row = (await conn.execute(
            text("update materials set status = 'processing', stage = 'extracting', "
                 "progress_done = 0, progress_total = 0, error = null, updated_at = now() "
                 "where id = :id and status in ('queued', 'processing') "
                 "returning user_id, kind, source, file_path, content_type"),
            {"id": material_id},
        )).first()
    if row is None:
        return False  # deleted, or already ready/failed: a duplicate message
    user_id: uuid.UUID = row.user_id
    kind: str = row.kind

    async with Reporter(runtime, material_id, user_id) as reporter, \
            Pipeline(get_embedder(settings), settings, reporter) as pipeline:
        await reporter.begin("extracting", 0)
        extracted = await _extract(runtime, kind, row.source, row.file_path, reporter,
                                   pipeline.sink())

        await reporter.begin("chunking", len(extracted.segments))
        if not pipeline.streamed:
            pipeline.add(await asyncio.to_thread(pipeline.chunker.feed, extracted.segments))
        pipeline.add(pipeline.chunker.finish())
        reporter.advance(len(extracted.segments))
        chunks = pipeline.chunks
        if not chunks:
            raise MaterialFailed("This material has no text to learn from.")

        await reporter.begin("embedding", len(chunks), done=pipeline.embedded)
        vectors = await pipeline.vectors()

        await reporter.begin("indexing", len(chunks))
        # An uploaded file stays as the original, unless originals are not kept.
        keep = settings.keep_originals and row.content_type is not None
        stored = await _store(runtime, material_id, user_id, chunks, vectors, extracted, reporter,
                              keep)
        await reporter.flush(force=False)
    if not stored:
        return False  # deleted while we worked
    if not keep:
        remove_files(settings, material_id)
    ready: dict[str, Any] = {
        "type": "material.ready", "material_id": str(material_id), "chunks": len(chunks),
    }
    if extracted.pages is not None:
        ready["pages"] = extracted.pages
    if extracted.duration_s is not None:
        ready["duration_s"] = extracted.duration_s
    await publish(runtime, user_id, ready)
    return True


async def _extract(runtime: Runtime, kind: str, source: str, file_path: str | None,
                   reporter: Reporter, sink: Callable[[Segment], None]) -> Extracted:
    settings = runtime.settings
    if kind == "youtube":
        reporter.advance(0, 1)
        result = await asyncio.to_thread(extract_youtube, source, settings)
        reporter.advance(1, 1)
        return result
    path = Path(file_path or "")

    def run() -> Extracted:
        if not file_path or not path.is_file():
            raise MaterialFailed(MISSING_FILE)
        if kind == "pdf":
            return extract_pdf(path, settings, reporter.advance, sink, reporter.switch)
        if kind == "pptx":
            return extract_pptx(path, settings, reporter.advance, sink)
        if kind == "image":
            reporter.switch("ocr")
            return extract_image(path, settings, reporter.advance)
        if kind == "docx":
            return extract_docx(path, settings)
        if kind == "markdown":
            return extract_markdown(path, settings)
        if kind == "html":
            return extract_html(path, settings)
        return extract_text_file(path, settings)

    return await asyncio.to_thread(run)


_INSERT = text(
    "insert into chunks (material_id, user_id, course_id, idx, text, page_start, page_end, "
    "start_s, end_s, locations, sections, language, embedding, tsv) values (:material_id, "
    ":user_id, (select m.course_id from materials m where m.id = :material_id), "
    ":idx, cast(:text as text), :page_start, :page_end, :start_s, :end_s, "
    "cast(:locations as jsonb), cast(:sections as jsonb), "
    "cast(:language as text), "
    "cast(:embedding as vector), to_tsvector(cast(cast(:language as text) as regconfig), "
    "cast(:text as text)))"
)


async def _store(runtime: Runtime, material_id: uuid.UUID, user_id: uuid.UUID,
                 chunks: list[TextChunk], vectors: list[list[float]], extracted: Extracted,
                 reporter: Reporter, keep: bool) -> bool:
    """Replace the material's chunks and mark it ready, all in one transaction; its file stays
    referenced (the kept original) when `keep`."""
    try:
        async with runtime.db.engine.begin() as conn:
            await conn.execute(text("delete from chunks where material_id = :id"),
                               {"id": material_id})
            for start in range(0, len(chunks), INSERT_BATCH):
                rows = [
                    {"material_id": material_id, "user_id": user_id, "idx": i,
                     "text": c.text, "page_start": c.page_start, "page_end": c.page_end,
                     "start_s": c.start_s, "end_s": c.end_s, "language": c.language,
                     "locations": json.dumps(c.locations) if c.locations else None,
                     "sections": json.dumps(c.sections) if c.sections else None,
                     "embedding": vector_literal(v)}
                    for i, (c, v) in enumerate(
                        zip(chunks[start:start + INSERT_BATCH],
                            vectors[start:start + INSERT_BATCH], strict=True),
                        start=start)
                ]
                await conn.execute(_INSERT, rows)
                reporter.advance(start + len(rows))
            updated = await conn.execute(
                text("update materials set status = 'ready', stage = null, error = null, "
                     "chunk_count = :n, pages = :p, duration_s = :d, progress_done = :n, "
                     "progress_total = :n, file_path = case when :keep then file_path end, "
                     "file_size = case when :keep then file_size else 0 end, updated_at = now() "
                     "where id = :id"),
                {"n": len(chunks), "p": extracted.pages, "d": extracted.duration_s, "keep": keep,
                 "id": material_id},
            )
            if updated.rowcount == 0:
                raise _Gone
    except (IntegrityError, _Gone):
        # The material was deleted while we worked (its chunks' foreign key fails).
        return False
    return True


class _Gone(Exception):
    pass


Kick = Callable[[uuid.UUID], Awaitable[None]]


async def recover(runtime: Runtime, kick: Kick, stale_s: float) -> int:
    """Kick materials left queued/processing with no progress for `stale_s` seconds (a lost
    message, a killed worker). The advisory lock keeps a live worker's material its own."""
    async with runtime.db.engine.connect() as conn:
        rows = (await conn.execute(
            text("select id from materials where status in ('queued', 'processing') "
                 "and updated_at < now() - make_interval(secs => :s) "
                 "order by created_at limit 1000"),
            {"s": stale_s},
        )).all()
    for row in rows:
        await kick(row.id)
    return len(rows)
