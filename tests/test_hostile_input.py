"""Hostile text gets a clear 4xx or a documented error frame, never a 500, a dropped socket or
a dead keep-alive connection: NUL characters, lone surrogates, deeply nested JSON."""

from __future__ import annotations

import asyncio
import json
import time
from urllib.parse import urlsplit

import httpx
import pytest
from jose import jwt
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from chat_server.settings import Settings
from tests.support.rawhttp import keep_alive, request
from tests.support.ws import new_user, recv, socket, ws_url

NUL = "a\u0000b"
SURROGATE = b'"\\ud800x"'  # a lone surrogate, as JSON carries it
PDF = b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"


def _multipart(title: bytes, filename: bytes) -> bytes:
    """A PDF upload written out by hand: the bytes go as they are (httpx escapes a NUL)."""
    return (b'--b0\r\nContent-Disposition: form-data; name="title"\r\n\r\n' + title
            + b'\r\n--b0\r\nContent-Disposition: form-data; name="file"; filename="' + filename
            + b'"\r\nContent-Type: application/pdf\r\n\r\n' + PDF + b"\r\n--b0--\r\n")


def _raw_json(template: str) -> bytes:
    """A JSON body whose SUR placeholder is a lone surrogate (httpx can't encode one)."""
    return template.replace('"SUR"', SURROGATE.decode()).encode()


async def test_rest_refuses_nul_and_surrogates_with_422_and_keeps_the_connection(
    server: str, settings: Settings,
) -> None:
    _, token = await new_user(server)
    auth = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=server) as c:
        conv = (await c.post("/conversations", json={"title": "ok"}, headers=auth)).json()["id"]
        json_cases = [
            ("POST", "/conversations", {"title": NUL}, auth),
            ("PATCH", f"/conversations/{conv}", {"title": NUL}, auth),
            ("POST", "/auth/register", {"email": "n@example.com", "password": "password-123",
                                        "display_name": NUL}, {}),
            ("POST", "/auth/register", {"email": "n\u0000@example.com", "password": "password-123"}, {}),
            ("POST", "/auth/register", {"email": "n@example.com", "password": "pass\u0000word-123"}, {}),
            ("POST", "/auth/refresh", {"refresh_token": NUL}, {}),
            ("POST", "/me/password", {"current_password": NUL, "new_password": "password-456"}, auth),
            ("POST", "/materials/text", {"title": NUL, "text": "Some text."}, auth),
            ("POST", "/materials/text", {"title": "T", "text": "Some\u0000text."}, auth),
            ("POST", "/materials/youtube", {"url": "dQw4w9WgXcQ", "title": NUL}, auth),
        ]
        for method, path, body, headers in json_cases:
            r = await c.request(method, path, json=body, headers=headers)
            assert r.status_code == 422, (path, body, r.text)
            assert r.json()["error"] == "invalid_request" and "NUL" in r.json()["message"]
        raw_cases = [
            ("POST", "/conversations", '{"title": "SUR"}', auth),
            ("POST", "/auth/register", '{"email": "s@example.com", "password": "SUR", "display_name": "x"}', {}),
            ("POST", "/auth/register", '{"email": "s@example.com", "password": "password-123", "display_name": "SUR"}', {}),
            ("POST", "/materials/text", '{"title": "SUR", "text": "x"}', auth),
        ]
        for method, path, body_text, headers in raw_cases:
            r = await c.request(method, path, content=_raw_json(body_text),
                                headers={**headers, "content-type": "application/json"})
            assert r.status_code == 422, (path, r.text)
            assert r.json()["error"] == "invalid_request"
        for form in ({"username": NUL, "password": "password-123"},
                     {"username": "x@example.com", "password": NUL}):
            r = await c.post("/auth/token", data=form)
            assert r.status_code == 422 and r.json()["error"] == "invalid_request", r.text
        for title, filename in ((NUL.encode(), b"a.pdf"), (b"ok", b"a\x00.pdf")):
            r = await c.post("/materials", content=_multipart(title, filename),
                             headers={**auth, "content-type": "multipart/form-data; boundary=b0"})
            assert r.status_code == 422 and r.json()["error"] == "invalid_request", r.text
        # An embed user's host-given name with NUL in it: shown without it, not a 500.
        now = int(time.time())
        embed = jwt.encode({"sub": "host-7", "name": f"Ann{NUL}", "exp": now + 300},
                           str(settings.embed_secret), "HS256")
        r = await c.get("/me", headers={"Authorization": f"Bearer {embed}"})
        assert r.status_code == 200 and r.json()["display_name"] == "Annab"
        # Found by the schema fuzz's deep profile: JSON nested deeper than the decoder takes
        # (a RecursionError in the decoder; the material routes read their body themselves
        # then) is a 400, not a 500 …
        for path in ("/materials/text", "/materials/youtube", "/conversations"):
            r = await c.post(path, content=b"[" * 5000 + b"]" * 5000,
                             headers={**auth, "content-type": "application/json"})
            assert r.status_code == 400 and r.json()["error"] == "bad_request", r.text
        # … and a list's offset past PostgreSQL's bigint.
        for path in ("/conversations", "/materials"):
            r = await c.get(path, params={"offset": 2**63}, headers=auth)
            assert r.status_code == 422 and r.json()["error"] == "invalid_request", r.text
            r = await c.get(path, params={"offset": 2**63 - 1}, headers=auth)
            assert r.status_code == 200 and r.json() == [], r.text
    # One keep-alive connection: a 422 (and a 404, a 401) and the next request still works.
    port = int(urlsplit(server).port or 0)
    answers = await keep_alive(port, [
        request("POST", "/conversations", json.dumps({"title": NUL}).encode(),
                {"authorization": auth["Authorization"]}),
        request("POST", "/conversations", _raw_json('{"title": "SUR"}'),
                {"authorization": auth["Authorization"]}),
        request("GET", "/nowhere"),
        request("GET", "/me"),
        request("GET", "/healthz"),
    ])
    assert [a.status for a in answers] == [422, 422, 404, 401, 200]
    assert all(set(a.json()) >= {"error", "message"} for a in answers[:4])


