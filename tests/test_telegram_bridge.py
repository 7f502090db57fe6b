"""The Telegram bridge end to end: aiogram against the loopback Bot API (tests/support/
fake_telegram.py), the real server on pgserver, the loopback OpenAI provider."""

from __future__ import annotations

import json
import re

import asyncpg
import httpx

from chat_server.db import libpq_url
from chat_server.settings import Settings
from chat_server.telegram.render import to_html, to_text
from chat_server.telegram.routes import SECRET_HEADER
from tests.support.formats import (
    encrypted_docx,
    image_bytes,
    make_pptx,
    render_lines,
    scanned_pdf,
)
from tests.support.ingest import Video, make_pdf, youtube_server
from tests.support.telegram import telegram_env
from tests.support.ws import recv, socket


async def test_linking_with_a_good_a_reused_and_an_expired_code(settings: Settings) -> None:
    async with telegram_env(settings) as env:
        api = env.api

        async def say(chat: int, text: str, language: str = "en") -> str:
            """Send a message; the bot's answer (its next message in the chat)."""
            count = len(api.messages[chat])
            api.message(chat, text, language=language)
            await env.idle(chat)
            return (await env.said(chat, count + 1))[-1].text

        _, auth = await env.user()
        async with httpx.AsyncClient(base_url=env.base_url) as c:
            assert (await c.get("/telegram/link", headers=auth)).json()["linked"] is False
            assert (await c.post("/telegram/link")).status_code == 401
        url = await env.link_url(auth)
        assert url.startswith("https://t.me/tutorhub_test_bot?start=")
        code = url.split("start=", 1)[1]

        # Not linked yet: refused with instructions, in the user's language.
        assert "привяжите аккаунт" in await say(501, "Что такое фотосинтез?", "ru")
        assert (await say(501, f"/start {code}", "ru")).startswith("Аккаунт привязан")
        async with httpx.AsyncClient(base_url=env.base_url) as c:
            status = (await c.get("/telegram/link", headers=auth)).json()
        assert status["linked"] is True and status["telegram_username"] == "user501"

        # The same code again, from someone else: single use.
        assert "already used" in await say(502, f"/start {code}")
        assert "not valid" in await say(502, "/start not-a-code-at-all")

        # An expired code.
        url = await env.link_url(auth)
        assert settings.database_url
        conn = await asyncpg.connect(libpq_url(settings.database_url))
        try:
            await conn.execute("update telegram_link_codes set expires_at = now() - "
                               "interval '1 second' where used_at is null")
        finally:
            await conn.close()
        assert "expired" in await say(502, f"/start {url.split('start=', 1)[1]}")

        # A password change revokes every token, and the link with them; linked again, the
        # bridge's tokens carry the new token generation.
        async with httpx.AsyncClient(base_url=env.base_url) as c:
            r = await c.post("/me/password", headers=auth, json={
                "current_password": "password-123", "new_password": "password-456"})
            assert r.status_code == 200, r.text
            auth = {"Authorization": f"Bearer {r.json()['access_token']}"}
        assert "Пароль в Tutorhub был изменён" in await say(501, "Ещё здесь?", "ru")
        assert "link your account" in await say(501, "And now?")
        code = (await env.link_url(auth)).split("start=", 1)[1]
        assert (await say(501, f"/start {code}", "ru")).startswith("Аккаунт привязан")
        env.reply(["Still ", "here."])
        assert await say(501, "And now?") == "Still here."

        # Commands in Russian; /cards and /quiz without materials; /unlink undoes the link.
        assert "/socratic on|off" in await say(501, "/help", "ru")
        assert (await say(501, "/cards", "ru")).startswith("Сейчас нет карточек к повторению.")
        assert (await say(501, "/quiz")).startswith("You have no ready materials yet.")
        assert "no longer linked" in await say(501, "/unlink")
        async with httpx.AsyncClient(base_url=env.base_url) as c:
            assert (await c.get("/telegram/link", headers=auth)).json()["linked"] is False
        assert "link your account" in await say(501, "Hello?")


