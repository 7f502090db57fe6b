"""Course study tools: each learner keeps their own review state of a shared card.

`flashcard_states` was keyed by the card (whose `user_id` is the material's owner); a course's
cards are reviewed by each enrolled learner, so the state is keyed by (card, learner). Existing
rows keep their `user_id` (the owner, who was the only one reviewing). `flashcard_reviews`,
`quiz_attempts`, `quiz_sessions` and `telegram_quizzes` already carry the learner's `user_id`.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-12
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_constraint("flashcard_states_pkey", "flashcard_states", type_="primary")
    op.create_primary_key("flashcard_states_pkey", "flashcard_states", ["card_id", "user_id"])


def downgrade() -> None:
    # Only the owner's state fits a per-card key: learners' states of course cards go.
    op.execute("delete from flashcard_states s using flashcards f "
               "where f.id = s.card_id and f.user_id <> s.user_id")
    op.drop_constraint("flashcard_states_pkey", "flashcard_states", type_="primary")
    op.create_primary_key("flashcard_states_pkey", "flashcard_states", ["card_id"])
