"""The widget in Russian and English, in Chromium: the language comes from the element's `lang`,
else the page's, else the browser's; a Russian widget labels everything in Russian (text,
placeholders, aria-labels, statuses, errors, material states) and renders a Russian
conversation; the catalogues have the same keys."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from fastapi.responses import HTMLResponse
from playwright.async_api import Browser, Locator, Page, expect

from chat_server.app import create_app
from chat_server.settings import Settings
from tests.support.browser import browser_fixture, page_fixture  # noqa: F401  (fixtures)
from tests.support.fake_providers import FakeProvider, openai_stream
from tests.support.services import serve_app
from tests.support.widget import PASSWORD, register, streaming_from
from tests.test_widget_streaming import _add_text

REPLY = ["Фотосинтез — это **процесс**, ", "в котором растения ", "делают сахар [1]."]
NOTES = "Хлоропласты превращают свет в сахар. Растения выделяют кислород."
PAGES = {
    # The element's own `lang` wins over the page's.
    "/ru-widget": '<html lang="en"><tutorhub-chat lang="ru"></tutorhub-chat>',
    "/ru-page": '<html lang="ru"><tutorhub-chat id="page"></tutorhub-chat>'
                '<tutorhub-chat id="own" lang="en"></tutorhub-chat>',
    "/no-lang": "<html><tutorhub-chat></tutorhub-chat>",
}

# The catalogues of the page's widget, compared: keys missing from Russian, Russian strings
# left in English, Russian plural forms.
CATALOGUES = """async () => {
    const entry = await (await fetch('/widget.js')).text();
    const path = entry.match(/'(\\.\\/widget\\/[0-9a-f]+\\/strings\\.js)'/)[1];
    const {EN, RU} = await import(new URL(path, location.origin + '/').href);
    const missing = [];
    const same = [];
    const walk = (en, ru, at) => {
        for (const [k, v] of Object.entries(en)) {
            if (!(k in ru) || typeof ru[k] !== typeof v) missing.push(at + k);
            else if (typeof v === 'object') walk(v, ru[k], at + k + '.');
            else if (typeof v === 'string' && ru[k] === v) same.push(at + k);
            else if (typeof v === 'function' && ru[k](7) === v(7)) same.push(at + k);
        }
    };
    walk(EN, RU, '');
    return {missing, same, pages: [1, 3, 5, 11, 21].map(RU.pages), chunks: [2, 12].map(RU.chunks)};
}"""

# Every English UI string of four letters or more that Russian words differently (case
# matters: class names and attribute keywords are lower case) found in the shadow root's text
# and attribute values, outside its stylesheet.
ENGLISH_LEFT = """async () => {
    const entry = await (await fetch('/widget.js')).text();
    const path = entry.match(/'(\\.\\/widget\\/[0-9a-f]+\\/strings\\.js)'/)[1];
    const {EN, RU} = await import(new URL(path, location.origin + '/').href);
    const english = [];
    const walk = (en, ru) => {
        for (const [k, v] of Object.entries(en)) {
            if (typeof v === 'object') walk(v, ru[k]);
            else if (typeof v === 'string' && v !== ru[k] && v.length >= 4) english.push(v);
        }
    };
    walk(EN, RU);
    const root = document.querySelector('tutorhub-chat').shadowRoot;
    const shown = [];
    for (const node of root.querySelectorAll('*')) {
        if (node.closest('style')) continue;
        for (const child of node.childNodes) if (child.nodeType === 3) shown.push(child.data);
        for (const a of node.attributes) shown.push(a.value);
        if (typeof node.value === 'string') shown.push(node.value);
    }
    const text = shown.join('\\n');
    return english.filter((s) => text.includes(s));
}"""


@pytest.fixture
async def base_url(settings: Settings) -> AsyncIterator[str]:
    async with FakeProvider(default=openai_stream(REPLY)) as provider:
        app = create_app(streaming_from(settings, provider))
        for path, body in PAGES.items():
            # Served by the app itself (Chromium refuses sockets from fabricated pages).
            html = ('<!doctype html>' + body.replace('<tutorhub-chat', '<script type="module" '
                    'src="/widget.js"></script><tutorhub-chat', 1))
            app.add_api_route(path, lambda html=html: HTMLResponse(html))
        async with serve_app(app) as url:
            yield url


async def test_russian_widget(base_url: str, page: Page) -> None:
    token = await register(base_url, "ivan@example.com")
    await _add_text(base_url, token, "Конспект о хлоропластах", NOTES)
    await page.goto(base_url + "/ru-widget")
    chat = page.locator("tutorhub-chat")
    await expect(chat.get_by_role("heading", name="Вход к вашему тьютору")).to_be_visible()
    await expect(chat.locator(".status")).to_have_text("Нет связи")

    # The server's error is worded by its code.
    await chat.get_by_label("Эл. почта").fill("ivan@example.com")
    await chat.get_by_label("Пароль").fill("wrong password")
    await chat.get_by_role("button", name="Войти").click()
    await expect(chat.get_by_role("alert")).to_have_text("Неверный адрес почты или пароль.")
    await chat.get_by_label("Пароль").fill(PASSWORD)
    await chat.get_by_role("button", name="Войти").click()
    await expect(chat.locator(".status")).to_have_text("Подключено")

    box = chat.get_by_label("Сообщение тьютору")
    await expect(box).to_have_attribute("placeholder", "Спросите о своих материалах…")
    await expect(chat.get_by_role("button", name="Отправить")).to_be_visible()
    await expect(chat.get_by_role("log", name="Сообщения")).to_contain_text(
        "Спросите тьютора о чём угодно")
    await expect(chat.locator(".toggle-convs")).to_have_attribute("aria-label", "Беседы")
    await expect(chat.get_by_role("switch")).to_be_visible()
    await expect(chat.locator("label.switch")).to_have_text("Сократовский режим")

    await chat.get_by_role("button", name="Материалы").click()
    item = chat.locator(".mat", has_text="Конспект о хлоропластах")
    await expect(item.locator(".state")).to_have_text("Готово · 1 фрагмент")
    await expect(item.locator(".kind")).to_have_text("текст")
    await expect(item.get_by_role("button", name="Удалить")).to_be_visible()
    await expect(chat.get_by_label("Ссылка на YouTube")).to_be_visible()
    await chat.get_by_role("button", name="Закрыть").first.click()

    await box.fill("Что делают растения при фотосинтезе?")
    await box.press("Enter")
    answer = chat.locator(".msg.assistant").last
    await expect(answer).to_have_attribute("data-status", "stop")
    await expect(chat.locator(".msg.user .md")).to_have_text("Что делают растения при фотосинтезе?")
    await expect(answer.locator(".md")).to_have_text(
        "Фотосинтез — это процесс, в котором растения делают сахар 1.")
    await expect(answer.locator(".md strong")).to_have_text("процесс")
    await expect(chat.locator(".sr-only")).to_contain_text("Ответ тьютора: Фотосинтез")
    await expect(chat.locator(".conv-list button[aria-current=true]")).to_have_text(
        "Что делают растения при фотосинтезе?")
    chip = answer.locator(".md .cite")
    await expect(chip).to_have_attribute("aria-label", "Источник 1")
    await chip.click()
    sheet = chat.get_by_role("dialog")
    await expect(sheet.get_by_role("heading")).to_have_text("Источник 1 · Конспект о хлоропластах")
    await expect(sheet.locator(".passage")).to_contain_text("Хлоропласты превращают свет в сахар.")
    await expect(sheet.get_by_role("button", name="Закрыть")).to_be_focused()
    await page.keyboard.press("Escape")

    assert await page.evaluate(ENGLISH_LEFT) == []
    assert page.errors == []  # type: ignore[attr-defined]


def heading(chat: Locator) -> Locator:
    return chat.locator(".login h2")


async def test_language_comes_from_the_element_the_page_or_the_browser(
        base_url: str, page: Page, browser: Browser) -> None:
    english, russian = "Sign in to your tutor", "Вход к вашему тьютору"
    await page.goto(base_url + "/ru-page")
    by_page, own = page.locator("#page"), page.locator("#own")
    await expect(heading(by_page)).to_have_text(russian)
    await expect(heading(own)).to_have_text(english)
    await expect(own.get_by_label("Email")).to_be_visible()

    # A host page switches a widget's language: it relabels itself.
    await by_page.evaluate("(el) => el.setAttribute('lang', 'en')")
    await expect(heading(by_page)).to_have_text(english)
    await own.evaluate("(el) => el.removeAttribute('lang')")  # the page's, then
    await expect(heading(own)).to_have_text(russian)
    await expect(own.get_by_role("button", name="Нет аккаунта? Создайте его")).to_be_visible()

    # No `lang` anywhere: the browser's language; this context's is en-US.
    await page.goto(base_url + "/no-lang")
    await expect(heading(page.locator("tutorhub-chat"))).to_have_text(english)
    context = await browser.new_context(locale="ru-RU")
    try:
        ru_page = await context.new_page()
        await ru_page.goto(base_url + "/no-lang")
        await expect(heading(ru_page.locator("tutorhub-chat"))).to_have_text(russian)
    finally:
        await context.close()

    catalogues = await page.evaluate(CATALOGUES)
    assert catalogues["missing"] == []
    assert catalogues["same"] == ["appName", "youtubePlaceholder"]
    assert catalogues["pages"] == ["1 страница", "3 страницы", "5 страниц", "11 страниц",
                                   "21 страница"]
    assert catalogues["chunks"] == ["2 фрагмента", "12 фрагментов"]
    assert page.errors == []  # type: ignore[attr-defined]
