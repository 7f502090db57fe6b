"""What the materials routes accept and return."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from chat_server.text import SafeStr


class YouTubeIn(BaseModel):
    url: SafeStr = Field(min_length=1, max_length=2048,
                         description="A YouTube link or a video id.")
    title: SafeStr | None = Field(None, max_length=300)


class TextIn(BaseModel):
    title: SafeStr = Field(min_length=1, max_length=300)
    text: SafeStr = Field(min_length=1, description="The text (at most max_text_chars).")


class MaterialPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    course_id: uuid.UUID | None = None  # a course's material (null: the owner's own)
    kind: str
    title: str
    source: str
    status: str
    stage: str | None
    progress_done: int
    progress_total: int
    error: str | None
    pages: int | None
    duration_s: float | None
    chunk_count: int
    content_type: str | None = Field(
        None, description="The uploaded file's type by its content (none for YouTube and text).")
    file_size: int = Field(
        0, description="Bytes of the uploaded file kept (0: none; see GET /materials/{id}/file).")
    created_at: datetime
    updated_at: datetime
