"""The study routes: generate a material's study tools, read them, review cards, take quizzes,
export cards. Everything is the caller's own: another user's ids are 404, like missing ones."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import APIRouter, Query, Request, Response
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from chat_server.deps import CurrentUser, SessionDep, SettingsDep
from chat_server.errors import ApiError
from chat_server.jobs import enqueue_study
from chat_server.models import Flashcard, FlashcardState, Material, Quiz, QuizQuestion, StudySet
from chat_server.study import export, jobs, quizzes, scheduling
from chat_server.study.schemas import (
    AttemptIn,
    AttemptPublic,
    CardStatePublic,
    CheckIn,
    DuePublic,
    FlashcardPublic,
    QuestionPublic,
    QuizPublic,
    ResultPublic,
    ReviewIn,
    ReviewPublic,
    StudyPublic,
    StudyRequest,
)

log = logging.getLogger(__name__)
router = APIRouter(tags=["study"])


async def _material(session: AsyncSession, user_id: uuid.UUID, material_id: uuid.UUID
                    ) -> Material:
    """The material whose rows the user owns (their own, or a course material they uploaded:
    its study tools are theirs; sharing them with the course's learners is not built yet)."""
    material = await session.scalar(
        select(Material).where(Material.id == material_id, Material.user_id == user_id))
    if material is None:
        raise ApiError(404, "Material not found.")
    return material


async def study_state(session: AsyncSession, material: Material) -> StudyPublic:
    row = await session.get(StudySet, material.id, populate_existing=True)
    quiz = await session.scalar(select(Quiz).where(Quiz.material_id == material.id))
    cards = await session.scalar(
        select(func.count()).where(Flashcard.material_id == material.id)) or 0
    questions = await session.scalar(
        select(func.count()).where(QuizQuestion.quiz_id == quiz.id)) if quiz else 0
    base: dict[str, Any] = {"material_id": material.id, "flashcards": cards,
                            "quiz_id": quiz.id if quiz else None, "questions": questions or 0}
    if row is None:
        return StudyPublic(status="none", **base)
    return StudyPublic(
        status=row.status, kinds=row.kinds, stage=row.stage, progress_done=row.progress_done,
        progress_total=row.progress_total, error=row.error, generator=row.generator,
        language=row.language, summary=row.summary, notes=row.notes,
        citations=row.citations or [], updated_at=row.updated_at, **base)


@router.post("/materials/{material_id}/study", response_model=StudyPublic, status_code=202,
             summary="(Re)generate a material's study tools; progress arrives on the socket")
async def request_study(material_id: uuid.UUID, body: StudyRequest, request: Request,
                        user: CurrentUser, session: SessionDep) -> StudyPublic:
    material = await _material(session, user.id, material_id)
    if material.status.value != "ready":
        raise ApiError(409, "This material is not ready yet: study tools are made from its "
                       "text once it is.", code="material_not_ready")
    kinds = jobs.normalise_kinds(body.kinds)
    await jobs.request(request.app.state.db, user.id, material.id, kinds)
    try:
        await enqueue_study(request.app.state.broker, material.id)
    except Exception:  # the recovery sweep queues it again once the broker is back
        log.warning("could not queue the study of %s", material.id, exc_info=True)
    return await study_state(session, material)


@router.get("/materials/{material_id}/study", response_model=StudyPublic,
            summary="A material's study tools: status, summary, notes, counts, quiz id")
async def get_study(material_id: uuid.UUID, user: CurrentUser,
                    session: SessionDep) -> StudyPublic:
    return await study_state(session, await _material(session, user.id, material_id))


def _card(card: Flashcard, state: FlashcardState | None) -> FlashcardPublic:
    out = FlashcardPublic.model_validate(card)
    if state is not None:
        fsrs = state.fsrs
        out.review = CardStatePublic(
            due=state.due, reps=state.reps,
            state={1: "learning", 2: "review", 3: "relearning"}.get(int(fsrs.get("state") or 1),
                                                                  "learning"),
            stability=fsrs.get("stability"), difficulty=fsrs.get("difficulty"))
    return out


async def _cards(session: AsyncSession, user_id: uuid.UUID, material_id: uuid.UUID
                 ) -> list[tuple[Flashcard, FlashcardState | None]]:
    rows = await session.execute(
        select(Flashcard, FlashcardState)
        .outerjoin(FlashcardState, FlashcardState.card_id == Flashcard.id)
        .where(Flashcard.material_id == material_id, Flashcard.user_id == user_id)
        .order_by(Flashcard.idx))
    return [(card, state) for card, state in rows.all()]


@router.get("/materials/{material_id}/flashcards", response_model=list[FlashcardPublic],
            summary="A material's flashcards with their review state")
async def list_cards(material_id: uuid.UUID, user: CurrentUser,
                     session: SessionDep) -> list[FlashcardPublic]:
    material = await _material(session, user.id, material_id)
    return [_card(c, s) for c, s in await _cards(session, user.id, material.id)]


def _filename(title: str, suffix: str) -> str:
    safe = "".join(ch if ch.isalnum() or ch in " -_" else "_" for ch in title).strip()
    return f"{safe[:60] or 'flashcards'}{suffix}"


def _attachment(name: str) -> str:
    from urllib.parse import quote

    return f"attachment; filename=\"flashcards{name[name.rfind('.'):]}\"; " \
           f"filename*=UTF-8''{quote(name)}"


@router.get("/materials/{material_id}/flashcards.csv", summary="A material's flashcards as CSV",
            response_class=Response, responses={200: {"content": {"text/csv": {}}}})
async def export_csv(material_id: uuid.UUID, user: CurrentUser, session: SessionDep) -> Response:
    material = await _material(session, user.id, material_id)
    cards = [c for c, _ in await _cards(session, user.id, material.id)]
    return Response(export.to_csv(cards).encode("utf-8-sig"), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": _attachment(_filename(material.title,
                                                                          ".csv"))})


