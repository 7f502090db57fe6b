"""Where each part of a chunk's text comes from: `chunks.locations`.

A JSON array of [character offset in the chunk's text, page (PDF) or start second (YouTube)],
one entry where the place changes. A citation resolves the span it quotes to the page or second
where that span is, not where its chunk starts. Chunks stored before this migration have none
(their citations name the chunk's first page, as before) until their material is added again.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("chunks", sa.Column("locations", JSONB))


def downgrade() -> None:
    op.drop_column("chunks", "locations")
