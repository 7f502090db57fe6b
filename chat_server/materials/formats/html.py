"""HTML files through a real parser (lxml's, libxml2): scripts, styles and other non-text
dropped; block elements become paragraphs, and h1–h6 open sections."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from chat_server.materials.formats.base import Extracted, MaterialFailed, decode_text, tidy
from chat_server.materials.formats.sections import Sections
from chat_server.settings import Settings

NO_TEXT = "This HTML page has no text to learn from."
CORRUPT = "This HTML file could not be read."

_DROP = {"script", "style", "noscript", "template", "head", "svg", "math", "iframe", "object",
         "canvas", "button", "select", "textarea", "input"}
_HEADINGS = {"h1", "h2", "h3", "h4", "h5", "h6"}
_BLOCKS = {"p", "div", "li", "ul", "ol", "dl", "dt", "dd", "table", "tr", "td", "th", "thead",
           "tbody", "section", "article", "main", "header", "footer", "nav", "aside", "blockquote",
           "pre", "figure", "figcaption", "br", "hr", "address", "details", "summary", "form",
           "fieldset", "caption"}
_XML_DECLARATION = re.compile(r"^\s*<\?xml[^>]*\?>", re.IGNORECASE)


class _Walker:
    def __init__(self, sections: Sections) -> None:
        self.sections = sections
        self.line: list[str] = []

    def _flush(self) -> None:
        text = tidy("".join(self.line))
        self.line = []
        if text:
            self.sections.add_paragraphs([text])

    def _text(self, value: str | None) -> None:
        if value:
            self.line.append(value)

    def walk(self, root: Any) -> None:
        # With a stack, not recursion: a page may nest elements thousands deep.
        stack: list[tuple[Any, bool]] = [(root, False)]
        while stack:
            element, closing = stack.pop()
            tag = element.tag if isinstance(element.tag, str) else None  # comments have none
            name = tag.lower() if tag else None
            if closing:
                if name in _BLOCKS:
                    self._flush()
                self._text(element.tail)
                continue
            if name is None or name in _DROP:
                self._text(element.tail)
                continue
            if name in _HEADINGS:
                self._flush()
                title = tidy(element.text_content())
                if title:
                    self.sections.heading(title)
                self._text(element.tail)
                continue
            if name in _BLOCKS:
                self._flush()
            self._text(element.text)
            stack.append((element, True))
            stack.extend((child, False) for child in reversed(element))

    def finish(self) -> None:
        self._flush()


def extract_html(path: Path, settings: Settings) -> Extracted:
    import lxml.etree
    import lxml.html

    text = _XML_DECLARATION.sub("", decode_text(path.read_bytes()))
    if not text.strip():
        raise MaterialFailed(NO_TEXT)
    try:
        root = lxml.html.document_fromstring(text)
    except (lxml.etree.ParserError, ValueError) as exc:
        raise MaterialFailed(CORRUPT) from exc
    sections = Sections(settings)
    walker = _Walker(sections)
    body = root.find("body")
    walker.walk(body if body is not None else root)
    walker.finish()
    result = sections.result()
    if not result.segments:
        raise MaterialFailed(NO_TEXT)
    return result

