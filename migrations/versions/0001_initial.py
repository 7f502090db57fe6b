"""Initial schema: users, conversations, messages, materials, chunks, meta.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from pgvector.sqlalchemy import Vector
from sqlalchemy.dialects import postgresql as pg

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

ROLE = pg.ENUM("user", "assistant", name="message_role", create_type=False)
MSG_STATUS = pg.ENUM(
    "streaming", "complete", "cancelled", "failed", "interrupted",
    name="message_status", create_type=False,
)
KIND = pg.ENUM("pdf", "youtube", "text", name="material_kind", create_type=False)
MAT_STATUS = pg.ENUM(
    "queued", "processing", "ready", "failed", name="material_status", create_type=False
)


def _ts(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(
        name, sa.DateTime(timezone=True), server_default=None if nullable else sa.func.now(),
        nullable=nullable,
    )


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS vector")
    bind = op.get_bind()
    for enum in (ROLE, MSG_STATUS, KIND, MAT_STATUS):
        enum.create(bind, checkfirst=True)

    op.create_table(
        "users",
        sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("email", sa.String(320), unique=True),
        sa.Column("password_hash", sa.String(255)),
        sa.Column("external_id", sa.String(255), unique=True),
        sa.Column("display_name", sa.String(200)),
        _ts("created_at"),
    )
    op.create_table(
        "conversations",
        sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("user_id", pg.UUID(as_uuid=True),
                  sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("socratic", sa.Boolean, nullable=False, server_default=sa.false()),
        _ts("created_at"),
        _ts("updated_at"),
    )
    op.create_index("ix_conversations_user_id", "conversations", ["user_id"])
    op.create_table(
        "messages",
        sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("conversation_id", pg.UUID(as_uuid=True),
                  sa.ForeignKey("conversations.id", ondelete="CASCADE"), nullable=False),
        sa.Column("user_id", pg.UUID(as_uuid=True),
                  sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("role", ROLE, nullable=False),
        sa.Column("content", sa.Text, nullable=False),
        sa.Column("status", MSG_STATUS, nullable=False),
        sa.Column("client_id", sa.String(100)),
        sa.Column("reply_to", pg.UUID(as_uuid=True),
                  sa.ForeignKey("messages.id", ondelete="SET NULL")),
        sa.Column("citations", pg.JSONB),
        sa.Column("usage", pg.JSONB),
        sa.Column("input_tokens", sa.Integer, nullable=False, server_default="0"),
        sa.Column("output_tokens", sa.Integer, nullable=False, server_default="0"),
        sa.Column("provider", sa.String(50)),
        sa.Column("model", sa.String(100)),
        sa.Column("error", sa.Text),
        _ts("created_at"),
        _ts("finished_at", nullable=True),
        sa.UniqueConstraint("user_id", "client_id", name="uq_messages_user_client_id"),
    )
    op.create_index("ix_messages_conversation_created", "messages",
                    ["conversation_id", "created_at"])
    op.create_index("ix_messages_user_created", "messages", ["user_id", "created_at"])
    op.create_table(
        "materials",
        sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("user_id", pg.UUID(as_uuid=True),
                  sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("kind", KIND, nullable=False),
        sa.Column("title", sa.String(300), nullable=False),
        sa.Column("source", sa.Text, nullable=False, server_default=""),
        sa.Column("status", MAT_STATUS, nullable=False),
        sa.Column("stage", sa.String(30)),
        sa.Column("progress_done", sa.Integer, nullable=False, server_default="0"),
        sa.Column("progress_total", sa.Integer, nullable=False, server_default="0"),
        sa.Column("error", sa.Text),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("file_path", sa.Text),
        sa.Column("pages", sa.Integer),
        sa.Column("duration_s", sa.Float),
        sa.Column("chunk_count", sa.Integer, nullable=False, server_default="0"),
        _ts("created_at"),
        _ts("updated_at"),
        sa.UniqueConstraint("user_id", "content_hash", name="uq_materials_user_content_hash"),
    )
    op.create_index("ix_materials_user_id", "materials", ["user_id"])
    op.create_table(
        "chunks",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("material_id", pg.UUID(as_uuid=True),
                  sa.ForeignKey("materials.id", ondelete="CASCADE"), nullable=False),
        sa.Column("user_id", pg.UUID(as_uuid=True),
                  sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("idx", sa.Integer, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("page_start", sa.Integer),
        sa.Column("page_end", sa.Integer),
        sa.Column("start_s", sa.Float),
        sa.Column("end_s", sa.Float),
        sa.Column("language", sa.String(30), nullable=False, server_default="simple"),
        sa.Column("embedding", Vector(384)),
        sa.Column("tsv", pg.TSVECTOR),
        sa.UniqueConstraint("material_id", "idx", name="uq_chunks_material_idx"),
    )
    op.create_index("ix_chunks_user_id", "chunks", ["user_id"])
    op.create_index(
        "ix_chunks_embedding_hnsw", "chunks", ["embedding"], postgresql_using="hnsw",
        postgresql_with={"m": 16, "ef_construction": 64},
        postgresql_ops={"embedding": "vector_cosine_ops"},
    )
    op.create_index("ix_chunks_tsv", "chunks", ["tsv"], postgresql_using="gin")
    op.create_table(
        "meta",
        sa.Column("key", sa.String(100), primary_key=True),
        sa.Column("value", pg.JSONB, nullable=False),
    )


def downgrade() -> None:
    for table in ("meta", "chunks", "materials", "messages", "conversations", "users"):
        op.drop_table(table)
    bind = op.get_bind()
    for enum in (MAT_STATUS, KIND, MSG_STATUS, ROLE):
        enum.drop(bind, checkfirst=True)
