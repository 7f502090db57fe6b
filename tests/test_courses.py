"""Courses end to end on one real server: roles, courses, invites, embed-token enrollment,
the tutor in a course (scoped retrieval, set-up, unenrolled mid-reply), the access matrix over
every course route and the socket, the audit log, account export and deletion."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from jose import jwt

from chat_server import retrieval
from chat_server.app import create_app
from chat_server.db import libpq_url
from chat_server.settings import Settings
from tests.support.fake_providers import FakeProvider, openai_stream
from tests.support.services import serve_app
from tests.support.ws import recv, socket, until

PASSWORD = "password-123"
COURSE_TEXT = ("The mitochondrion is the powerhouse of the cell. Mitochondria produce ATP "
               "through oxidative phosphorylation on their inner membrane cristae.")
OTHER_TEXT = ("Basalt is an igneous rock formed from rapidly cooling lava. Basalt columns form "
              "when thick lava flows contract while cooling.")
OWN_TEXT = ("My own notes: the mitochondrion has its own circular DNA, inherited from the "
            "mother.")
SLOW = [f"part{i} " for i in range(40)]


class World:
    def __init__(self, base: str, client: httpx.AsyncClient, db: asyncpg.Connection,
                 settings: Settings, fake: FakeProvider) -> None:
        self.base, self.client, self.db, self.settings, self.fake = (
            base, client, db, settings, fake)
        self.tokens: dict[str, str] = {}
        self.ids: dict[str, str] = {}

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    async def user(self, who: str, role: str = "learner") -> None:
        email = f"{who}@example.com"
        r = await self.client.post("/auth/register", json={"email": email, "password": PASSWORD})
        assert r.status_code == 201, r.text
        if role != "learner":
            await self.db.execute("update users set role = $1 where email = $2", role, email)
        r = await self.client.post("/auth/token", data={"username": email, "password": PASSWORD})
        assert r.status_code == 200, r.text
        self.tokens[who] = r.json()["access_token"]
        self.ids[who] = (await self.client.get("/me", headers=self.auth(who))).json()["id"]

    async def call(self, who: str, method: str, path: str, **kw: Any) -> httpx.Response:
        return await self.client.request(method, path, headers=self.auth(who), **kw)

    async def text(self, who: str, title: str, body: str, course: str | None = None) -> str:
        params = {"course_id": course} if course else {}
        r = await self.call(who, "POST", "/materials/text", params=params,
                            json={"title": title, "text": body})
        assert r.status_code == 202, r.text
        mid = str(r.json()["id"])

        async def ready() -> bool:
            return bool(await self.db.fetchval(
                "select status = 'ready' from materials where id = $1", uuid.UUID(mid)))

        await until(ready, 60, 0.1)
        return mid

    async def audit(self, action: str) -> list[asyncpg.Record]:
        return await self.db.fetch("select * from audit_log where action = $1 order by id",
                                   action)


@pytest.fixture
async def world(settings: Settings) -> AsyncIterator[World]:
    # Two providers: offline (the default) and a loopback OpenAI-compatible one a course may
    # choose, streaming slowly enough to unenroll a learner in the middle of its reply.
    async with FakeProvider(openai_stream(SLOW, delay_s=0.03)) as fake:
        settings = settings.model_copy(update={
            "llm_provider": "offline", "llm_fallback": ["openai"], "openai_api_key": "sk-test",
            "openai_base_url": fake.base_url + "/v1"})
        async with serve_app(create_app(settings)) as base, \
                httpx.AsyncClient(base_url=base, timeout=30) as client:
            db = await asyncpg.connect(libpq_url(settings.database_url or ""))
            try:
                yield World(base, client, db, settings, fake)
            finally:
                await db.close()


async def _ask(ws: Any, text: str, **fields: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """chat.send; the ack (or error) and the frames up to the reply's end."""
    cid = uuid.uuid4().hex
    await ws.send(json.dumps({"type": "chat.send", "id": cid, "text": text, **fields}))
    frames: list[dict[str, Any]] = []
    ack: dict[str, Any] | None = None
    async with asyncio.timeout(30):
        while True:
            frame = await recv(ws)
            frames.append(frame)
            if frame["type"] == "error":
                return frame, frames
            if frame["type"] == "chat.ack" and frame["id"] == cid:
                ack = frame
            if frame["type"] == "reply.end" and ack and frame["reply_id"] == ack["reply_id"]:
                return ack, frames


