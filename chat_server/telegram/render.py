"""The tutor's Markdown as Telegram HTML, split into messages, with a short source list.

Telegram's HTML parse mode knows a handful of tags and refuses a whole message whose markup is
unknown or unbalanced ("can't parse entities"). So the text is escaped first, entirely; the only
markup in the result is what this module emits — <b> <i> <s> <code> <pre> <a href> <blockquote>
— each from a complete Markdown pair (a pair still open while a reply streams stays literal).
A line whose emphasis would not nest cleanly is sent unformatted rather than refused.

Telegram limits a message to 4096 characters after entity parsing, counted in UTF-16 units.
Rendering only removes characters (markers, fences, link targets) and escaping does not count,
so a Markdown part within the limit renders within it: replies are split on the Markdown, at
paragraph boundaries (then lines, then spaces). The split is greedy and depends only on the
text before each cut, so parts found while a reply streams stay the same when it ends.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Mapping
from typing import Any

LIMIT = 4096
# Room for closing an open code fence at a cut ("\n```"); the next part reopens it.
_FENCE_RESERVE = 8

_PLACEHOLDER = re.compile("\ue000(\\d+)\ue001")
_UNSAFE = re.compile("[\ue000\ue001\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_CODE_SPAN = re.compile(r"`([^`\n]+)`")
_LINK = re.compile(r"\[([^\[\]\n]+)\]\((https?://[^\s()<>\"']+)\)")
_BOLD = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*|__(?=\S)(.+?)(?<=\S)__")
_STRIKE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~")
_ITALIC = re.compile(r"(?<![\w*])\*(?=[^\s*])([^*\n]+?)(?<=[^\s*])\*(?![\w*])"
                     r"|(?<![\w_])_(?=[^\s_])([^_\n]+?)(?<=[^\s_])_(?![\w_])")
_FENCE = re.compile(r"^\s*```\s*([\w+#.-]{0,20})\s*$")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$")
_BULLET = re.compile(r"^(\s*)[-*+]\s+(.*)$")
_QUOTE = re.compile(r"^\s{0,3}>\s?(.*)$")
_TAG = re.compile(r"<(/?)([a-z]+)[^>]*>")
_LANG = re.compile(r"[^\w+#-]")


def utf16_len(text: str) -> int:
    """Length as Telegram counts it."""
    return len(text.encode("utf-16-le")) // 2


def escape(text: str) -> str:
    return html.escape(text, quote=False)


def _balanced(markup: str) -> bool:
    stack: list[str] = []
    for closing, name in _TAG.findall(markup):
        if not closing:
            stack.append(name)
        elif not stack or stack.pop() != name:
            return False
    return not stack


def _inline(line: str) -> str:
    """One line of prose: code spans and links kept whole, the rest escaped, then emphasis."""
    kept: list[str] = []

    def keep(markup: str) -> str:
        kept.append(markup)
        return f"\ue000{len(kept) - 1}\ue001"

    line = _CODE_SPAN.sub(lambda m: keep(f"<code>{escape(m.group(1))}</code>"), line)
    line = _LINK.sub(lambda m: keep(
        f'<a href="{html.escape(m.group(2), quote=True)}">{escape(m.group(1))}</a>'), line)
    plain = escape(line)
    styled = _BOLD.sub(lambda m: f"<b>{m.group(1) or m.group(2)}</b>", plain)
    styled = _STRIKE.sub(lambda m: f"<s>{m.group(1)}</s>", styled)
    styled = _ITALIC.sub(lambda m: f"<i>{m.group(1) or m.group(2)}</i>", styled)
    if not _balanced(styled):
        styled = plain
    return _PLACEHOLDER.sub(lambda m: kept[int(m.group(1))], styled)


def _code_block(lines: list[str], lang: str) -> str:
    body = escape("\n".join(lines))
    lang = _LANG.sub("", lang)
    if lang:
        return f'<pre><code class="language-{lang}">{body}</code></pre>'
    return f"<pre>{body}</pre>"


def to_html(markdown: str) -> str:
    """Telegram HTML for `markdown`: always well-formed, whatever the input."""
    out: list[str] = []
    quote: list[str] = []
    code: list[str] | None = None
    lang = ""

    def flush_quote() -> None:
        if quote:
            out.append("<blockquote>" + "\n".join(quote) + "</blockquote>")
            quote.clear()

    for line in _UNSAFE.sub("", markdown).split("\n"):
        fence = _FENCE.match(line)
        if code is not None:
            if fence and not fence.group(1):
                out.append(_code_block(code, lang))
                code = None
            else:
                code.append(line)
            continue
        if fence:
            flush_quote()
            code, lang = [], fence.group(1)
            continue
        quoted = _QUOTE.match(line)
        if quoted:
            quote.append(_inline(quoted.group(1)))
            continue
        flush_quote()
        heading = _HEADING.match(line)
        bullet = _BULLET.match(line)
        if heading:
            text = _inline(heading.group(1))
            out.append(text if "<b>" in text else f"<b>{text}</b>")
        elif bullet:
            out.append(f"{bullet.group(1)}• {_inline(bullet.group(2))}")
        else:
            out.append(_inline(line))
    flush_quote()
    if code is not None:  # still streaming (or never closed): shown as code so far
        out.append(_code_block(code, lang))
    return "\n".join(out)


def to_text(markup: str) -> str:
    """What a reader sees of our HTML (tags dropped, entities decoded)."""
    return html.unescape(_TAG.sub("", markup))


def _prefix_within(text: str, units: int) -> str:
    """The longest prefix of at most `units` UTF-16 units (characters beyond the BMP count 2)."""
    if len(text) <= units // 2 or utf16_len(text) <= units:
        return text
    count = 0
    for i, char in enumerate(text):
        count += 2 if ord(char) > 0xFFFF else 1
        if count > units:
            return text[:i]
    return text


def _open_fence(text: str) -> str | None:
    """The language of a code fence left open at the end of `text` ("" for none), or None."""
    lang: str | None = None
    for line in text.split("\n"):
        fence = _FENCE.match(line)
        if fence:
            lang = fence.group(1) if lang is None else None
    return lang


def split(markdown: str, limit: int = LIMIT) -> list[str]:
    """Markdown parts of at most `limit` units each, cut at paragraph boundaries if possible."""
    parts: list[str] = []
    text = markdown
    while utf16_len(text) > limit:
        head = _prefix_within(text, limit - _FENCE_RESERVE)
        cut = 0
        for sep in ("\n\n", "\n", " "):
            at = head.rfind(sep)
            if at > 0:
                cut = at + len(sep)
                break
        cut = cut or max(1, len(head))
        part, text = text[:cut], text[cut:]
        lang = _open_fence(part)
        if lang is not None:
            part = part.rstrip("\n") + "\n```"
            text = f"```{lang}\n" + text
        parts.append(part)
    parts.append(text)
    return parts


def timestamp(seconds: float) -> str:
    s = int(seconds)
    h, m, s = s // 3600, s // 60 % 60, s % 60
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def sources(citations: Iterable[Mapping[str, Any]], heading: str, page: str,
            slide: str | None = None, section: str = "§ {title}") -> str:
    """The reply's citations as a short numbered list: `[1] Title, p. 3` / `[2] Deck, slide 4`
    / `[3] Notes, § Methods` / `[4] Video, 4:05` (the words in the user's language)."""
    lines = []
    for c in citations:
        where = ""
        if c.get("page") is not None:  # a PPTX's page is its slide (docs/protocol.md)
            word = slide if slide and c.get("kind") == "pptx" else page
            where = f", {word} {c['page']}"
        elif c.get("start_s") is not None:
            where = f", {timestamp(float(c['start_s']))}"
        elif c.get("section"):
            where = ", " + escape(section.format(title=str(c["section"])[:80]))
        title = str(c.get("title") or "")[:120]
        lines.append(f"[{c.get('n')}] {escape(title)}{where}")
    return f"<b>{escape(heading)}</b>\n" + "\n".join(lines) if lines else ""
