"""Conversations over REST: CRUD, pagination bounds, and strict per-user scoping."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from chat_server.db import open_database
from chat_server.models import Conversation, Message, MessageStatus, Role


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def two_users(client: httpx.AsyncClient, register_user) -> tuple[dict[str, str], dict[str, str]]:  # type: ignore[no-untyped-def]
    alice = await register_user(client, "alice@example.com")
    bob = await register_user(client, "bob@example.com")
    return _auth(alice), _auth(bob)


async def _user_id(client: httpx.AsyncClient, headers: dict[str, str]) -> uuid.UUID:
    return uuid.UUID((await client.get("/me", headers=headers)).json()["id"])


async def test_create_get_patch_delete(client: httpx.AsyncClient, two_users) -> None:  # type: ignore[no-untyped-def]
    alice, _ = two_users
    r = await client.post("/conversations", json={"title": "Производные и интегралы"}, headers=alice)
    assert r.status_code == 201, r.text
    conv = r.json()
    assert conv["title"] == "Производные и интегралы" and conv["socratic"] is False

    r = await client.post("/conversations", json={}, headers=alice)
    assert r.status_code == 201 and r.json()["title"] == "New conversation"

    r = await client.get(f"/conversations/{conv['id']}", headers=alice)
    assert r.status_code == 200
    assert r.json()["messages"] == [] and r.json()["title"] == "Производные и интегралы"

    r = await client.patch(f"/conversations/{conv['id']}", json={"socratic": True}, headers=alice)
    assert r.status_code == 200
    assert r.json()["socratic"] is True and r.json()["title"] == "Производные и интегралы"
    r = await client.patch(f"/conversations/{conv['id']}", json={"title": "Limits"}, headers=alice)
    assert r.json()["title"] == "Limits" and r.json()["socratic"] is True
    r = await client.patch(f"/conversations/{conv['id']}", json={"title": ""}, headers=alice)
    assert r.status_code == 422 and r.json()["error"] == "invalid_request"

    r = await client.delete(f"/conversations/{conv['id']}", headers=alice)
    assert r.status_code == 204 and r.content == b""
    r = await client.get(f"/conversations/{conv['id']}", headers=alice)
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    r = await client.delete(f"/conversations/{conv['id']}", headers=alice)
    assert r.status_code == 404


async def test_messages_come_oldest_first_and_go_with_the_conversation(
    client: httpx.AsyncClient, two_users, database_url: str  # type: ignore[no-untyped-def]
) -> None:
    alice, _ = two_users
    uid = await _user_id(client, alice)
    conv_id = uuid.UUID((await client.post("/conversations", json={}, headers=alice)).json()["id"])
    t0 = datetime.now(UTC)
    async with open_database(database_url, 1) as db, db.session() as s:
        question = Message(conversation_id=conv_id, user_id=uid, role=Role.user,
                           content="Что такое производная?", created_at=t0)
        s.add(question)
        await s.flush()
        s.add(Message(conversation_id=conv_id, user_id=uid, role=Role.assistant,
                      content="A derivative is a rate of change [1].", status=MessageStatus.cancelled,
                      reply_to=question.id, citations=[{"n": 1, "title": "Calculus"}],
                      usage={"input_tokens": 12, "output_tokens": 9},
                      # The same instant (one transaction's now()): the question still comes first.
                      created_at=t0))
        await s.commit()

    r = await client.get(f"/conversations/{conv_id}", headers=alice)
    messages = r.json()["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert messages[0]["content"] == "Что такое производная?"
    assert messages[1]["status"] == "cancelled"
    assert messages[1]["reply_to"] == messages[0]["id"]
    assert messages[1]["citations"] == [{"n": 1, "title": "Calculus"}]
    assert messages[1]["usage"] == {"input_tokens": 12, "output_tokens": 9}

    assert (await client.delete(f"/conversations/{conv_id}", headers=alice)).status_code == 204
    async with open_database(database_url, 1) as db, db.session() as s:
        left = await s.scalar(select(func.count()).select_from(Message)
                              .where(Message.conversation_id == conv_id))
    assert left == 0


async def test_list_is_newest_first_and_paginated(client: httpx.AsyncClient, two_users) -> None:  # type: ignore[no-untyped-def]
    alice, _ = two_users
    ids = []
    for i in range(5):
        r = await client.post("/conversations", json={"title": f"c{i}"}, headers=alice)
        ids.append(r.json()["id"])
    r = await client.get("/conversations", headers=alice)
    assert [c["id"] for c in r.json()] == ids[::-1]
    page1 = (await client.get("/conversations", params={"limit": 2}, headers=alice)).json()
    page2 = (await client.get("/conversations", params={"limit": 2, "offset": 2}, headers=alice)).json()
    page3 = (await client.get("/conversations", params={"limit": 2, "offset": 4}, headers=alice)).json()
    assert [c["id"] for c in page1 + page2 + page3] == ids[::-1]
    assert len(page3) == 1
    assert (await client.get("/conversations", params={"offset": 99}, headers=alice)).json() == []
    assert len((await client.get("/conversations", params={"limit": 200}, headers=alice)).json()) == 5

    for params in ({"limit": 0}, {"limit": 201}, {"limit": -1}, {"offset": -1}, {"limit": "ten"}):
        r = await client.get("/conversations", params=params, headers=alice)
        assert r.status_code == 422, params
        assert r.json()["error"] == "invalid_request"
        assert "problems" in r.json()


async def test_another_users_conversation_is_404_like_a_missing_one(
    client: httpx.AsyncClient, two_users  # type: ignore[no-untyped-def]
) -> None:
    alice, bob = two_users
    conv_id = (await client.post("/conversations", json={"title": "mine"}, headers=alice)).json()["id"]
    missing = str(uuid.uuid4())

    assert (await client.get("/conversations", headers=bob)).json() == []
    cases: list[tuple[str, dict[str, Any]]] = [
        ("GET", {}), ("PATCH", {"json": {"title": "stolen"}}), ("DELETE", {})]
    for method, kwargs in cases:
        theirs = await client.request(method, f"/conversations/{conv_id}", headers=bob, **kwargs)
        nobody = await client.request(method, f"/conversations/{missing}", headers=bob, **kwargs)
        assert theirs.status_code == nobody.status_code == 404, method
        assert theirs.json() == nobody.json() == {"error": "not_found", "message": "Conversation not found."}

    r = await client.get(f"/conversations/{conv_id}", headers=alice)
    assert r.status_code == 200 and r.json()["title"] == "mine"


async def test_bad_ids_and_missing_auth(client: httpx.AsyncClient, two_users) -> None:  # type: ignore[no-untyped-def]
    alice, _ = two_users
    for method in ("GET", "PATCH", "DELETE"):
        r = await client.request(method, "/conversations/not-a-uuid", headers=alice,
                                 json={"title": "x"} if method == "PATCH" else None)
        assert r.status_code == 422, method
        assert r.json()["error"] == "invalid_request"
        assert "conversation_id" in r.json()["message"]
    r = await client.post("/conversations", json={"title": "x" * 201}, headers=alice)
    assert r.status_code == 422
    for method, path in (("GET", "/conversations"), ("POST", "/conversations"),
                         ("GET", f"/conversations/{uuid.uuid4()}")):
        r = await client.request(method, path, json={} if method == "POST" else None)
        assert r.status_code == 401 and r.json()["error"] == "unauthorized"


async def test_conversation_rows_stay_with_their_owner(
    client: httpx.AsyncClient, two_users, database_url: str  # type: ignore[no-untyped-def]
) -> None:
    alice, bob = two_users
    await client.post("/conversations", json={"title": "a1"}, headers=alice)
    await client.post("/conversations", json={"title": "b1"}, headers=bob)
    await client.post("/conversations", json={"title": "b2"}, headers=bob)
    assert [c["title"] for c in (await client.get("/conversations", headers=alice)).json()] == ["a1"]
    assert {c["title"] for c in (await client.get("/conversations", headers=bob)).json()} == {"b1", "b2"}
    bob_id = await _user_id(client, bob)
    async with open_database(database_url, 1) as db, db.session() as s:
        owners = (await s.execute(select(Conversation.title, Conversation.user_id))).all()
    assert {t for t, u in owners if u == bob_id} == {"b1", "b2"}
