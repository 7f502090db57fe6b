"""Telegram bridge: Bot API calls per streamed reply, and a conversation transcript.

The real server (pgserver, uvicorn), the loopback OpenAI provider streaming 300 tokens at 50
tokens/s (one token per chunk, 6 s), the bridge with its default intervals (drafts every
0.5 s, edits every 1.5 s), polling the loopback Bot API of tests/support/fake_telegram.py,
which records every call. Counted per reply: in a private chat with drafts, in a group with
edits, and in a private chat that refuses drafts.

    .venv/bin/python load_tests/bench_telegram.py

Prints a report and writes it to load_tests/reports/telegram.md.
"""

from __future__ import annotations

import asyncio
import json
import platform
import sys
import tempfile
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from pydantic import SecretStr  # noqa: E402

from chat_server.app import create_app  # noqa: E402
from chat_server.db import migrate, open_database  # noqa: E402
from chat_server.settings import Settings  # noqa: E402
from chat_server.telegram.bridge import open_bridge  # noqa: E402
from chat_server.telegram.claims import open_claims  # noqa: E402
from load_tests.report import cpu_probe  # noqa: E402
from tests.support.fake_providers import FakeProvider, openai_stream  # noqa: E402
from tests.support.fake_telegram import TOKEN, Call, FakeTelegram  # noqa: E402
from tests.support.services import database_uri, free_port, postgres_server, serve_app  # noqa: E402

REPORT = ROOT / "load_tests" / "reports" / "telegram.md"
TOKENS = 300
RATE = 50.0


