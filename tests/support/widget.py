"""Helpers for the widget tests: log in through the widget's own form, watch its DOM."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from playwright.async_api import Locator, Page, expect

from chat_server.settings import Settings
from tests.support.fake_providers import FakeProvider
from tests.support.services import serve_app

PASSWORD = "correct horse battery"


async def register(base_url: str, email: str, password: str = PASSWORD) -> str:
    """Create an account over REST; return an access token."""
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        r = await client.post("/auth/register", json={"email": email, "password": password})
        assert r.status_code == 201, r.text
        r = await client.post("/auth/token", data={"username": email, "password": password})
        assert r.status_code == 200, r.text
        return str(r.json()["access_token"])


async def log_in(page: Page, base_url: str, email: str, password: str = PASSWORD,
                 path: str = "/") -> Locator:
    """Open the demo page, log in with the form, wait for the socket; return the widget."""
    await page.goto(base_url + path)
    chat = page.locator("tutorhub-chat")
    await chat.get_by_label("Email").fill(email)
    await chat.get_by_label("Password").fill(password)
    await chat.get_by_role("button", name="Log in").click()
    await expect(chat.locator(".status")).to_have_attribute("data-state", "connected")
    return chat


def streaming_from(settings: Settings, provider: FakeProvider) -> Settings:
    """`settings` with the tutor streaming from `provider`, a loopback OpenAI-compatible server."""
    return settings.model_copy(update={
        "llm_provider": "openai", "openai_base_url": provider.base_url + "/v1",
        "openai_api_key": "sk-test", "llm_retries": 0})


async def ask(chat: Locator, question: str) -> Locator:
    """Send a question with the message box; return the finished answer's message."""
    box = chat.get_by_label("Message the tutor")
    await box.fill(question)
    await box.press("Enter")
    answer = chat.locator(".msg.assistant").last
    await expect(answer).to_have_attribute("data-status", "stop", timeout=30_000)
    return answer


@asynccontextmanager
async def school_site(port: int, tutor_url: str, element: str) -> AsyncIterator[str]:
    """A host site on its own origin (a loopback port) whose page embeds the widget served by
    `tutor_url` with one module script and `element`; yields the page's URL."""
    html = (f'<!doctype html><meta charset="utf-8"><h1>School</h1>'
            f'<script type="module" src="{tutor_url}/widget.js"></script>{element}')
    host = FastAPI()
    host.add_api_route("/", lambda: HTMLResponse(html))
    async with serve_app(host, port=port) as url:
        yield url + "/"


async def record_material_states(page: Page) -> None:
    """Record every text each material's status line shows, per material id (window.__states)."""
    await page.evaluate("""() => {
        const root = document.querySelector('tutorhub-chat').shadowRoot;
        window.__states = {};
        const scan = () => {
            for (const item of root.querySelectorAll('.mat')) {
                const seen = (window.__states[item.dataset.id] ??= []);
                const text = item.querySelector('.state').textContent;
                if (seen[seen.length - 1] !== text) seen.push(text);
            }
        };
        new MutationObserver(scan).observe(root, {subtree: true, childList: true,
                                                  characterData: true, attributes: true});
    }""")


async def material_states(page: Page, material_id: str) -> list[str]:
    return list(await page.evaluate("(id) => window.__states[id] || []", material_id))