async def test_a_private_reply_streams_as_throttled_drafts_then_one_final_message(
    settings: Settings,
) -> None:
    async with telegram_env(settings) as env:
        _, auth = await env.linked(601)
        words = [f"word{i} " for i in range(40)]
        env.reply(["**Photosynthesis** ", "makes sugar. ", *words], delay_s=0.03)
        env.api.message(601, "What is photosynthesis?")
        final = (await env.said(601, 2))[-1]
        stored = await env.stored(auth)
        assert final.text == to_text(to_html(stored["content"])).strip()
        assert stored["content"].startswith("**Photosynthesis** makes sugar.")
        assert final.markup.startswith("<b>Photosynthesis</b> makes sugar.")

        drafts = env.api.of("sendMessageDraft", 601)
        assert len(drafts) >= 3
        gaps = [b.at - a.at for a, b in zip(drafts, drafts[1:], strict=False)]
        assert min(gaps) >= 0.2 - 0.02, gaps  # telegram_draft_interval_s
        shown = env.api.drafts[601]
        assert all(final.text.startswith(d) for d in shown)
        assert len(set(shown)) == len(shown)  # no draft repeats the one before
        assert len({c.params["draft_id"] for c in drafts}) == 1
        assert not env.api.of("editMessageText", 601)


async def test_a_group_reply_edits_one_placeholder_and_waits_out_a_429_and_an_outage(
    settings: Settings,
) -> None:
    async with telegram_env(settings) as env:
        _, auth = await env.linked(701)
        group = -100_701
        env.api.fail("editMessageText", 429, "flood", retry_after=1, after=1)
        env.reply([f"part{i} " for i in range(50)], delay_s=0.03)
        env.api.message(group, "Chatter between members", user_id=701, chat_type="group")
        env.api.message(group, "@Tutorhub_Test_Bot tell me everything", user_id=701,
                        chat_type="group")
        await env.api.wait_for(lambda: not env.api.faults)
        await env.idle(group)
        stored = await env.stored(auth)
        conversation = await env.conversation(auth)
        assert conversation["messages"][0]["content"] == "tell me everything"  # chatter ignored
        (message,) = env.api.messages[group]
        assert message.text == stored["content"].strip()
        assert message.edits >= 2 and not env.api.of("sendMessageDraft", group)

        calls = [c for c in env.api.calls if c.chat_id == group]
        (limited,) = [c for c in calls if c.status == 429]
        after = [c for c in calls if c.at > limited.at]
        assert after and after[0].at - limited.at >= 1.0 - 0.02  # retry_after honoured
        edits = [c for c in calls if c.method == "editMessageText" and c.status == 200]
        gaps = [b.at - a.at for a, b in zip(edits, edits[1:], strict=False)]
        assert min(gaps) >= 0.3 - 0.02, gaps  # telegram_edit_interval_s

        # A private chat that refuses drafts gets the placeholder too, from then on.
        env.api.refuse_drafts = True
        env.reply(["A ", "short ", "answer."], delay_s=0.05)
        env.api.message(701, "Again?")
        await env.said(701, 2)
        await env.idle(701)
        assert env.api.messages[701][-1].text == "A short answer."
        refused = len(env.api.of("sendMessageDraft", 701))
        env.reply(["Once ", "more."], delay_s=0.05)
        env.api.message(701, "And again?")
        await env.said(701, 3)
        await env.idle(701)
        assert env.api.messages[701][-1].text == "Once more."
        assert len(env.api.of("sendMessageDraft", 701)) == refused

        # The Bot API goes down: polling backs off, and the question asked meanwhile is
        # answered once it is back.
        env.api.outage(True)
        failed = len([c for c in env.api.calls if c.status == 502])
        await env.api.wait_for(lambda: len([c for c in env.api.calls if c.status == 502])
                               > failed)
        env.reply(["After ", "the outage."])
        env.api.message(701, "Are you there?")
        env.api.outage(False)
        await env.said(701, 4)
        await env.idle(701)
        assert env.api.messages[701][-1].text == "After the outage."


