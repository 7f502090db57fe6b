"""Retrieval for the tutor: a learner's most relevant passages for a question.

Hybrid search (pgvector cosine + Postgres full-text, fused by reciprocal rank
fusion), always scoped to one user's own materials.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from chat_server.settings import Settings


@dataclass(frozen=True)
class Hit:
    chunk_id: int
    material_id: uuid.UUID
    title: str
    kind: str  # pdf | youtube | text
    source: str  # PDF filename, YouTube video id, or ""
    text: str
    page: int | None  # first page of the chunk (PDF)
    start_s: float | None  # start second (YouTube)
    score: float
    language: str  # text search configuration of the chunk: english | russian | simple


async def retrieve(
    session: AsyncSession,
    settings: Settings,
    user_id: uuid.UUID,
    query: str,
    *,
    material_ids: list[uuid.UUID] | None = None,
    k: int | None = None,
) -> list[Hit]:
    """The user's top-k passages for `query`. Until ingestion lands, there are none."""
    return []
