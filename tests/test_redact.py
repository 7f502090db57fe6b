"""No password, hash, email, token or secret reaches a log line: at the source (the engine hides
statement parameters) and in the net under it (chat_server.redact)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest
from uvicorn.logging import AccessFormatter

from chat_server.redact import install, redact
from chat_server.settings import Settings
from tests.support.db import refuse_inserts
from tests.support.logs import Collected, collect_logs
from tests.support.rawhttp import keep_alive, request
from tests.support.ws import socket

EMAIL = "secret.person@example.com"
PASSWORD = "hunter2-is-my-password"


@pytest.fixture
def collected() -> Iterator[Collected]:
    """Every record of every logger, uvicorn's own (which do not propagate) included."""
    with collect_logs(logging.DEBUG) as handler:
        yield handler


def test_redact_patterns() -> None:
    samples = {
        "[SQL: INSERT INTO users ...]\n[parameters: ('a@b.io', '$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA', None)]":
            ["a@b.io", "$argon2id", "aGFzaA"],
        'DETAIL:  Key (email)=(ann@example.org) already exists.': ["ann@example.org"],
        "Failing row contains (7, ann, hunter2).": ["hunter2"],
        "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl": ["eyJhbGci", "c2lnbmF0dXJl"],
        "connect postgresql://tutor:s3cr3t-pw@db:5432/x failed": ["s3cr3t-pw"],
        "redis://:r3dis-pass@cache:6379/0": ["r3dis-pass"],
        "password=letmein token: abcdef123": ["letmein", "abcdef123"],
    }
    for text, hidden in samples.items():
        clean = redact(text)
        for secret in hidden:
            assert secret not in clean, (text, clean)
    assert redact("reply 5b0e failed: output_tokens=12") == "reply 5b0e failed: output_tokens=12"


async def test_no_secret_in_any_log_line(
    server: str, client: httpx.AsyncClient, settings: Settings, database_url: str,
    collected: Collected, caplog: pytest.LogCaptureFixture,
) -> None:
    # A registration the database refuses with an error that quotes the email, after the
    # password was hashed: what issue #16 found logged with the hash and the email.
    await refuse_inserts(database_url, "users", "new.display_name = 'boom'", "refusing %")
    caplog.set_level(logging.DEBUG)
    # The 500 is answered once, as JSON, and its keep-alive connection serves the next request.
    boom = json.dumps({"email": EMAIL, "password": PASSWORD, "display_name": "boom"}).encode()
    answers = await keep_alive(int(urlsplit(server).port or 0), [
        request("POST", "/auth/register", boom), request("GET", "/healthz")])
    assert [a.status for a in answers] == [500, 200]
    assert answers[0].json()["error"] == "internal"
    r = await client.post("/auth/register", json={"email": EMAIL, "password": PASSWORD})
    assert r.status_code == 201
    pair = (await client.post("/auth/token", data={"username": EMAIL, "password": PASSWORD})).json()
    await client.post("/auth/token", data={"username": EMAIL, "password": "wrong " + PASSWORD})
    newer = (await client.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})).json()
    r = await client.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})  # reuse
    assert r.status_code == 401
    async with socket(server, newer["access_token"]):
        pass
    await client.post("/me/password", headers={"Authorization": f"Bearer {newer['access_token']}"},
                      json={"current_password": "not " + PASSWORD, "new_password": PASSWORD + "!"})
    lines = collected.lines + [caplog.text]
    assert any("unhandled error" in line and "refusing" in line for line in lines), lines
    assert not any("Exception in ASGI application" in line for line in lines)  # logged once
    secrets = [EMAIL, PASSWORD, "$argon2", pair["access_token"], pair["refresh_token"],
               newer["access_token"], newer["refresh_token"], str(settings.secret_key)]
    for line in lines:
        for secret in secrets:
            assert secret not in line, (secret, line)


@pytest.mark.parametrize("path", ["/healthz", "/ws/v1?token=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"])
def test_uvicorn_access_lines_keep_their_arguments(path: str) -> None:
    """uvicorn's access formatter unpacks the record's arguments: the net keeps their shape (it
    merged them into the message, and every request of `tutorhub serve` logged a TypeError)."""
    install()
    formatter = AccessFormatter('%(client_addr)s - "%(request_line)s" %(status_code)s', use_colors=False)
    record = logging.getLogger("uvicorn.access").makeRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", path, "1.1", 200), None)
    line = formatter.format(record)
    assert line.startswith('127.0.0.1:5000 - "GET /') and line.endswith('HTTP/1.1" 200 OK'), line
    assert "eyJhbGci" not in line and "c2lnbmF0dXJl" not in line
