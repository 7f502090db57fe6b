"""Citations name the page or second of the sentence they quote: chunk locations, the prompt's
page-cut passages, resolving [n] markers (quoted or reworded), and the offline tutor's picks."""

from __future__ import annotations

import uuid

from chat_server.materials.chunking import Chunker
from chat_server.materials.formats import Segment
from chat_server.passages import name_spellings, place_of, sentence_spans, terms
from chat_server.retrieval import Hit
from chat_server.tutor.citations import resolve, sources
from chat_server.tutor.offline import pick_sentences
from chat_server.tutor.prompt import build_request

PAGE_3 = "Glaciers grind valleys into a U shape. Rocks in the ice scratch the bedrock."
PAGE_4 = ("Louis Agassiz argued in 1837 that Europe was once under ice. "
          "His idea was accepted within decades.")


def _hit(text: str, locations: tuple[tuple[int, float], ...], kind: str = "pdf",
         page: int | None = 3, start_s: float | None = None, n: int = 1) -> Hit:
    return Hit(chunk_id=n, material_id=uuid.uuid4(), title="Glaciers", kind=kind, source="",
               text=text, page=page, start_s=start_s, score=1.0, language="english",
               locations=locations)


def test_a_chunk_across_a_page_break_knows_where_the_next_page_begins() -> None:
    chunker = Chunker(size=1000, overlap=0)
    chunks = chunker.feed([Segment(PAGE_3, page=3), Segment(PAGE_4, page=4)]) + chunker.finish()
    (chunk,) = chunks
    assert (chunk.page_start, chunk.page_end) == (3, 4)
    (first, page3), (offset, page4) = chunk.locations
    assert (first, page3, page4) == (0, 3, 4)
    assert chunk.text[offset:].startswith("Louis Agassiz")
    # A transcript: every line keeps its own second.
    lines = [Segment("so the ice moves", start_s=12.0, end_s=15.0),
             Segment("Agassiz said Europe was frozen", start_s=754.5, end_s=758.0)]
    video_chunker = Chunker(1000, 0)
    (video,) = video_chunker.feed(lines) + video_chunker.finish()
    assert [place for _, place in video.locations] == [12.0, 754.5]


def test_citation_names_the_page_of_the_quoted_sentence_not_of_the_chunk() -> None:
    text = PAGE_3 + "\n" + PAGE_4
    hit = _hit(text, ((0, 3), (len(PAGE_3) + 1, 4)))
    passages = sources([hit])
    assert [(s.n, s.page) for s in passages] == [(1, 3), (2, 4)]
    request = build_request(question="Who said Europe was under ice?", hits=[hit], history=[],
                            socratic=False, history_budget=0, max_tokens=100, temperature=0)
    prompt = request.messages[-1]["content"]
    assert "[1] Glaciers, page 3:\nGlaciers grind" in prompt
    assert "[2] Glaciers, page 4:\nLouis Agassiz" in prompt

    quoted = ("Here is what your materials say: Louis Agassiz argued in 1837 that Europe was "
              "once under ice. [2]")
    (citation,) = resolve(quoted, request.sources)
    assert citation["page"] == 4 and citation["n"] == 2
    assert citation["text"] == "Louis Agassiz argued in 1837 that Europe was once under ice."
    assert citation["passage"] == text

    # An LLM words it its own way: the closest sentence of passage 2 is the one cited.
    reworded = "Agassiz was the one who proposed, in 1837, an ice-covered Europe [2]."
    (citation,) = resolve(reworded, request.sources)
    assert citation["text"].startswith("Louis Agassiz") and citation["page"] == 4
    # Markers that point nowhere are no citations.
    assert resolve("Nothing here [7].", request.sources) == []


def test_a_sentence_across_a_page_break_counts_for_the_page_holding_most_of_it() -> None:
    text = "The ice sheet covered Canada and northern Europe, three kilometres thick."
    # Page 6 begins after "The ice sheet": most of the sentence is on page 6.
    assert place_of(((0, 5), (13, 6)), 0, len(text)) == 6
    assert place_of(((0, 5), (60, 6)), 0, len(text)) == 5
    assert place_of((), 0, 10) is None


def test_a_transcript_citation_starts_at_the_second_of_its_line() -> None:
    text = "so the ice moves Agassiz said Europe was frozen. and that is the story"
    hit = _hit(text, ((0, 12.0), (17, 754.5), (49, 790.0)), kind="youtube", page=None,
               start_s=12.0)
    (citation,) = resolve("Agassiz said Europe was frozen [1].", sources([hit]))
    assert citation["start_s"] == 12.0  # the quoted sentence begins in the first line
    hit = _hit("Agassiz said Europe was frozen. And that is the story.",
               ((0, 754.5), (32, 790.0)), kind="youtube", page=None, start_s=754.5)
    (citation,) = resolve("And that is the story. [1]", sources([hit]))
    assert citation["start_s"] == 790.0 and "page" not in citation


async def test_offline_quotes_a_sentence_once_from_overlapping_chunks_and_cites_its_page() -> None:
    shared = "Louis Agassiz argued in 1837 that Europe was once under ice."
    first = _hit(PAGE_3 + "\n" + shared, ((0, 3), (len(PAGE_3) + 1, 4)), n=1)
    second = _hit(shared + " His idea was accepted within decades.", ((0, 4),), page=4, n=2)
    request = build_request(question="When did Agassiz argue that Europe was under ice?",
                            hits=[first, second], history=[], socratic=False, history_budget=0,
                            max_tokens=300, temperature=0)
    picks = await pick_sentences(request.question, request.sources)
    assert [p.text for p in picks].count(shared) == 1
    assert picks[0].text == shared and picks[0].source.page == 4
    # Weak evidence: "not covered" (no sentence holds enough of the question's words).
    assert await pick_sentences("How do volcanoes erupt under the sea?", request.sources) == []


def test_sentences_and_terms_in_both_languages() -> None:
    text = "Т. е. это пример. Волга впадает в Каспийское море! Ice, e.g. glaciers, flow. 42 is it."
    pieces = [text[s.start:s.end] for s in sentence_spans(text)]
    assert pieces == ["Т. е. это пример.", "Волга впадает в Каспийское море!",
                      "Ice, e.g. glaciers, flow.", "42 is it."]
    assert terms("Волги впадают") == terms("Волга впадает")
    assert "1837" in terms("in 1837") and terms("comes") == terms("come")
    # Names in an English question meet their Russian spelling; the first word is no name.
    assert name_spellings("Where did Novgorod trade with Baikal?") == {
        "новгород": "Novgorod", "байкал": "Baikal"}
    assert name_spellings("Which river flows out?") == {}
