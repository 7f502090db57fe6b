"""A material's flashcards as an Anki deck (`genanki`, .apkg) or as CSV.

The deck's and the notes' ids derive from the material's and the cards' ids, so importing a
regenerated deck again updates the notes it already holds instead of adding copies.
"""

from __future__ import annotations

import csv
import html
import io
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path

from chat_server.models import Flashcard
from chat_server.study.drafts import place_label

CSV_FIELDS = ("front", "back", "page", "start_s", "quote")
# A stable model id: Anki keys note types by id, and every Tutorhub deck shares this one.
MODEL_ID = 1_607_392_318


def _where(card: Flashcard, language: str) -> str:
    return place_label(card.page, card.start_s, language)


def to_csv(cards: Sequence[Flashcard]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_FIELDS)
    for card in cards:
        writer.writerow([card.front, card.back, "" if card.page is None else card.page,
                         "" if card.start_s is None else card.start_s, card.quote])
    return out.getvalue()


def to_apkg(material_id: uuid.UUID, title: str, cards: Sequence[Flashcard],
            language: str = "en") -> bytes:
    """The cards as an Anki package: front, back, and the cited sentence with its page."""
    import genanki

    model = genanki.Model(
        MODEL_ID, "Tutorhub card",
        fields=[{"name": "Front"}, {"name": "Back"}, {"name": "Source"}],
        templates=[{"name": "Card 1", "qfmt": "{{Front}}",
                    "afmt": "{{FrontSide}}<hr id=answer>{{Back}}"
                            "<div class=source>{{Source}}</div>"}],
        css=".card{font-family:sans-serif;font-size:20px;text-align:center}"
            ".source{margin-top:1em;font-size:14px;color:#666}")
    deck = genanki.Deck(int.from_bytes(material_id.bytes[:4], "big") | 1 << 30, title)
    for card in cards:
        where = _where(card, language)
        source = html.escape(f"{card.quote} ({where})" if where else card.quote)
        deck.add_note(genanki.Note(
            model=model, fields=[html.escape(card.front), html.escape(card.back), source],
            guid=genanki.guid_for(str(card.id))))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "deck.apkg"
        genanki.Package(deck).write_to_file(str(path))
        return path.read_bytes()