async def test_a_reply_over_4096_characters_is_split_at_paragraphs(settings: Settings) -> None:
    async with telegram_env(settings) as env:
        _, auth = await env.linked(801)
        paragraphs = [f"Paragraph {n}: " + " ".join(["lorem"] * 330) for n in range(3)]
        env.reply([p + "\n\n" for p in paragraphs[:-1]] + [paragraphs[-1]])
        env.api.message(801, "A long one, please")
        await env.said(801, 3)
        await env.idle(801)
        stored = await env.stored(auth)
        parts = env.api.texts(801)[1:]
        assert len(parts) == 2 and all(len(p) <= 4096 for p in parts)
        assert parts[0].startswith("Paragraph 0") and parts[1].startswith("Paragraph 2")
        assert "\n\n".join(p.strip() for p in parts) == stored["content"].strip()


async def test_stop_cancels_the_streaming_reply(settings: Settings) -> None:
    async with telegram_env(settings) as env:
        _, auth = await env.linked(901)
        env.reply([f"slow{i} " for i in range(500)], delay_s=0.02)
        env.api.message(901, "Take your time")
        await env.api.wait_for(lambda: len(env.api.drafts[901]) >= 2)
        env.api.message(901, "/stop")
        final = (await env.said(901, 2))[-1]
        stored = await env.stored(auth, "cancelled")
        assert final.text == stored["content"].strip() + "\n\n⏹ Stopped."
        assert 0 < len(stored["content"].split()) < 500
        env.api.message(901, "/stop")
        assert (await env.said(901, 3))[-1].text == "Nothing is being written right now."

        # The stop button of a draft does the same.
        env.reply([f"again{i} " for i in range(500)], delay_s=0.02)
        shown = len(env.api.drafts[901])
        env.api.message(901, "Once more")
        await env.api.wait_for(lambda: len(env.api.drafts[901]) >= shown + 2)
        draft = env.api.of("sendMessageDraft", 901)[-1].params
        assert draft["can_stop"] == "true"
        env.api.stop_draft(901, int(draft["draft_id"]))
        final = (await env.said(901, 4))[-1]
        assert final.text.startswith("again0 ") and final.text.endswith("⏹ Stopped.")
        assert (await env.stored(auth, "cancelled"))["content"].startswith("again0 ")


async def test_hostile_model_output_is_escaped(settings: Settings) -> None:
    hostile = ('<script>alert(1)</script> <b>bold?</b> & &amp; a<b **x <i>y** '
               '[click](javascript:alert(1)) [ok](https://example.org/?a=1&b=2) `<code>`\n'
               '```html\n<img src=x onerror=alert(1)>\n```\n*a **b* c** </pre></code>')
    async with telegram_env(settings) as env:
        _, auth = await env.linked(951)
        env.reply([hostile[i:i + 7] for i in range(0, len(hostile), 7)], delay_s=0.01)
        env.api.message(951, "Show me HTML")
        final = (await env.said(951, 2))[-1]
        assert not [c for c in env.api.calls if c.status == 400]  # Telegram parsed them all
        assert "<script>alert(1)</script>" in final.text and "<script" not in final.markup
        assert "<img" not in final.markup and "<i>" not in final.markup
        assert re.findall(r'href="([^"]*)"', final.markup) == ["https://example.org/?a=1&amp;b=2"]
        assert '<a href="https://example.org/?a=1&amp;b=2">ok</a>' in final.markup
        assert final.text.startswith("<script>alert(1)</script> <b>bold?</b> & &amp;")
        assert (await env.stored(auth))["content"] == hostile


