"""SQLAlchemy models. The schema changes only through migrations/ (Alembic)."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from pgvector.sqlalchemy import Vector
from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    func,
    true,
)
from sqlalchemy import text as sql_text
from sqlalchemy.dialects.postgresql import JSONB, TSVECTOR, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

EMBEDDING_DIM = 384


class Base(DeclarativeBase):
    pass


def _enum(cls: type[enum.Enum], name: str) -> Enum:
    return Enum(cls, name=name, values_callable=lambda e: [m.value for m in e])


class Role(str, enum.Enum):
    user = "user"
    assistant = "assistant"


class MessageStatus(str, enum.Enum):
    streaming = "streaming"
    complete = "complete"
    cancelled = "cancelled"
    failed = "failed"
    interrupted = "interrupted"


class MaterialKind(str, enum.Enum):
    pdf = "pdf"  # text pages and scanned ones (OCR)
    youtube = "youtube"
    text = "text"  # pasted, or a plain text file
    docx = "docx"
    pptx = "pptx"
    markdown = "markdown"
    html = "html"
    image = "image"  # PNG or JPEG, through OCR (migration 0005 added these five)


class MaterialStatus(str, enum.Enum):
    queued = "queued"
    processing = "processing"
    ready = "ready"
    failed = "failed"


def _now() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


class UserRole(str, enum.Enum):
    learner = "learner"
    instructor = "instructor"
    admin = "admin"


class User(Base):
    __tablename__ = "users"
    __table_args__ = (
        CheckConstraint("role in ('learner', 'instructor', 'admin')", name="ck_users_role"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    # Email is null for users created from embed tokens; those carry external_id instead.
    email: Mapped[str | None] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str | None] = mapped_column(String(255))
    external_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    display_name: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = _now()
    # Carried by every token issued (`gen`); a password change raises it, which revokes every
    # token issued before (migration 0003).
    token_generation: Mapped[int] = mapped_column(
        Integer, nullable=False, default=0, server_default="0"
    )
    # learner | instructor | admin (UserRole); checked by courses/access.py only (migration 0008).
    role: Mapped[str] = mapped_column(String(20), nullable=False, default="learner",
                                      server_default="learner")


class RefreshToken(Base):
    """One issued refresh token (its `jti`). Single use: refreshing marks it used and issues
    the next one of its family (a login starts a family); using a used or revoked one revokes
    the whole family (a stolen token was replayed)."""

    __tablename__ = "refresh_tokens"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True, nullable=False
    )
    family_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), index=True, nullable=False)
    created_at: Mapped[datetime] = _now()
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Conversation(Base):
    __tablename__ = "conversations"
    __table_args__ = (
        Index("ix_conversations_course_id", "course_id",
              postgresql_where=sql_text("course_id is not null")),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True, nullable=False
    )
    title: Mapped[str] = mapped_column(String(200), nullable=False, default="New conversation")
    socratic: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=False, server_default=false()
    )
    # The course whose tutor answers here (null: the learner's own library). A deleted course
    # leaves its conversations to their learners as their own.
    course_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("courses.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        # A client's chat.send id makes a resend idempotent.
        UniqueConstraint("user_id", "client_id", name="uq_messages_user_client_id"),
        Index("ix_messages_conversation_created", "conversation_id", "created_at"),
        Index("ix_messages_user_created", "user_id", "created_at"),
        # One streaming reply per conversation, on every instance (migration 0002).
        Index("uq_messages_one_streaming", "conversation_id", unique=True,
              postgresql_where=sql_text("status = 'streaming'")),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    conversation_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), nullable=False
    )
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=False
    )
    role: Mapped[Role] = mapped_column(_enum(Role, "message_role"), nullable=False)
    content: Mapped[str] = mapped_column(Text, nullable=False, default="")
    status: Mapped[MessageStatus] = mapped_column(
        _enum(MessageStatus, "message_status"), nullable=False, default=MessageStatus.complete
    )
    client_id: Mapped[str | None] = mapped_column(String(100))
    reply_to: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("messages.id", ondelete="SET NULL")
    )
    citations: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONB)
    usage: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    input_tokens: Mapped[int] = mapped_column(
        Integer, nullable=False, default=0, server_default="0"
    )
    output_tokens: Mapped[int] = mapped_column(
        Integer, nullable=False, default=0, server_default="0"
    )
    provider: Mapped[str | None] = mapped_column(String(50))
    model: Mapped[str | None] = mapped_column(String(100))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _now()
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Touched by the streaming process at every checkpoint: a `streaming` reply whose heartbeat
    # stopped belongs to a dead process (tutor/store.py marks it interrupted).
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Material(Base):
    __tablename__ = "materials"
    __table_args__ = (
        # The same content may be in a learner's library and in a course they teach.
        UniqueConstraint("user_id", "course_id", "content_hash",
                         name="uq_materials_owner_content_hash",
                         postgresql_nulls_not_distinct=True),
        Index("ix_materials_course_id", "course_id",
              postgresql_where=sql_text("course_id is not null")),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True, nullable=False
    )
    # Set for a course's material (uploaded by its instructor, `user_id`): the course owns it,
    # its learners' tutor reads it. Null: the user's own library.
    course_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("courses.id", ondelete="CASCADE"))
    kind: Mapped[MaterialKind] = mapped_column(_enum(MaterialKind, "material_kind"), nullable=False)
    title: Mapped[str] = mapped_column(String(300), nullable=False)
    # The uploaded file's name, video id for YouTube, empty for pasted text.
    source: Mapped[str] = mapped_column(Text, nullable=False, default="", server_default="")
    status: Mapped[MaterialStatus] = mapped_column(
        _enum(MaterialStatus, "material_status"), nullable=False, default=MaterialStatus.queued
    )
    stage: Mapped[str | None] = mapped_column(String(30))
    progress_done: Mapped[int] = mapped_column(
        Integer, nullable=False, default=0, server_default="0"
    )
    progress_total: Mapped[int] = mapped_column(
        Integer, nullable=False, default=0, server_default="0"
    )
    error: Mapped[str | None] = mapped_column(Text)
    content_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    # The material's file under data_dir/uploads: an upload (or a pasted text) waiting for the
    # worker; after ingestion the uploaded original, while it is kept (keep_originals).
    file_path: Mapped[str | None] = mapped_column(Text)
    # The uploaded file's type by its content (null for pasted text and YouTube) and the bytes
    # of it on disk, counted against the owner's storage quota (0 once removed) (0005).
    content_type: Mapped[str | None] = mapped_column(String(100))
    file_size: Mapped[int] = mapped_column(
        BigInteger, nullable=False, default=0, server_default="0"
    )
    pages: Mapped[int | None] = mapped_column(Integer)
    duration_s: Mapped[float | None] = mapped_column(Float)
    chunk_count: Mapped[int] = mapped_column(
        Integer, nullable=False, default=0, server_default="0"
    )
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


class Chunk(Base):
    __tablename__ = "chunks"
    __table_args__ = (
        UniqueConstraint("material_id", "idx", name="uq_chunks_material_idx"),
        Index(
            "ix_chunks_embedding_hnsw",
            "embedding",
            postgresql_using="hnsw",
            postgresql_with={"m": 16, "ef_construction": 64},
            postgresql_ops={"embedding": "vector_cosine_ops"},
        ),
        Index("ix_chunks_tsv", "tsv", postgresql_using="gin"),
        Index("ix_chunks_course_id", "course_id",
              postgresql_where=sql_text("course_id is not null")),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    material_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("materials.id", ondelete="CASCADE"), nullable=False
    )
    # Denormalised owner so retrieval filters by user without a join.
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True, nullable=False
    )
    # Denormalised from the material (retrieval scopes a course without a join).
    course_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    idx: Mapped[int] = mapped_column(Integer, nullable=False)
    text: Mapped[str] = mapped_column(Text, nullable=False)
    page_start: Mapped[int | None] = mapped_column(Integer)
    page_end: Mapped[int | None] = mapped_column(Integer)
    start_s: Mapped[float | None] = mapped_column(Float)
    end_s: Mapped[float | None] = mapped_column(Float)
    # Postgres text search configuration name used for tsv: 'english', 'russian', 'simple'.
    language: Mapped[str] = mapped_column(
        String(30), nullable=False, default="simple", server_default="simple"
    )
    # [[offset in text, page or start second], …] where the place changes (migration 0004);
    # null for chunks stored before it.
    locations: Mapped[list[list[float]] | None] = mapped_column(JSONB)
    # [[offset in text, heading], …] where the section changes (DOCX, Markdown, HTML headings;
    # migration 0005); null for other kinds.
    sections: Mapped[list[list[Any]] | None] = mapped_column(JSONB)
    embedding: Mapped[list[float] | None] = mapped_column(Vector(EMBEDDING_DIM))
    # Nullable: filled from `text` with the chunk's language configuration.
    tsv: Mapped[Any | None] = mapped_column(TSVECTOR, nullable=True)


class Meta(Base):
    """Deployment facts that must not silently change, e.g. the embedding provider."""

    __tablename__ = "meta"

    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[Any] = mapped_column(JSONB, nullable=False)


class TelegramLink(Base):
    """A Telegram account bound to a Tutorhub user (one each way)."""

    __tablename__ = "telegram_links"

    telegram_user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True,
                                                  autoincrement=False)
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), unique=True, nullable=False
    )
    telegram_username: Mapped[str | None] = mapped_column(String(64))
    # The user's token_generation when linked: a password change (which revokes every token)
    # ends the link too.
    generation: Mapped[int] = mapped_column(Integer, nullable=False, default=0,
                                            server_default="0")
    created_at: Mapped[datetime] = _now()


class TelegramLinkCode(Base):
    """A single-use deep-link code; only its sha256 is stored."""

    __tablename__ = "telegram_link_codes"

    code_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True, nullable=False
    )
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _now()


class TelegramChat(Base):
    """One linked user in one Telegram chat: the conversation that chat continues."""

    __tablename__ = "telegram_chats"
    __table_args__ = (
        Index("ix_telegram_chats_user_conversation", "user_id", "conversation_id"),
    )

    chat_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    conversation_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("conversations.id", ondelete="SET NULL")
    )
    socratic: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=False, server_default=false()
    )
    language: Mapped[str] = mapped_column(String(8), nullable=False, default="en",
                                          server_default="en")
    updated_at: Mapped[datetime] = _now()


# --- study tools (migration 0007): summaries, notes, flashcards, quizzes -------------------------


class StudySet(Base):
    """A material's study tools: the state of their generation (one row per material, the job
    the workers run) and the summary and notes (Markdown with [n] markers; `citations` names
    each n's sentence, passage and page or second, in the shape of `reply.citations`)."""

    __tablename__ = "study_sets"

    material_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("materials.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True, nullable=False
    )
    status: Mapped[str] = mapped_column(String(20), nullable=False, default="queued")
    kinds: Mapped[list[str]] = mapped_column(JSONB, nullable=False)
    # Raised by every request: a run that started before the last request runs again.
    requested: Mapped[int] = mapped_column(Integer, nullable=False, default=1, server_default="1")
    stage: Mapped[str | None] = mapped_column(String(30))
    progress_done: Mapped[int] = mapped_column(
        Integer, nullable=False, default=0, server_default="0"
    )
    progress_total: Mapped[int] = mapped_column(
        Integer, nullable=False, default=0, server_default="0"
    )
    error: Mapped[str | None] = mapped_column(Text)
    generator: Mapped[str | None] = mapped_column(String(120))
    language: Mapped[str | None] = mapped_column(String(10))
    summary: Mapped[str | None] = mapped_column(Text)
    notes: Mapped[str | None] = mapped_column(Text)
    citations: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONB)
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


