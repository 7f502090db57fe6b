"""Public REST schemas (what the API accepts and returns)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, EmailStr, Field

from chat_server.text import PROBLEM, SafeStr, clean_text


def _checked_email(value: Any) -> Any:
    if isinstance(value, str) and not clean_text(value):
        raise ValueError(PROBLEM)
    return value


# PostgreSQL's OFFSET is a bigint: a list's offset past it is refused (422), not sent to the
# database (a 500).
MAX_OFFSET = 2**63 - 1

# Every str a request carries is a SafeStr: no NUL, no lone surrogate (422 otherwise).
SafeEmail = Annotated[EmailStr, BeforeValidator(_checked_email)]


class RegisterIn(BaseModel):
    email: SafeEmail
    password: SafeStr = Field(min_length=8, max_length=256)
    display_name: SafeStr | None = Field(None, max_length=200)


class PasswordChangeIn(BaseModel):
    current_password: SafeStr = Field(max_length=256)
    new_password: SafeStr = Field(min_length=8, max_length=256)


class TokenPair(BaseModel):
    access_token: str
    refresh_token: str
    token_type: str = "bearer"
    expires_in: int


class RefreshIn(BaseModel):
    refresh_token: SafeStr = Field(max_length=4096)


class UserPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    email: str | None
    display_name: str | None
    role: str = "learner"
    created_at: datetime


class MessagePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    role: str
    content: str
    status: str
    citations: list[dict[str, Any]] | None
    usage: dict[str, Any] | None
    reply_to: uuid.UUID | None
    error: str | None
    created_at: datetime
    finished_at: datetime | None


class ConversationCreate(BaseModel):
    title: SafeStr = Field("New conversation", min_length=1, max_length=200)
    socratic: bool = False


class ConversationUpdate(BaseModel):
    title: SafeStr | None = Field(None, min_length=1, max_length=200)
    socratic: bool | None = None


class ConversationPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    title: str
    socratic: bool
    course_id: uuid.UUID | None = None  # the course whose tutor answers in it
    created_at: datetime
    updated_at: datetime


class ConversationWithMessages(ConversationPublic):
    messages: list[MessagePublic]
