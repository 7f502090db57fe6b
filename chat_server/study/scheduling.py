"""Spaced repetition with the `fsrs` package (the scheduler modern Anki uses).

A card without a state is new. Reviewing it runs `fsrs.Scheduler.review_card` on the card's
stored `fsrs.Card` (its `to_dict()` in `flashcard_states`), stores the new one and logs the
review. What is due for a learner is capped per day (UTC) by two settings: new cards shown
(`study_new_cards_per_day`) and reviews of cards already seen (`study_reviews_per_day`).

Plain functions over a session, so any client (REST, the Telegram bridge) calls the same.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fsrs import Card, Rating, Scheduler
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from chat_server.models import Flashcard, FlashcardReview, FlashcardState
from chat_server.settings import Settings

RATINGS: dict[str, Rating] = {"again": Rating.Again, "hard": Rating.Hard, "good": Rating.Good,
                              "easy": Rating.Easy}


class CardNotFound(LookupError):
    pass


def scheduler(settings: Settings) -> Scheduler:
    return Scheduler(desired_retention=settings.study_desired_retention,
                     enable_fuzzing=settings.study_fsrs_fuzzing)


def utc_midnight(now: datetime) -> datetime:
    return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


@dataclass(frozen=True)
class Reviewed:
    card_id: uuid.UUID
    rating: str
    due: datetime
    state: str  # learning | review | relearning
    stability: float | None
    difficulty: float | None
    reps: int

    def public(self) -> dict[str, Any]:
        return {"card_id": str(self.card_id), "rating": self.rating,
                "due": self.due.isoformat(), "state": self.state, "stability": self.stability,
                "difficulty": self.difficulty, "reps": self.reps}


async def owned_card(session: AsyncSession, user_id: uuid.UUID, card_id: uuid.UUID) -> Flashcard:
    card = await session.scalar(
        select(Flashcard).where(Flashcard.id == card_id, Flashcard.user_id == user_id))
    if card is None:
        raise CardNotFound(card_id)
    return card


async def review(session: AsyncSession, settings: Settings, user_id: uuid.UUID,
                 card_id: uuid.UUID, rating: str, now: datetime | None = None) -> Reviewed:
    """Record a review of the user's card (CardNotFound for anyone else's) and schedule it."""
    if rating not in RATINGS:
        raise ValueError(f"rating must be one of {', '.join(RATINGS)}")
    now = now or datetime.now(UTC)
    await owned_card(session, user_id, card_id)
    state = await session.scalar(
        select(FlashcardState).where(FlashcardState.card_id == card_id).with_for_update())
    before = Card.from_dict(state.fsrs) if state is not None else Card(due=now)  # type: ignore[arg-type]
    after, _ = scheduler(settings).review_card(before, RATINGS[rating], review_datetime=now)
    stored: dict[str, Any] = dict(after.to_dict())
    if state is None:
        state = FlashcardState(card_id=card_id, user_id=user_id, fsrs=stored, due=after.due,
                               reps=1)
        session.add(state)
    else:
        state.fsrs, state.due, state.reps = stored, after.due, state.reps + 1
        state.updated_at = now
    session.add(FlashcardReview(card_id=card_id, user_id=user_id, rating=int(RATINGS[rating]),
                                was_new=state.reps == 1, reviewed_at=now, due=after.due))
    await session.commit()
    return Reviewed(card_id, rating, after.due, after.state.name.lower(), after.stability,
                    after.difficulty, state.reps)


@dataclass
class Due:
    cards: list[tuple[Flashcard, FlashcardState | None]]
    due: int  # seen cards due now (before the daily limit)
    new: int  # cards never reviewed (before the daily limit)
    reviews_left: int  # of today's limit
    new_left: int


async def due(session: AsyncSession, settings: Settings, user_id: uuid.UUID,
              material_id: uuid.UUID | None = None, *, now: datetime | None = None,
              limit: int = 100) -> Due:
    """The user's cards to study now: seen cards that are due (earliest first), then new ones
    (in the material's order), each within what today's limits leave."""
    now = now or datetime.now(UTC)
    since = utc_midnight(now)
    counts = dict((await session.execute(
        select(FlashcardReview.was_new, func.count())
        .where(FlashcardReview.user_id == user_id, FlashcardReview.reviewed_at >= since)
        .group_by(FlashcardReview.was_new))).all())
    reviews_left = max(0, settings.study_reviews_per_day - counts.get(False, 0))
    new_left = max(0, settings.study_new_cards_per_day - counts.get(True, 0))
    scope = [Flashcard.user_id == user_id]
    if material_id is not None:
        scope.append(Flashcard.material_id == material_id)
    seen = (select(Flashcard, FlashcardState)
            .join(FlashcardState, FlashcardState.card_id == Flashcard.id)
            .where(*scope, FlashcardState.due <= now))
    fresh = (select(Flashcard).outerjoin(FlashcardState, FlashcardState.card_id == Flashcard.id)
             .where(*scope, FlashcardState.card_id.is_(None)))
    due_total = await session.scalar(select(func.count()).select_from(seen.subquery())) or 0
    new_total = await session.scalar(select(func.count()).select_from(fresh.subquery())) or 0
    cards: list[tuple[Flashcard, FlashcardState | None]] = [
        (card, state) for card, state in (await session.execute(
            seen.order_by(FlashcardState.due).limit(min(limit, reviews_left)))).all()]
    room = min(new_left, limit - len(cards))
    if room > 0:
        cards += [(card, None) for card in await session.scalars(
            fresh.order_by(Flashcard.created_at, Flashcard.material_id, Flashcard.idx)
            .limit(room))]
    return Due(cards, due_total, new_total, reviews_left, new_left)


