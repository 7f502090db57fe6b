"""Drive the Tutor directly on a real database and a MemoryBus, collecting each user's frames."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from chat_server.bus import Bus, open_bus
from chat_server.db import Database, open_database
from chat_server.models import User
from chat_server.settings import Settings
from chat_server.tutor.providers import open_providers
from chat_server.tutor.service import Tutor
from chat_server.tutor.stream import PublishMany

Frame = dict[str, Any]


class Frames:
    """Every frame delivered per user, with waiting for a condition (bounded)."""

    def __init__(self) -> None:
        self.by_user: dict[str, list[Frame]] = defaultdict(list)
        self._changed = asyncio.Event()

    def deliver(self, user_id: str, offset: int, frame: str, kind: str) -> None:
        self.by_user[user_id].append(json.loads(frame))
        self._changed.set()

    async def wait(self, user_id: uuid.UUID | str, pred: Callable[[list[Frame]], bool],
                   within_s: float = 20.0) -> list[Frame]:
        frames = self.by_user[str(user_id)]
        async with asyncio.timeout(within_s):
            while not pred(frames):
                self._changed.clear()
                await self._changed.wait()
        return frames

    async def end_of(self, user_id: uuid.UUID | str, reply_id: str,
                     within_s: float = 20.0) -> Frame:
        frames = await self.wait(user_id, lambda fs: any(
            f["type"] == "reply.end" and f["reply_id"] == reply_id for f in fs), within_s)
        return next(f for f in frames if f["type"] == "reply.end" and f["reply_id"] == reply_id)

    async def ack(self, user_id: uuid.UUID | str, client_id: str, nth: int = 1,
                  within_s: float = 20.0) -> Frame:
        def acks(fs: list[Frame]) -> list[Frame]:
            return [f for f in fs if f["type"] == "chat.ack" and f["id"] == client_id]

        frames = await self.wait(user_id, lambda fs: len(acks(fs)) >= nth, within_s)
        return acks(frames)[nth - 1]

    def of(self, user_id: uuid.UUID | str, reply_id: str, kind: str) -> list[Frame]:
        return [f for f in self.by_user[str(user_id)]
                if f["type"] == kind and f.get("reply_id") == reply_id]

    def text(self, user_id: uuid.UUID | str, reply_id: str) -> str:
        deltas = self.of(user_id, reply_id, "reply.delta")
        return "".join(d["text"] for d in sorted(deltas, key=lambda d: d["seq"]))


@dataclass
class Harness:
    tutor: Tutor
    frames: Frames
    db: Database
    bus: Bus

    async def user(self, email: str | None = None) -> uuid.UUID:
        async with self.db.session() as session:
            user = User(email=email or f"{uuid.uuid4().hex[:10]}@example.com")
            session.add(user)
            await session.commit()
            await self.bus.subscribe(str(user.id))
            return user.id


@asynccontextmanager
async def tutor_harness(settings: Settings, publish_many: Callable[[PublishMany], PublishMany]
                        | None = None) -> AsyncIterator[Harness]:
    """`publish_many`, if given, wraps the bus's publish_many for the tutor (to force an order
    of events a real bus makes rare)."""
    frames = Frames()
    assert settings.database_url
    async with open_database(settings.database_url, 5) as db, \
            open_bus("memory://", frames.deliver, max_events=100_000) as bus, \
            open_providers(settings) as providers:
        many = publish_many(bus.publish_many) if publish_many else bus.publish_many
        tutor = Tutor(settings, db, bus.publish, providers, many)
        try:
            yield Harness(tutor, frames, db, bus)
        finally:
            await tutor.aclose(5.0)
