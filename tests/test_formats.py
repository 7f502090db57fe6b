"""Slides, documents, scans and plain files: told by their content, read by their own parsers and
OCR, cited at the slide, section or scanned page of the fact; hostile files refused with a
reason and nothing left on disk; originals served to their owner only, within a quota."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from chat_server.app import create_app
from chat_server.materials.formats import (
    extract_docx,
    extract_html,
    extract_markdown,
    extract_pdf,
    extract_pptx,
)
from chat_server.materials.formats.archive import TOO_LARGE_UNPACKED, TOO_MANY_ENTRIES, check_zip
from chat_server.materials.formats.base import MaterialFailed
from chat_server.materials.formats.detect import ENCRYPTED_OFFICE, Refused, sniff
from chat_server.materials.formats.ocr import OcrBudget, open_image
from chat_server.models import MaterialKind
from chat_server.settings import Settings
from tests.support.formats import (
    encrypted_docx,
    image_bytes,
    make_docx,
    make_pptx,
    many_empty_slides,
    pixel_bomb_png,
    render_lines,
    scanned_pdf,
    zip_bomb_docx,
)
from tests.support.ingest import make_pdf
from tests.support.services import serve_app
from tests.support.ws import socket

SLIDES = [
    ("Volcanoes", "A tour of the volcanoes of Europe and Asia.", None),
    ("Kamchatka", "The peninsula lies in the far east of Russia.",
     "Tell them: Kamchatka has about three hundred volcanoes, thirty of them active."),
    ("Etna", "Mount Etna erupted in 2021. Its lava reached a temperature of 1100 degrees.", None),
    ("Safety", "Stay away from the crater rim during an eruption.", None),
]
DOC = [
    (None, ["Отчёт о полевых работах на озере."]),
    ("Введение", ["Озеро изучали летом, с июня по август."]),
    ("Методы", ["Пробы воды отбирали на глубине сорок метров каждые две недели."]),
    ("Результаты", ["Прозрачность воды достигала двадцати метров."]),
]
SCAN: list[str | list[str]] = [
    "The history of writing begins in Mesopotamia, where clay tablets kept the accounts of temples.",
    ["The Rosetta Stone was found in 1799", "near the town of Rashid in Egypt."],
    ["Озеро Байкал содержит пятую часть", "пресной воды нашей планеты."],
]
HTML = ("<!doctype html><html><head><title>Tides</title><style>p{color:red}</style>"
        "<script>var secret = 'script text';</script></head><body><h1>Tides</h1>"
        "<p>Tides rise twice a day.</p><h2>Spring tides</h2><p>Spring tides happen at the new "
        "and the full moon, when the sun and the moon pull in line.</p>"
        "<script>document.write('more script text')</script></body></html>")
MARKDOWN = ("# Glaciers\n\nGlaciers move slowly.\n\n## Moraines\n\nA *terminal moraine* marks "
            "the furthest advance of a glacier.\n")


def _settings(tmp_path: Path, **update: Any) -> Settings:
    return Settings(_env_file=None, data_dir=tmp_path, **update)  # type: ignore[call-arg]


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# --- by content, not by name ------------------------------------------------------------------

def test_each_format_is_told_by_its_content_not_its_name(tmp_path: Path) -> None:
    s = _settings(tmp_path)
    page = render_lines(["A page"])
    found = {name: sniff(_write(tmp_path, f"f{i}", data), name, s).kind for i, (name, data) in enumerate([
        ("a.pdf", make_pdf(["x"])), ("b.docx", make_docx([("H", ["p"])])),
        ("c.pptx", make_pptx(SLIDES[:1])), ("d.png", image_bytes(page)),
        ("e.jpg", image_bytes(page, "JPEG")), ("f.html", HTML.encode()), ("g.md", b"just text"),
        ("h.txt", "# Заголовок\n\nтекст".encode("cp1251")), ("i.txt", "простой текст".encode("cp1251")),
        # The content decides between the formats we read: a PDF named .png is a PDF.
        ("photo.png", make_pdf(["x"])), ("lecture", make_pptx(SLIDES[:1])),
    ])}
    assert found == {"a.pdf": MaterialKind.pdf, "b.docx": MaterialKind.docx, "c.pptx": MaterialKind.pptx,
                     "d.png": MaterialKind.image, "e.jpg": MaterialKind.image, "f.html": MaterialKind.html,
                     "g.md": MaterialKind.markdown, "h.txt": MaterialKind.markdown, "i.txt": MaterialKind.text,
                     "photo.png": MaterialKind.pdf, "lecture": MaterialKind.pptx}
    # A name that lies about the type, content that is nothing we read, a password.
    for name, data, status, words in [
        ("slides.pptx", b"just some plain text", 415, "is not a PowerPoint presentation (.pptx): its content is text file"),
        ("notes.pdf", b"MZ\x90\x00\x03\x00\x00\x00\x04\x00binary", 415, "is not a PDF"),
        ("x.pdf", b"PK\x03\x04 a zip", 415, "is not a PDF: its content is a damaged ZIP archive"),
        ("song.mp3", b"ID3\x04\x00\x00\x00\x00\x00\x00\xff\xfb\x90\x00", 415, "not one we can read"),
        ("secret.docx", encrypted_docx(), 422, ENCRYPTED_OFFICE),
    ]:
        with pytest.raises(Refused) as refused:
            sniff(_write(tmp_path, "lie", data), name, s)
        assert refused.value.status == status and words in refused.value.message, refused.value.message


def test_documents_keep_their_structure(tmp_path: Path) -> None:
    s = _settings(tmp_path)
    deck = extract_pptx(_write(tmp_path, "d.pptx", make_pptx(SLIDES)), s)
    assert deck.pages == 4 and [seg.page for seg in deck.segments] == [1, 2, 3, 4]
    assert "three hundred volcanoes" in deck.segments[1].text  # the speaker notes
    assert deck.segments[2].text.startswith("Etna")
    doc = extract_docx(_write(tmp_path, "d.docx", make_docx(DOC)), s)
    assert [seg.section for seg in doc.segments] == [None, "Введение", "Методы", "Результаты"]
    assert doc.segments[2].text == "Методы\n\nПробы воды отбирали на глубине сорок метров каждые две недели."
    html = extract_html(_write(tmp_path, "p.html", HTML.encode()), s)
    assert [seg.section for seg in html.segments] == ["Tides", "Spring tides"]
    assert "script" not in " ".join(seg.text for seg in html.segments)
    md = extract_markdown(_write(tmp_path, "g.md", MARKDOWN.encode()), s)
    assert [seg.section for seg in md.segments] == ["Glaciers", "Moraines"]
    assert "A terminal moraine marks" in md.segments[1].text  # the markup gone


def test_ocr_reads_russian_and_english_pages(tmp_path: Path) -> None:
    s = _settings(tmp_path)
    budget = OcrBudget(s)
    english = budget.read(open_image(_write(tmp_path, "en.png", image_bytes(render_lines(
        ["Photosynthesis happens in chloroplasts", "of green plant cells."]))), s))
    russian = budget.read(open_image(_write(tmp_path, "ru.jpg", image_bytes(render_lines(
        ["Фотосинтез происходит в хлоропластах", "клеток зелёных растений."]), "JPEG")), s))
    assert {"Photosynthesis", "chloroplasts", "plant"} <= set(english.split())
    assert {"Фотосинтез", "хлоропластах", "растений."} <= set(russian.split())
    # A PDF with a text layer on one page and scans on the others, page by page.
    stages: list[str] = []
    progress: list[tuple[int, int]] = []
    pdf = extract_pdf(_write(tmp_path, "mixed.pdf", scanned_pdf(SCAN)), s,
                      lambda d, t: progress.append((d, t)), stage=stages.append)
    assert [seg.page for seg in pdf.segments] == [1, 2, 3] and pdf.scanned_pages == 2
    assert "Rosetta Stone was found in 1799" in pdf.segments[1].text
    assert "пресной воды" in pdf.segments[2].text
    assert stages == ["ocr"] and progress[-3:] == [(0, 2), (1, 2), (2, 2)]


def test_hostile_files_fail_with_a_reason(tmp_path: Path) -> None:
    s = _settings(tmp_path, max_zip_uncompressed_bytes=20 << 20)
    failures = {}
    for name, run in {
        "zip bomb": lambda: check_zip(_write(tmp_path, "b.docx", zip_bomb_docx(64 << 20)), s),
        "5,000 empty slides": lambda: extract_pptx(_write(tmp_path, "e.pptx", many_empty_slides(5000)), s),
        "pixel bomb": lambda: open_image(_write(tmp_path, "p.png", pixel_bomb_png(12_000, 12_000)), s),
        "pixel bomb in a scanned page": lambda: extract_pdf(
            _write(tmp_path, "q.pdf", scanned_pdf(SCAN)), s.model_copy(update={"max_image_pixels": 100_000})),
        "OCR pages": lambda: extract_pdf(_write(tmp_path, "s.pdf", scanned_pdf(SCAN)),
                                         s.model_copy(update={"ocr_max_pages": 1})),
        "OCR time": lambda: extract_pdf(_write(tmp_path, "t.pdf", scanned_pdf(SCAN)),
                                        s.model_copy(update={"ocr_timeout_s": 0.01})),
    }.items():
        with pytest.raises(MaterialFailed) as failed:
            run()
        failures[name] = failed.value.reason
    assert failures["zip bomb"] == TOO_LARGE_UNPACKED.format(limit=20)
    assert failures["5,000 empty slides"] == TOO_MANY_ENTRIES.format(limit=10_000)
    assert "12000 × 12000 pixels" in failures["pixel bomb"]
    assert "1100 × " in failures["pixel bomb in a scanned page"] and "more than the 100,000 pixels" in failures["pixel bomb in a scanned page"]
    assert "has 2 scanned pages to read by OCR, more than the 1" in failures["OCR pages"]
    assert "took longer than the 0 seconds" in failures["OCR time"]


# --- through the app ------------------------------------------------------------------------

@dataclass
class Learner:
    app: FastAPI
    client: httpx.AsyncClient
    base: str
    headers: dict[str, str]
    token: str
    user_id: str

    async def upload(self, name: str, data: bytes, title: str | None = None) -> httpx.Response:
        return await self.client.post("/materials", headers=self.headers,
                                      data={"title": title} if title else {},
                                      files={"file": (name, data, "application/octet-stream")})

    async def finished(self, material_id: str, within_s: float = 90) -> dict[str, Any]:
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            body: dict[str, Any] = (await self.client.get(f"/materials/{material_id}", headers=self.headers)).json()
            if body["status"] in ("ready", "failed"):
                return body
            await asyncio.sleep(0.1)
        raise AssertionError(f"{material_id} did not finish")

    async def events(self) -> list[dict[str, Any]]:
        bus = self.app.state.bus
        head = await bus.head(self.user_id)
        return [json.loads(f) for f in await bus.since(self.user_id, 0, head.epoch)]


async def _learner(app: FastAPI, base: str, client: httpx.AsyncClient, email: str) -> Learner:
    await client.post("/auth/register", json={"email": email, "password": "password-123"})
    token = (await client.post("/auth/token", data={"username": email, "password": "password-123"})).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    me = (await client.get("/me", headers=headers)).json()
    return Learner(app, client, base, headers, token, me["id"])


async def _serve(settings: Settings) -> AsyncIterator[tuple[FastAPI, str, httpx.AsyncClient]]:
    app = create_app(settings)
    async with serve_app(app) as base, httpx.AsyncClient(base_url=base, timeout=60) as client:
        yield app, base, client


async def _ask(ws: Any, text: str, material_id: str) -> list[dict[str, Any]]:
    cid = uuid.uuid4().hex
    await ws.send(json.dumps({"type": "chat.send", "id": cid, "text": text, "material_ids": [material_id]}))
    reply_id = None
    citations: list[dict[str, Any]] = []
    async with asyncio.timeout(60):
        while True:
            frame = json.loads(await ws.recv())
            if frame["type"] == "chat.ack" and frame["id"] == cid:
                reply_id = frame["reply_id"]
            elif frame.get("reply_id") == reply_id and frame["type"] == "reply.citations":
                citations = frame["citations"]
            elif frame.get("reply_id") == reply_id and frame["type"] == "reply.end":
                return citations


def _files(settings: Settings) -> list[str]:
    uploads = settings.data_dir / "uploads"
    return sorted(p.name for p in uploads.iterdir()) if uploads.exists() else []


async def test_every_format_is_ingested_and_cited_at_its_slide_section_or_page(settings: Settings) -> None:
    async for app, base, client in _serve(settings):
        me = await _learner(app, base, client, "formats@example.com")
        uploads = {
            "deck": await me.upload("volcanoes.pptx", make_pptx(SLIDES)),
            "doc": await me.upload("отчёт.docx", make_docx(DOC)),
            "scan": await me.upload("history.pdf", scanned_pdf(SCAN)),
            "image": await me.upload("board.png", image_bytes(render_lines(["Ohm's law: voltage equals", "current times resistance."]))),
            "html": await me.upload("tides.html", HTML.encode()),
            "md": await me.upload("glaciers.md", MARKDOWN.encode()),
            "txt": await me.upload("заметки.txt", "Каспийское море — крупнейшее озеро Земли.".encode("cp1251")),
        }
        assert all(r.status_code == 202 for r in uploads.values()), {k: r.text for k, r in uploads.items()}
        ids = {k: r.json()["id"] for k, r in uploads.items()}
        done = {k: await me.finished(mid) for k, mid in ids.items()}
        assert {k: (m["status"], m["kind"]) for k, m in done.items()} == {
            "deck": ("ready", "pptx"), "doc": ("ready", "docx"), "scan": ("ready", "pdf"), "image": ("ready", "image"),
            "html": ("ready", "html"), "md": ("ready", "markdown"), "txt": ("ready", "text")}, done
        assert done["deck"]["pages"] == 4 and done["scan"]["pages"] == 3 and done["doc"]["title"] == "отчёт"

        events = await me.events()
        ready = {e["material_id"]: e for e in events if e["type"] == "material.ready"}
        assert ready[ids["deck"]]["pages"] == 4
        # The scan's pages were read one by one, each one's progress on the socket.
        ocr = [(e["done"], e["total"]) for e in events
               if e.get("material_id") == ids["scan"] and e.get("stage") == "ocr"]
        assert {(1, 2), (2, 2)} <= set(ocr), ocr

        async with socket(base, me.token) as (ws, _):
            slide = await _ask(ws, "What temperature did the lava of Mount Etna reach?", ids["deck"])
            notes = await _ask(ws, "How many volcanoes does Kamchatka have?", ids["deck"])
            section = await _ask(ws, "На какой глубине отбирали пробы воды?", ids["doc"])
            scanned = await _ask(ws, "When was the Rosetta Stone found?", ids["scan"])
            scanned_ru = await _ask(ws, "Какую часть пресной воды содержит Байкал?", ids["scan"])
            tides = await _ask(ws, "When do spring tides happen?", ids["html"])
            image = await _ask(ws, "What does voltage equal by Ohm's law?", ids["image"])
        assert [(c["kind"], c.get("page")) for c in slide] == [("pptx", 3)] and "1100 degrees" in slide[0]["text"]
        assert [c.get("page") for c in notes] == [2] and "three hundred" in notes[0]["text"]
        assert [(c["kind"], c.get("section"), c.get("page")) for c in section] == [("docx", "Методы", None)]
        assert "сорок метров" in section[0]["text"]
        assert [(c["kind"], c.get("page")) for c in scanned] == [("pdf", 2)] and "1799" in scanned[0]["text"]
        assert [c.get("page") for c in scanned_ru] == [3]
        assert [c.get("section") for c in tides] == ["Spring tides"]
        assert image and "resistance" in image[0]["text"]
        # The originals are kept: one file per uploaded material, under its id.
        assert sorted(Path(n).stem for n in _files(settings)) == sorted(ids.values())


async def test_hostile_uploads_are_refused_or_fail_with_nothing_left(settings: Settings) -> None:
    tuned = settings.model_copy(update={"max_zip_uncompressed_bytes": 20 << 20})
    async for app, base, client in _serve(tuned):
        me = await _learner(app, base, client, "hostile@example.com")
        r = await me.upload("secret.docx", encrypted_docx())
        assert r.status_code == 422 and r.json() == {"error": "password_protected", "message": ENCRYPTED_OFFICE}
        r = await me.upload("lecture.pptx", "Это просто текст, а не презентация.".encode())
        assert r.status_code == 415 and r.json()["error"] == "unsupported_media_type"
        assert "“lecture.pptx” is not a PowerPoint presentation" in r.json()["message"]
        failed = {}
        for name, data in [("bomb.docx", zip_bomb_docx(64 << 20)), ("deck.pptx", many_empty_slides(5000)),
                           ("huge.png", pixel_bomb_png(12_000, 12_000))]:
            r = await me.upload(name, data)
            assert r.status_code == 202, r.text
            failed[name] = await me.finished(r.json()["id"])
        assert {n: (m["status"], m["error"]) for n, m in failed.items()} == {
            "bomb.docx": ("failed", TOO_LARGE_UNPACKED.format(limit=20)),
            "deck.pptx": ("failed", TOO_MANY_ENTRIES.format(limit=10_000)),
            "huge.png": ("failed", failed["huge.png"]["error"])}
        assert "possible decompression bomb" in failed["huge.png"]["error"]
        events = [e for e in await me.events() if e["type"] == "material.failed"]
        assert {e["reason"] for e in events} == {m["error"] for m in failed.values()}
        assert all(m["file_size"] == 0 and m["chunk_count"] == 0 for m in failed.values())
        assert _files(tuned) == []


async def test_the_original_is_its_owners_and_goes_with_its_material(settings: Settings) -> None:
    pdf = make_pdf(["Page one about rivers.", "Page two: the Volga flows into the Caspian Sea."])
    docx = make_docx([("Rivers", ["The Nile is the longest river in Africa."])])
    tuned = settings.model_copy(update={"storage_quota_bytes": len(pdf) + len(docx) + 1000})
    async for app, base, client in _serve(tuned):
        alice = await _learner(app, base, client, "alice@example.com")
        bob = await _learner(app, base, client, "bob@example.com")
        ids = []
        for name, data in (("реки.pdf", pdf), ("nile.docx", docx)):
            r = await alice.upload(name, data)
            assert r.status_code == 202, r.text
            assert (await alice.finished(r.json()["id"]))["status"] == "ready"
            ids.append(r.json()["id"])
        got = await client.get(f"/materials/{ids[0]}/file", headers=alice.headers)
        assert got.status_code == 200 and got.content == pdf
        assert got.headers["content-type"] == "application/pdf"
        assert got.headers["content-disposition"] == "inline; filename*=utf-8''%D1%80%D0%B5%D0%BA%D0%B8.pdf"
        got = await client.get(f"/materials/{ids[1]}/file", headers=alice.headers)
        assert got.status_code == 200 and got.content == docx
        assert got.headers["content-type"].startswith("application/vnd.openxmlformats-officedocument.wordprocessingml")
        assert got.headers["content-disposition"] == 'attachment; filename="nile.docx"'
        for mid in ids:  # another learner: as if it did not exist
            theirs = await client.get(f"/materials/{mid}/file", headers=bob.headers)
            assert theirs.status_code == 404 and theirs.json()["error"] == "not_found"
        assert (await client.get(f"/materials/{ids[0]}/file")).status_code == 401
        listed = {m["id"]: m for m in (await client.get("/materials", headers=alice.headers)).json()}
        assert listed[ids[0]]["file_size"] == len(pdf) and listed[ids[0]]["content_type"] == "application/pdf"

        # The quota: one more file does not fit; refused before anything is stored.
        r = await alice.upload("more.pdf", make_pdf(["Another page about lakes and seas."] * 3))
        assert r.status_code == 413 and r.json()["error"] == "storage_quota_exceeded", r.text
        assert "Delete materials" in r.json()["message"]
        assert len(_files(tuned)) == 2
        # Deleting a material removes its file, and frees its share of the quota.
        assert (await client.delete(f"/materials/{ids[0]}", headers=alice.headers)).status_code == 204
        assert [Path(n).stem for n in _files(tuned)] == [ids[1]]
        assert (await client.get(f"/materials/{ids[0]}/file", headers=alice.headers)).status_code == 404
        assert (await alice.upload("more.pdf", make_pdf(["Another page about lakes."]))).status_code == 202

    # Originals not kept: the file goes once it is ingested.
    async for app, base, client in _serve(settings.model_copy(update={"keep_originals": False})):
        carol = await _learner(app, base, client, "carol@example.com")
        r = await carol.upload("notes.md", MARKDOWN.encode())
        body = await carol.finished(r.json()["id"])
        assert body["status"] == "ready" and body["file_size"] == 0
        assert (await client.get(f"/materials/{body['id']}/file", headers=carol.headers)).status_code == 404
        assert [n for n in _files(settings) if n.startswith(body["id"])] == []


def test_ocr_is_installed_by_ci_the_image_and_on_request() -> None:
    root = Path(__file__).resolve().parents[1]
    setup = (root / "scripts" / "setup.sh").read_text()
    docker = (root / "Dockerfile").read_text()
    for package in ("tesseract-ocr", "tesseract-ocr-eng", "tesseract-ocr-rus"):
        assert package in docker
    assert "--ocr" in setup and "WITH_TESTS=1 && WITH_MINILM=1 && WITH_OCR=1" in setup
    assert 'missing+=("tesseract-ocr-$lang")' in setup and "for lang in eng rus" in setup
