"""Extraction, chunking and language detection on real generated files (no database)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from chat_server.embeddings import LocalEmbedder
from chat_server.materials.chunking import Chunker, chunk, detect_language, split_sentences
from chat_server.materials.formats import (
    CORRUPT,
    ENCRYPTED,
    NO_TEXT,
    NO_TRANSCRIPT,
    VIDEO_UNAVAILABLE,
    MaterialFailed,
    Segment,
    TransientError,
    extract_pdf,
    extract_youtube,
    parse_video_id,
)
from chat_server.settings import Settings
from tests.support.ingest import (
    Video,
    corrupt_pdf,
    encrypt_pdf,
    make_image_only_pdf,
    make_pdf,
    youtube_server,
)


def _settings(tmp_path: Path, **kw: Any) -> Settings:
    return Settings(_env_file=None, data_dir=tmp_path, **kw)  # type: ignore[call-arg]


def _write(tmp_path: Path, data: bytes, name: str = "doc.pdf") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_pdf_pages_keep_their_numbers_english_and_russian(tmp_path: Path) -> None:
    pages = ["Photosynthesis converts light into chemical energy.",
             "Митохондрии вырабатывают энергию клетки.",
             "The Krebs cycle runs in the mitochondrial matrix."]
    progress: list[tuple[int, int]] = []
    out = extract_pdf(_write(tmp_path, make_pdf(pages)), _settings(tmp_path),
                      lambda d, t: progress.append((d, t)))
    assert out.pages == 3
    assert [s.page for s in out.segments] == [1, 2, 3]
    assert "Photosynthesis" in out.segments[0].text
    assert "Митохондрии вырабатывают" in out.segments[1].text
    assert progress[-1] == (3, 3)


def test_pdf_page_and_char_limits(tmp_path: Path) -> None:
    data = make_pdf([f"Page number {i} has its own sentence." for i in range(1, 8)])
    out = extract_pdf(_write(tmp_path, data), _settings(tmp_path, max_pdf_pages=3))
    assert out.pages == 3 and out.truncated
    assert [s.page for s in out.segments] == [1, 2, 3]
    out = extract_pdf(_write(tmp_path, data), _settings(tmp_path, max_extracted_chars=50))
    assert sum(len(s.text) for s in out.segments) == 50 and out.truncated


@pytest.mark.parametrize(("data", "reason"), [
    (encrypt_pdf(make_pdf(["secret lecture notes"])), ENCRYPTED),
    (corrupt_pdf(), CORRUPT),
    (make_image_only_pdf(), NO_TEXT),
], ids=["encrypted", "corrupt", "image-only"])
def test_pdfs_that_cannot_be_read_say_why(tmp_path: Path, data: bytes, reason: str) -> None:
    with pytest.raises(MaterialFailed) as info:
        extract_pdf(_write(tmp_path, data), _settings(tmp_path))
    assert info.value.reason == reason


def test_scan_reason_is_what_a_learner_understands() -> None:
    # Scans are read by OCR now (tests/test_formats.py): what fails is a PDF with neither.
    assert "no text layer" in NO_TEXT and "scanned page" in NO_TEXT


@pytest.mark.parametrize("value", [
    "dQw4w9WgXcQ", "https://www.youtube.com/watch?v=dQw4w9WgXcQ&t=42s", "youtu.be/dQw4w9WgXcQ",
    "https://youtu.be/dQw4w9WgXcQ?si=abc", "https://m.youtube.com/watch?feature=share&v=dQw4w9WgXcQ",
    "https://www.youtube.com/embed/dQw4w9WgXcQ", "https://youtube.com/shorts/dQw4w9WgXcQ",
    "https://www.youtube.com/live/dQw4w9WgXcQ?feature=shared",
])
def test_video_id_from_any_common_form(value: str) -> None:
    assert parse_video_id(value) == "dQw4w9WgXcQ"


@pytest.mark.parametrize("value", ["", "hello", "https://example.com/watch?v=dQw4w9WgXcQ",
                                   "https://www.youtube.com/watch?v=short"])
def test_bad_video_ids_are_refused(value: str) -> None:
    with pytest.raises(ValueError):
        parse_video_id(value)


def test_youtube_transcript_through_loopback_with_language_preference(tmp_path: Path) -> None:
    videos = {"abcdefghijk": Video([(0.0, 2.5, "Привет, сегодня &amp; говорим о клетках."),
                                    (2.5, 3.0, "Клетка — основа жизни.")], language="ru")}
    with youtube_server(videos) as yt:
        out = extract_youtube("abcdefghijk", _settings(
            tmp_path, youtube_base_url=yt.base_url, youtube_languages=["en", "ru"]))
    assert [s.start_s for s in out.segments] == [0.0, 2.5]
    assert out.segments[0].text == "Привет, сегодня & говорим о клетках."
    assert out.duration_s == 5.5
    assert any(r.startswith("GET /watch?v=abcdefghijk") for r in yt.requests)


def test_youtube_without_transcript_or_unavailable(tmp_path: Path) -> None:
    videos = {"nocaptions1": Video([], captions=False)}
    with youtube_server(videos) as yt:
        settings = _settings(tmp_path, youtube_base_url=yt.base_url)
        with pytest.raises(MaterialFailed) as info:
            extract_youtube("nocaptions1", settings)
        assert info.value.reason == NO_TRANSCRIPT
        with pytest.raises(MaterialFailed) as info:
            extract_youtube("missing0000", settings)
        assert info.value.reason == VIDEO_UNAVAILABLE


def test_youtube_server_error_is_transient(tmp_path: Path) -> None:
    with youtube_server({"abcdefghijk": Video([(0, 1, "hi")])}, fail_first=1) as yt:
        with pytest.raises(TransientError):
            extract_youtube("abcdefghijk", _settings(tmp_path, youtube_base_url=yt.base_url))


def test_sentences_split_in_russian_english_and_mixed() -> None:
    assert split_sentences("Первое предложение. Второе! Third one? «Четвёртое» здесь.") == [
        "Первое предложение.", "Второе!", "Third one?", "«Четвёртое» здесь."]
    assert split_sentences("Version 2.5 is out. Next sentence.") == [
        "Version 2.5 is out.", "Next sentence."]


def test_language_detection() -> None:
    assert detect_language("Фотосинтез происходит в хлоропластах.") == "russian"
    assert detect_language("Photosynthesis happens in chloroplasts.") == "english"
    assert detect_language("Алгоритм Dijkstra находит кратчайший путь.") == "russian"
    assert detect_language("1234 5678 ---") == "simple"


def test_chunks_respect_sentences_overlap_and_keep_page_spans() -> None:
    sentences = [f"Sentence number {i} talks about topic {i} in detail." for i in range(40)]
    segments = [Segment(" ".join(sentences[:20]), page=1), Segment(" ".join(sentences[20:]), page=2)]
    chunks = chunk(segments, size=300, overlap=80)
    assert len(chunks) > 3
    for c in chunks:
        assert len(c.text) <= 300
        assert c.text.endswith(".")  # never cut inside a sentence
        assert c.text.startswith("Sentence number")
    # Consecutive chunks share their boundary sentence(s).
    for a, b in zip(chunks, chunks[1:], strict=False):
        assert a.text.split(". ")[-1].rstrip(".") in b.text
    assert chunks[0].page_start == chunks[0].page_end == 1
    assert chunks[-1].page_end == 2
    assert any(c.page_start == 1 and c.page_end == 2 for c in chunks)
    # Every sentence lands in some chunk.
    joined = " ".join(c.text for c in chunks)
    assert all(s in joined for s in sentences)


def test_chunks_keep_time_spans_and_split_overlong_runs() -> None:
    segments = [Segment(f"фраза номер {i} о клетках", start_s=i * 2.0, end_s=i * 2.0 + 2)
                for i in range(50)]
    chunks = chunk(segments, size=200, overlap=40)
    assert chunks[0].start_s == 0.0 and chunks[-1].end_s == 100.0
    assert all(c.language == "russian" for c in chunks)
    assert all(c.start_s is not None and c.end_s is not None and c.start_s < c.end_s for c in chunks)
    long = chunk([Segment("слово " * 500)], size=200, overlap=0)
    assert len(long) >= 14 and all(len(c.text) <= 200 for c in long)


def test_pages_fed_one_by_one_chunk_like_the_whole_document(tmp_path: Path) -> None:
    # Ingestion chunks each page as the extraction thread reads it: same chunks as at once.
    pages = [" ".join(f"Page {p} sentence {i} is about membranes and ions." for i in range(p * 3 + 1))
             + "\n\nA new paragraph on page " + str(p) + "." for p in range(1, 9)]
    fed: list[Segment] = []
    extracted = extract_pdf(_write(tmp_path, make_pdf(pages)), _settings(tmp_path), sink=fed.append)
    assert fed == extracted.segments and [s.page for s in fed] == list(range(1, 9))
    whole = chunk(extracted.segments, size=300, overlap=80)
    chunker = Chunker(300, 80)
    streamed = [c for segment in fed for c in chunker.feed([segment])] + chunker.finish()
    assert streamed == whole and len(whole) > 8
    assert chunker.finish() == []


def test_chunks_fit_what_the_local_model_reads() -> None:
    # 1000 characters of Russian are ~850 word pieces; the model reads 254 (+ [CLS]/[SEP]).
    embedder = LocalEmbedder(8)
    russian = " ".join(f"Предложение номер {i} рассказывает о митохондриях и клеточном дыхании."
                       for i in range(60))
    russian += " " + "длинноесловобезпробелов " * 120  # one "sentence" far longer than 254
    plain = chunk([Segment(russian, page=1)], 1000, 150)
    assert max(embedder.count([c.text for c in plain])) > 600
    chunker = Chunker(1000, 150, embedder.max_tokens, embedder.count)
    fitted = chunker.feed([Segment(russian, page=1)]) + chunker.finish()
    assert len(fitted) > len(plain)
    assert all(0 < n <= embedder.max_tokens for n in embedder.count([c.text for c in fitted]))
    joined = " ".join(c.text for c in fitted)
    assert all(f"Предложение номер {i} " in joined for i in range(60))
    assert joined.count("длинноесловобезпробелов") >= 120
    # English lecture text of the same size already fits: the same chunks as without a count.
    english = " ".join(f"Sentence {i} explains how the cell membrane controls ions." for i in range(60))
    fit_en = Chunker(1000, 150, embedder.max_tokens, embedder.count)
    assert fit_en.feed([Segment(english)]) + fit_en.finish() == chunk([Segment(english)], 1000, 150)
