"""The widget's Link Telegram button in real Chromium: it shows the one-time t.me deep link."""

from __future__ import annotations

from playwright.async_api import Page, expect

from chat_server.settings import Settings
from tests.support.browser import browser_fixture, page_fixture  # noqa: F401  (fixtures)
from tests.support.telegram import telegram_env
from tests.support.widget import log_in, register


async def test_link_telegram_shows_a_fresh_deep_link(settings: Settings, page: Page) -> None:
    async with telegram_env(settings, bridge=False) as env:
        await register(env.base_url, "telegram-fan@example.com")
        chat = await log_in(page, env.base_url, "telegram-fan@example.com")
        link = chat.get_by_role("link", name="https://t.me/tutorhub_test_bot?start=")
        button = chat.get_by_role("button", name="Link Telegram")
        if not await button.is_visible():
            await chat.locator(".toggle-convs").click()
        await button.click()
        await expect(link).to_be_visible()
        await expect(chat.get_by_role("status").filter(has_text="within 15 min")).to_be_visible()
        first = await link.get_attribute("href")
        assert first and first.startswith("https://t.me/tutorhub_test_bot?start=")
        assert await link.get_attribute("rel") == "noopener noreferrer"
        await button.click()  # another code each time: a link is single-use
        await expect(link).not_to_have_attribute("href", first)
        assert page.errors == []  # type: ignore[attr-defined]
