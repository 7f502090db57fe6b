"""Socket authentication on its lean path (one statement per connect): the same rules as REST —
embed users created on first sight (once, also when their first sockets race), unknown users and
revoked generations refused with 4401, auth.refresh checked the same way."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import httpx
import pytest
from jose import jwt
from sqlalchemy import func, select, update
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from chat_server.app import create_app
from chat_server.auth import create_token
from chat_server.models import User
from chat_server.settings import Settings
from tests.support.services import serve_app
from tests.support.ws import new_user, recv, socket, ws_url


async def _refused(base: str, token: str) -> int:
    async with connect(ws_url(base)) as ws:
        await ws.send(json.dumps({"type": "auth", "token": token}))
        with pytest.raises(ConnectionClosed) as info:
            await asyncio.wait_for(ws.recv(), 10)
    assert info.value.rcvd is not None
    return info.value.rcvd.code


async def test_socket_auth_follows_the_rules_of_rest(settings: Settings) -> None:
    assert settings.embed_secret
    app = create_app(settings)
    async with serve_app(app) as base:
        host_user = f"host-{uuid.uuid4().hex[:8]}"
        embed = jwt.encode({"sub": host_user, "name": "Аня", "exp": int(time.time()) + 300},
                           settings.embed_secret, "HS256")

        async def welcome() -> dict[str, object]:
            async with socket(base, embed) as (_, w):
                return w

        welcomes = await asyncio.gather(*(welcome() for _ in range(4)))  # first sight, racing
        welcomes.append(await welcome())
        assert len({w["user_id"] for w in welcomes}) == 1
        async with app.state.db.session() as session:
            rows = await session.scalar(select(func.count()).where(User.external_id == f"embed:{host_user}"))
            assert rows == 1
        async with httpx.AsyncClient(base_url=base) as c:
            me = await c.get("/me", headers={"Authorization": f"Bearer {embed}"})
            assert me.json()["id"] == welcomes[0]["user_id"] and me.json()["display_name"] == "Аня"
        # A well-signed access token of a user that does not exist; a revoked generation.
        assert await _refused(base, create_token(settings, uuid.uuid4(), "access")) == 4401
        uid, token = await new_user(base)
        async with socket(base, token) as (ws, _):
            async with app.state.db.session() as session:
                await session.execute(update(User).where(User.id == uuid.UUID(uid)).values(token_generation=1))
                await session.commit()
            await ws.send(json.dumps({"type": "auth.refresh", "token": token, "id": "r1"}))
            err = await recv(ws)
            assert err["code"] == "auth_failed" and err["id"] == "r1" and "revoked" in err["message"]
            fresh = create_token(settings, uuid.UUID(uid), "access", generation=1)
            await ws.send(json.dumps({"type": "auth.refresh", "token": fresh, "id": "r2"}))
            assert (await recv(ws))["type"] == "auth.refreshed"
        assert await _refused(base, token) == 4401
        async with socket(base, create_token(settings, uuid.UUID(uid), "access", generation=1)) as (_, w):
            assert w["user_id"] == uid
