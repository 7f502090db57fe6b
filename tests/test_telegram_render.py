"""Markdown to Telegram HTML, splitting at 4096, source lists; the token kept out of logs.

Telegram's own rules are the fake Bot API's parser (tests/support/fake_telegram.parse_html):
whatever the model writes, the markup must pass it."""

from __future__ import annotations

import logging
import random
import re

import aiohttp
import pytest
from pydantic import SecretStr

from chat_server.settings import Settings
from chat_server.telegram.botapi import make_bot
from chat_server.telegram.render import LIMIT, sources, split, to_html, to_text, utf16_len
from chat_server.telegram.texts import EN, RU
from tests.support.fake_telegram import TOKEN, FakeTelegram, parse_html

HOSTILE = [
    "<script>alert(1)</script>",
    "a < b && c > d; 5 &lt; 6 &#x41;",
    "**bold *mixed** italic*",
    "__under__score__ snake_case_name 2*3*4 **",
    "[x](javascript:alert(1)) [y](https://a.example/\"onmouseover=\"x) [z](https://ok.example)",
    "`code with <b>tags</b>` and ``` inline fence",
    "```\nunclosed <code> block",
    "```py\nprint('<i>')\n```\n</pre></code></b>",
    "> quote with **bold\n> and <tag>",
    "# Heading **with bold**\n- item <x>\n* star item\n+ plus item",
    "~~strike~~ ~~open",
    "\ue000999\ue001 placeholder lookalike \x00 nul",
    "emoji 🧪 **жирный** _курсив_",
]


@pytest.mark.parametrize("markdown", HOSTILE)
def test_hostile_markdown_renders_to_html_telegram_accepts(markdown: str) -> None:
    markup = to_html(markdown)
    visible = parse_html(markup)
    assert visible == to_text(markup)
    for name, attributes in re.findall(r"<([a-z]+)([^>]*)>", markup):
        assert name in {"b", "i", "s", "code", "pre", "a", "blockquote"}, markup
        assert attributes in ("", ' class="language-py"', ' href="https://ok.example"'), markup


def test_random_markdown_always_renders_to_valid_html() -> None:
    rng = random.Random(19)
    alphabet = list("*_~`[]()<>&#->\n ") + ["**", "```", "](https://x.example)", "ab", "я"]
    for _ in range(400):
        markdown = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 60)))
        parse_html(to_html(markdown))  # raises BadRequest as the Bot API would refuse it


def test_formatting_that_is_kept() -> None:
    markup = to_html("# Title\n**b** *i* _i_ ~~s~~ `c` [l](https://x.example/?a=1&b=2)\n"
                     "- one\n> said\n```python\nx = 1 < 2\n```")
    assert markup == (
        "<b>Title</b>\n<b>b</b> <i>i</i> <i>i</i> <s>s</s> <code>c</code> "
        '<a href="https://x.example/?a=1&amp;b=2">l</a>\n• one\n<blockquote>said</blockquote>\n'
        '<pre><code class="language-python">x = 1 &lt; 2</code></pre>')
    assert to_html("**open bold while streaming") == "**open bold while streaming"


def test_split_at_paragraphs_within_the_limit() -> None:
    paragraphs = ["".join(["word "] * 300).strip() for _ in range(5)]
    text = "\n\n".join(paragraphs)
    parts = split(text)
    assert len(parts) == 3
    assert all(utf16_len(to_text(to_html(p))) <= LIMIT for p in parts)
    assert "\n\n".join(p.strip() for p in parts) == text
    assert split("short") == ["short"]


def test_split_counts_utf16_and_reopens_an_open_code_fence() -> None:
    emoji = "🧪" * 3000  # 6000 UTF-16 units
    parts = split(emoji)
    assert [utf16_len(p) for p in parts][0] <= LIMIT and "".join(parts) == emoji
    code = "```py\n" + "x = 1\n" * 1200 + "```\nafter"
    first, second = split(code)
    assert first.endswith("\n```") and second.startswith("```py\n")
    for part in (first, second):
        markup = to_html(part)
        parse_html(markup)
        assert markup.count("<pre>") == markup.count("</pre>")


def test_parts_found_while_streaming_stay_the_same() -> None:
    text = "\n\n".join(f"Paragraph {n} " + "lorem " * 250 for n in range(8))
    final = split(text)
    for end in range(0, len(text), 997):
        growing = split(text[:end])
        assert growing[:-1] == final[:len(growing) - 1]


def test_sources_list_pages_and_timestamps_escaped() -> None:
    listed = sources([
        {"n": 1, "title": "Biology <notes>", "kind": "pdf", "page": 3},
        {"n": 2, "title": "Lecture", "kind": "youtube", "start_s": 3725.4},
        {"n": 3, "title": "Text", "kind": "text"},
    ], RU["sources"], RU["page"])
    assert parse_html(listed) == ("Источники\n[1] Biology <notes>, с. 3\n[2] Lecture, 1:02:05\n"
                                  "[3] Text")
    assert sources([], EN["sources"], EN["page"]) == ""


def test_sources_name_the_slide_and_the_section_in_both_languages() -> None:
    cited = [{"n": 1, "title": "Volcanoes", "kind": "pptx", "page": 3},
             {"n": 2, "title": "Notes", "kind": "docx", "section": "Methods <&>"},
             {"n": 3, "title": "Scan", "kind": "pdf", "page": 2}]
    for lang, expected in ((EN, "[1] Volcanoes, slide 3\n[2] Notes, § Methods <&>\n"
                                "[3] Scan, p. 2"),
                           (RU, "[1] Volcanoes, слайд 3\n[2] Notes, раздел «Methods <&>»\n"
                                "[3] Scan, с. 2")):
        listed = sources(cited, lang["sources"], lang["page"], lang["slide"], lang["section"])
        assert parse_html(listed) == f"{lang['sources']}\n{expected}"


def test_every_text_exists_in_both_languages_and_is_valid_html() -> None:
    assert EN.keys() == RU.keys()
    for texts in (EN, RU):
        for value in texts.values():
            parse_html(value.format(title="t", reason="r", stage="s", done=1, total=2,
                                    chunks=3, size=1, limit=2, used=1, quota=2, message="m",
                                    state="on", left=2, rating="Good", when="in 1 min",
                                    n=1, count=3, prompt="p", answer="a", score=1))


async def test_the_token_never_reaches_a_log(caplog: pytest.LogCaptureFixture) -> None:
    """aiohttp puts the file URL, token included, into the message of a failed download."""
    async with FakeTelegram() as api:
        bot = make_bot(Settings(_env_file=None, secret_key="k" * 40,  # type: ignore[call-arg]
                                telegram_bot_token=SecretStr(TOKEN), telegram_api_url=api.base_url))
        try:
            with pytest.raises(aiohttp.ClientResponseError) as failed:
                await bot.download_file("documents/missing.pdf")
        finally:
            await bot.session.close()
    assert TOKEN in str(failed.value)  # what would leak
    log = logging.getLogger("tests.telegram")
    with caplog.at_level(logging.INFO):
        log.exception("download failed: %s", failed.value, exc_info=failed.value)
        log.warning("token in the message itself: " + TOKEN)
    assert len(caplog.records) == 2 and TOKEN not in caplog.text
    assert TOKEN.split(":", 1)[1] not in caplog.text and "<secret>" in caplog.text
