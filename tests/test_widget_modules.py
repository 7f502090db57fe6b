"""The widget as native ES modules: `/widget.js` imports its siblings under `/widget/<version>/`;
every module is JavaScript with CORS and immutable caching; a deploy changes every module URL;
HTML reaches the DOM only through renderMarkdown() or icons in any module; one script tag on a
page of another origin loads the modules and streams a reply."""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path
from urllib.parse import urljoin

import httpx
import pytest
from jose import jwt
from playwright.async_api import Page, Response, expect

from chat_server.app import create_app
from chat_server.routes.static import STATIC_DIR, Widget
from chat_server.settings import Settings
from tests.support.browser import browser_fixture, page_fixture  # noqa: F401  (fixtures)
from tests.support.fake_providers import FakeProvider, openai_stream
from tests.support.services import free_port, serve_app
from tests.support.widget import school_site

MODULES = {path.name for path in (STATIC_DIR / "widget").glob("*.js")}
JAVASCRIPT = "text/javascript; charset=utf-8"
SPECIFIER = re.compile(r"""\b(?:from|import)\s*['"]([^'"]+)['"]""")
HOST = "https://school.example"  # a host page's origin the app lists for REST
ELSEWHERE = "https://elsewhere.example"  # one it does not list: modules load there too


def _module_name(url: str) -> str:
    assert re.fullmatch(r".*/widget/[0-9a-f]{16}/[a-z]+\.js", url), url
    return url.rsplit("/", 1)[1]