class Flashcard(Base):
    """A card: `front` asks, `back` answers; `quote` is the sentence of `passage` (a chunk of
    the material) where the answer is, on `page` (PDF) or at `start_s` (YouTube)."""

    __tablename__ = "flashcards"
    __table_args__ = (
        # A regenerated card with the same front and back keeps its id, so its review state.
        UniqueConstraint("material_id", "key", name="uq_flashcards_material_key"),
        Index("ix_flashcards_user_material", "user_id", "material_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    material_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("materials.id", ondelete="CASCADE"), nullable=False
    )
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=False
    )
    idx: Mapped[int] = mapped_column(Integer, nullable=False)
    key: Mapped[str] = mapped_column(String(64), nullable=False)
    kind: Mapped[str] = mapped_column(String(20), nullable=False)
    front: Mapped[str] = mapped_column(Text, nullable=False)
    back: Mapped[str] = mapped_column(Text, nullable=False)
    quote: Mapped[str] = mapped_column(Text, nullable=False)
    passage: Mapped[str] = mapped_column(Text, nullable=False)
    page: Mapped[int | None] = mapped_column(Integer)
    start_s: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = _now()


class FlashcardState(Base):
    """A card's spaced-repetition state for one learner: the `fsrs` package's Card as a dict,
    and its due time (a card without a state of theirs is new to them). Per (card, learner):
    a course's cards are shared, each enrolled learner has their own schedule (0009)."""

    __tablename__ = "flashcard_states"
    __table_args__ = (Index("ix_flashcard_states_user_due", "user_id", "due"),)

    card_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("flashcards.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    fsrs: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    due: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    reps: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    updated_at: Mapped[datetime] = _now()


class FlashcardReview(Base):
    """One review of a card (what the per-day limits count)."""

    __tablename__ = "flashcard_reviews"
    __table_args__ = (Index("ix_flashcard_reviews_user_at", "user_id", "reviewed_at"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    card_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("flashcards.id", ondelete="CASCADE"), index=True, nullable=False
    )
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=False
    )
    rating: Mapped[int] = mapped_column(Integer, nullable=False)
    was_new: Mapped[bool] = mapped_column(Boolean, nullable=False)
    reviewed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    due: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class Quiz(Base):
    """A material's quiz (one per material; regenerating replaces its questions)."""

    __tablename__ = "quizzes"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    material_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("materials.id", ondelete="CASCADE"), unique=True, nullable=False
    )
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True, nullable=False
    )
    language: Mapped[str] = mapped_column(String(10), nullable=False)
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


