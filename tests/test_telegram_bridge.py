"""The Telegram bridge end to end: aiogram against the loopback Bot API (tests/support/
fake_telegram.py), the real server on pgserver, the loopback OpenAI provider."""

from __future__ import annotations

import asyncio
import re

import asyncpg
import httpx

from chat_server.db import libpq_url
from chat_server.settings import Settings
from chat_server.telegram.render import to_html, to_text
from tests.support.telegram import telegram_env


async def test_linking_with_a_good_a_reused_and_an_expired_code(settings: Settings) -> None:
    async with telegram_env(settings) as env:
        api = env.api
        _, auth = await env.user()
        async with httpx.AsyncClient(base_url=env.base_url) as c:
            assert (await c.get("/telegram/link", headers=auth)).json()["linked"] is False
            assert (await c.post("/telegram/link")).status_code == 401
        url = await env.link_url(auth)
        assert url.startswith("https://t.me/tutorhub_test_bot?start=")
        code = url.split("start=", 1)[1]

        # Not linked yet: refused with instructions, in the user's language.
        api.message(501, "Что такое фотосинтез?", language="ru")
        assert "привяжите аккаунт" in (await env.said(501, 1))[-1].text
        api.message(501, f"/start {code}", language="ru")
        assert (await env.said(501, 2))[-1].text.startswith("Аккаунт привязан")
        async with httpx.AsyncClient(base_url=env.base_url) as c:
            status = (await c.get("/telegram/link", headers=auth)).json()
        assert status["linked"] is True and status["telegram_username"] == "user501"

        # The same code again, from someone else: single use.
        api.message(502, f"/start {code}")
        assert "already used" in (await env.said(502, 1))[-1].text
        api.message(502, "/start not-a-code-at-all")
        assert "not valid" in (await env.said(502, 2))[-1].text

        # An expired code.
        url = await env.link_url(auth)
        assert settings.database_url
        conn = await asyncpg.connect(libpq_url(settings.database_url))
        try:
            await conn.execute("update telegram_link_codes set expires_at = now() - "
                               "interval '1 second' where used_at is null")
        finally:
            await conn.close()
        api.message(502, f"/start {url.split('start=', 1)[1]}")
        assert "expired" in (await env.said(502, 3))[-1].text

        # Commands in Russian; /cards and /quiz are coming; /unlink undoes the link.
        api.message(501, "/help", language="ru")
        assert "/socratic on|off" in (await env.said(501, 3))[-1].text
        api.message(501, "/cards", language="ru")
        assert (await env.said(501, 4))[-1].text == "Карточки скоро появятся."
        api.message(501, "/quiz")
        assert (await env.said(501, 5))[-1].text == "Quizzes are coming soon."
        api.message(501, "/unlink")
        assert "no longer linked" in (await env.said(501, 6))[-1].text
        async with httpx.AsyncClient(base_url=env.base_url) as c:
            assert (await c.get("/telegram/link", headers=auth)).json()["linked"] is False
        api.message(501, "Hello?")
        assert "link your account" in (await env.said(501, 7))[-1].text


async def test_a_private_reply_streams_as_throttled_drafts_then_one_final_message(
    settings: Settings,
) -> None:
    async with telegram_env(settings) as env:
        _, auth = await env.linked(601)
        words = [f"word{i} " for i in range(60)]
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


async def test_a_group_reply_edits_one_placeholder_and_waits_out_a_429(settings: Settings) -> None:
    async with telegram_env(settings) as env:
        _, auth = await env.linked(701)
        group = -100_701
        env.api.fail("editMessageText", 429, "flood", retry_after=1, after=1)
        env.reply([f"part{i} " for i in range(70)], delay_s=0.03)
        env.api.message(group, "Tell me everything", user_id=701, chat_type="group")
        await env.api.wait_for(lambda: not env.api.faults)
        await env.idle(group)
        stored = await env.stored(auth)
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
        await asyncio.sleep(0)
        env.api.message(901, "/stop")
        assert (await env.said(901, 3))[-1].text == "Nothing is being written right now."


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