def _cited(frames: list[dict[str, Any]]) -> set[str]:
    return {c["material_id"] for f in frames if f["type"] == "reply.citations"
            for c in f["citations"]}


async def test_courses_access_matrix_tutor_and_unenrolling_mid_reply(world: World) -> None:
    w = world
    for who, role in (("owner", "instructor"), ("other", "instructor"), ("admin", "admin"),
                      ("enrolled", "learner"), ("outsider", "learner")):
        await w.user(who, role)

    # Roles: a learner can't create a course (403, no course named); instructors can.
    r = await w.call("enrolled", "POST", "/courses", json={"title": "Nope"})
    assert r.status_code == 403 and r.json()["error"] == "role_required"
    r = await w.call("owner", "POST", "/courses", json={"title": "Cell biology",
                                                        "description": "Cells", "language": "en"})
    assert r.status_code == 201, r.text
    course = r.json()
    cid = course["id"]
    assert course["my_role"] == "owner" and course["tutor"]["socratic"] is True
    r = await w.call("other", "POST", "/courses", json={"title": "Geology"})
    other_cid = r.json()["id"]

    # The tutor set-up: instructions, not Socratic, the OpenAI-compatible provider and a model.
    r = await w.call("owner", "PATCH", f"/courses/{cid}", json={"provider": "anthropic"})
    assert r.status_code == 422 and "not configured" in r.json()["message"]
    r = await w.call("owner", "PATCH", f"/courses/{cid}", json={
        "instructions": "Always mention the cristae.", "socratic": False,
        "allow_own_materials": False, "provider": "openai", "model": "gpt-course"})
    assert r.status_code == 200 and r.json()["tutor"]["instructions"].startswith("Always")

    # Course materials: uploaded into the course (progress goes to the instructor's socket).
    async with socket(w.base, w.tokens["owner"]) as (ows, _):
        course_mid = await w.text("owner", "Mitochondria", COURSE_TEXT, course=cid)
        progress: list[dict[str, Any]] = []
        async with asyncio.timeout(10):
            while not any(f.get("type") == "material.ready" for f in progress):
                progress.append(await recv(ows))
        assert {f.get("material_id") for f in progress if "material_id" in f} == {course_mid}
    await w.text("other", "Basalt", OTHER_TEXT, course=other_cid)
    own_mid = await w.text("enrolled", "My notes", OWN_TEXT)

    # Enrollment by invite code.
    r = await w.call("owner", "POST", f"/courses/{cid}/invites", json={"max_seats": 5})
    assert r.status_code == 201
    invite = r.json()
    r = await w.call("enrolled", "POST", "/enroll/preview", json={"code": invite["code"]})
    assert r.json()["share_conversations"] is False and r.json()["title"] == "Cell biology"
    r = await w.call("enrolled", "POST", "/enroll", json={"code": invite["code"]})
    assert r.status_code == 201, r.text
    assert (await w.call("enrolled", "POST", "/enroll", json={"code": invite["code"]})
            ).status_code == 200  # again: the same enrollment, no second one

    # --- the REST access matrix: every course route, every kind of caller -----------------
    lid = w.ids["enrolled"]
    routes: list[tuple[str, str, dict[str, Any] | None]] = [
        ("GET", f"/courses/{cid}", None),
        ("GET", f"/materials?course_id={cid}", None),
        ("GET", f"/materials/{course_mid}", None),
        ("PATCH", f"/courses/{cid}", {"description": "Cells and more"}),
        ("POST", f"/materials/text?course_id={cid}", {"title": "x", "text": "y"}),
        ("GET", f"/courses/{cid}/invites", None),
        ("POST", f"/courses/{cid}/invites", {}),
        ("GET", f"/courses/{cid}/enrollments", None),
        ("GET", f"/courses/{cid}/stats", None),
        ("DELETE", f"/courses/{cid}/invites/{uuid.uuid4()}", None),
        ("DELETE", f"/courses/{cid}/enrollments/{uuid.uuid4()}", None),
        ("DELETE", f"/materials/{uuid.uuid4()}", None),
        ("GET", "/admin/audit", None),
    ]
    view = {0, 1, 2}
    teach = set(range(3, 9))
    # Expected statuses: 2xx where allowed; 404 for a course (or its material) the caller may
    # not see; 403 for the admin-only route. Routes 9-11 name ids that don't exist: 404 even
    # for who may teach (after the course check passed).
    ok = {"GET": 200, "PATCH": 200, "POST": 201, "DELETE": 204}
    expected: dict[str, list[int]] = {}
    for who in ("owner", "admin", "enrolled", "outsider", "other"):
        row = []
        for i, (method, _, _) in enumerate(routes):
            if i == 12:
                row.append(200 if who == "admin" else 403)
            elif i >= 9:
                row.append(404)
            elif (i in view and who in ("owner", "admin", "enrolled")) or (
                    i in teach and who in ("owner", "admin")):
                row.append(202 if i == 4 else ok[method])
            else:
                row.append(404)
        expected[who] = row
    for who, row in expected.items():
        got = []
        for method, path, body in routes:
            r = await w.call(who, method, path, json=body)
            got.append(r.status_code)
            if r.status_code >= 400:
                assert set(r.json()) >= {"error", "message"}, r.text
        assert got == row, (who, got)
    # A learner's own material stays theirs: invisible to the course's instructor.
    assert (await w.call("owner", "GET", f"/materials/{own_mid}")).status_code == 404
    mine = {m["id"] for m in (await w.call("enrolled", "GET", "/materials")).json()}
    assert mine == {own_mid}  # the course's materials are listed with ?course_id= only
    assert {c["id"] for c in (await w.call("enrolled", "GET", "/courses")).json()} == {cid}
    assert (await w.call("enrolled", "GET", f"/courses/{cid}")).json()["tutor"] is None

    # --- retrieval, asserted on the SQL results ------------------------------------------
    pool = await asyncpg.create_pool(libpq_url(w.settings.database_url or ""), min_size=1,
                                     max_size=2)
    try:
        async def chunks(who: str, scope: retrieval.Scope) -> set[str]:
            hits = await retrieval.retrieve(pool, w.settings, uuid.UUID(w.ids[who]),
                                            "mitochondrion basalt lava ATP", scope=scope, k=20)
            return {str(h.material_id) for h in hits}

        course = retrieval.Scope(uuid.UUID(cid), own=False)
        # The course's materials: the reader, and the two "y" texts the matrix added.
        in_course = {str(r["id"]) for r in await w.db.fetch(
            "select id from materials where course_id = $1", uuid.UUID(cid))}
        assert len(in_course) == 3
        found = await chunks("enrolled", course)
        assert course_mid in found and found <= in_course
        found = await chunks("enrolled", retrieval.Scope(uuid.UUID(cid), own=True))
        assert {course_mid, own_mid} <= found <= in_course | {own_mid}
        assert await chunks("enrolled", retrieval.OWN) == {own_mid}
        for who in ("outsider", "other", "admin"):
            assert await chunks(who, course) == set(), who
        assert await chunks("enrolled", retrieval.Scope(uuid.UUID(other_cid), own=False)) == set()
        assert await chunks("owner", retrieval.OWN) == set()  # course materials aren't theirs
        # The same rule in the raw statement: every chunk id the SQL returns for a course the
        # learner is not in is none.
        async with pool.acquire() as conn, conn.transaction():
            ids = await retrieval.keyword_search(conn, uuid.UUID(w.ids["outsider"]), "basalt lava",
                                                 50, scope=retrieval.Scope(uuid.UUID(other_cid)))
        assert ids == []
    finally:
        await pool.close()

    # --- the socket: chat.send with course_id ---------------------------------------------
    for who in ("outsider", "other", "admin"):
        async with socket(w.base, w.tokens[who]) as (ws, _):
            err, _ = await _ask(ws, "What is the powerhouse of the cell?", course_id=cid)
            assert err["type"] == "error" and err["code"] == "course_not_found", (who, err)
    async with socket(w.base, w.tokens["enrolled"]) as (ws, _):
        ack, frames = await _ask(ws, "What is the powerhouse of the cell?", course_id=cid)
        assert ack["type"] == "chat.ack", ack
        # The course chose the OpenAI-compatible provider: its request carries the set-up.
        request = w.fake.requests[-1].body
        assert request["model"] == "gpt-course"
        assert "Always mention the cristae." in request["messages"][0]["content"]
        assert "Socratic mode is on" not in request["messages"][0]["content"]
        assert "powerhouse" in request["messages"][-1]["content"]
        assert "circular DNA" not in request["messages"][-1]["content"]  # own: not allowed
        conv = ack["conversation_id"]
        row = await w.db.fetchrow("select course_id, socratic from conversations where id = $1",
                                  uuid.UUID(conv))
        assert str(row["course_id"]) == cid and row["socratic"] is False
        # The conversation is private: the instructor sees aggregates, never the text (the
        # learner enrolled while the course did not share conversations).
        assert (await w.call("owner", "GET", f"/conversations/{conv}")).status_code == 404
        await w.call("owner", "PATCH", f"/courses/{cid}", json={"share_conversations": True})
        r = await w.call("owner", "GET", f"/courses/{cid}/conversations")
        assert r.status_code == 200 and r.json() == []
        assert (await w.call("outsider", "GET", f"/courses/{cid}/conversations")
                ).status_code == 404
        stats = (await w.call("owner", "GET", f"/courses/{cid}/stats")).json()
        assert stats["questions"] == 1 and stats["learners"] == 1
        assert "powerhouse" not in json.dumps(stats)

        # Unenrolled in the middle of a reply: it stops at once, and the next send is refused.
        cid2 = uuid.uuid4().hex
        await ws.send(json.dumps({"type": "chat.send", "id": cid2, "text": "Tell me more",
                                  "conversation_id": conv}))
        async with asyncio.timeout(10):
            while (await recv(ws))["type"] != "reply.delta":
                pass
        r = await w.call("owner", "DELETE", f"/courses/{cid}/enrollments/{lid}")
        assert r.status_code == 204
        seen: list[dict[str, Any]] = []
        async with asyncio.timeout(5):
            while not seen or seen[-1]["type"] != "reply.end":
                seen.append(await recv(ws))
        kinds = {f["type"]: f for f in seen}
        assert kinds["reply.error"]["code"] == "course_access_revoked"
        assert kinds["reply.end"]["finish_reason"] == "cancelled"
        assert "course.left" in kinds
        deltas = "".join(f["text"] for f in seen if f["type"] == "reply.delta")
        assert deltas.count("part") < 30  # the provider's 40 parts were not all streamed
        err, _ = await _ask(ws, "And now?", conversation_id=conv)
        assert err["code"] == "course_not_found"
        err, _ = await _ask(ws, "And now?", course_id=cid)
        assert err["code"] == "course_not_found"
    status = await w.db.fetchval("select status::text from messages where conversation_id = $1 "
                                 "and role = 'assistant' order by created_at desc limit 1",
                                 uuid.UUID(conv))
    assert status == "cancelled"
    # After leaving, the course is gone for them: 404 on every route that showed it.
    for method, path, _ in routes[:3]:
        assert (await w.call("enrolled", method, path)).status_code == 404