class QuizQuestion(Base):
    """kind: choice (`options`, one of them `answer`) | true_false (`answer` "true"/"false") |
    short (`answer` typed). `quote` is the sentence of `passage` that holds the answer."""

    __tablename__ = "quiz_questions"
    __table_args__ = (UniqueConstraint("quiz_id", "idx", name="uq_quiz_questions_quiz_idx"),)

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    quiz_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("quizzes.id", ondelete="CASCADE"), nullable=False
    )
    idx: Mapped[int] = mapped_column(Integer, nullable=False)
    kind: Mapped[str] = mapped_column(String(20), nullable=False)
    prompt: Mapped[str] = mapped_column(Text, nullable=False)
    options: Mapped[list[str] | None] = mapped_column(JSONB)
    answer: Mapped[str] = mapped_column(Text, nullable=False)
    explanation: Mapped[str] = mapped_column(Text, nullable=False)
    quote: Mapped[str] = mapped_column(Text, nullable=False)
    passage: Mapped[str] = mapped_column(Text, nullable=False)
    page: Mapped[int | None] = mapped_column(Integer)
    start_s: Mapped[float | None] = mapped_column(Float)


class QuizAttempt(Base):
    __tablename__ = "quiz_attempts"
    __table_args__ = (Index("ix_quiz_attempts_user_quiz", "user_id", "quiz_id"),)

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    quiz_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("quizzes.id", ondelete="CASCADE"), nullable=False
    )
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=False
    )
    # What was answered and how each answer was graded (a snapshot: questions may be replaced).
    results: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, nullable=False)
    score: Mapped[int] = mapped_column(Integer, nullable=False)
    total: Mapped[int] = mapped_column(Integer, nullable=False)
    created_at: Mapped[datetime] = _now()


