"""No upload leaves a file behind: a failed insert, a refused upload, a client gone mid-upload;
and the sweep removes what a killed process left (only unreferenced files past their grace)."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from chat_server.app import create_app
from chat_server.db import open_database
from chat_server.materials.storage import sweep_orphans
from chat_server.models import Material, MaterialKind, MaterialStatus, User
from chat_server.settings import Settings
from tests.support.db import refuse_inserts
from tests.support.services import serve_app
from tests.support.ws import new_user, until

PDF = b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"


def _files(settings: Settings) -> list[str]:
    uploads = Path(settings.data_dir) / "uploads"
    return sorted(p.name for p in uploads.iterdir()) if uploads.exists() else []


async def test_failed_insert_refused_upload_and_abandoned_upload_leave_no_file(
    server: str, settings: Settings, database_url: str,
) -> None:
    # The database refuses these materials after their file was staged.
    await refuse_inserts(database_url, "materials", "new.title = 'refuse'", "refused")
    _, token = await new_user(server)
    auth = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=server, timeout=30) as c:
        r = await c.post("/materials", headers=auth, data={"title": "refuse"},
                         files={"file": ("a.pdf", PDF, "application/pdf")})
        assert r.status_code == 500 and r.json()["error"] == "internal"
        r = await c.post("/materials/text", headers=auth, json={"title": "refuse", "text": "Текст."})
        assert r.status_code == 500
        r = await c.post("/materials", headers=auth,
                         files={"file": ("a.pdf", b"not a pdf", "application/pdf")})
        assert r.status_code == 415
    assert _files(settings) == []
    # A client that goes away mid-upload: its staged part is removed.
    reader, writer = await asyncio.open_connection("127.0.0.1", urlsplit(server).port)
    writer.write(b"POST /materials HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n"
                 b"content-type: multipart/form-data; boundary=b0\r\n"
                 b"authorization: " + auth["Authorization"].encode() + b"\r\n\r\n")
    part = (b'--b0\r\nContent-Disposition: form-data; name="file"; filename="a.pdf"\r\n\r\n'
            + PDF + b"x" * 200_000)
    writer.write(b"%x\r\n%s\r\n" % (len(part), part))
    await writer.drain()
    await until(lambda: _has_staged(settings))
    writer.transport.abort()
    await until(lambda: _none(settings))


async def _has_staged(settings: Settings) -> bool:
    return any(name.startswith("incoming-") for name in _files(settings))


async def _none(settings: Settings) -> bool:
    return _files(settings) == []


async def test_sweep_removes_only_old_unreferenced_uploads(settings: Settings) -> None:
    settings = settings.model_copy(update={"upload_orphan_grace_s": 60.0})
    uploads = Path(settings.data_dir) / "uploads"
    uploads.mkdir(parents=True)
    assert settings.database_url
    async with open_database(settings.database_url, 2) as db:
        async with db.session() as s:
            user = User(email="sweep@example.com")
            s.add(user)
            await s.flush()
            kept_id = uuid.uuid4()
            s.add(Material(id=kept_id, user_id=user.id, kind=MaterialKind.pdf, title="t",
                           status=MaterialStatus.queued, content_hash="h" * 64,
                           file_path=str(uploads / f"{kept_id}.pdf")))
            await s.commit()
        old = time.time() - 3600
        names = {
            "referenced": f"{kept_id}.pdf",  # waits for its worker: kept however old
            "orphan": f"{uuid.uuid4()}.pdf",  # its insert failed in a killed process
            "orphan_text": f"{uuid.uuid4()}.txt",
            "staged": f"incoming-{uuid.uuid4().hex}.part",  # an upload abandoned mid-way
            "young": f"{uuid.uuid4()}.pdf",  # an upload being inserted right now
            "foreign": "README.txt",  # not ours: left alone
        }
        for key, name in names.items():
            path = uploads / name
            path.write_bytes(b"%PDF-")
            if key != "young":
                os.utime(path, (old, old))
        assert await sweep_orphans(settings, db) == 3
        assert _files(settings) == sorted(names[k] for k in ("referenced", "young", "foreign"))
        assert await sweep_orphans(settings, db) == 0
    # The server sweeps at start too.
    stale = uploads / f"incoming-{uuid.uuid4().hex}.part"
    stale.write_bytes(b"x")
    os.utime(stale, (old, old))
    async with serve_app(create_app(settings)):
        await until(lambda: _none_staged(settings))


async def _none_staged(settings: Settings) -> bool:
    return not any(name.startswith("incoming-") for name in _files(settings))