async def test_invites_expire_are_revocable_and_limit_seats(world: World) -> None:
    w = world
    await w.user("teacher", "instructor")
    for who in ("a", "b", "c"):
        await w.user(who)
    cid = (await w.call("teacher", "POST", "/courses", json={"title": "T"})).json()["id"]

    one_seat = (await w.call("teacher", "POST", f"/courses/{cid}/invites",
                             json={"max_seats": 1})).json()
    assert (await w.call("a", "POST", "/enroll", json={"code": one_seat["code"]})
            ).status_code == 201
    r = await w.call("b", "POST", "/enroll", json={"code": one_seat["code"]})
    assert r.status_code == 409 and r.json()["error"] == "no_seats"

    revoked = (await w.call("teacher", "POST", f"/courses/{cid}/invites", json={})).json()
    assert (await w.call("teacher", "DELETE", f"/courses/{cid}/invites/{revoked['id']}")
            ).status_code == 204
    r = await w.call("b", "POST", "/enroll", json={"code": revoked["code"]})
    assert r.status_code == 404 and r.json()["error"] == "invite_invalid"

    expiring = (await w.call("teacher", "POST", f"/courses/{cid}/invites",
                             json={"expires_in_s": 60})).json()
    await w.db.execute("update course_invites set expires_at = now() - interval '1 second' "
                       "where id = $1", uuid.UUID(expiring["id"]))
    for path in ("/enroll", "/enroll/preview"):
        r = await w.call("c", "POST", path, json={"code": expiring["code"]})
        assert r.status_code == 404, path

    # Seats under a race: 2 seats, 3 learners at once → exactly 2 enrolled.
    two = (await w.call("teacher", "POST", f"/courses/{cid}/invites",
                        json={"max_seats": 2})).json()
    await w.user("d")
    results = await asyncio.gather(*(w.call(x, "POST", "/enroll", json={"code": two["code"]})
                                     for x in ("b", "c", "d")))
    assert sorted(r.status_code for r in results) == [201, 201, 409]
    listed = (await w.call("teacher", "GET", f"/courses/{cid}/invites")).json()
    assert [i["seats_used"] for i in listed] == [1, 0, 0, 2]
    assert all("code" not in i for i in listed)
    assert await w.db.fetchval("select count(*) from course_invites where code_hash = $1",
                               two["code"]) == 0  # only the hash is stored


