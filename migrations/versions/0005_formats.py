"""Slides, documents, scans and plain files; originals kept and counted against a quota.

`material_kind` gains docx, pptx, markdown, html and image. `materials.content_type` is the
uploaded file's type by its content, `materials.file_size` the bytes of it kept on disk (an
upload waiting for ingestion, then the original while it is kept), which a user's storage quota
adds up. `chunks.sections`: [[offset in the chunk's text, heading], …] where a section of a
DOCX, Markdown or HTML file begins, so a citation names its heading.

Downgrade: enum values can't be dropped, so the type is rebuilt; materials of the new kinds
become `text` (their chunks stay searchable; their files are no longer served).

Revision ID: 0005
Revises: 0006
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0005"
down_revision = "0006"
branch_labels = None
depends_on = None

NEW_KINDS = ("docx", "pptx", "markdown", "html", "image")


def upgrade() -> None:
    # Allowed in a transaction since PostgreSQL 12; the values are usable once it commits.
    for kind in NEW_KINDS:
        op.execute(f"alter type material_kind add value if not exists '{kind}'")
    op.add_column("materials", sa.Column("content_type", sa.String(100)))
    op.add_column("materials", sa.Column("file_size", sa.BigInteger(), nullable=False,
                                         server_default="0"))
    op.add_column("chunks", sa.Column("sections", JSONB))


def downgrade() -> None:
    op.drop_column("chunks", "sections")
    op.drop_column("materials", "file_size")
    op.drop_column("materials", "content_type")
    op.execute("alter type material_kind rename to material_kind_0005")
    op.execute("create type material_kind as enum ('pdf', 'youtube', 'text')")
    op.execute("alter table materials alter column kind type material_kind using "
               "(case when kind::text in ('pdf', 'youtube', 'text') then kind::text "
               "else 'text' end)::material_kind")
    op.execute("drop type material_kind_0005")
