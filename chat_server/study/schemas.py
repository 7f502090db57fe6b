"""What the study routes accept and return."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from chat_server.text import SafeStr

Kind = Literal["summary", "notes", "flashcards", "quiz"]
Answer = Annotated[SafeStr, StringConstraints(max_length=2000)] | int | bool | None


class StudyRequest(BaseModel):
    kinds: list[Kind] | None = Field(
        None, max_length=4, description="What to (re)generate; all when absent. A summary and "
        "notes are generated together.")


class StudyPublic(BaseModel):
    material_id: uuid.UUID
    status: str = Field(description="none | queued | running | ready | failed")
    kinds: list[str] = []
    stage: str | None = None
    progress_done: int = 0
    progress_total: int = 0
    error: str | None = None
    generator: str | None = None
    language: str | None = None
    summary: str | None = Field(None, description="Markdown with [n] citation markers.")
    notes: str | None = Field(None, description="Markdown: a bold heading per section, bullets "
                              "with [n] markers.")
    citations: list[dict[str, Any]] = Field(
        [], description="The [n] of summary and notes, shaped like reply.citations.")
    flashcards: int = 0
    quiz_id: uuid.UUID | None = None
    questions: int = 0
    updated_at: datetime | None = None


class CardStatePublic(BaseModel):
    due: datetime
    reps: int
    state: str
    stability: float | None
    difficulty: float | None


class FlashcardPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    material_id: uuid.UUID
    kind: str
    front: str
    back: str
    quote: str
    passage: str
    page: int | None
    start_s: float | None
    review: CardStatePublic | None = Field(None, description="Absent: a new card.")


class DuePublic(BaseModel):
    cards: list[FlashcardPublic]
    due: int = Field(description="Seen cards due now, before today's limit.")
    new: int = Field(description="Cards never reviewed, before today's limit.")
    reviews_left: int = Field(description="Reviews of seen cards left today (UTC).")
    new_left: int = Field(description="New cards left today (UTC).")


class ReviewIn(BaseModel):
    rating: Literal["again", "hard", "good", "easy"]


class ReviewPublic(BaseModel):
    card_id: uuid.UUID
    rating: str
    due: datetime = Field(description="When the card is next due.")
    state: str = Field(description="learning | review | relearning")
    stability: float | None
    difficulty: float | None
    reps: int


class QuestionPublic(BaseModel):
    id: uuid.UUID
    kind: str = Field(description="choice | true_false | short")
    prompt: str
    options: list[str] | None = None
    page: int | None = None
    start_s: float | None = None


class QuizPublic(BaseModel):
    id: uuid.UUID
    material_id: uuid.UUID
    language: str
    questions: list[QuestionPublic]


class CheckIn(BaseModel):
    question_id: uuid.UUID
    answer: Answer = Field(description="choice: the option's text or index; true_false: a bool "
                           "(or true/false, верно/неверно); short: the text.")


class AnswerIn(BaseModel):
    question_id: uuid.UUID
    answer: Answer


class AttemptIn(BaseModel):
    answers: list[AnswerIn] = Field(max_length=500)


class ResultPublic(BaseModel):
    question_id: uuid.UUID
    kind: str
    prompt: str
    given: Any
    correct: bool
    graded_by: str = Field(description="exact | lenient | llm | unanswered")
    answer: str
    explanation: str
    quote: str = Field(description="The sentence that holds the answer.")
    passage: str = Field(description="The passage of the material around it.")
    page: int | None = None
    start_s: float | None = None


class AttemptPublic(BaseModel):
    id: uuid.UUID
    quiz_id: uuid.UUID
    score: int
    total: int
    results: list[ResultPublic]
    created_at: datetime
