"""One streaming reply per conversation, enforced by the database; a heartbeat per reply.

A partial unique index on messages(conversation_id) where status = 'streaming': a second
`chat.send` into a conversation whose reply still streams fails its insert, on any instance,
without a lock and a look-up before every send. Older duplicates (left by a crashed process)
are marked `interrupted` first so the index can be built.

`heartbeat_at`: the process streaming a reply touches it with every checkpoint, so a reply
whose heartbeat stopped is known to be an orphan of a dead process.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

INDEX = "uq_messages_one_streaming"


def upgrade() -> None:
    op.add_column("messages", sa.Column("heartbeat_at", sa.DateTime(timezone=True)))
    op.execute(
        "update messages m set status = 'interrupted', finished_at = now() "
        "where m.status = 'streaming' and exists (select 1 from messages n "
        "where n.conversation_id = m.conversation_id and n.status = 'streaming' "
        "and (n.created_at, n.id) > (m.created_at, m.id))")
    op.create_index(INDEX, "messages", ["conversation_id"], unique=True,
                    postgresql_where=sa.text("status = 'streaming'"))


def downgrade() -> None:
    op.drop_index(INDEX, table_name="messages")
    op.drop_column("messages", "heartbeat_at")