async def test_embed_token_with_a_course_claim_enrolls(world: World) -> None:
    w = world
    await w.user("teacher", "instructor")
    cid = (await w.call("teacher", "POST", "/courses", json={"title": "Embedded"})).json()["id"]
    # This course shares its conversations with its instructor (learners see it before).
    await w.call("teacher", "PATCH", f"/courses/{cid}", json={"share_conversations": True})
    secret = w.settings.embed_secret or ""

    def token(**claims: Any) -> str:
        return jwt.encode({"sub": "lms-42", "name": "LMS learner", "exp": int(time.time()) + 600,
                           **claims}, secret, algorithm="HS256")

    good = token(course_id=cid, role="learner")
    for _ in range(2):  # seen twice: enrolled once
        r = await w.client.get("/courses", headers={"Authorization": f"Bearer {good}"})
        assert r.status_code == 200 and [c["id"] for c in r.json()] == [cid]
    async with socket(w.base, good) as (ws, welcome):
        ack, _ = await _ask(ws, "hello", course_id=cid)
        assert ack["type"] == "chat.ack"
    user_id = welcome["user_id"]
    rows = await w.db.fetch("select via from enrollments where user_id = $1", uuid.UUID(user_id))
    assert [r["via"] for r in rows] == ["embed"]
    assert len(await w.audit("enrollment.created")) == 1
    shared = (await w.call("teacher", "GET", f"/courses/{cid}/conversations")).json()
    assert [m["content"] for m in shared[0]["messages"]][:1] == ["hello"]
    # An admin role can't be granted by a host; a malformed course claim is refused.
    for bad in (token(role="admin"), token(course_id="not-a-uuid")):
        r = await w.client.get("/me", headers={"Authorization": f"Bearer {bad}"})
        assert r.status_code == 401
    # The instructor role can: the host's instructors create courses without a sign-up.
    teacher = token(sub="lms-teacher", role="instructor")
    r = await w.client.post("/courses", json={"title": "Host's"},
                            headers={"Authorization": f"Bearer {teacher}"})
    assert r.status_code == 201
    assert len(await w.audit("role.changed")) == 1


