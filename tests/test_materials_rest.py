"""Materials over REST (list, get, delete), scoped to the caller. Rows are inserted directly:
the upload routes belong to ingestion and have their own tests."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import func, select

from chat_server.db import open_database
from chat_server.models import Chunk, Material, MaterialKind, MaterialStatus


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _user_id(client: httpx.AsyncClient, headers: dict[str, str]) -> uuid.UUID:
    return uuid.UUID((await client.get("/me", headers=headers)).json()["id"])


async def _insert(database_url: str, user_id: uuid.UUID, titles: list[str],
                  with_chunks: int = 0) -> list[uuid.UUID]:
    t0 = datetime.now(UTC)
    ids = []
    async with open_database(database_url, 1) as db, db.session() as s:
        for i, title in enumerate(titles):
            m = Material(user_id=user_id, kind=MaterialKind.pdf, title=title, source=f"{title}.pdf",
                         status=MaterialStatus.ready, stage="done", progress_done=3,
                         progress_total=3, pages=3, chunk_count=with_chunks,
                         content_hash=hashlib.sha256(title.encode()).hexdigest(),
                         created_at=t0 + timedelta(seconds=i))
            s.add(m)
            await s.flush()
            for n in range(with_chunks):
                s.add(Chunk(material_id=m.id, user_id=user_id, idx=n, text=f"{title} part {n}",
                            page_start=n + 1, page_end=n + 1, embedding=[0.0] * 384))
            ids.append(m.id)
        await s.commit()
    return ids


@pytest.fixture
async def alice_bob(client: httpx.AsyncClient, register_user):  # type: ignore[no-untyped-def]
    alice = _auth(await register_user(client, "alice@example.com"))
    bob = _auth(await register_user(client, "bob@example.com"))
    return alice, await _user_id(client, alice), bob, await _user_id(client, bob)


async def test_list_and_get(client: httpx.AsyncClient, alice_bob, database_url: str) -> None:  # type: ignore[no-untyped-def]
    alice, alice_id, _, _ = alice_bob
    ids = await _insert(database_url, alice_id, ["Линейная алгебра", "Calculus", "Physics"])
    r = await client.get("/materials", headers=alice)
    assert r.status_code == 200
    assert [m["id"] for m in r.json()] == [str(i) for i in ids[::-1]]  # newest first

    r = await client.get(f"/materials/{ids[0]}", headers=alice)
    assert r.status_code == 200
    m = r.json()
    assert m["title"] == "Линейная алгебра" and m["source"] == "Линейная алгебра.pdf"
    assert (m["kind"], m["status"], m["pages"], m["progress_done"], m["progress_total"]) == (
        "pdf", "ready", 3, 3, 3)
    # Internal fields never leave the server.
    assert "file_path" not in m and "content_hash" not in m and "user_id" not in m


async def test_pagination_bounds(client: httpx.AsyncClient, alice_bob, database_url: str) -> None:  # type: ignore[no-untyped-def]
    alice, alice_id, _, _ = alice_bob
    ids = await _insert(database_url, alice_id, [f"m{i}" for i in range(4)])
    page1 = (await client.get("/materials", params={"limit": 3}, headers=alice)).json()
    page2 = (await client.get("/materials", params={"limit": 3, "offset": 3}, headers=alice)).json()
    assert [m["id"] for m in page1 + page2] == [str(i) for i in ids[::-1]]
    assert len((await client.get("/materials", params={"limit": 500}, headers=alice)).json()) == 4
    for params in ({"limit": 0}, {"limit": 501}, {"offset": -1}):
        r = await client.get("/materials", params=params, headers=alice)
        assert r.status_code == 422 and r.json()["error"] == "invalid_request", params


async def test_delete_removes_the_material_and_its_chunks(
    client: httpx.AsyncClient, alice_bob, database_url: str  # type: ignore[no-untyped-def]
) -> None:
    alice, alice_id, _, _ = alice_bob
    keep, drop = await _insert(database_url, alice_id, ["keep", "drop"], with_chunks=2)
    r = await client.delete(f"/materials/{drop}", headers=alice)
    assert r.status_code == 204 and r.content == b""
    assert (await client.get(f"/materials/{drop}", headers=alice)).status_code == 404
    assert (await client.delete(f"/materials/{drop}", headers=alice)).status_code == 404
    assert [m["id"] for m in (await client.get("/materials", headers=alice)).json()] == [str(keep)]
    async with open_database(database_url, 1) as db, db.session() as s:
        counts = dict((await s.execute(
            select(Chunk.material_id, func.count()).group_by(Chunk.material_id))).all())
    assert counts == {keep: 2}


async def test_another_users_material_is_404_like_a_missing_one(
    client: httpx.AsyncClient, alice_bob, database_url: str  # type: ignore[no-untyped-def]
) -> None:
    alice, alice_id, bob, _ = alice_bob
    (mid,) = await _insert(database_url, alice_id, ["private notes"], with_chunks=1)
    missing = uuid.uuid4()
    assert (await client.get("/materials", headers=bob)).json() == []
    for method in ("GET", "DELETE"):
        theirs = await client.request(method, f"/materials/{mid}", headers=bob)
        nobody = await client.request(method, f"/materials/{missing}", headers=bob)
        assert theirs.status_code == nobody.status_code == 404, method
        assert theirs.json() == nobody.json() == {"error": "not_found", "message": "Material not found."}
    # Bob's DELETE did nothing.
    r = await client.get(f"/materials/{mid}", headers=alice)
    assert r.status_code == 200 and r.json()["title"] == "private notes"


async def test_bad_ids_and_missing_auth(client: httpx.AsyncClient, alice_bob) -> None:  # type: ignore[no-untyped-def]
    alice, *_ = alice_bob
    for method in ("GET", "DELETE"):
        r = await client.request(method, "/materials/12345", headers=alice)
        assert r.status_code == 422, method
        assert r.json()["error"] == "invalid_request" and "material_id" in r.json()["message"]
    for method, path in (("GET", "/materials"), ("GET", f"/materials/{uuid.uuid4()}"),
                         ("DELETE", f"/materials/{uuid.uuid4()}")):
        r = await client.request(method, path)
        assert r.status_code == 401 and r.json()["error"] == "unauthorized"


def test_the_upload_routes_describe_their_bodies_in_openapi(settings) -> None:  # type: ignore[no-untyped-def]
    from chat_server.app import create_app

    paths = create_app(settings).openapi()["paths"]

    def body_schema(path: str, media: str) -> dict[str, object]:
        return paths[path]["post"]["requestBody"]["content"][media]["schema"]  # type: ignore[no-any-return]

    assert body_schema("/materials/youtube", "application/json") == {"$ref": "#/components/schemas/YouTubeIn"}
    assert body_schema("/materials/text", "application/json") == {"$ref": "#/components/schemas/TextIn"}
    upload = body_schema("/materials", "multipart/form-data")
    assert upload["required"] == ["file"] and "title" in upload["properties"]  # type: ignore[index,operator]