class QuizSession(Base):
    """The tutor quizzing a learner in a conversation ("quiz me"): which question it asked."""

    __tablename__ = "quiz_sessions"

    conversation_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True, nullable=False
    )
    quiz_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("quizzes.id", ondelete="CASCADE"), nullable=False
    )
    position: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    correct: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    # The question waiting for the learner's answer; null when the quiz is over.
    question_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    updated_at: Mapped[datetime] = _now()


class TelegramQuiz(Base):
    """A quiz being taken in a Telegram chat (`/quiz`, #19): the question it is at and the
    answers so far, posted as one attempt at the end (as the widget does). In the database, not
    in a bridge process, because every update may be handled by another bridge process."""

    __tablename__ = "telegram_quizzes"

    chat_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    quiz_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("quizzes.id", ondelete="CASCADE"), nullable=False
    )
    position: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    answers: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, nullable=False, default=list)
    # The current question is answered by typing (a short answer): the next text is the answer.
    typed: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False,
                                        server_default=false())
    updated_at: Mapped[datetime] = _now()


class Course(Base):
    """A course: materials its instructor shares with enrolled learners, and the tutor's set-up
    for them (migration 0008)."""

    __tablename__ = "courses"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    # RESTRICT: an account that owns courses can't be deleted (DELETE /me says so).
    owner_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="RESTRICT"), index=True, nullable=False)
    title: Mapped[str] = mapped_column(String(200), nullable=False)
    description: Mapped[str] = mapped_column(Text, nullable=False, default="", server_default="")
    language: Mapped[str] = mapped_column(String(8), nullable=False, default="en",
                                          server_default="en")
    # The tutor's set-up: extra instructions, Socratic or not, provider/model, own materials.
    instructions: Mapped[str] = mapped_column(Text, nullable=False, default="",
                                              server_default="")
    socratic: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True,
                                           server_default=true())
    provider: Mapped[str | None] = mapped_column(String(50))
    model: Mapped[str | None] = mapped_column(String(100))
    allow_own_materials: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False,
                                                      server_default=false())
    # Instructors may read the conversations of learners who enrolled while this was on (they
    # were shown it at enrollment); otherwise aggregates only.
    share_conversations: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False,
                                                      server_default=false())
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


