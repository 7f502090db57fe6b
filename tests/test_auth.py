"""Registration, login, refresh, embed tokens, and every way a token can be bad."""

from __future__ import annotations

import base64
import json
import time

import httpx
from jose import jwt

from chat_server.settings import Settings


async def test_register_login_me(client: httpx.AsyncClient, register_user) -> None:  # type: ignore[no-untyped-def]
    token = await register_user(client, "Ada@Example.com")
    r = await client.get("/me", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200
    assert r.json()["email"] == "ada@example.com"


async def test_duplicate_email_is_409(client: httpx.AsyncClient, register_user) -> None:  # type: ignore[no-untyped-def]
    await register_user(client, "dup@example.com")
    r = await client.post("/auth/register", json={"email": "DUP@example.com", "password": "x" * 10})
    assert r.status_code == 409
    assert r.json()["error"] == "email_taken"


async def test_wrong_password_and_unknown_email_look_the_same(
    client: httpx.AsyncClient, register_user  # type: ignore[no-untyped-def]
) -> None:
    await register_user(client, "bob@example.com")
    wrong = await client.post("/auth/token", data={"username": "bob@example.com", "password": "nope-nope"})
    unknown = await client.post("/auth/token", data={"username": "who@example.com", "password": "nope-nope"})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()


async def test_refresh_gives_new_pair_and_access_token_cannot_refresh(
    client: httpx.AsyncClient,
) -> None:
    await client.post("/auth/register", json={"email": "r@example.com", "password": "password123"})
    pair = (await client.post("/auth/token", data={"username": "r@example.com", "password": "password123"})).json()
    r = await client.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert r.status_code == 200
    assert (await client.get("/me", headers={"Authorization": f"Bearer {r.json()['access_token']}"})).status_code == 200
    r = await client.post("/auth/refresh", json={"refresh_token": pair["access_token"]})
    assert r.status_code == 401
    # A refresh token is not an access token either.
    r = await client.get("/me", headers={"Authorization": f"Bearer {pair['refresh_token']}"})
    assert r.status_code == 401


def _b64(obj: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


async def test_bad_tokens_are_401(client: httpx.AsyncClient, settings: Settings) -> None:
    r = await client.post("/auth/register", json={"email": "t@example.com", "password": "password123"})
    uid = r.json()["id"]
    now = int(time.time())
    key = settings.resolved_secret_key()
    bad = [
        "not-a-jwt",
        "a.b.c",
        jwt.encode({"sub": uid, "typ": "access", "iat": now - 100, "exp": now - 10}, key, "HS256"),
        jwt.encode({"sub": uid, "typ": "access", "iat": now, "exp": now + 60}, "forged-key", "HS256"),
        _b64({"alg": "none", "typ": "JWT"}) + "." + _b64({"sub": uid, "typ": "access", "exp": now + 60}) + ".",
        jwt.encode({"sub": uid, "typ": "access", "iat": now}, key, "HS256"),  # no exp
        jwt.encode({"sub": "not-a-uuid", "typ": "access", "exp": now + 60}, key, "HS256"),
    ]
    for token in bad:
        r = await client.get("/me", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 401, token
        assert r.json()["error"] == "unauthorized"
    assert (await client.get("/me")).status_code == 401


async def test_embed_token_creates_user_once(client: httpx.AsyncClient, settings: Settings) -> None:
    assert settings.embed_secret
    now = int(time.time())
    token = jwt.encode({"sub": "host-user-42", "name": "Host User", "iat": now, "exp": now + 300},
                       settings.embed_secret, "HS256")
    first = await client.get("/me", headers={"Authorization": f"Bearer {token}"})
    second = await client.get("/me", headers={"Authorization": f"Bearer {token}"})
    assert first.status_code == second.status_code == 200
    assert first.json()["id"] == second.json()["id"]
    assert first.json()["display_name"] == "Host User"
    forged = jwt.encode({"sub": "host-user-42", "exp": now + 300}, "wrong-secret", "HS256")
    assert (await client.get("/me", headers={"Authorization": f"Bearer {forged}"})).status_code == 401


async def test_bad_bodies_are_4xx_json(client: httpx.AsyncClient, settings: Settings) -> None:
    r = await client.post("/auth/register", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"] == "invalid_request"
    r = await client.post("/auth/register", json={"email": "not-an-email", "password": "password123"})
    assert r.status_code == 422 and "email" in r.json()["message"]
    r = await client.post("/auth/register", json={"email": "a@example.com", "password": "short"})
    assert r.status_code == 422
    big = b'{"email": "a@example.com", "password": "' + b"x" * (settings.max_json_body_bytes + 10) + b'"}'
    r = await client.post("/auth/register", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"] == "too_large"
    r = await client.post("/auth/token", data={"username": "x"})
    assert r.status_code == 422
