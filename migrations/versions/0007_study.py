"""Study tools: a material's summary and notes, flashcards with their spaced-repetition state
and reviews, quizzes with their questions and attempts, and the tutor's quiz sessions.

`study_sets`: one row per material — the generation job (status, kinds, progress, error) and
the summary and notes it wrote. `flashcards` (unique per material and front+back, so a card
regenerated unchanged keeps its id and review state), `flashcard_states` (the `fsrs` Card of a
reviewed card), `flashcard_reviews` (what the daily limits count). `quizzes` (one per material),
`quiz_questions`, `quiz_attempts`, `quiz_sessions` (per conversation: the tutor's quiz),
`telegram_quizzes` (per Telegram chat: the quiz `/quiz` is taking there).

Revision ID: 0007
Revises: 0005
Create Date: 2026-12-12
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision = "0007"
down_revision = "0005"
branch_labels = None
depends_on = None


def _fk(table: str) -> sa.ForeignKey:
    return sa.ForeignKey(f"{table}.id", ondelete="CASCADE")


def _now(name: str) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), server_default=sa.func.now(),
                     nullable=False)


def upgrade() -> None:
    op.create_table(
        "study_sets",
        sa.Column("material_id", UUID(as_uuid=True), _fk("materials"), primary_key=True),
        sa.Column("user_id", UUID(as_uuid=True), _fk("users"), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("kinds", JSONB, nullable=False),
        sa.Column("requested", sa.Integer, nullable=False, server_default="1"),
        sa.Column("stage", sa.String(30)),
        sa.Column("progress_done", sa.Integer, nullable=False, server_default="0"),
        sa.Column("progress_total", sa.Integer, nullable=False, server_default="0"),
        sa.Column("error", sa.Text),
        sa.Column("generator", sa.String(120)),
        sa.Column("language", sa.String(10)),
        sa.Column("summary", sa.Text),
        sa.Column("notes", sa.Text),
        sa.Column("citations", JSONB),
        _now("created_at"),
        _now("updated_at"),
    )
    op.create_index("ix_study_sets_user_id", "study_sets", ["user_id"])
    op.create_table(
        "flashcards",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("material_id", UUID(as_uuid=True), _fk("materials"), nullable=False),
        sa.Column("user_id", UUID(as_uuid=True), _fk("users"), nullable=False),
        sa.Column("idx", sa.Integer, nullable=False),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("front", sa.Text, nullable=False),
        sa.Column("back", sa.Text, nullable=False),
        sa.Column("quote", sa.Text, nullable=False),
        sa.Column("passage", sa.Text, nullable=False),
        sa.Column("page", sa.Integer),
        sa.Column("start_s", sa.Float),
        _now("created_at"),
        sa.UniqueConstraint("material_id", "key", name="uq_flashcards_material_key"),
    )
    op.create_index("ix_flashcards_user_material", "flashcards", ["user_id", "material_id"])
    op.create_table(
        "flashcard_states",
        sa.Column("card_id", UUID(as_uuid=True), _fk("flashcards"), primary_key=True),
        sa.Column("user_id", UUID(as_uuid=True), _fk("users"), nullable=False),
        sa.Column("fsrs", JSONB, nullable=False),
        sa.Column("due", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reps", sa.Integer, nullable=False, server_default="0"),
        _now("updated_at"),
    )
    op.create_index("ix_flashcard_states_user_due", "flashcard_states", ["user_id", "due"])
    op.create_table(
        "flashcard_reviews",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("card_id", UUID(as_uuid=True), _fk("flashcards"), nullable=False),
        sa.Column("user_id", UUID(as_uuid=True), _fk("users"), nullable=False),
        sa.Column("rating", sa.Integer, nullable=False),
        sa.Column("was_new", sa.Boolean, nullable=False),
        sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("due", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_flashcard_reviews_card_id", "flashcard_reviews", ["card_id"])
    op.create_index("ix_flashcard_reviews_user_at", "flashcard_reviews",
                    ["user_id", "reviewed_at"])
    op.create_table(
        "quizzes",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("material_id", UUID(as_uuid=True), _fk("materials"), nullable=False,
                  unique=True),
        sa.Column("user_id", UUID(as_uuid=True), _fk("users"), nullable=False),
        sa.Column("language", sa.String(10), nullable=False),
        _now("created_at"),
        _now("updated_at"),
    )
    op.create_index("ix_quizzes_user_id", "quizzes", ["user_id"])
    op.create_table(
        "quiz_questions",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("quiz_id", UUID(as_uuid=True), _fk("quizzes"), nullable=False),
        sa.Column("idx", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("prompt", sa.Text, nullable=False),
        sa.Column("options", JSONB),
        sa.Column("answer", sa.Text, nullable=False),
        sa.Column("explanation", sa.Text, nullable=False),
        sa.Column("quote", sa.Text, nullable=False),
        sa.Column("passage", sa.Text, nullable=False),
        sa.Column("page", sa.Integer),
        sa.Column("start_s", sa.Float),
        sa.UniqueConstraint("quiz_id", "idx", name="uq_quiz_questions_quiz_idx"),
    )
    op.create_table(
        "quiz_attempts",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("quiz_id", UUID(as_uuid=True), _fk("quizzes"), nullable=False),
        sa.Column("user_id", UUID(as_uuid=True), _fk("users"), nullable=False),
        sa.Column("results", JSONB, nullable=False),
        sa.Column("score", sa.Integer, nullable=False),
        sa.Column("total", sa.Integer, nullable=False),
        _now("created_at"),
    )
    op.create_index("ix_quiz_attempts_user_quiz", "quiz_attempts", ["user_id", "quiz_id"])
    op.create_table(
        "quiz_sessions",
        sa.Column("conversation_id", UUID(as_uuid=True), _fk("conversations"), primary_key=True),
        sa.Column("user_id", UUID(as_uuid=True), _fk("users"), nullable=False),
        sa.Column("quiz_id", UUID(as_uuid=True), _fk("quizzes"), nullable=False),
        sa.Column("position", sa.Integer, nullable=False, server_default="0"),
        sa.Column("correct", sa.Integer, nullable=False, server_default="0"),
        sa.Column("question_id", UUID(as_uuid=True)),
        _now("updated_at"),
    )
    op.create_index("ix_quiz_sessions_user_id", "quiz_sessions", ["user_id"])
    op.create_table(
        "telegram_quizzes",
        sa.Column("chat_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("user_id", UUID(as_uuid=True), _fk("users"), primary_key=True),
        sa.Column("quiz_id", UUID(as_uuid=True), _fk("quizzes"), nullable=False),
        sa.Column("position", sa.Integer, nullable=False, server_default="0"),
        sa.Column("answers", JSONB, nullable=False),
        sa.Column("typed", sa.Boolean, nullable=False, server_default=sa.false()),
        _now("updated_at"),
    )


def downgrade() -> None:
    for table in ("telegram_quizzes", "quiz_sessions", "quiz_attempts", "quiz_questions", "quizzes",
                  "flashcard_reviews", "flashcard_states", "flashcards", "study_sets"):
        op.drop_table(table)
