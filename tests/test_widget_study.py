"""The widget's Study view in Chromium: open it from a ready material, follow a citation of the
notes, review a due card with the keyboard (Space, then 3 = Good), finish a quiz with feedback
after each answer and the final score. Screenshots in test-artifacts/."""

from __future__ import annotations

import httpx
from playwright.async_api import Page, expect

from chat_server.app import create_app
from chat_server.settings import Settings
from tests.support.browser import artifact, browser_fixture, page_fixture  # noqa: F401
from tests.support.services import serve_app
from tests.support.study import study_ready
from tests.support.widget import log_in, register
from tests.test_study_review import TEXT


async def test_review_a_due_card_and_finish_a_quiz(settings: Settings, page: Page) -> None:
    async with serve_app(create_app(settings)) as base:
        token = await register(base, "student@example.com")
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=base, timeout=60) as client:
            r = await client.post("/materials/text", headers=headers,
                                  json={"title": "Baikal", "text": TEXT})
            mid = r.json()["id"]
            study = await study_ready(client, headers, mid)
        chat = await log_in(page, base, "student@example.com")
        await chat.get_by_role("button", name="Materials").click()
        await chat.get_by_role("button", name="Study: Baikal").click()
        sheet = chat.get_by_role("dialog", name="Study · Baikal")
        await expect(sheet.get_by_role("tab", name="Summary & notes")).to_have_attribute(
            "aria-selected", "true")
        await expect(sheet.locator(".md")).to_contain_text("Summary")
        await sheet.locator(".cite").first.click()
        citation = chat.locator(".sheet.citation")
        await expect(citation).to_be_visible()
        await expect(citation.locator("mark")).not_to_be_empty()
        await citation.get_by_role("button", name="Close").click()

        # The tabs follow the arrow keys (the ARIA tabs pattern).
        await sheet.get_by_role("tab", name="Summary & notes").focus()
        await page.keyboard.press("ArrowLeft")
        await expect(sheet.get_by_role("tab", name="Quiz")).to_have_attribute(
            "aria-selected", "true")
        await page.keyboard.press("ArrowRight")
        await page.keyboard.press("ArrowRight")
        await expect(sheet.get_by_role("tab", name="Flashcards")).to_have_attribute(
            "aria-selected", "true")
        await expect(sheet.locator(".due-count")).to_contain_text(f"0 due · {study['flashcards']} new")
        await expect(sheet.locator(".card-area")).to_contain_text("Card 1 of")
        front = await sheet.locator(".front").text_content()
        assert front and "_____" in front
        await page.keyboard.press("Space")
        await expect(sheet.locator(".answer")).to_be_visible()
        await page.screenshot(path=str(artifact("study-card-flipped.png")))
        await page.keyboard.press("3")
        await expect(sheet.locator(".card-area")).to_contain_text("Card 2 of")
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            cards = (await client.get(f"/materials/{mid}/flashcards", headers=headers)).json()
        reviewed = [c for c in cards if c["review"]]
        assert len(reviewed) == 1 and reviewed[0]["front"] == front

        await sheet.get_by_role("tab", name="Quiz").click()
        for n in range(1, study["questions"] + 1):
            box = sheet.locator(".question")
            await expect(box.locator("legend")).to_have_text(f"Question {n} of {study['questions']}")
            if await box.locator("input.short").count():
                await box.locator("input.short").fill("something")
                await box.get_by_role("button", name="Check").click()
            else:
                await box.locator("button.option").first.click()
            await expect(box.locator(".feedback")).to_be_visible()
            await expect(box.locator(".passage mark")).not_to_be_empty()
            if n == 1:
                await page.screenshot(path=str(artifact("study-quiz-feedback.png")))
            await box.locator("button.next").click()
        score = sheet.locator(".score")
        await expect(score).to_contain_text(f"of {study['questions']}")
        await page.screenshot(path=str(artifact("study-quiz-score.png")))

        # In Russian: the host page switches the widget's language; the Study view follows.
        await page.locator("tutorhub-chat").evaluate("(el) => el.setAttribute('lang', 'ru')")
        await chat.get_by_role("button", name="Материалы").click()
        await chat.get_by_role("button", name="Учёба: Baikal").click()
        ru = chat.get_by_role("dialog", name="Учёба · Baikal")
        await ru.get_by_role("tab", name="Карточки").click()
        await expect(ru.locator(".card-area")).to_contain_text("Карточка 1 из")
        assert not page.errors  # type: ignore[attr-defined]
