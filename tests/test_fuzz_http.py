"""Generated hostile requests on every route of the OpenAPI schema (schemathesis: bodies,
queries and path parameters that fit the schema and that don't), and every route with bodies of
every content type (JSON, form, multipart, text, octet-stream, broken encodings): never a 500,
and every refusal is JSON `{"error", "message"}`. Example counts: tests/support/fuzz.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from chat_server.app import create_app
from chat_server.settings import Settings
from tests.support.fuzz import examples
from tests.support.logs import Collected, collect_logs
from tests.support.services import free_port, serve_app
from tests.support.threaded import LoopThread, loop_thread
from tests.support.ws import new_user


@dataclass
class Api:
    base: str
    token: str
    ids: dict[str, str]  # path parameter → an id of the user's own (a conversation, a material)
    logs: Collected
    app: FastAPI
    thread: LoopThread

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def settle(self) -> None:
        """Wait until no ingestion runs in the server (its in-process broker's tasks).

        The server runs on a thread of this process, so it shares the global `random` with
        hypothesis, which compares `random.getstate()` around every draw and fails the test
        ("Do not use the `random` module inside strategies") when it changed — and the
        OpenAI SDK's retry backoff draws its jitter from that global `random` while an
        ingestion retries the (closed) embedding port. Each example therefore runs to
        quiescence before the next is drawn; it also makes the material's state the same at
        every run (not `processing` in one and `failed` in the next)."""
        self.thread.run(asyncio.wait_for(self.app.state.broker.wait_all(), SETTLE_S), SETTLE_S + 5)


SETTLE_S = 30.0  # an ingestion against the closed port ends in ~1.5 s (two SDK retries)


@pytest.fixture
def api(settings: Settings) -> Iterator[Api]:
    # Nothing leaves the machine: YouTube, the embedding API and the Bot API are a closed
    # loopback port (an accepted text material fails its ingestion instead of loading a
    # model). Telegram is set up (polling mode: no bridge in this process, the bot's username
    # known) so that /telegram/link is fuzzed past its 503 `telegram_disabled`.
    dead = f"http://127.0.0.1:{free_port()}"
    s = settings.model_copy(update={
        "youtube_base_url": dead, "embedding_provider": "openai", "openai_api_key": "sk-test",
        "openai_base_url": dead + "/v1", "llm_provider": "offline", "task_retries": 0,
        "telegram_bot_token": SecretStr("123456:fuzz"), "telegram_bot_username": "fuzz_bot",
        "telegram_api_url": dead})
    with collect_logs(logging.ERROR) as logs, loop_thread() as thread:
        app = create_app(s)
        base = thread.enter(serve_app(app))
        _, token = thread.run(new_user(base))
        api = Api(base, token, {}, logs, app, thread)
        with httpx.Client(base_url=base, headers=api.auth, timeout=30) as c:
            api.ids["conversation_id"] = c.post("/conversations", json={"title": "t"}).json()["id"]
            r = c.post("/materials/text", json={"title": "T", "text": "Энтропия — мера."})
            api.ids["material_id"] = r.json()["id"]
            api.settle()
            material = c.get(f"/materials/{api.ids['material_id']}").json()
            assert material["status"] == "failed", material  # the embedding API is unreachable
        yield api


def _assert_answered(r: httpx.Response | Any, what: str) -> None:
    assert r.status_code < 500, f"{what} → {r.status_code} {r.text[:300]}"
    if r.status_code >= 400:
        body = json.loads(r.content)
        assert isinstance(body, dict) and {"error", "message"} <= set(body), (what, r.text[:300])


def test_every_route_of_the_schema_answers_without_a_500(api: Api) -> None:
    schema = schemathesis.openapi.from_url(api.base + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) >= 15
    tried: dict[str, int] = {}
    for operation in operations:
        own = {k: v for k, v in api.ids.items() if "{" + k + "}" in operation.path}
        strategy = st.one_of(
            operation.as_strategy(schemathesis.GenerationMode.POSITIVE, headers=api.auth,
                                  path_parameters=own or None),
            operation.as_strategy(schemathesis.GenerationMode.NEGATIVE, headers=api.auth),
            operation.as_strategy(schemathesis.GenerationMode.NEGATIVE))

        @settings(max_examples=examples(6))
        @given(strategy)
        def property_(case: schemathesis.Case) -> None:
            response = case.call(base_url=api.base, timeout=30)
            api.settle()
            label = f"{case.operation.method.upper()} {case.operation.path}"
            tried[label] = tried.get(label, 0) + 1
            _assert_answered(response, case.as_curl_command())

        property_()
    assert len(tried) == len(operations)
    assert not api.logs.records, "\n".join(api.logs.lines[:5])


# --- every content type on every route ---------------------------------------------------
def _form(value: Any) -> bytes:
    return "&".join(f"{k}={v}" for k, v in (value.items() if isinstance(value, dict)
                                            else [("x", value)])).encode("utf-8", "surrogatepass")


def _multipart(fields: dict[str, bytes], boundary: str = "b0") -> bytes:
    parts = [b"--" + boundary.encode() + b'\r\nContent-Disposition: form-data; name="' + name.encode()
             + b'"' + (b'; filename="f.pdf"\r\nContent-Type: application/pdf' if name == "file" else b"")
             + b"\r\n\r\n" + data + b"\r\n" for name, data in fields.items()]
    return b"".join(parts) + b"--" + boundary.encode() + b"--\r\n"


texts = st.text(st.characters(exclude_categories=()) | st.sampled_from(["\x00", "\ud800", "Ё"]),
                max_size=30)
values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                      | texts, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.sampled_from(["title", "text", "email", "password",
                                                        "refresh_token", "url", "username",
                                                        "socratic", "current_password",
                                                        "new_password", "display_name"]) | texts,
                                        inner, max_size=4), max_leaves=8)
broken = st.sampled_from([b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", b'{"title": "\xff"}',
                          b'{"title": "a\\u0000"}', b'{"title": "\\ud800"}', b"\x00" * 8,
                          b"[" * 5000 + b"]" * 5000, b'{"a":' * 600 + b"1" + b"}" * 600])
bodies: dict[str, st.SearchStrategy[bytes]] = {
    "application/json": st.builds(lambda v: json.dumps(v).encode("utf-8", "surrogatepass"), values)
    | broken,
    "application/json; charset=latin-1": st.binary(max_size=64) | broken,
    "application/x-www-form-urlencoded": st.builds(_form, values) | broken,
    "multipart/form-data; boundary=b0": st.builds(
        _multipart, st.dictionaries(st.sampled_from(["title", "file", "x"]),
                                    st.binary(max_size=64) | broken, max_size=3)) | broken,
    "text/plain; charset=utf-8": st.builds(lambda t: t.encode("utf-8", "surrogatepass"), texts)
    | broken,
    "application/octet-stream": st.binary(max_size=128) | broken,
    "": st.binary(max_size=64),  # no content type at all
}


def test_every_route_takes_any_content_type_without_a_500(api: Api) -> None:
    spec = httpx.get(api.base + "/openapi.json").json()
    routes = sorted({(method.upper(), path) for path, ops in spec["paths"].items()
                     for method in ops if method in ("post", "put", "patch", "delete", "get")})
    assert len(routes) >= 15

    @settings(max_examples=examples(150))
    @given(st.sampled_from(routes), st.sampled_from(sorted(bodies)), st.data(), st.booleans())
    def property_(route: tuple[str, str], content_type: str, data: st.DataObject,
                  authenticated: bool) -> None:
        method, path = route
        for name, value in api.ids.items():
            path = path.replace("{" + name + "}", value)
        body = data.draw(bodies[content_type])
        headers = {**(api.auth if authenticated else {}),
                   **({"content-type": content_type} if content_type else {})}
        with httpx.Client(base_url=api.base, timeout=30) as c:
            r = c.request(method, path, content=body, headers=headers)
            api.settle()
            _assert_answered(r, f"{method} {path} [{content_type}] {body[:80]!r}")
            # The connection still serves the next request.
            assert c.get("/healthz").status_code == 200

    property_()
    assert not api.logs.records, "\n".join(api.logs.lines[:5])


def test_every_integer_parameter_is_bounded_within_postgresql_bigint(settings: Settings) -> None:
    """An integer query or path parameter without a maximum reaches PostgreSQL as it came: past
    its bigint, asyncpg can't send it and the route answers 500 (found for `offset` by the
    schema fuzz's deep profile; `days` and `before_id` of the course routes had it too)."""
    spec = create_app(settings).openapi()
    unbounded = []
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                schemas = [parameter["schema"], *parameter["schema"].get("anyOf", [])]
                for schema in schemas:
                    if schema.get("type") == "integer" and not (
                            schema.get("maximum", 2**63) <= 2**63 - 1):
                        unbounded.append(f"{method.upper()} {path} {parameter['name']}")
    assert not unbounded, unbounded
