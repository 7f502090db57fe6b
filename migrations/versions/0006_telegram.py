"""The Telegram bridge: linked accounts, single-use link codes, per-chat conversation state.

Revision ID: 0006
Revises: 0004
Create Date: 2026-12-10
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0006"
down_revision = "0004"
branch_labels = None
depends_on = None


def _user_fk() -> sa.Column:
    return sa.Column("user_id", pg.UUID(as_uuid=True),
                     sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False)


def _now(name: str) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), server_default=sa.func.now(),
                     nullable=False)


def upgrade() -> None:
    op.create_table(
        "telegram_links",
        sa.Column("telegram_user_id", sa.BigInteger(), autoincrement=False, primary_key=True),
        _user_fk(),
        sa.Column("telegram_username", sa.String(64)),
        sa.Column("generation", sa.Integer(), nullable=False, server_default="0"),
        _now("created_at"),
        sa.UniqueConstraint("user_id", name="telegram_links_user_id_key"),
    )
    op.create_table(
        "telegram_link_codes",
        sa.Column("code_hash", sa.String(64), primary_key=True),
        _user_fk(),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True)),
        _now("created_at"),
    )
    op.create_index("ix_telegram_link_codes_user_id", "telegram_link_codes", ["user_id"])
    op.create_table(
        "telegram_chats",
        sa.Column("chat_id", sa.BigInteger(), autoincrement=False, primary_key=True),
        sa.Column("user_id", pg.UUID(as_uuid=True),
                  sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("conversation_id", pg.UUID(as_uuid=True),
                  sa.ForeignKey("conversations.id", ondelete="SET NULL")),
        sa.Column("socratic", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("language", sa.String(8), nullable=False, server_default="en"),
        _now("updated_at"),
    )
    op.create_index("ix_telegram_chats_user_conversation", "telegram_chats",
                    ["user_id", "conversation_id"])


def downgrade() -> None:
    op.drop_table("telegram_chats")
    op.drop_table("telegram_link_codes")
    op.drop_table("telegram_links")
