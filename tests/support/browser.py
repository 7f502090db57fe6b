"""Headless Chromium (Debian's /usr/bin/chromium) driven by Playwright, for the widget tests.

Import the fixtures into a test module:
`from tests.support.browser import browser_fixture, page_fixture  # noqa: F401`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture(scope="session", name="browser")
async def browser_fixture() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        b = await pw.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            yield b
        finally:
            await b.close()


class PageErrors(list[str]):
    """Uncaught exceptions and console errors of a page (asserted empty by tests)."""


@pytest.fixture(name="page")
async def page_fixture(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 1100, "height": 760}, locale="en-US")
    context.set_default_timeout(20_000)
    p = await context.new_page()
    errors = PageErrors()
    p.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    # Chromium logs every 4xx response as a console error; those are expected (a wrong
    # password is a 401). Script errors are what tests assert away.
    p.on("console", lambda msg: errors.append(f"console.{msg.type}: {msg.text}")
         if msg.type == "error" and not msg.text.startswith("Failed to load resource") else None)
    p.errors = errors  # type: ignore[attr-defined]
    try:
        yield p
    finally:
        await context.close()


def artifact(name: str) -> Path:
    """A path under test-artifacts/ (gitignored; the README names it) for screenshots."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS / name
