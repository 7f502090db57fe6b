"""The widget end to end with the default offline tutor: upload a PDF (file picker and drag and
drop) with live progress, ask about it, open a citation; reload the conversation over REST."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import pytest
from playwright.async_api import FilePayload, Page, expect

from chat_server.app import create_app
from chat_server.settings import Settings
from tests.support.browser import artifact, browser_fixture, page_fixture  # noqa: F401
from tests.support.ingest import Video, make_pdf, youtube_server
from tests.support.services import serve_app
from tests.support.widget import ask, log_in, material_states, record_material_states, register

PAGES = [
    "Mitochondria are the powerhouse of the cell. They produce ATP through cellular "
    "respiration in eukaryotic cells, using oxygen and glucose.",
    "Photosynthesis converts light energy into chemical energy inside chloroplasts. "
    "Plants release oxygen as a by-product of photosynthesis in their leaves.",
    "The French Revolution began in 1789 in Paris. It ended the absolute monarchy "
    "and spread the ideas of liberty and equality across Europe.",
]


@pytest.fixture
async def base_url(settings: Settings) -> AsyncIterator[str]:
    # Small chunks without overlap: one chunk per page, so a citation names exactly one page.
    tuned = settings.model_copy(update={"chunk_size_chars": 200, "chunk_overlap_chars": 0})
    async with serve_app(create_app(tuned)) as url:
        yield url


async def test_upload_pdf_ask_and_open_citation(base_url: str, page: Page) -> None:
    await register(base_url, "learner@example.com")
    chat = await log_in(page, base_url, "learner@example.com")
    await record_material_states(page)

    # Upload with the file picker.
    await chat.get_by_role("button", name="Materials").click()
    pdf: FilePayload = {"name": "biology.pdf", "mimeType": "application/pdf",
                        "buffer": make_pdf(PAGES)}
    await chat.locator("input[type=file]").set_input_files(files=[pdf])
    item = chat.locator(".mat", has_text="biology")
    await expect(item).to_have_attribute("data-status", "ready", timeout=60_000)
    await expect(item.locator(".state")).to_have_text("Ready · 3 pages · 3 passages")
    await expect(item.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "100")
    states = await material_states(page, await item.get_attribute("data-id") or "")
    # The bar was driven by material.progress events on its way to ready.
    stages = [s for s in states if s.split(" ")[0] in {"Reading", "Splitting", "Embedding", "Indexing"}]
    assert stages, states
    assert states[-1] == "Ready · 3 pages · 3 passages"

    # Drag and drop a second PDF onto the widget; a non-PDF is refused with a reason.
    drop = await page.evaluate_handle("""([b64, name, type]) => {
        const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        const dt = new DataTransfer();
        dt.items.add(new File([bytes], name, {type}));
        return dt;
    }""", [base64.b64encode(make_pdf(["Конспект: клетка — основная единица жизни."])).decode(),
           "конспект.pdf", "application/pdf"])
    app = chat.locator(".app")
    await app.dispatch_event("dragenter", {"dataTransfer": drop})
    await expect(chat.locator(".drop-overlay")).to_be_visible()
    await app.dispatch_event("drop", {"dataTransfer": drop})
    await expect(chat.locator(".drop-overlay")).to_be_hidden()
    await expect(chat.locator(".mat", has_text="конспект")).to_have_attribute(
        "data-status", "ready", timeout=60_000)
    unreadable = await page.evaluate_handle("""() => {
        const dt = new DataTransfer();
        dt.items.add(new File(['ID3'], 'song.mp3', {type: 'audio/mpeg'}));
        return dt;
    }""")
    await app.dispatch_event("drop", {"dataTransfer": unreadable})
    await expect(chat.locator(".toast")).to_have_text(
        "“song.mp3” is not a file we read: upload a PDF, Word (.docx), PowerPoint (.pptx), "
        "Markdown, HTML, text, PNG or JPEG file.")
    await chat.get_by_role("button", name="Close").first.click()

    # Shift+Enter adds a line and sends nothing; Enter sends.
    box = chat.get_by_label("Message the tutor")
    await box.fill("first line")
    await box.press("Shift+Enter")
    await box.press_sequentially("second line")
    assert await box.input_value() == "first line\nsecond line"
    assert await chat.locator(".msg.user").count() == 0
    await box.fill("What is photosynthesis?")
    await box.press("Enter")
    await expect(box).to_have_value("")

    answer = chat.locator(".msg.assistant").last
    await expect(answer).to_have_attribute("data-status", "stop", timeout=30_000)
    await expect(answer.locator(".md")).to_contain_text(
        "Photosynthesis converts light energy into chemical energy inside chloroplasts.")
    # The screen reader hears the finished reply.
    await expect(chat.locator(".sr-only")).to_contain_text("Tutor replied: ")
    # The conversation was created and titled from the question, and is now current.
    await expect(chat.locator(".conv-list button[aria-current=true]")).to_have_count(1)

    chip = answer.locator(".md .cite").first
    await expect(chip).to_be_visible()
    await chip.click()
    sheet = chat.get_by_role("dialog")
    await expect(sheet).to_be_visible()
    await expect(sheet.get_by_role("heading")).to_contain_text("biology")
    await expect(sheet.locator(".where")).to_have_text("p. 2")
    await expect(sheet.locator(".passage")).to_contain_text(
        "Plants release oxygen as a by-product of photosynthesis")
    # The passage opens with the span the answer quotes marked.
    await expect(sheet.locator(".passage mark").first).to_be_visible()
    assert (await sheet.locator(".passage mark").first.text_content() or "") in (await answer.locator(".md").text_content() or "")
    await expect(sheet.get_by_role("button", name="Close")).to_be_focused()
    # The kept original opens at the cited page (fetched with the session's token).
    async with page.expect_popup() as opened:
        await sheet.get_by_role("button", name="Open the original at p. 2").click()
    original = await opened.value
    assert original.url.startswith("blob:") and original.url.endswith("#page=2"), original.url
    await original.close()
    await sheet.get_by_role("button", name="Close").focus()
    await page.keyboard.press("Escape")
    await expect(sheet).to_be_hidden()
    await expect(chip).to_be_focused()
    await page.screenshot(path=artifact("widget-answer-with-citation.png"))

    # After a reload the conversation comes back over REST with its citations.
    await page.reload()
    await expect(chat.locator(".status")).to_have_attribute("data-state", "connected")
    await chat.locator(".conv-list button").first.click()
    stored = chat.locator(".msg.assistant").last
    await expect(stored.locator(".md")).to_contain_text("Photosynthesis converts light energy")
    await stored.locator(".sources .source").first.click()
    await expect(chat.get_by_role("dialog").locator(".where")).to_have_text("p. 2")
    assert page.errors == []  # type: ignore[attr-defined]


async def test_youtube_link_and_pasted_text_with_timestamped_citation(settings: Settings,
                                                                     page: Page) -> None:
    video = Video(snippets=[(0.0, 4.0, "Welcome to the biology lecture."),
                            (30.0, 5.0, "Today we look at leaves and roots."),
                            (65.4, 5.0, "Photosynthesis turns light into sugar in chloroplasts.")])
    with youtube_server({"dQw4w9WgXcQ": video}) as yt:
        tuned = settings.model_copy(update={"youtube_base_url": yt.base_url,
                                            "chunk_size_chars": 60, "chunk_overlap_chars": 0})
        async with serve_app(create_app(tuned)) as url:
            await register(url, "yt@example.com")
            chat = await log_in(page, url, "yt@example.com")
            await chat.get_by_role("button", name="Materials").click()
            await chat.get_by_label("YouTube link").fill("https://www.youtube.com/watch?v=dQw4w9WgXcQ")
            await chat.get_by_role("button", name="Add", exact=True).click()
            video_item = chat.locator(".mat", has_text="YouTube video dQw4w9WgXcQ")
            await expect(video_item).to_have_attribute("data-status", "ready", timeout=60_000)
            await expect(video_item.locator(".kind")).to_have_text("youtube")

            # Pasted text without a title is named by its first line; Russian text works.
            await chat.get_by_label("Text", exact=True).fill("Хлорофилл поглощает свет.\nВторая строка.")
            await chat.get_by_role("button", name="Add text").click()
            text_item = chat.locator(".mat", has_text="Хлорофилл поглощает свет.")
            await expect(text_item).to_have_attribute("data-status", "ready", timeout=60_000)
            # A bad link fails with the server's reason, next to the form.
            await chat.get_by_label("YouTube link").fill("https://example.com/not-a-video")
            await chat.get_by_role("button", name="Add", exact=True).click()
            await expect(chat.locator(".yt-form .form-error")).to_contain_text("url")
            await page.screenshot(path=artifact("widget-materials.png"))
            await chat.get_by_role("button", name="Close").first.click()

            answer = await ask(chat, "What does photosynthesis turn light into?")
            await expect(answer.locator(".md")).to_contain_text("Photosynthesis turns light into sugar")
            await answer.locator(".md .cite").first.click()
            link = chat.get_by_role("dialog").get_by_role("link", name="Watch on YouTube at 1:05")
            await expect(link).to_have_attribute("href", "https://youtu.be/dQw4w9WgXcQ?t=65")
            await expect(chat.locator(".sources .source").first).to_contain_text("1:05")
            assert page.errors == []  # type: ignore[attr-defined]


async def test_a_presentation_is_cited_by_slide_and_its_original_downloads(base_url: str, page: Page) -> None:
    from tests.support.formats import make_pptx

    await register(base_url, "slides@example.com")
    chat = await log_in(page, base_url, "slides@example.com")
    await chat.get_by_role("button", name="Materials").click()
    accept = await chat.locator("input[type=file]").get_attribute("accept") or ""
    assert {".pdf", ".docx", ".pptx", ".md", ".txt", ".html", ".png", ".jpg"} <= set(accept.split(","))
    await expect(chat.locator(".dropzone")).to_contain_text("PDF (text or scanned), Word, PowerPoint, Markdown, HTML, text, PNG or JPEG")
    deck: FilePayload = {"name": "volcanoes.pptx", "mimeType": "application/octet-stream", "buffer": make_pptx([
        ("Volcanoes", "A tour of the volcanoes of Europe.", None),
        ("Iceland", "Iceland sits on the Mid-Atlantic Ridge.", None),
        ("Etna", "Mount Etna erupted in 2021. Its lava reached a temperature of 1100 degrees.", None)])}
    await chat.locator("input[type=file]").set_input_files(files=[deck])
    item = chat.locator(".mat", has_text="volcanoes")
    await expect(item).to_have_attribute("data-status", "ready", timeout=60_000)
    await expect(item.locator(".state")).to_contain_text("Ready · 3 slides")
    await chat.get_by_role("button", name="Close").first.click()

    answer = await ask(chat, "What temperature did the lava of Mount Etna reach?")
    await expect(answer.locator(".sources .source").first).to_contain_text("volcanoes · slide 3")
    await answer.locator(".md .cite").first.click()
    sheet = chat.get_by_role("dialog")
    await expect(sheet.locator(".where")).to_have_text("slide 3")
    await expect(sheet.locator(".passage")).to_contain_text("1100 degrees")
    async with page.expect_download() as downloading:
        await sheet.get_by_role("button", name="Open the presentation (slide 3)").click()
    download = await downloading.value
    assert download.suggested_filename == "volcanoes.pptx"
    assert page.errors == []  # type: ignore[attr-defined]
