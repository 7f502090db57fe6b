"""Streaming in the widget against a real OpenAI-compatible loopback provider whose reply waits
at a gate mid-way: stop mid-reply, a network drop mid-reply (resume completes it exactly once),
model and material text with HTML stays inert, screenshots mid-stream and at 360 px."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import pytest
from playwright.async_api import Locator, Page, expect

from chat_server.app import create_app
from chat_server.settings import Settings
from tests.support.browser import artifact, browser_fixture, page_fixture  # noqa: F401
from tests.support.fake_providers import DONE, FakeProvider, Scripted, openai_chunk, openai_usage
from tests.support.netdrop import DropProxy
from tests.support.services import serve_app
from tests.support.widget import log_in, register

QUESTION = "What does photosynthesis do?"
NOTES = ("Photosynthesis turns light into chemical energy in chloroplasts. "
         "Plants release oxygen while doing photosynthesis.")


@dataclass
class GatedReply:
    """The provider's reply: `first` pieces at once, then it waits for `release`, then `rest`."""

    first: list[str]
    rest: list[str]
    release: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def text(self) -> str:
        return "".join(self.first + self.rest)

    async def body(self) -> AsyncIterator[bytes]:
        yield openai_chunk("")
        for piece in self.first:
            yield openai_chunk(piece)
        await self.release.wait()
        for piece in self.rest:
            yield openai_chunk(piece)
        yield openai_chunk(None, "stop")
        yield openai_usage(20, len(self.first) + len(self.rest))
        yield DONE


@dataclass
class Stack:
    base_url: str  # the app itself
    reply: GatedReply
    provider: FakeProvider


def _reply() -> GatedReply:
    first = [f"Part{i} " for i in range(1, 13)] + ["**bold** ", "[1] "]
    rest = [f"Tail{i} " for i in range(1, 41)] + ["end [1]."]
    return GatedReply(first, rest)


@pytest.fixture
async def stack(settings: Settings) -> AsyncIterator[Stack]:
    reply = _reply()
    async with FakeProvider(default=lambda _: Scripted(stream=reply.body)) as provider:
        tuned = settings.model_copy(update={
            "llm_provider": "openai", "openai_base_url": provider.base_url + "/v1",
            "openai_api_key": "sk-test", "llm_retries": 0})
        try:
            async with serve_app(create_app(tuned)) as url:
                yield Stack(url, reply, provider)
        finally:
            reply.release.set()


async def _add_text(base_url: str, token: str, title: str, text: str) -> str:
    async with httpx.AsyncClient(base_url=base_url, timeout=30,
                                 headers={"Authorization": f"Bearer {token}"}) as client:
        r = await client.post("/materials/text", json={"title": title, "text": text})
        assert r.status_code == 202, r.text
        material_id = str(r.json()["id"])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # wait for ingestion, bounded
            status = (await client.get(f"/materials/{material_id}")).json()["status"]
            if status in {"ready", "failed"}:
                assert status == "ready"
                return material_id
            await asyncio.sleep(0.05)
        raise AssertionError("material not ready in 60 s")


async def _stored_reply(base_url: str, token: str, until: set[str]) -> dict[str, object]:
    """The stored assistant message of the user's only conversation, once its status is in `until`."""
    async with httpx.AsyncClient(base_url=base_url, timeout=30,
                                 headers={"Authorization": f"Bearer {token}"}) as client:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            convs = (await client.get("/conversations")).json()
            if convs:
                conv = (await client.get(f"/conversations/{convs[0]['id']}")).json()
                replies = [m for m in conv["messages"] if m["role"] == "assistant"]
                if replies and replies[-1]["status"] in until:
                    return dict(replies[-1])
            await asyncio.sleep(0.05)
        raise AssertionError(f"no stored reply with status in {until}")


def shown(markdown: str) -> str:
    """What the reply's Markdown reads as on screen (a citation marker is a numbered chip)."""
    return markdown.replace("**bold**", "bold").replace("[1]", "1").strip()


async def _ask(chat: Locator, text: str) -> Locator:
    box = chat.get_by_label("Message the tutor")
    await box.fill(text)
    await box.press("Enter")
    return chat.locator(".msg.assistant").last


async def test_stop_mid_reply(stack: Stack, page: Page) -> None:
    token = await register(stack.base_url, "stop@example.com")
    await _add_text(stack.base_url, token, "Photosynthesis notes", NOTES)
    chat = await log_in(page, stack.base_url, "stop@example.com")
    answer = await _ask(chat, QUESTION)
    partial = shown("".join(stack.reply.first))
    await expect(answer.locator(".md")).to_have_text(partial)
    await expect(answer).to_have_class("msg assistant streaming")
    stop = chat.get_by_role("button", name="Stop")
    await expect(stop).to_be_visible()
    await expect(chat.get_by_role("button", name="Send")).to_be_hidden()
    await page.screenshot(path=artifact("widget-mid-stream.png"))

    # The same moment at 360 px, in the dark scheme: nothing overflows sideways.
    await page.set_viewport_size({"width": 360, "height": 740})
    await page.emulate_media(color_scheme="dark")
    await expect(stop).to_be_visible()
    assert await page.evaluate("document.documentElement.scrollWidth") <= 360
    assert await page.evaluate("""() => {
        const app = document.querySelector('tutorhub-chat').shadowRoot.querySelector('.messages');
        return app.scrollWidth <= app.clientWidth;
    }""")
    await page.screenshot(path=artifact("widget-360px-mid-stream-dark.png"))

    await stop.click()
    await expect(answer).to_have_attribute("data-status", "cancelled")
    await expect(answer.locator(".meta .tag")).to_have_text("Stopped")
    await expect(answer.locator(".md")).to_have_text(partial)
    await expect(chat.get_by_role("button", name="Send")).to_be_visible()
    await expect(chat.get_by_label("Message the tutor")).to_be_focused()
    stored = await _stored_reply(stack.base_url, token, {"cancelled"})
    assert stored["content"] == "".join(stack.reply.first)
    assert "Tail1" not in await answer.inner_text()
    assert page.errors == []  # type: ignore[attr-defined]


