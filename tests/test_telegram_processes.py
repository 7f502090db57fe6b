"""`tutorhub telegram` as it runs in production, beside a second bridge (this test process):
both on one Redis, both long-polling the same (loopback) Bot API at once; each update is
answered once, and the bot token never reaches a log, at debug level."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from chat_server.settings import Settings
from tests.support.fake_telegram import TOKEN
from tests.support.telegram import telegram_env


def _bridge(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "chat_server.cli", "telegram"],
                                cwd=log.parent, env=env, stdout=out, stderr=subprocess.STDOUT)


async def test_two_bridge_processes_answer_each_update_once(
    settings: Settings, redis_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with telegram_env(settings, claims_url=redis_url) as tg:
        api = tg.api
        assert tg.settings.database_url and tg.settings.secret_key
        env = {k: v for k, v in os.environ.items() if not k.startswith("TUTORHUB_")}
        env.update(
            TUTORHUB_DATABASE_URL=tg.settings.database_url, TUTORHUB_REDIS_URL=redis_url,
            TUTORHUB_SECRET_KEY=tg.settings.secret_key, TUTORHUB_DATA_DIR=str(tmp_path / "d"),
            TUTORHUB_TELEGRAM_BOT_TOKEN=TOKEN, TUTORHUB_TELEGRAM_API_URL=api.base_url,
            TUTORHUB_TELEGRAM_SERVER_URL=tg.base_url, TUTORHUB_LOG_LEVEL="debug",
            TUTORHUB_TELEGRAM_DRAFT_INTERVAL_S="0.2", PYTHONDONTWRITEBYTECODE="1")
        log = tmp_path / "bridge.log"
        proc = _bridge(env, log)
        try:
            # Both long polls wait: an update now reaches both, as Telegram hands an update to
            # every poll until one confirms it.
            await api.wait_for(lambda: api.polls_waiting == 2 or proc.poll() is not None, 60)
            assert proc.poll() is None, log.read_text()
            _, auth = await tg.user()
            code = (await tg.link_url(auth)).split("start=", 1)[1]
            api.message(1401, f"/start {code}")
            await tg.said(1401, 1)
            tg.reply(["Answered ", "once."], delay_s=0.05)
            await api.wait_for(lambda: api.polls_waiting == 2)
            api.message(1401, "Who answers?")
            await api.wait_text(1401, "Answered once.")
            await api.wait_for(lambda: api.polls_waiting == 2)  # both confirmed both updates
            assert api.texts(1401) == [
                "Linked. Ask me anything about your materials; /help lists what I can do.",
                "Answered once."]
            assert len((await tg.conversation(auth))["messages"]) == 2
        finally:
            proc.send_signal(signal.SIGTERM)
            exit_code = await asyncio.to_thread(proc.wait, 30)
    output = log.read_text(errors="replace")
    assert exit_code == 0, output
    ours = caplog.text
    skipped = output.count("is handled by another process") + ours.count(
        "is handled by another process")
    assert skipped == 2, (output, ours)
    assert "Update id=" in output and "DEBUG" in output  # aiogram's logs were captured
    secret = TOKEN.split(":", 1)[1]
    for text in (output, ours):
        assert TOKEN not in text and secret not in text