async def test_a_pdf_and_a_youtube_link_are_ingested_with_a_status_message_each(
    settings: Settings,
) -> None:
    video = Video([(0.0, 4.0, "Welcome to the lecture on Roman aqueducts."),
                   (65.0, 5.0, "Aqueducts carried water to Rome by gravity alone.")])
    with youtube_server({"dQw4w9WgXcQ": video}) as yt:
        async with telegram_env(settings, youtube_base_url=yt.base_url,
                                max_upload_bytes=200_000) as env:
            api = env.api
            _, auth = await env.linked(1101)
            api.document(1101, make_pdf([
                "Photosynthesis happens in the chloroplasts of plant cells.",
                "The Calvin cycle fixes carbon dioxide into sugar."]), "Biology notes.pdf")
            status = await api.wait_text(1101, "Biology notes is ready", within_s=120)
            assert status.edits >= 1 and len(api.of("getFile")) == 1
            assert api.texts(1101).count(status.text) == 1  # one status message, edited

            api.document(1101, b"%PDF-1.4 big", "huge.pdf", file_size=300_000)
            await api.wait_text(1101, "This file is 0.3 MB; the upload limit is 0.2 MB.")
            api.document(1101, MP3, "song.mp3", mime_type="audio/mpeg")
            await api.wait_text(1101, "I cannot read this file. I add PDFs")

            api.message(1101, "Watch https://youtu.be/dQw4w9WgXcQ please")
            offer = await api.wait_text(1101, "Add the transcript of this video")
            (sent,) = [c for c in api.of("sendMessage", 1101) if "reply_markup" in c.params]
            button = sent.params["reply_markup"]["inline_keyboard"][0][0]
            assert button["callback_data"] == "yt:dQw4w9WgXcQ"
            api.press(1101, offer.message_id, button["callback_data"])
            await api.wait_for(lambda: "is ready" in api.find(1101, offer.message_id).text, 60)

            env.reply(["Photosynthesis happens in the chloroplasts [1]."])
            api.message(1101, "Where does photosynthesis happen?")
            final = await api.wait_text(1101, "Sources")
            assert final.text.startswith("Photosynthesis happens in the chloroplasts [1].")
            assert re.search(r"\n\nSources\n\[1\] Biology notes, p\. 1$", final.text), final.text

            api.message(1101, "/materials")
            listing = await api.wait_text(1101, "Your materials")
            assert "📄 Biology notes: ready" in listing.text
            assert "▶️ YouTube video dQw4w9WgXcQ: ready" in listing.text
            assert len((await env.conversation(auth))["messages"]) == 2


MP3 = b"ID3\x04\x00\x00\x00\x00\x00\x00\xff\xfb\x90\x00"


async def test_any_format_by_its_content_a_photo_and_the_ocr_stage_in_russian(
    settings: Settings,
) -> None:
    async with telegram_env(settings, telegram_edit_interval_s=0.05) as env:
        api = env.api
        await env.linked(1111, "ru")
        # Neither the name nor the MIME type Telegram reports says what the file is.
        deck = make_pptx([("Вулканы", "Магма поднимается к поверхности.", None)])
        api.document(1111, deck, "лекция", mime_type="application/octet-stream", language="ru")
        await api.wait_text(1111, "лекция готов", within_s=120)

        scan = scanned_pdf([["Фотосинтез идёт в хлоропластах.",
                             "Photosynthesis happens in chloroplasts."]])
        api.document(1111, scan, "скан.png", mime_type="image/png", language="ru")
        ready = await api.wait_text(1111, "скан готов", within_s=120)
        shown = [c.params["text"] for c in api.of("editMessageText", 1111)
                 if int(c.params["message_id"]) == ready.message_id]
        assert "⏳ скан: распознаю текст 0/1" in shown, shown

        page = render_lines(["Митохондрии вырабатывают энергию клетки."])
        photo = image_bytes(page, "JPEG")
        api.photo(-1111, photo, page.width, page.height, user_id=1111, chat_type="group")
        api.photo(1111, photo, page.width, page.height, caption="Конспект", language="ru")
        await api.wait_text(1111, "Конспект готов", within_s=120)
        assert not api.messages[-1111]  # a photo in a group is conversation, not a material

        api.document(1111, MP3, "песня.mp3", mime_type="audio/mpeg", language="ru")
        await api.wait_text(1111, "Не могу прочитать этот файл. Я добавляю PDF")
        api.document(1111, encrypted_docx(), "тайна.docx", language="ru",
                     mime_type="application/vnd.openxmlformats-officedocument."
                               "wordprocessingml.document")
        await api.wait_text(1111, "Файл защищён паролем.")

        api.message(1111, "/materials", language="ru")
        listing = (await api.wait_text(1111, "Ваши материалы")).text
        for line in ("📊 лекция: готов", "📄 скан: готов", "🖼️ Конспект: готов"):
            assert line in listing, listing
        assert len(api.of("getFile")) == 5  # not the group's photo


