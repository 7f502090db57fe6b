"""Refresh tokens: single use with reuse detection, logout, a password change that revokes every
earlier token (REST and sockets), and tokens issued before migration 0003."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import pytest
from jose import jwt
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from chat_server.settings import Settings
from tests.support.ws import recv, socket, ws_url

PASSWORD = "correct horse battery"


async def _login(c: httpx.AsyncClient, email: str, password: str = PASSWORD) -> dict[str, str]:
    r = await c.post("/auth/token", data={"username": email, "password": password})
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


async def _refresh(c: httpx.AsyncClient, token: str) -> httpx.Response:
    return await c.post("/auth/refresh", json={"refresh_token": token})


async def test_refresh_rotates_and_a_reused_token_revokes_its_family(
    client: httpx.AsyncClient,
) -> None:
    await client.post("/auth/register", json={"email": "rot@example.com", "password": PASSWORD})
    first = await _login(client, "rot@example.com")
    other = await _login(client, "rot@example.com")  # another device: another family
    r = await _refresh(client, first["refresh_token"])
    assert r.status_code == 200
    second = r.json()
    assert second["refresh_token"] != first["refresh_token"]
    me = await client.get("/me", headers={"Authorization": f"Bearer {second['access_token']}"})
    assert me.status_code == 200
    third = (await _refresh(client, second["refresh_token"])).json()
    # The first one again: it was copied. Its whole family is logged out…
    r = await _refresh(client, first["refresh_token"])
    assert r.status_code == 401 and r.json()["error"] == "refresh_reused"
    r = await _refresh(client, third["refresh_token"])
    assert r.status_code == 401
    # …and nothing else: the other device's session goes on.
    assert (await _refresh(client, other["refresh_token"])).status_code == 200


async def test_logout_revokes_the_family_of_the_given_token(client: httpx.AsyncClient) -> None:
    await client.post("/auth/register", json={"email": "out@example.com", "password": PASSWORD})
    pair = await _login(client, "out@example.com")
    other = await _login(client, "out@example.com")
    newer = (await _refresh(client, pair["refresh_token"])).json()
    r = await client.post("/auth/logout", json={"refresh_token": pair["refresh_token"]})
    assert r.status_code == 204  # an already used token of the family works for logout
    assert (await _refresh(client, newer["refresh_token"])).status_code == 401
    assert (await client.post("/auth/logout", json={"refresh_token": "junk"})).status_code == 401
    assert (await _refresh(client, other["refresh_token"])).status_code == 200


async def test_password_change_revokes_every_earlier_token_and_closes_sockets(
    server: str, client: httpx.AsyncClient,
) -> None:
    await client.post("/auth/register", json={"email": "pw@example.com", "password": PASSWORD})
    old = await _login(client, "pw@example.com")
    spare = await _login(client, "pw@example.com")
    bearer = {"Authorization": f"Bearer {old['access_token']}"}
    async with socket(server, old["access_token"]) as (ws, _):
        r = await client.post("/me/password", headers=bearer,
                              json={"current_password": "wrong-password", "new_password": "x" * 10})
        assert r.status_code == 403 and r.json()["error"] == "bad_credentials"
        r = await client.post("/me/password", headers=bearer,
                              json={"current_password": PASSWORD, "new_password": "новый пароль 42"})
        assert r.status_code == 200, r.text
        new = r.json()
        with pytest.raises(ConnectionClosed) as info:  # the open socket is closed
            while True:
                await recv(ws)
        assert info.value.rcvd is not None and info.value.rcvd.code == 4401
    for token in (old["access_token"], spare["access_token"]):
        r = await client.get("/me", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 401 and "revoked" in r.json()["message"]
    for token in (old["refresh_token"], spare["refresh_token"]):
        assert (await _refresh(client, token)).status_code == 401
    async with connect(ws_url(server)) as ws:  # an old token can't open a socket either
        await ws.send(f'{{"type": "auth", "token": "{old["access_token"]}"}}')
        with pytest.raises(ConnectionClosed) as info:
            await asyncio.wait_for(ws.recv(), 10)
        assert info.value.rcvd is not None and info.value.rcvd.code == 4401
    me = await client.get("/me", headers={"Authorization": f"Bearer {new['access_token']}"})
    assert me.status_code == 200
    assert (await _refresh(client, new["refresh_token"])).status_code == 200
    async with socket(server, new["access_token"]):
        pass
    bad = await client.post("/auth/token", data={"username": "pw@example.com", "password": PASSWORD})
    assert bad.status_code == 401
    await _login(client, "pw@example.com", "новый пароль 42")


async def test_a_refresh_token_from_before_rotation_works_once(
    client: httpx.AsyncClient, settings: Settings,
) -> None:
    r = await client.post("/auth/register", json={"email": "old@example.com", "password": PASSWORD})
    uid = r.json()["id"]
    now = int(time.time())
    legacy = jwt.encode({"sub": uid, "typ": "refresh", "iat": now, "exp": now + 3600,
                         "jti": uuid.uuid4().hex}, settings.resolved_secret_key(), "HS256")
    r = await _refresh(client, legacy)
    assert r.status_code == 200
    assert (await _refresh(client, r.json()["refresh_token"])).status_code == 200
    assert (await _refresh(client, legacy)).status_code == 401
    # One logged out before it was ever used can't refresh either.
    unused = jwt.encode({"sub": uid, "typ": "refresh", "iat": now, "exp": now + 3600,
                         "jti": uuid.uuid4().hex}, settings.resolved_secret_key(), "HS256")
    assert (await client.post("/auth/logout", json={"refresh_token": unused})).status_code == 204
    assert (await _refresh(client, unused)).status_code == 401