async def test_every_module_is_javascript_with_cors_and_immutable_caching() -> None:
    settings = Settings(_env_file=None, secret_key="k" * 40,  # type: ignore[call-arg]
                        cors_origins=[HOST])
    # The whole app's middleware (CORS included) without its lifespan: no database needed.
    transport = httpx.ASGITransport(app=create_app(settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://tutor.test",
                                 headers={"Origin": ELSEWHERE}) as client:
        entry = await client.get("/widget.js")
        assert entry.status_code == 200
        assert entry.headers["access-control-allow-origin"] == "*"
        assert entry.headers["cache-control"] == "public, max-age=300, must-revalidate"
        assert "__VERSION__" not in entry.text
        # The entry names every module itself, so a browser requests them all at once.
        assert {spec.rsplit("/", 1)[1] for spec in SPECIFIER.findall(entry.text)} == MODULES

        # Walk the import graph from the entry: every specifier is relative (no bare names, no
        # absolute paths), and every module it reaches is served the same way.
        seen: dict[str, httpx.Response] = {}
        todo = [(str(entry.url), entry.text)]
        while todo:
            base, body = todo.pop()
            for spec in SPECIFIER.findall(body):
                assert spec.startswith("./"), (base, spec)
                url = urljoin(base, spec)
                if url not in seen:
                    seen[url] = r = await client.get(url)
                    assert r.status_code == 200, url
                    todo.append((url, r.text))
        assert {_module_name(url) for url in seen} == MODULES  # all reached, none unused
        assert len({url.rsplit("/", 2)[1] for url in seen}) == 1  # one version for all
        for url, r in seen.items():
            assert r.headers["content-type"] == JAVASCRIPT, url
            assert r.headers["access-control-allow-origin"] == "*", url
            assert r.headers["cache-control"] == "public, max-age=31536000, immutable", url
            assert r.headers["x-content-type-options"] == "nosniff", url

        # Revalidation is a bodiless 304 that still carries CORS.
        url, first = next(iter(seen.items()))
        again = await client.get(url, headers={"If-None-Match": first.headers["etag"]})
        assert again.status_code == 304 and again.content == b""
        assert again.headers["access-control-allow-origin"] == "*"
        # A listed origin gets its own name back (the app's CORS middleware); still loadable.
        listed = await client.get(url, headers={"Origin": HOST})
        assert listed.headers["access-control-allow-origin"] == HOST

        # Another version (another deploy's) or an unknown module is a 404 nobody caches.
        version = url.rsplit("/", 2)[1]
        for missing in ("/widget/0123456789abcdef/component.js",
                        f"/widget/{version}/nothing.js", f"/widget/{version}/../widget.js"):
            r = await client.get(missing)
            assert r.status_code == 404, missing
            assert r.json()["error"] == "not_found"
        r = await client.get("/widget/0123456789abcdef/component.js")
        assert r.headers["cache-control"] == "no-store"
        assert r.headers["access-control-allow-origin"] == "*"


def test_a_deploy_gives_every_module_a_new_url(tmp_path: Path) -> None:
    shutil.copytree(STATIC_DIR, tmp_path, dirs_exist_ok=True)
    before = Widget.read(tmp_path)
    assert set(before.modules) == MODULES
    assert before.entry.body.count(f"./widget/{before.version}/".encode()) >= 1
    assert b"__VERSION__" not in before.entry.body

    # One module changes: the version and so the entry's imports and ETag change with it, while
    # unchanged modules keep their bodies.
    strings = tmp_path / "widget" / "strings.js"
    strings.write_text(strings.read_text() + "// next release\n")
    after = Widget.read(tmp_path)
    assert after.version != before.version
    assert f"./widget/{after.version}/".encode() in after.entry.body
    assert before.version.encode() not in after.entry.body
    assert after.entry.etag != before.entry.etag
    assert after.modules["strings.js"].etag != before.modules["strings.js"].etag
    assert after.modules["markdown.js"] == before.modules["markdown.js"]

    (tmp_path / "widget.js").write_text("import './widget/component.js';\n")
    with pytest.raises(RuntimeError, match="imports no versioned module"):
        Widget.read(tmp_path)


def test_only_markdown_and_icons_reach_inner_html() -> None:
    """The safety rule (markdown.js) across every module, a future feature's too: HTML is only
    ever set from renderMarkdown() or the widget's own icons."""
    sinks = 0
    for path in sorted((STATIC_DIR / "widget").glob("*.js")):
        code = path.read_text()
        assert not re.search(r"outerHTML|insertAdjacentHTML|document\.write|srcdoc", code), path
        for rhs in re.findall(r"\.innerHTML\s*=\s*([^;]+);", code):
            assert re.fullmatch(r"renderMarkdown\([\w.]+\)|ICONS(\.\w+|\[\w+\])", rhs), (path.name, rhs)
            sinks += 1
    assert sinks >= 2


REPLY = ["Фотосинтез ", "turns **light** ", "into sugar", " [1]."]


async def test_one_script_tag_on_another_origin_loads_the_modules_and_streams(
        settings: Settings, page: Page) -> None:
    """The host page has one module script and the element with a token, no `server`: the
    widget finds its server from where widget.js came from."""
    host_port = free_port()
    host_origin = f"http://127.0.0.1:{host_port}"
    assert settings.embed_secret
    token = jwt.encode({"sub": "school-user-2", "name": "Анна", "exp": int(time.time()) + 600},
                       settings.embed_secret, "HS256")
    async with FakeProvider(default=openai_stream(REPLY)) as provider:
        tutor = create_app(settings.model_copy(update={
            "cors_origins": [host_origin], "llm_provider": "openai",
            "openai_base_url": provider.base_url + "/v1", "openai_api_key": "sk-test",
            "llm_retries": 0}))
        async with serve_app(tutor) as tutor_url:
            scripts: list[Response] = []
            page.on("response", lambda r: scripts.append(r)
                    if r.request.resource_type == "script" else None)
            sockets: list[str] = []
            frames: list[str] = []

            def on_socket(ws) -> None:  # type: ignore[no-untyped-def]
                sockets.append(ws.url)
                ws.on("framereceived", lambda payload: frames.append(str(payload)))

            page.on("websocket", on_socket)
            element = f'<tutorhub-chat token="{token}"></tutorhub-chat>'
            async with school_site(host_port, tutor_url, element) as host_page:
                await page.goto(host_page)
                chat = page.locator("tutorhub-chat")
                await expect(chat.locator(".status")).to_have_attribute("data-state", "connected")
                await expect(chat.locator(".who")).to_have_text("Анна")

                box = chat.get_by_label("Message the tutor")
                await box.fill("What does photosynthesis do?")
                await box.press("Enter")
                answer = chat.locator(".msg.assistant").last
                await expect(answer).to_have_attribute("data-status", "stop")
                await expect(answer.locator(".md")).to_have_text(
                    "Фотосинтез turns light into sugar 1.")
                await expect(answer.locator(".md strong")).to_have_text("light")

    assert sockets and all(url.startswith(tutor_url.replace("http", "ws", 1))
                           for url in sockets)
    assert any('"reply.delta"' in f for f in frames)
    by_url = {r.url: r for r in scripts}
    assert tutor_url + "/widget.js" in by_url
    modules = {_module_name(url): r for url, r in by_url.items() if url != tutor_url + "/widget.js"}
    assert set(modules) == MODULES
    for r in by_url.values():
        headers = await r.all_headers()
        assert r.status == 200 and headers["content-type"] == JAVASCRIPT, r.url
        assert headers["access-control-allow-origin"] == host_origin, r.url
    assert page.errors == []  # type: ignore[attr-defined]
