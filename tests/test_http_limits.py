"""One body limit for every route and content type: multipart only where uploads are taken (and
only after authentication), streamed bodies cut off at their limit, memory not grown by what
was refused; /metrics behind its optional token."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psutil
import pytest

from chat_server.app import create_app
from chat_server.settings import Settings
from tests.support.rawhttp import stream_body
from tests.support.services import serve_app
from tests.support.ws import new_user

BIG = 256 * 1024 * 1024  # what a client offers to send; the server must never take it
MULTIPART = "multipart/form-data; boundary=xyz"
PDF_PART = (b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="big.pdf"\r\n'
            b"Content-Type: application/pdf\r\n\r\n%PDF-1.4\n")


@pytest.fixture
async def limited(settings: Settings) -> AsyncIterator[tuple[int, str, Settings]]:
    """The app with a 2 MB upload limit; yields (port, an access token, settings)."""
    settings = settings.model_copy(update={"max_upload_bytes": 2 * 1024 * 1024})
    async with serve_app(create_app(settings)) as base:
        _, token = await new_user(base)
        yield int(urlsplit(base).port or 0), token, settings


def _rss() -> int:
    gc.collect()
    return int(psutil.Process().memory_info().rss)


async def test_big_bodies_are_refused_on_every_route_without_being_held(
    limited: tuple[int, str, Settings],
) -> None:
    port, token, settings = limited
    auth = {"authorization": f"Bearer {token}"}
    rss0 = _rss()
    cases = [
        # multipart outside the upload route: refused on its headers, with or without a token
        ("POST", "/conversations", {"content-type": MULTIPART}, 415),
        ("POST", "/conversations", {"content-type": MULTIPART, **auth}, 415),
        ("POST", "/auth/token", {"content-type": MULTIPART}, 415),
        ("POST", "/auth/register", {"content-type": "Multipart/Form-Data; boundary=x"}, 415),
        ("POST", "/auth/refresh", {"content-type": MULTIPART}, 415),
        # JSON, a form, no content type at all: cut off once past the limit
        ("POST", "/auth/register", {"content-type": "application/json"}, 413),
        ("POST", "/auth/token", {"content-type": "application/x-www-form-urlencoded"}, 413),
        ("PATCH", "/conversations/00000000-0000-0000-0000-000000000000", auth, 413),
        ("POST", "/materials/youtube", {"content-type": "application/json", **auth}, 413),
        # the upload route: no token, no read; with one, its own (larger) limit
        ("POST", "/materials", {"content-type": MULTIPART}, 401),
        ("POST", "/materials", {"content-type": MULTIPART, **auth}, 413),
    ]
    for method, path, headers, status in cases:
        answer = await stream_body(port, method, path, headers, BIG, prefix=PDF_PART)
        assert answer.status == status, (path, headers, answer)
        body = answer.json()
        assert set(body) >= {"error", "message"}, body
        # Refused long before the end: what was sent is the limit plus socket buffers.
        assert answer.sent < BIG // 8, (path, answer.sent)
    declared = await stream_body(port, "POST", "/materials",
                                 {"content-type": MULTIPART, "content-length": str(BIG), **auth},
                                 BIG)
    assert declared.status == 413 and declared.sent < BIG // 8
    growth = _rss() - rss0
    assert growth < 32 * 1024 * 1024, growth  # vs 256 MB offered per request
    uploads = Path(settings.data_dir) / "uploads"
    assert not uploads.exists() or list(uploads.iterdir()) == []  # nothing spooled or left


async def test_json_under_the_limit_still_works_and_the_limit_is_json(
    limited: tuple[int, str, Settings],
) -> None:
    port, token, settings = limited
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
        r = await c.post("/conversations", json={"title": "Ж" * 200},
                         headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 201, r.text
        r = await c.post("/conversations", content=b"{" + b" " * settings.max_json_body_bytes + b"}",
                         headers={"Authorization": f"Bearer {token}",
                                  "content-type": "application/json"})
        assert r.status_code == 413 and r.json()["error"] == "too_large"


@pytest.mark.parametrize("token", [None, "metrics-secret-0123456789"], ids=["open", "token"])
async def test_metrics_token(settings: Settings, token: str | None) -> None:
    async with serve_app(create_app(settings.model_copy(update={"metrics_token": token}))) as base:
        async with httpx.AsyncClient(base_url=base) as c:
            bare = await c.get("/metrics")
            wrong = await c.get("/metrics", headers={"Authorization": "Bearer nope"})
            right = await c.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    if token is None:
        assert bare.status_code == wrong.status_code == 200
        assert "tutorhub_ws_open_sockets" in bare.text
    else:
        for r in (bare, wrong):
            assert r.status_code == 401 and r.json()["error"] == "unauthorized"
            assert r.headers["www-authenticate"] == "Bearer"
        assert right.status_code == 200 and "tutorhub_ws_open_sockets" in right.text
