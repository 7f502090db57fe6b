"""Sessions in the widget, in Chromium: the next user of a tab never sees the last one's data
(session lost then another login; another user's embed token on a live socket; an answer that
arrives after logout), logout revokes the refresh token's family on the server, and the
widget keeps the newest refresh token of each rotation."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from jose import jwt
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import Locator, Page, Route, expect

from chat_server.app import create_app
from chat_server.settings import Settings
from tests.support.browser import browser_fixture, page_fixture  # noqa: F401  (fixtures)
from tests.support.fake_providers import FakeProvider, openai_stream
from tests.support.services import serve_app
from tests.support.widget import PASSWORD, log_in, register, streaming_from

ANNA = "anna@example.com"
BORIS = "boris@example.com"
# Everything of Anna's that the widget could show: none of it may ever reach Boris's screen.
SECRETS = (ANNA, "Anna Host", "SECRET-A")
REPLY = ["SECRET-A-REPLY: ", "chloroplasts ", "make **sugar**."]

# All the text, attribute values and field values in the widget's shadow root right now.
SNAPSHOT = """() => {
    const root = document.querySelector('tutorhub-chat').shadowRoot;
    const parts = [root.textContent];
    for (const node of root.querySelectorAll('*')) {
        for (const a of node.attributes) parts.push(a.value);
        if (typeof node.value === 'string') parts.push(node.value);
    }
    return parts.join('\\n');
}"""

# From now on, record every text that enters the shadow root (window.__seen), however briefly:
# a node keeps its text after it is removed again.
RECORD = """() => {
    const root = document.querySelector('tutorhub-chat').shadowRoot;
    window.__seen = [];
    new MutationObserver((records) => {
        for (const r of records) {
            if (r.type === 'characterData') window.__seen.push(r.target.data);
            else if (r.type === 'attributes') {
                window.__seen.push(r.target.getAttribute(r.attributeName) || '');
            } else r.addedNodes.forEach((node) => window.__seen.push(node.textContent || ''));
        }
    }).observe(root, {subtree: true, childList: true, characterData: true, attributes: true});
}"""


@pytest.fixture
async def base_url(settings: Settings) -> AsyncIterator[str]:
    async with FakeProvider(default=openai_stream(REPLY)) as provider:
        async with serve_app(create_app(streaming_from(settings, provider))) as url:
            yield url


async def assert_nothing_of_anna(page: Page, *, ever: bool = False) -> None:
    shown = await page.evaluate(SNAPSHOT)
    assert not [s for s in SECRETS if s in shown], shown
    if ever:
        seen = "\n".join(await page.evaluate("window.__seen"))
        assert not [s for s in SECRETS if s in seen], seen


async def until(condition: Callable[[], bool], timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def stored_tokens(page: Page, base_url: str) -> dict[str, str] | None:
    tokens = await page.evaluate("(key) => JSON.parse(sessionStorage.getItem(key))",
                                 f"tutorhub:{base_url}")
    return dict(tokens) if tokens else None


async def add_material(base_url: str, token: str, title: str) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=30,
                                 headers={"Authorization": f"Bearer {token}"}) as client:
        r = await client.post("/materials/text", json={"title": title,
                                                       "text": f"{title}: chloroplasts make sugar."})
        assert r.status_code == 202, r.text


async def ask(chat: Locator, text: str) -> None:
    box = chat.get_by_label("Message the tutor")
    await box.fill(text)
    await box.press("Enter")
    await expect(chat.locator(".msg.assistant").last).to_have_attribute("data-status", "stop")


async def test_the_next_user_of_the_tab_never_sees_the_last_ones_data(base_url: str,
                                                                      page: Page) -> None:
    anna = await register(base_url, ANNA)
    boris = await register(base_url, BORIS)
    await add_material(base_url, anna, "SECRET-A-MAT")
    await add_material(base_url, boris, "Boris notes")
    refreshes: list[str] = []
    page.on("request", lambda r: refreshes.append(r.url) if r.url.endswith("/auth/refresh") else None)

    # Anna: a conversation open, her materials listed, a draft typed and not sent.
    chat = await log_in(page, base_url, ANNA)
    await ask(chat, "SECRET-A-QUESTION: what do chloroplasts make?")
    await chat.get_by_role("button", name="Materials").click()
    await expect(chat.locator(".mat", has_text="SECRET-A-MAT")).to_have_count(1)
    await chat.get_by_role("button", name="Close").first.click()
    await chat.get_by_label("Message the tutor").fill("SECRET-A-DRAFT")
    await expect(chat.locator(".conv-list button[aria-current=true]")).to_have_count(1)

    # Her session is lost: her password changes elsewhere, so the server closes her socket
    # (4401) and refuses her refresh token. One refresh is tried, then the login form.
    tokens = await stored_tokens(page, base_url)
    assert tokens
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        r = await client.post("/me/password", headers={"Authorization": f"Bearer {tokens['access']}"},
                              json={"current_password": PASSWORD, "new_password": PASSWORD + "!"})
        assert r.status_code == 200, r.text
    await expect(chat.locator(".login .form-error")).to_have_text(
        "Your session has expired. Please log in again.")
    assert await stored_tokens(page, base_url) is None
    await assert_nothing_of_anna(page)  # not even hidden behind the form
    await page.evaluate(RECORD)

    # Boris logs in in the same tab: only his own data, from the first frame on.
    await expect(chat.get_by_label("Email")).to_have_value("")
    await chat.get_by_label("Email").fill(BORIS)
    await chat.get_by_label("Password").fill(PASSWORD)
    await chat.get_by_role("button", name="Log in").click()
    await assert_nothing_of_anna(page, ever=True)
    await expect(chat.locator(".status")).to_have_attribute("data-state", "connected")
    await assert_nothing_of_anna(page, ever=True)
    await expect(chat.locator(".who")).to_have_text(BORIS)
    await expect(chat.locator(".mat", has_text="Boris notes")).to_have_count(1)  # loaded
    await expect(chat.get_by_text("Ask your tutor anything")).to_be_visible()
    await expect(chat.locator(".conv-list li")).to_have_count(0)
    await expect(chat.locator(".mat")).to_have_count(1)
    await assert_nothing_of_anna(page, ever=True)
    assert len(refreshes) == 1, refreshes  # the refused refresh was not retried
    assert page.errors == []  # type: ignore[attr-defined]


async def test_logout_revokes_the_refresh_family_and_drops_late_answers(base_url: str,
                                                                       page: Page) -> None:
    anna = await register(base_url, ANNA)
    async with httpx.AsyncClient(base_url=base_url, timeout=30,
                                 headers={"Authorization": f"Bearer {anna}"}) as client:
        r = await client.post("/conversations", json={"title": "SECRET-A-CONV"})
        assert r.status_code == 201, r.text
    await add_material(base_url, anna, "SECRET-A-MAT")
    # What the session loads as it starts is held up until after she has logged out.
    held: list[Route] = []
    await page.route(re.compile(r".*/(me|conversations\?.*|materials\?.*)$"),
                     lambda route: held.append(route))
    chat = await log_in(page, base_url, ANNA)
    await until(lambda: len(held) == 3)

    # Each refresh stores the pair it returns: the next one presents the new refresh token (a
    # retired one would be refused as reused and revoke the family).
    refreshed = [await stored_tokens(page, base_url)]
    for _ in range(2):
        assert await chat.evaluate("(el) => el.api.refresh()") is True
        refreshed.append(await stored_tokens(page, base_url))
    assert len({t["refresh"] for t in refreshed if t}) == 3
    last = refreshed[-1]
    assert last

    async with page.expect_request("**/auth/logout") as logout:
        await chat.get_by_role("button", name="Log out").click()
    request = await logout.value
    assert request.method == "POST"
    assert request.post_data_json == {"refresh_token": last["refresh"]}
    response = await request.response()
    assert response and response.status == 204
    await expect(chat.get_by_role("heading", name="Sign in to your tutor")).to_be_visible()
    assert await stored_tokens(page, base_url) is None

    # The held answers come now (the widget aborted them; were one delivered, it is dropped).
    done: list[str] = []
    page.on("requestfinished", lambda r: done.append(r.url))
    for route in held:
        try:
            await route.continue_()
        except PlaywrightError:
            pass  # the page had aborted it
    await until(lambda: all(route.request.url in done or route.request.failure for route in held))
    await page.wait_for_timeout(100)  # a delivered answer would be painted by now
    await assert_nothing_of_anna(page)

    # The server refuses the refresh token the widget held at logout (its family is revoked).
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        r = await client.post("/auth/refresh", json={"refresh_token": last["refresh"]})
        assert r.status_code == 401, r.text
    assert page.errors == []  # type: ignore[attr-defined]


def embed_token(settings: Settings, sub: str, name: str, ttl_s: int = 600) -> str:
    assert settings.embed_secret
    now = int(time.time())
    return jwt.encode({"sub": sub, "name": name, "iat": now, "exp": now + ttl_s},
                      settings.embed_secret, "HS256")


async def test_another_users_embed_token_starts_over(settings: Settings, base_url: str,
                                                     page: Page) -> None:
    anna = embed_token(settings, "host-anna", "Anna Host")
    boris = embed_token(settings, "host-boris", "Boris Host")
    async with httpx.AsyncClient(base_url=base_url, timeout=30,
                                 headers={"Authorization": f"Bearer {anna}"}) as client:
        r = await client.post("/conversations", json={"title": "SECRET-A-CONV"})
        assert r.status_code == 201, r.text
    await add_material(base_url, anna, "SECRET-A-MAT")
    await add_material(base_url, boris, "Boris notes")
    sockets: list[list[str]] = []

    def on_socket(ws) -> None:  # type: ignore[no-untyped-def]
        received: list[str] = []
        sockets.append(received)
        ws.on("framereceived", lambda payload: received.append(str(payload)))

    page.on("websocket", on_socket)

    await page.goto(base_url + "/")
    chat = page.locator("tutorhub-chat")
    await chat.evaluate("(el, token) => el.setAttribute('token', token)", anna)
    await expect(chat.locator(".who")).to_have_text("Anna Host")
    await expect(chat.locator(".conv-list button", has_text="SECRET-A-CONV")).to_have_count(1)
    await expect(chat.locator(".mat", has_text="SECRET-A-MAT")).to_have_count(1)

    # The host page renews Anna's token: her live socket takes it, no reconnect.
    renewed = embed_token(settings, "host-anna", "Anna Host", ttl_s=900)
    await chat.evaluate("(el, token) => el.setAttribute('token', token)", renewed)
    await until(lambda: any('"auth.refreshed"' in f for f in sockets[0]))
    assert len(sockets) == 1

    # Then it hands over another user's token: the widget starts over as Boris.
    await page.evaluate(RECORD)
    await chat.evaluate("(el, token) => el.setAttribute('token', token)", boris)
    await assert_nothing_of_anna(page, ever=True)
    await expect(chat.locator(".who")).to_have_text("Boris Host")
    await expect(chat.locator(".mat", has_text="Boris notes")).to_have_count(1)
    await expect(chat.locator(".status")).to_have_attribute("data-state", "connected")
    await expect(chat.locator(".conv-list li")).to_have_count(0)
    await assert_nothing_of_anna(page, ever=True)
    assert len(sockets) == 2 and not any('"auth_failed"' in f for f in sockets[0])
    assert page.errors == []  # type: ignore[attr-defined]
