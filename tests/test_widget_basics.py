"""The widget in real Chromium: served assets, login, connection status, safe Markdown."""

from __future__ import annotations

import time

import httpx
from jose import jwt
from playwright.async_api import Page, expect

from chat_server.app import create_app
from chat_server.settings import Settings
from tests.support.browser import browser_fixture, page_fixture  # noqa: F401  (fixtures)
from tests.support.services import free_port, serve_app
from tests.support.widget import school_site

PASSWORD = "correct horse battery"


async def test_widget_js_and_demo_page_are_served(client: httpx.AsyncClient) -> None:
    r = await client.get("/widget.js")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/javascript; charset=utf-8"
    assert "max-age" in r.headers["cache-control"]
    assert "customElements.define('tutorhub-chat'" in r.text
    etag = r.headers["etag"]
    again = await client.get("/widget.js", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""

    r = await client.get("/")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert '<script type="module" src="/widget.js"></script>' in r.text
    assert "<tutorhub-chat>" in r.text
    assert "script-src 'self'" in r.headers["content-security-policy"]


async def test_log_in_with_the_form_and_connect(
    server: str, client: httpx.AsyncClient, page: Page, register_user  # type: ignore[no-untyped-def]
) -> None:
    await register_user(client, "learner@example.com", PASSWORD)
    await page.goto(server + "/")
    chat = page.locator("tutorhub-chat")
    await expect(chat.get_by_role("heading", name="Sign in to your tutor")).to_be_visible()

    # A wrong password shows the server's message and keeps the form.
    await chat.get_by_label("Email").fill("learner@example.com")
    await chat.get_by_label("Password").fill("wrong password")
    await chat.get_by_role("button", name="Log in").click()
    await expect(chat.get_by_role("alert")).to_have_text("Incorrect email or password.")

    await chat.get_by_label("Password").fill(PASSWORD)
    await chat.get_by_role("button", name="Log in").click()
    await expect(chat.get_by_label("Message the tutor")).to_be_focused()
    await expect(chat.locator(".status")).to_have_attribute("data-state", "connected")
    await expect(chat.locator(".status")).to_have_text("Connected")
    await expect(chat.get_by_text("Ask your tutor anything")).to_be_visible()

    # The session survives a reload of the tab; logging out forgets it.
    await page.reload()
    await expect(chat.locator(".status")).to_have_attribute("data-state", "connected")
    await expect(chat.locator(".who")).to_have_text("learner@example.com")
    await chat.get_by_role("button", name="Log out").click()
    await expect(chat.get_by_role("heading", name="Sign in to your tutor")).to_be_visible()
    await page.reload()
    await expect(chat.get_by_role("heading", name="Sign in to your tutor")).to_be_visible()
    assert page.errors == []  # type: ignore[attr-defined]


async def test_register_from_the_widget(server: str, page: Page) -> None:
    await page.goto(server + "/")
    chat = page.locator("tutorhub-chat")
    await chat.get_by_role("button", name="No account yet? Create one").click()
    await expect(chat.get_by_role("heading", name="Create your account")).to_be_visible()
    await chat.get_by_label("Email").fill("новый@example.com".replace("новый", "novyi"))
    await chat.get_by_label("Password").fill(PASSWORD)
    await chat.get_by_role("button", name="Create account").click()
    await expect(chat.locator(".status")).to_have_attribute("data-state", "connected")
    await expect(chat.locator(".who")).to_have_text("novyi@example.com")


MARKDOWN_CASES: list[tuple[str, str]] = [
    ("**bold** and *it* and _it2_ and `x<y`",
     "<p><strong>bold</strong> and <em>it</em> and <em>it2</em> and <code>x&lt;y</code></p>"),
    ("<script>window.__pwned=1</script>", "<p>&lt;script&gt;window.__pwned=1&lt;/script&gt;</p>"),
    ('<img src=x onerror="window.__pwned=1">',
     "<p>&lt;img src=x onerror=&quot;window.__pwned=1&quot;&gt;</p>"),
    ("[ok](https://example.com/a_b_c?x=1&y=2) [bad](javascript:alert(1))",
     '<p><a href="https://example.com/a_b_c?x=1&amp;y=2" target="_blank" '
     'rel="noopener noreferrer nofollow">ok</a> [bad](javascript:alert(1))</p>'),
    # A quote in a URL stays an entity inside the attribute: it cannot end it.
    ('[x](https://e.com/"onmouseover="x)',
     '<p><a href="https://e.com/&quot;onmouseover=&quot;x" target="_blank" '
     'rel="noopener noreferrer nofollow">x</a></p>'),
    ("```py\nif a < b:\n    print('**no**')\n```",
     "<pre data-lang=\"py\"><code>if a &lt; b:\n    print(&#39;**no**&#39;)</code></pre>"),
    ("- one\n- two **2**\n\n1. first\n2. second",
     "<ul><li>one</li><li>two <strong>2</strong></li></ul><ol><li>first</li><li>second</li></ol>"),
    ("Фотосинтез — это **процесс** [1].\nВторая строка [2, 3]",
     '<p>Фотосинтез — это <strong>процесс</strong> <button type="button" class="cite" data-n="1" '
     'aria-label="Source 1">1</button>.<br>Вторая строка <button type="button" class="cite" '
     'data-n="2" aria-label="Source 2">2</button><button type="button" class="cite" data-n="3" '
     'aria-label="Source 3">3</button></p>'),
    ("snake_case_name stays", "<p>snake_case_name stays</p>"),
    ("__strong__ but window.__x='a' and b.__y stay", "<p><strong>strong</strong> but window.__x=&#39;a&#39; and b.__y stay</p>"),
    ("```\nunclosed fence mid-stream", "<pre><code>unclosed fence mid-stream</code></pre>"),
]


async def test_markdown_renderer_escapes_everything(server: str, page: Page) -> None:
    await page.goto(server + "/")
    rendered = await page.evaluate(
        """async (cases) => {
            const m = await import('/widget.js');
            return cases.map(([src]) => m.renderMarkdown(src));
        }""",
        MARKDOWN_CASES,
    )
    for (source, expected), got in zip(MARKDOWN_CASES, rendered, strict=True):
        assert got == expected, source
    assert await page.evaluate("window.__pwned") is None


async def test_embed_token_attribute_skips_the_login_form(server: str, page: Page,
                                                          settings: Settings) -> None:
    assert settings.embed_secret
    now = int(time.time())
    token = jwt.encode({"sub": "host-user-7", "name": "Мария Host", "iat": now, "exp": now + 600},
                       settings.embed_secret, "HS256")
    await page.goto(server + "/")
    chat = page.locator("tutorhub-chat")
    await expect(chat.get_by_role("heading", name="Sign in to your tutor")).to_be_visible()
    # The host page hands over its user's embed token; the widget connects as that user.
    await chat.evaluate("(el, token) => el.setAttribute('token', token)", token)
    await expect(chat.locator(".status")).to_have_attribute("data-state", "connected")
    await expect(chat.get_by_role("heading", name="Sign in to your tutor")).to_be_hidden()
    await expect(chat.locator(".who")).to_have_text("Мария Host")
    await expect(chat.get_by_role("button", name="Log out")).to_be_hidden()
    # Socratic mode of a new conversation is remembered until its first message creates it.
    await chat.get_by_text("Socratic mode").click()
    await expect(chat.get_by_role("switch")).to_be_checked()
    assert page.errors == []  # type: ignore[attr-defined]


async def test_embedded_on_another_origin(settings: Settings, page: Page) -> None:
    """A host site on its own origin: one module script + the element with `server` and `token`."""
    host_port = free_port()
    host_origin = f"http://127.0.0.1:{host_port}"
    assert settings.embed_secret
    now = int(time.time())
    token = jwt.encode({"sub": "school-user-1", "name": "Ivan", "exp": now + 600},
                       settings.embed_secret, "HS256")
    tutor = create_app(settings.model_copy(update={"cors_origins": [host_origin]}))
    async with serve_app(tutor) as tutor_url:
        element = f'<tutorhub-chat server="{tutor_url}" token="{token}"></tutorhub-chat>'
        async with school_site(host_port, tutor_url, element) as host_page:
            await page.goto(host_page)
            chat = page.locator("tutorhub-chat")
            await expect(chat.locator(".status")).to_have_attribute("data-state", "connected")
            await expect(chat.locator(".who")).to_have_text("Ivan")  # GET /me across origins
            await expect(chat.get_by_text("No conversations yet.")).to_be_visible()
    assert page.errors == []  # type: ignore[attr-defined]


async def test_expiring_token_is_refreshed_on_the_live_socket(settings: Settings,
                                                               page: Page) -> None:
    """auth.expiring → POST /auth/refresh → auth.refresh on the same socket: no reconnect, no 4403."""
    short = settings.model_copy(update={"access_token_ttl_s": 4, "ws_token_warning_s": 3.0})
    async with serve_app(create_app(short)) as base_url:
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
            r = await client.post("/auth/register", json={"email": "learner@example.com",
                                                          "password": PASSWORD})
            assert r.status_code == 201, r.text
        sockets: list[dict[str, list[str]]] = []

        def on_socket(ws) -> None:  # type: ignore[no-untyped-def]
            seen: dict[str, list[str]] = {"sent": [], "received": [], "closed": []}
            sockets.append(seen)
            ws.on("framesent", lambda payload: seen["sent"].append(str(payload)))
            ws.on("framereceived", lambda payload: seen["received"].append(str(payload)))
            ws.on("close", lambda _ws: seen["closed"].append("closed"))

        page.on("websocket", on_socket)
        await page.goto(base_url + "/")
        chat = page.locator("tutorhub-chat")
        await chat.get_by_label("Email").fill("learner@example.com")
        await chat.get_by_label("Password").fill(PASSWORD)
        await chat.get_by_role("button", name="Log in").click()
        await expect(chat.locator(".status")).to_have_attribute("data-state", "connected")
        logged_in = time.monotonic()
        # Past the first token's expiry: the socket must have been refreshed, not closed.
        deadline = logged_in + 15
        while time.monotonic() < deadline and not any(
                '"auth.refreshed"' in f for f in sockets[0]["received"]):
            await page.wait_for_timeout(200)
        await page.wait_for_timeout(max(0.0, logged_in + 5 - time.monotonic()) * 1000)
        first = sockets[0]
        assert any('"auth.expiring"' in f for f in first["received"]), first["received"]
        assert any('"auth.refresh"' in f for f in first["sent"]), first["sent"]
        assert any('"auth.refreshed"' in f for f in first["received"]), first["received"]
        assert len(sockets) == 1 and first["closed"] == [], "the widget reconnected"
        await expect(chat.locator(".status")).to_have_attribute("data-state", "connected")
    assert page.errors == []  # type: ignore[attr-defined]
