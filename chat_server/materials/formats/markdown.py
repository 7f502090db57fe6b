"""Markdown files through a real parser (markdown-it-py, CommonMark plus tables): the text
without its markup; headings open sections."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from chat_server.materials.formats.base import Extracted, MaterialFailed, decode_text, tidy
from chat_server.materials.formats.sections import Sections
from chat_server.settings import Settings

NO_TEXT = "This Markdown file has no text to learn from."


def _inline(token: Any) -> str:
    """An inline token's text: words, code and image descriptions; no markup, no URLs."""
    parts: list[str] = []
    for child in token.children or ():
        if child.type in ("text", "code_inline"):
            parts.append(child.content)
        elif child.type in ("softbreak", "hardbreak"):
            parts.append(" ")
        elif child.type == "image":
            parts.append(_inline(child))
    return "".join(parts)


def extract_markdown(path: Path, settings: Settings) -> Extracted:
    from markdown_it import MarkdownIt

    parser = MarkdownIt("commonmark", {"html": False}).enable("table")
    tokens = parser.parse(decode_text(path.read_bytes()))
    sections = Sections(settings)
    in_heading = in_cell = False
    row: list[str] = []
    for token in tokens:
        if token.type == "heading_open":
            in_heading = True
        elif token.type == "heading_close":
            in_heading = False
        elif token.type in ("th_open", "td_open"):
            in_cell = True
        elif token.type in ("th_close", "td_close"):
            in_cell = False
        elif token.type == "inline":
            text = tidy(_inline(token))
            if in_heading:
                if text:
                    sections.heading(text)
            elif in_cell:
                if text:
                    row.append(text)
            elif text:
                sections.add_paragraphs([text])
        elif token.type in ("fence", "code_block"):
            code = token.content.strip()
            if code:
                sections.add_paragraphs([code])
        elif token.type == "tr_close":
            if row:
                sections.add_paragraphs([" | ".join(row)])
            row = []
    result = sections.result()
    if not result.segments:
        raise MaterialFailed(NO_TEXT)
    return result