async def test_browser_replies_reach_telegram_only_in_the_telegram_conversation(
    settings: Settings,
) -> None:
    async with telegram_env(settings) as env:
        _, auth = await env.linked(1201)
        env.reply(["From ", "Telegram."])
        env.api.message(1201, "First question")
        await env.said(1201, 2)
        conversation = (await env.conversation(auth))["id"]
        token = auth["Authorization"].removeprefix("Bearer ")
        async with socket(env.base_url, token) as (ws, _):
            env.reply(["Browser ", "only."])
            await ws.send(json.dumps({"type": "chat.send", "id": "b1", "text": "Elsewhere"}))
            while (await recv(ws))["type"] != "reply.end":
                pass
            env.reply(["Echoed ", "here."])
            await ws.send(json.dumps({"type": "chat.send", "id": "b2", "text": "Here",
                                      "conversation_id": conversation}))
            await env.api.wait_text(1201, "Echoed here.")
        assert env.api.texts(1201) == ["Linked. Ask me anything about your materials; /help "
                                       "lists what I can do.", "From Telegram.", "Echoed here."]


async def test_webhook_mode_checks_the_secret_and_answers_an_update_once(
    settings: Settings,
) -> None:
    hook = "https://tutor.example/telegram/webhook"
    async with telegram_env(settings, telegram_mode="webhook", telegram_webhook_url=hook,
                            telegram_auto_accounts=True) as env:
        api = env.api
        await api.wait_for(lambda: bool(api.of("setWebhook")))
        (registered,) = api.of("setWebhook")
        assert registered.params["url"] == hook
        secret = registered.params["secret_token"]
        _, auth = await env.user()
        code = (await env.link_url(auth)).split("start=", 1)[1]
        api.message(1301, f"/start {code}")
        start = api.updates[-1]
        async with httpx.AsyncClient(base_url=env.base_url) as c:
            r = await c.post("/telegram/webhook", json=start)
            assert r.status_code == 403 and r.json()["error"] == "forbidden"
            r = await c.post("/telegram/webhook", json=start, headers={SECRET_HEADER: "nope"})
            assert r.status_code == 403
            for body in ("[" * 5000 + "]" * 5000, "{not json", '"text"', '{"update_id": "x"}'):
                r = await c.post("/telegram/webhook", content=body,
                                 headers={SECRET_HEADER: secret, "content-type": "application/json"})
                assert r.status_code == 400 and r.json()["error"] == "bad_request", (body[:20], r.text)
            for _ in range(2):  # Telegram delivers it again: answered once
                r = await c.post("/telegram/webhook", json=start, headers={SECRET_HEADER: secret})
                assert r.status_code == 200 and r.json() == {"ok": True}
            await env.said(1301, 1)
            env.reply(["Webhook ", "answer."])
            api.message(1301, "Through the webhook?")
            r = await c.post("/telegram/webhook", json=api.updates[-1],
                             headers={SECRET_HEADER: secret})
            assert r.status_code == 200
            await api.wait_text(1301, "Webhook answer.")
            assert len(api.messages[1301]) == 2 and not api.of("getUpdates")

            # telegram_auto_accounts: a stranger gets an account of their own at once.
            env.reply(["Welcome, ", "stranger."])
            api.message(1302, "Hi, I am new here", language="ru")
            r = await c.post("/telegram/webhook", json=api.updates[-1],
                             headers={SECRET_HEADER: secret})
            assert r.status_code == 200
            await api.wait_text(1302, "Welcome, stranger.")
        assert len((await env.conversation(auth))["messages"]) == 2  # not in the linked account
