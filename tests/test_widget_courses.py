"""The instructor page and the course picker in real Chromium: an instructor creates a course,
adds a material, sets up its tutor and invites; a learner joins with the invite link, sees what
is shared before enrolling, picks the course and gets an answer from its material, and finds
the course's material in the materials drawer (read-only) with its Study view."""

from __future__ import annotations

import asyncpg
import httpx
from playwright.async_api import Page, expect

from chat_server.app import create_app
from chat_server.db import libpq_url
from chat_server.settings import Settings
from tests.support.browser import browser_fixture, page_fixture  # noqa: F401  (fixtures)
from tests.support.services import serve_app
from tests.support.study import study_ready
from tests.support.widget import PASSWORD, log_in, register

READER = ("The mitochondrion is the powerhouse of the cell. Mitochondria produce ATP through "
          "oxidative phosphorylation.")


async def test_instructor_page_and_course_picker(settings: Settings, page: Page) -> None:
    async with serve_app(create_app(settings)) as base:
        teacher = {"Authorization": f"Bearer {await register(base, 'teacher@example.com')}"}
        await register(base, "pupil@example.com")
        db = await asyncpg.connect(libpq_url(settings.database_url or ""))
        try:
            await db.execute("update users set role = 'instructor' "
                             "where email = 'teacher@example.com'")
        finally:
            await db.close()

        # The instructor page, served by the app.
        await page.goto(base + "/instructor")
        app = page.locator("tutorhub-instructor")
        await app.get_by_label("Email").fill("teacher@example.com")
        await app.get_by_label("Password").fill(PASSWORD)
        await app.get_by_role("button", name="Log in").click()
        new = app.locator(".new-course")
        await new.get_by_label("Title").fill("Cell biology")
        await new.get_by_role("button", name="Create").click()
        await expect(app.get_by_role("heading", name="Cell biology")).to_be_visible()
        materials = app.locator(".materials-card")
        await materials.get_by_label("Material title").fill("Mitochondria")
        await materials.get_by_label("Text", exact=True).fill(READER)
        await materials.get_by_role("button", name="Add text").click()
        await expect(materials.locator("[data-status=ready]")).to_have_count(1, timeout=60_000)
        setup = app.locator(".setup")
        await setup.get_by_label("Instructions for the tutor").fill("Keep answers short.")
        await setup.get_by_label("Socratic by default").uncheck()
        await setup.get_by_role("button", name="Save").click()
        await expect(setup.get_by_role("status")).to_have_text("Saved.")
        invites = app.locator(".invites")
        await invites.get_by_role("button", name="Create invite").click()
        url = await invites.locator(".invite-url").text_content()
        assert url and "#join=" in url
        await expect(app.locator(".activity")).to_contain_text("0 learners")

        # A learner opens the invite link in another tab and signs in.
        learner = await page.context.new_page()
        errors: list[object] = []
        learner.on("pageerror", lambda e: errors.append(e))
        chat = await log_in(learner, base, "pupil@example.com",
                            path="/" + url.split("/", 3)[3])
        picker = chat.locator(".courses")
        await expect(picker).to_contain_text("Cell biology.")
        await expect(picker).to_contain_text("stay private")
        await picker.get_by_role("button", name="Enroll").click()
        select = picker.get_by_label("Course")
        await expect(select).to_have_value(await select.locator("option").nth(1).get_attribute(
            "value") or "x")
        await expect(picker.locator(".scope")).to_have_text(
            "The tutor answers from the materials of the course “Cell biology”.")
        await chat.get_by_label("Message the tutor").fill("What is the powerhouse of the cell?")
        await chat.get_by_label("Message the tutor").press("Enter")
        await expect(chat.locator(".msg.assistant").last).to_contain_text("powerhouse",
                                                                          timeout=30_000)
        await expect(select).to_be_disabled()  # the conversation keeps its course
        # The course's material in the learner's drawer: read-only, with its Study view.
        async with httpx.AsyncClient(base_url=base, timeout=60) as client:
            mid = (await client.get("/materials", headers=teacher,
                                    params={"course_id": await select.input_value()})).json()[0]["id"]
            await study_ready(client, teacher, mid)
        await chat.get_by_role("button", name="Materials").click()
        listed = chat.get_by_role("list", name="Course materials: Cell biology")
        await expect(listed.locator(".mat")).to_have_count(1)
        await expect(listed.locator(".mat .title")).to_have_text("Mitochondria")
        await expect(listed.get_by_role("button", name="Remove")).to_have_count(0)
        await listed.get_by_role("button", name="Study: Mitochondria").click()
        sheet = chat.get_by_role("dialog", name="Study · Mitochondria")
        await expect(sheet.locator(".md")).to_contain_text("Summary")
        await expect(sheet.locator(".md")).to_contain_text("powerhouse")
        await expect(sheet.get_by_role("button", name="Generate again")).to_have_count(0)
        await sheet.get_by_role("button", name="Close").click()
        # Back on the instructor's page: one question, no text of it.
        await page.bring_to_front()
        await app.get_by_role("button", name="Cell biology").click()
        activity = app.locator(".activity")
        await expect(activity).to_contain_text("1 learner")
        await expect(activity).to_contain_text("1 question")
        await expect(activity).not_to_contain_text("powerhouse of the cell?")
        await expect(activity).to_contain_text("Mitochondria — 1")
        # The page in Russian (the same session: its tokens are this tab's).
        await page.evaluate("""() => { const ru = document.createElement('tutorhub-instructor');
            ru.setAttribute('lang', 'ru'); ru.id = 'ru'; document.body.append(ru); }""")
        ru = page.locator("#ru")
        await expect(ru.get_by_role("heading", name="Tutorhub для преподавателей")).to_be_visible()
        await expect(ru.get_by_role("button", name="Cell biology")).to_be_visible()
        await expect(ru.get_by_role("heading", name="Новый курс")).to_be_visible()
        assert page.errors == []  # type: ignore[attr-defined]
        assert errors == []