async def test_network_drop_mid_reply_completes_exactly_once(settings: Settings, stack: Stack,
                                                             page: Page) -> None:
    token = await register(stack.base_url, "drop@example.com")
    await _add_text(stack.base_url, token, "Photosynthesis notes", NOTES)
    async with DropProxy(int(stack.base_url.rsplit(":", 1)[1])) as net:
        chat = await log_in(page, net.base_url, "drop@example.com")
        answer = await _ask(chat, QUESTION)
        partial = shown("".join(stack.reply.first))
        await expect(answer.locator(".md")).to_have_text(partial)

        # The network goes away mid-reply; the rest of the reply is produced meanwhile.
        net.drop()
        status = chat.locator(".status")
        await expect(status).to_have_attribute("data-state", "reconnecting")
        await expect(chat.locator(".banner", has_text="reconnecting")).to_be_visible()
        stack.reply.release.set()
        stored = await _stored_reply(stack.base_url, token, {"complete"})
        assert stored["content"] == stack.reply.text
        assert "Tail1" not in await answer.inner_text()  # nothing arrived while away

        # Back online: the socket resumes from its offset and the reply completes from the
        # replayed events alone — no reload of the conversation over REST.
        reloads: list[str] = []
        page.on("request", lambda r: reloads.append(r.url)
                if "/conversations/" in r.url and r.method == "GET" else None)
        net.restore()
        await expect(status).to_have_attribute("data-state", "connected")
        await expect(answer).to_have_attribute("data-status", "stop")
        expected = shown(stack.reply.text)
        await expect(answer.locator(".md")).to_have_text(expected)
        text = await answer.locator(".md").inner_text()
        assert text.count("Part1 ") == 1 and text.count("Tail40 ") == 1
        assert text.count("end") == 1
        await expect(chat.locator(".msg.assistant")).to_have_count(1)
        await expect(chat.locator(".msg.user")).to_have_count(1)
        assert net.accepted >= 2
        assert reloads == []
    assert page.errors == []  # type: ignore[attr-defined]


async def test_history_gone_on_reconnect_reloads_the_reply_over_rest(settings: Settings,
                                                                      page: Page) -> None:
    """resume.failed (history trimmed while offline): the widget reloads over REST, once."""
    reply = _reply()
    async with FakeProvider(default=lambda _: Scripted(stream=reply.body)) as provider:
        tuned = settings.model_copy(update={
            "llm_provider": "openai", "openai_base_url": provider.base_url + "/v1",
            "openai_api_key": "sk-test", "llm_retries": 0,
            # The rest of the reply, its citations and its end are > 2 events.
            "history_max_events": 2})
        try:
            async with serve_app(create_app(tuned)) as base_url:
                token = await register(base_url, "trimmed@example.com")
                await _add_text(base_url, token, "Photosynthesis notes", NOTES)
                async with DropProxy(int(base_url.rsplit(":", 1)[1])) as net:
                    chat = await log_in(page, net.base_url, "trimmed@example.com")
                    answer = await _ask(chat, QUESTION)
                    await expect(answer.locator(".md")).to_have_text(shown("".join(reply.first)))
                    # Reconnect attempts open new sockets while the network is down.
                    received: list[str] = []
                    page.on("websocket", lambda ws: ws.on(
                        "framereceived", lambda payload: received.append(str(payload))))
                    net.drop()
                    await expect(chat.locator(".status")).to_have_attribute(
                        "data-state", "reconnecting")
                    reply.release.set()
                    await _stored_reply(base_url, token, {"complete"})
                    reloads: list[str] = []
                    page.on("request", lambda r: reloads.append(r.url)
                            if "/conversations/" in r.url and r.method == "GET" else None)
                    net.restore()
                    await expect(chat.locator(".status")).to_have_attribute(
                        "data-state", "connected")
                    # The stored reply replaces the partial one: complete, once.
                    await expect(answer.locator(".md")).to_have_text(shown(reply.text))
                    assert any('"resume.failed"' in f and '"history_trimmed"' in f
                               for f in received), received[:5]
                    assert reloads, "the widget did not reload the conversation over REST"
                    text = await chat.locator(".msg.assistant").last.inner_text()
                    assert text.count("Part1 ") == 1 and text.count("Tail40 ") == 1
                    await expect(chat.locator(".msg.assistant")).to_have_count(1)
                    await expect(chat.locator(".msg.user")).to_have_count(1)
        finally:
            reply.release.set()
    assert page.errors == []  # type: ignore[attr-defined]
