"""Word documents (python-docx): paragraphs and tables in document order; each heading opens a
section, and its title is what a citation of the text under it names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from chat_server.materials.formats.archive import check_zip
from chat_server.materials.formats.base import Extracted, MaterialFailed, tidy
from chat_server.materials.formats.sections import Sections
from chat_server.settings import Settings

NO_TEXT = "This Word document has no text to learn from."
CORRUPT = "This file is damaged or is not a valid Word (.docx) document, so it could not be read."


def _heading_level(paragraph: Any) -> int | None:
    """1 for Title/Heading 1, 2 for Heading 2…; None for body text. A custom style counts by
    the built-in heading style it is based on."""
    style = paragraph.style
    for _ in range(5):
        if style is None:
            return None
        name = (style.name or "").strip().lower()
        if name == "title":
            return 1
        if name.startswith("heading"):
            digits = name.removeprefix("heading").strip()
            return int(digits) if digits.isdigit() else 1
        style = style.base_style
    return None


def _table_lines(table: Any) -> list[str]:
    lines = []
    for row in table.rows:
        cells: list[str] = []
        for cell in row.cells:
            text = tidy(cell.text)
            if text and (not cells or cells[-1] != text):  # merged cells repeat their text
                cells.append(text)
        if cells:
            lines.append(" | ".join(cells))
    return lines


def extract_docx(path: Path, settings: Settings) -> Extracted:
    import docx
    from docx.opc.exceptions import PackageNotFoundError
    from docx.table import Table

    check_zip(path, settings)
    try:
        document = docx.Document(str(path))
        blocks = list(document.iter_inner_content())
    except (PackageNotFoundError, KeyError, ValueError, AttributeError, TypeError,
            IndexError, OSError) as exc:
        raise MaterialFailed(CORRUPT) from exc
    except Exception as exc:  # lxml's XMLSyntaxError and the like: a damaged part
        raise MaterialFailed(CORRUPT) from exc
    sections = Sections(settings)
    for block in blocks:
        if isinstance(block, Table):
            sections.add_paragraphs(_table_lines(block))
            continue
        text = tidy(block.text)
        if not text:
            continue
        if _heading_level(block) is not None:
            sections.heading(text)
        else:
            sections.add_paragraphs([text])
    result = sections.result()
    if not result.segments:
        raise MaterialFailed(NO_TEXT)
    return result

