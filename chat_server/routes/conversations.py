"""Conversations and their messages; every query is scoped to the caller."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Query, Response
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from chat_server.deps import CurrentUser, SessionDep
from chat_server.errors import ApiError
from chat_server.models import Conversation, Message
from chat_server.schemas import (
    MAX_OFFSET,
    ConversationCreate,
    ConversationPublic,
    ConversationUpdate,
    ConversationWithMessages,
    MessagePublic,
)

router = APIRouter(prefix="/conversations", tags=["conversations"])


async def get_owned_conversation(
    session: AsyncSession, user_id: uuid.UUID, conversation_id: uuid.UUID
) -> Conversation:
    """The caller's conversation, or 404 (also for another user's id: existence never leaks)."""
    conv = await session.scalar(
        select(Conversation).where(
            Conversation.id == conversation_id, Conversation.user_id == user_id
        )
    )
    if conv is None:
        raise ApiError(404, "Conversation not found.")
    return conv


@router.get("", response_model=list[ConversationPublic], summary="List my conversations")
async def list_conversations(
    user: CurrentUser, session: SessionDep,
    limit: int = Query(50, ge=1, le=200), offset: int = Query(0, ge=0, le=MAX_OFFSET),
) -> list[Conversation]:
    rows = await session.scalars(
        select(Conversation).where(Conversation.user_id == user.id)
        .order_by(Conversation.updated_at.desc()).limit(limit).offset(offset)
    )
    return list(rows)


@router.post("", status_code=201, response_model=ConversationPublic,
             summary="Start a conversation")
async def create_conversation(
    body: ConversationCreate, user: CurrentUser, session: SessionDep
) -> Conversation:
    conv = Conversation(user_id=user.id, title=body.title, socratic=body.socratic)
    session.add(conv)
    await session.commit()
    await session.refresh(conv)
    return conv


@router.get("/{conversation_id}", response_model=ConversationWithMessages,
            summary="A conversation with its messages, oldest first")
async def get_conversation(
    conversation_id: uuid.UUID, user: CurrentUser, session: SessionDep
) -> ConversationWithMessages:
    conv = await get_owned_conversation(session, user.id, conversation_id)
    messages = await session.scalars(
        select(Message).where(Message.conversation_id == conv.id, Message.user_id == user.id)
        # On a created_at tie the question (no reply_to) comes before its answer.
        .order_by(Message.created_at, Message.reply_to.is_not(None))
    )
    return ConversationWithMessages(
        **ConversationPublic.model_validate(conv).model_dump(),
        messages=[MessagePublic.model_validate(m) for m in messages],
    )


@router.patch("/{conversation_id}", response_model=ConversationPublic,
              summary="Rename a conversation or toggle Socratic mode")
async def update_conversation(
    conversation_id: uuid.UUID, body: ConversationUpdate, user: CurrentUser, session: SessionDep
) -> Conversation:
    conv = await get_owned_conversation(session, user.id, conversation_id)
    if body.title is not None:
        conv.title = body.title
    if body.socratic is not None:
        conv.socratic = body.socratic
    await session.commit()
    await session.refresh(conv)
    return conv


@router.delete("/{conversation_id}", status_code=204,
               summary="Delete a conversation and its messages")
async def delete_conversation(
    conversation_id: uuid.UUID, user: CurrentUser, session: SessionDep
) -> Response:
    conv = await get_owned_conversation(session, user.id, conversation_id)
    await session.execute(
        delete(Conversation).where(Conversation.id == conv.id, Conversation.user_id == user.id)
    )
    await session.commit()
    return Response(status_code=204)