class CourseInvite(Base):
    """An invite code (only its sha256 is stored): may expire, be revoked, limit its seats."""

    __tablename__ = "course_invites"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    course_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("courses.id", ondelete="CASCADE"), index=True, nullable=False)
    code_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    created_by: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    max_seats: Mapped[int | None] = mapped_column(Integer)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _now()


class Enrollment(Base):
    __tablename__ = "enrollments"

    course_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("courses.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True)
    via: Mapped[str] = mapped_column(String(10), nullable=False)  # invite | embed
    invite_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("course_invites.id", ondelete="SET NULL"), index=True)
    # The course's share_conversations when this learner enrolled (what they were shown).
    shared_conversations: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False,
                                                       server_default=false())
    created_at: Mapped[datetime] = _now()


class AuditEntry(Base):
    """One security-relevant action. Append-only (a trigger refuses UPDATE and DELETE); no
    foreign key, so the record outlives the account it names. Never holds a secret."""

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_actor_at", "actor_id", "at"),
        Index("ix_audit_log_action_at", "action", "at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now(),
                                         nullable=False, index=True)
    actor_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    action: Mapped[str] = mapped_column(String(40), nullable=False)
    target_type: Mapped[str | None] = mapped_column(String(20))
    target_id: Mapped[str | None] = mapped_column(String(64))
    address: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