async def test_account_export_and_deletion_leave_nothing_behind(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    w = world
    await w.user("teacher", "instructor")
    await w.user("leaver")
    cid = (await w.call("teacher", "POST", "/courses", json={"title": "C"})).json()["id"]
    code = (await w.call("teacher", "POST", f"/courses/{cid}/invites", json={})).json()["code"]
    assert (await w.call("leaver", "POST", "/enroll", json={"code": code})).status_code == 201
    own = await w.text("leaver", "Notes", OWN_TEXT)
    # A material still waiting for its worker keeps a file in uploads/.
    await w.db.execute("update materials set status = 'queued' where id = $1", uuid.UUID(own))
    async with socket(w.base, w.tokens["leaver"]) as (ws, _):
        await _ask(ws, "What does the mitochondrion have?")
        await _ask(ws, "What is in the course?", course_id=cid)
    # A Telegram link and a pending link code (the bridge isn't configured here).
    await w.db.execute("insert into telegram_links (telegram_user_id, user_id) values (77, $1)",
                       uuid.UUID(w.ids["leaver"]))
    await w.db.execute("insert into telegram_link_codes (code_hash, user_id, expires_at) "
                       "values ('x', $1, now())", uuid.UUID(w.ids["leaver"]))
    r = await w.client.post("/auth/token", data={"username": "leaver@example.com",
                                                 "password": PASSWORD})
    refresh = r.json()["refresh_token"]
    upload = Path(w.settings.data_dir) / "uploads" / f"{own}.txt"
    upload.parent.mkdir(parents=True, exist_ok=True)
    upload.write_text(OWN_TEXT)

    archive = (await w.call("leaver", "GET", "/me/export")).json()
    assert archive["user"]["email"] == "leaver@example.com"
    assert "password_hash" not in archive["user"]
    assert [m["id"] for m in archive["materials"]] == [own]
    assert len(archive["messages"]) == 4 and len(archive["conversations"]) == 2
    assert [e["course_id"] for e in archive["enrollments"]] == [cid]
    assert "embedding" not in json.dumps(archive)

    # The instructor owns a course: refused with a clear error until it is deleted.
    r = await w.call("teacher", "DELETE", "/me")
    assert r.status_code == 409 and r.json()["error"] == "owns_courses"
    assert "hand them over or delete them" in r.json()["message"]

    uid = uuid.UUID(w.ids["leaver"])
    assert (await w.call("leaver", "DELETE", "/me")).status_code == 204
    # Table by table, over the schema as it is: every column that refers to users, and every
    # uuid column named like a user's, holds no row of the deleted user.
    columns = await w.db.fetch("""
        select c.table_name, c.column_name from information_schema.columns c
        join information_schema.tables t on t.table_name = c.table_name
             and t.table_schema = c.table_schema and t.table_type = 'BASE TABLE'
        where c.table_schema = 'public' and c.data_type = 'uuid'""")
    checked = 0
    for col in columns:
        if col["table_name"] == "audit_log":
            continue  # the record of the deletion itself, by id only (checked below)
        n = await w.db.fetchval(
            f'select count(*) from "{col["table_name"]}" where "{col["column_name"]}" = $1', uid)
        assert n == 0, (col["table_name"], col["column_name"])
        checked += 1
    assert checked > 15
    assert not upload.exists()
    assert (await w.call("leaver", "GET", "/me")).status_code == 401
    r = await w.client.post("/auth/refresh", json={"refresh_token": refresh})
    assert r.status_code == 401
    (entry,) = await w.audit("account.deleted")
    assert str(entry["actor_id"]) == str(uid)

    # An admin hands the course over; then the instructor's account can go.
    await w.user("admin", "admin")
    await w.user("heir", "instructor")
    r = await w.call("teacher", "PATCH", f"/courses/{cid}", json={"owner_id": w.ids["heir"]})
    assert r.status_code == 403
    r = await w.call("admin", "PATCH", f"/courses/{cid}", json={"owner_id": w.ids["leaver"]})
    assert r.status_code == 422  # gone (and a learner would not do either)
    r = await w.call("admin", "PATCH", f"/courses/{cid}", json={"owner_id": w.ids["heir"]})
    assert r.status_code == 200
    assert (await w.call("teacher", "DELETE", "/me")).status_code == 204
    assert (await w.call("heir", "GET", f"/courses/{cid}")).json()["my_role"] == "owner"


async def test_audit_log_records_each_action_once_and_no_secret(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    w = world
    await w.user("admin", "admin")
    await w.user("teacher", "instructor")
    await w.user("learner")
    r = await w.client.post("/auth/token", data={"username": "learner@example.com",
                                                 "password": "wrong-password"})
    assert r.status_code == 401
    await w.client.post("/auth/token", data={"username": "nobody@example.com",
                                             "password": "wrong-password"})
    # set-role through the CLI, against this database.
    from chat_server import cli
    from chat_server.settings import get_settings

    monkeypatch.setenv("TUTORHUB_DATABASE_URL", w.settings.database_url or "")
    monkeypatch.setenv("TUTORHUB_AUTO_MIGRATE", "false")
    get_settings.cache_clear()
    try:
        parser = cli.build_parser()
        for argv, code in ((["user", "set-role", "LEARNER@example.com", "instructor"], 0),
                           (["user", "set-role", "nobody@example.com", "admin"], 1)):
            args = parser.parse_args(argv)  # main() would install signal handlers: a thread
            assert await asyncio.to_thread(args.func, args) == code
    finally:
        get_settings.cache_clear()
    assert await w.db.fetchval("select role from users where email = 'learner@example.com'"
                               ) == "instructor"
    cid = (await w.call("teacher", "POST", "/courses", json={"title": "A"})).json()["id"]
    invite = (await w.call("teacher", "POST", f"/courses/{cid}/invites", json={})).json()
    await w.call("learner", "POST", "/enroll", json={"code": invite["code"]})
    await w.call("learner", "POST", "/enroll", json={"code": invite["code"]})  # no-op
    mid = await w.text("teacher", "M", COURSE_TEXT, course=cid)
    assert (await w.call("teacher", "DELETE", f"/materials/{mid}")).status_code == 204
    await w.call("learner", "DELETE", f"/me/courses/{cid}")
    login = await w.client.post("/auth/token", data={"username": "teacher@example.com",
                                                     "password": PASSWORD})
    pair = login.json()
    assert (await w.client.post("/auth/logout", json={"refresh_token": pair["refresh_token"]})
            ).status_code == 204
    assert (await w.call("teacher", "DELETE", f"/courses/{cid}")).status_code == 204

    counts = {r["action"]: r["n"] for r in await w.db.fetch(
        "select action, count(*) as n from audit_log group by action")}
    assert counts == {"login.succeeded": 4, "login.failed": 2, "role.changed": 1,
                      "enrollment.created": 1, "material.deleted": 1, "enrollment.deleted": 1,
                      "tokens.revoked": 1, "course.deleted": 1}, counts
    rows = await w.db.fetch("select to_jsonb(a)::text as t, address from audit_log a")
    blob = " ".join(r["t"] for r in rows)
    for secret in (PASSWORD, "wrong-password", invite["code"], pair["refresh_token"],
                   pair["access_token"], *w.tokens.values(), "$argon2", "@example.com",
                   w.settings.secret_key or ""):
        assert secret not in blob, secret
    assert {r["address"] for r in rows if r["address"]} == {"127.0.0.1"}
    # Append-only in the database itself.
    with pytest.raises(asyncpg.RaiseError, match="append-only"):
        await w.db.execute("delete from audit_log")
    with pytest.raises(asyncpg.RaiseError, match="append-only"):
        await w.db.execute("update audit_log set action = 'x'")
    # Read by admins, with filters; nobody else.
    r = await w.call("admin", "GET", "/admin/audit", params={"action": "login.failed"})
    assert r.status_code == 200 and len(r.json()) == 2
    r = await w.call("admin", "GET", "/admin/audit",
                     params={"actor_id": w.ids["teacher"], "limit": 2})
    assert len(r.json()) == 2 and all(e["actor_id"] == w.ids["teacher"] for e in r.json())
    assert (await w.call("teacher", "GET", "/admin/audit")).status_code == 403
