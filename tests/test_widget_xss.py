"""HTML in a material's title and text and in a model's reply reaches the page as inert text.

The host page here has no Content-Security-Policy (unlike the demo page), so an injected
handler WOULD run — the canary proves it — and only the widget's escaping stands in the way."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from fastapi.responses import HTMLResponse
from playwright.async_api import Page, expect

from chat_server.app import create_app
from chat_server.settings import Settings
from tests.support.browser import browser_fixture, page_fixture  # noqa: F401
from tests.support.fake_providers import FakeProvider, openai_stream
from tests.support.services import serve_app
from tests.support.widget import log_in, register
from tests.test_widget_streaming import _add_text

TITLE = '<img src=x onerror="window.__xss=\'title\'">Notes'
TEXT = ('Photosynthesis <img src=x onerror="window.__xss=\'text\'"> turns light into chemical '
        "energy. <script>window.__xss='text-script'</script> Plants release oxygen.")
REPLY = ["Here ", "<script>window.__xss='reply'</script>", " and ",
         "<img src=x onerror=\"window.__xss='reply-img'\">", " and ",
         "[link](javascript:window.__xss='link') ", "<b>not bold</b> [1]"]
HOST_PAGE = ('<!doctype html><meta charset="utf-8"><title>host</title>'
             '<script type="module" src="/widget.js"></script><tutorhub-chat></tutorhub-chat>')


@pytest.fixture
async def base_url(settings: Settings) -> AsyncIterator[str]:
    async with FakeProvider(default=openai_stream(REPLY)) as provider:
        tuned = settings.model_copy(update={
            "llm_provider": "openai", "openai_base_url": provider.base_url + "/v1",
            "openai_api_key": "sk-test", "llm_retries": 0})
        app = create_app(tuned)
        # A host page of the same origin without the demo page's CSP (served by the app itself:
        # Chromium's local-network checks refuse sockets from pages Playwright fabricates).
        app.add_api_route("/host-without-csp", lambda: HTMLResponse(HOST_PAGE))
        async with serve_app(app) as url:
            yield url


async def test_html_from_materials_and_model_is_inert_text(base_url: str, page: Page) -> None:
    token = await register(base_url, "xss@example.com")
    await _add_text(base_url, token, TITLE, TEXT)
    chat = await log_in(page, base_url, "xss@example.com", path="/host-without-csp")

    # Canary: on this page an injected handler runs (so the assertions below mean something).
    await page.evaluate("""() => { const d = document.createElement('div');
        d.innerHTML = '<img src=x onerror="window.__canary=1">'; document.body.append(d); }""")
    await page.wait_for_function("window.__canary === 1")

    await chat.get_by_role("button", name="Materials").click()
    await expect(chat.locator(".mat .title")).to_have_text(TITLE)
    await chat.get_by_role("button", name="Close").first.click()

    box = chat.get_by_label("Message the tutor")
    await box.fill("What does photosynthesis do? <img src=x onerror=\"window.__xss='question'\">")
    await box.press("Enter")
    answer = chat.locator(".msg.assistant").last
    await expect(answer).to_have_attribute("data-status", "stop")
    await expect(answer.locator(".md")).to_contain_text("Here <script>window.__xss='reply'</script>")
    await expect(answer.locator(".md")).to_contain_text("<img src=x onerror=\"window.__xss='reply-img'\">")
    await expect(answer.locator(".md")).to_contain_text("[link](javascript:window.__xss='link')")
    await expect(answer.locator(".md")).to_contain_text("<b>not bold</b>")
    await expect(chat.locator(".msg.user")).to_contain_text("<img src=x onerror=")

    await answer.locator(".md .cite").click()
    sheet = chat.get_by_role("dialog")
    await expect(sheet.get_by_role("heading")).to_have_text(f"Source 1 · {TITLE}")
    await expect(sheet.locator(".passage")).to_contain_text("<script>window.__xss='text-script'</script>")
    await expect(sheet.locator(".passage")).to_contain_text('<img src=x onerror="window.__xss=\'text\'">')

    counts = await page.evaluate("""() => {
        const root = document.querySelector('tutorhub-chat').shadowRoot;
        return {
            elements: root.querySelectorAll('img, script, iframe, object, b, [onerror]').length,
            links: [...root.querySelectorAll('a')].map((a) => a.href),
        };
    }""")
    assert counts == {"elements": 0, "links": []}
    assert await page.evaluate("window.__xss") is None
    assert page.errors == []  # type: ignore[attr-defined]