async def test_socket_refuses_hostile_frames_with_error_frames_and_stays_open(server: str) -> None:
    _, token = await new_user(server)
    deep = "[" * 20_000 + "]" * 20_000  # 40 KB: within the frame size limit
    async with socket(server, token) as (ws, _):
        cases = [
            (deep, "bad_frame"),
            ('{"type": "ping", "t": ' + '{"a": ' * 40 + "1" + "}" * 40 + "}", "bad_frame"),
            ('{"type": "ping", "t": "\\ud800"}', "bad_frame"),
            ('{"type": "chat.send", "id": "c1", "text": "hi\\u0000there"}', "bad_frame"),
            ('{"type": "ping", "\\udfff": 1}', "bad_frame"),
            ('{"type": "auth.refresh", "token": "x\\u0000"}', "bad_frame"),
            ('{"type": "ping", "t": "[[[[ {{{{ in a string is fine"}', None),
            ('{"type": "ping", "t": ' + "[" * 31 + "]" * 31 + "}", None),  # 32 levels: allowed
            ("{not json", "bad_json"),
        ]
        for text, code in cases:
            await ws.send(text)
            frame = await recv(ws)
            if code is None:
                assert frame["type"] == "pong", frame
            else:
                assert frame["type"] == "error" and frame["code"] == code, (text[:60], frame)
        await ws.send(json.dumps({"type": "ping", "t": "Ёж"}))
        assert await recv(ws) == {"type": "pong", "t": "Ёж"}


async def test_hostile_first_frames_close_with_4401(server: str) -> None:
    for first in ("[" * 20_000 + "]" * 20_000,
                  '{"type": "auth", "token": "\\ud800"}',
                  '{"type": "auth", "token": "a\\u0000b"}',
                  '{"type": "auth", "token": ' + '{"a": ' * 50 + "1" + "}" * 51):
        async with connect(ws_url(server)) as ws:
            await ws.send(first)
            with pytest.raises(ConnectionClosed) as info:
                await asyncio.wait_for(ws.recv(), 10)
        assert info.value.rcvd is not None and info.value.rcvd.code == 4401, first[:40]