@router.get("/materials/{material_id}/flashcards.apkg",
            summary="A material's flashcards as an Anki deck (.apkg)", response_class=Response,
            responses={200: {"content": {"application/octet-stream": {}}}})
async def export_apkg(material_id: uuid.UUID, user: CurrentUser,
                      session: SessionDep) -> Response:
    import asyncio

    material = await _material(session, user.id, material_id)
    cards = [c for c, _ in await _cards(session, user.id, material.id)]
    study = await session.get(StudySet, material.id)
    data = await asyncio.to_thread(export.to_apkg, material.id, material.title, cards,
                                   (study.language if study else None) or "en")
    return Response(data, media_type="application/octet-stream",
                    headers={"Content-Disposition": _attachment(_filename(material.title,
                                                                          ".apkg"))})


@router.get("/flashcards/due", response_model=DuePublic,
            summary="Cards to study now (due, then new), within today's limits")
async def due_cards(user: CurrentUser, session: SessionDep, settings: SettingsDep,
                    material_id: uuid.UUID | None = None,
                    limit: int = Query(100, ge=1, le=500)) -> DuePublic:
    if material_id is not None:
        await _material(session, user.id, material_id)
    found = await scheduling.due(session, settings, user.id, material_id, limit=limit)
    return DuePublic(cards=[_card(c, s) for c, s in found.cards], due=found.due, new=found.new,
                     reviews_left=found.reviews_left, new_left=found.new_left)


@router.post("/flashcards/{card_id}/review", response_model=ReviewPublic,
             summary="Review a card (again | hard | good | easy); returns when it is next due")
async def review_card(card_id: uuid.UUID, body: ReviewIn, user: CurrentUser,
                      session: SessionDep, settings: SettingsDep) -> ReviewPublic:
    try:
        reviewed = await scheduling.review(session, settings, user.id, card_id, body.rating)
    except scheduling.CardNotFound:
        raise ApiError(404, "Flashcard not found.") from None
    return ReviewPublic.model_validate(reviewed.public())


async def _quiz(session: AsyncSession, user_id: uuid.UUID, quiz_id: uuid.UUID
                ) -> tuple[Quiz, list[QuizQuestion]]:
    try:
        return await quizzes.owned_quiz(session, user_id, quiz_id)
    except quizzes.QuizNotFound:
        raise ApiError(404, "Quiz not found.") from None


@router.get("/quizzes/{quiz_id}", response_model=QuizPublic,
            summary="A quiz's questions (without their answers)")
async def get_quiz(quiz_id: uuid.UUID, user: CurrentUser, session: SessionDep) -> QuizPublic:
    quiz, questions = await _quiz(session, user.id, quiz_id)
    return QuizPublic(id=quiz.id, material_id=quiz.material_id, language=quiz.language,
                      questions=[QuestionPublic(id=q.id, kind=q.kind, prompt=q.prompt,
                                                options=q.options, page=q.page,
                                                start_s=q.start_s) for q in questions])


@router.post("/quizzes/{quiz_id}/check", response_model=ResultPublic,
             summary="Grade one answer now (nothing stored): right or not, why, where")
async def check_answer(quiz_id: uuid.UUID, body: CheckIn, user: CurrentUser,
                       session: SessionDep, settings: SettingsDep) -> dict[str, Any]:
    await _quiz(session, user.id, quiz_id)
    try:
        return await quizzes.check(session, settings, user.id, quiz_id, body.question_id,
                                   body.answer)
    except quizzes.QuizNotFound:
        raise ApiError(404, "Question not found in this quiz.") from None


@router.post("/quizzes/{quiz_id}/attempts", response_model=AttemptPublic, status_code=201,
             summary="Submit a quiz: score, each answer's correctness, explanation and passage")
async def submit_attempt(quiz_id: uuid.UUID, body: AttemptIn, user: CurrentUser,
                         session: SessionDep, settings: SettingsDep) -> AttemptPublic:
    await _quiz(session, user.id, quiz_id)
    stored = await quizzes.attempt(session, settings, user.id, quiz_id,
                                   {a.question_id: a.answer for a in body.answers})
    return AttemptPublic(id=stored.id, quiz_id=stored.quiz_id, score=stored.score,
                         total=stored.total,
                         results=[ResultPublic.model_validate(r) for r in stored.results],
                         created_at=stored.created_at)