def _short(value: object, width: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = text.replace("\n", "⏎")
    return text if len(text) <= width else text[: width - 1] + "…"


def transcript_line(call: Call, start: float) -> str:
    p = call.params
    shown = {k: p[k] for k in ("chat_id", "message_id", "draft_id", "text", "reply_markup",
                               "offset", "url") if k in p}
    args = ", ".join(f"{k}={_short(v, 70 if k == 'text' else 40)}" for k, v in shown.items())
    status = "" if call.status == 200 else f"  → {call.status}"
    return f"+{call.at - start:6.2f}s  → {call.method}({args}){status}"


async def stream(api: FakeTelegram, llm: FakeProvider, chat_id: int, user_id: int,
                 chat_type: str, question: str) -> Counter[str]:
    """One 300-token reply into `chat_id`; the Bot API calls it took, by method."""
    llm.script.append(openai_stream([f"w{i} " for i in range(TOKENS)], delay_s=1 / RATE))
    before = len(api.calls)
    sent = len(api.messages[chat_id])
    api.message(chat_id, question, user_id=user_id, chat_type=chat_type)
    await api.wait_for(lambda: len(api.messages[chat_id]) > sent and
                       api.messages[chat_id][-1].text.endswith(f"w{TOKENS - 1}"), 60)
    await asyncio.sleep(2.0)  # anything late would be counted too
    calls = [c for c in api.calls[before:] if c.chat_id == chat_id]
    return Counter(c.method for c in calls)


async def run(workdir: Path) -> str:
    with postgres_server(workdir) as base_uri:
        url = database_uri(base_uri, "postgres")
        await asyncio.to_thread(migrate, url)
        port = free_port()
        async with FakeTelegram() as api, FakeProvider() as llm:
            settings = Settings(
                _env_file=None,  # type: ignore[call-arg]
                database_url=url, data_dir=workdir / "data", auto_migrate=False,
                secret_key="bench-secret-key-0123456789abcdef0123456789",
                llm_provider="openai", openai_base_url=llm.base_url + "/v1",
                openai_api_key="sk-bench", openai_model="gpt-bench",
                telegram_bot_token=SecretStr(TOKEN), telegram_api_url=api.base_url,
                telegram_server_url=f"http://127.0.0.1:{port}")
            async with serve_app(create_app(settings), port=port) as base_url, \
                    open_database(url, 3) as db, open_claims(None) as claims, \
                    open_bridge(settings, db, claims) as bridge:
                polling = asyncio.create_task(bridge.run_polling())
                try:
                    await api.wait_for(lambda: api.polls_waiting > 0, 10)
                    return await scenarios(api, llm, base_url, settings)
                finally:
                    await bridge.stop_polling()
                    await asyncio.wait_for(polling, 10)


async def link_for_new_user(base_url: str) -> str:
    """A new account's Telegram deep link."""
    email = f"bench-{uuid.uuid4().hex[:8]}@example.com"
    async with httpx.AsyncClient(base_url=base_url) as c:
        await c.post("/auth/register", json={"email": email, "password": "password-123"})
        token = (await c.post("/auth/token", data={"username": email,
                                                   "password": "password-123"})).json()
        auth = {"Authorization": f"Bearer {token['access_token']}"}
        return str((await c.post("/telegram/link", headers=auth)).json()["url"])


async def scenarios(api: FakeTelegram, llm: FakeProvider, base_url: str,
                    settings: Settings) -> str:
    link = await link_for_new_user(base_url)

    # The transcript: a short conversation in a private chat.
    chat = 4242
    start = api.calls[-1].at if api.calls else 0.0
    first = len(api.calls)
    steps = [
        ("Hello", None),
        (f"/start {link.split('start=', 1)[1]}", None),
        ("/help", None),
        ("What is photosynthesis?", ["Photosynthesis ", "turns ", "**light** ", "into ",
                                     "sugar ", "in ", "the ", "chloroplasts. ", "It ",
                                     "releases ", "oxygen ", "from ", "water."]),
        ("/socratic on", None),
        ("/materials", None),
        ("/new", None),
        ("/cards", None),
    ]
    for text, reply in steps:
        if reply is not None:
            llm.script.append(openai_stream(reply, delay_s=0.15))
        count = len(api.messages[chat])
        api.message(chat, text, language="ru" if text == "/cards" else "en")
        await api.wait_for(lambda count=count: len(api.messages[chat]) > count, 30)  # type: ignore[misc]
        await asyncio.sleep(0.3 if reply is None else 2.0)
    timeline = [(api.pushed_at[u["update_id"]],
                 f"+{api.pushed_at[u['update_id']] - start:6.2f}s  ← update {u['update_id']}: "
                 f"{_short(u['message']['text'], 70)}")
                for u in api.updates if u["message"]["chat"]["id"] == chat]
    timeline += [(c.at, transcript_line(c, start)) for c in api.calls[first:]
                 if c.method != "getUpdates"]
    transcript = [line for _, line in sorted(timeline)]

    # Calls per 300-token reply.
    private = await stream(api, llm, chat, chat, "private", "Tell me 300 tokens")
    group = await stream(api, llm, -1004242, chat, "group",
                         "@tutorhub_test_bot Tell the group 300 tokens")
    api.refuse_drafts = True
    refusing = await stream_refusing(api, llm, base_url)
    return report(transcript, private, group, refusing, settings)


async def stream_refusing(api: FakeTelegram, llm: FakeProvider, base_url: str
                          ) -> Counter[str]:
    """A second linked user whose private chat refuses drafts."""
    code = (await link_for_new_user(base_url)).split("start=")[1]
    chat = 4444
    api.message(chat, f"/start {code}")
    await api.wait_for(lambda: len(api.messages[chat]) >= 1, 30)
    return await stream(api, llm, chat, chat, "private", "Tell me 300 tokens, no drafts")


def _row(name: str, calls: Counter[str]) -> str:
    methods = ", ".join(f"{m} {n}" for m, n in sorted(calls.items()))
    return f"| {name} | {sum(calls.values())} | {methods} |"


def report(transcript: list[str], private: Counter[str], group: Counter[str],
           refusing: Counter[str], settings: Settings) -> str:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Telegram bridge: Bot API calls per streamed reply",
        "",
        f"{now}, {platform.python_implementation()} {platform.python_version()}, "
        f"CPU probe {cpu_probe():.0f} ms. `load_tests/bench_telegram.py`.",
        "",
        f"One reply of {TOKENS} tokens streamed at {RATE:.0f} tokens/s ({TOKENS / RATE:.0f} s), "
        f"drafts every {settings.telegram_draft_interval_s} s, edits every "
        f"{settings.telegram_edit_interval_s} s (the defaults). Calls into that chat from the "
        "question to the final text (updates the bridge skipped are not calls):",
        "",
        "| chat | Bot API calls | by method |",
        "|---|---|---|",
        _row("private, drafts", private),
        _row("group, one placeholder edited", group),
        _row("private, drafts refused", refusing),
        "",
        "## A conversation (calls the fake Bot API recorded, getUpdates left out)",
        "",
        "```",
        *transcript,
        "```",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-telegram-") as tmp:
        text = asyncio.run(run(Path(tmp)))
    print(text)
    REPORT.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
