"""Slides and scans benchmark on real parts (pgserver Postgres + pgvector, the app under uvicorn
with the in-process broker, the default e5 embeddings, Debian's Tesseract).

Upload → `material.ready` on the owner's socket, for:
1. a 40-slide PPTX (title, five lines and speaker notes per slide; python-pptx);
2. a 20-page scanned PDF (A4 pages of 10-point English and Russian text as 300-dpi JPEG scans, no
   text layer): the OCR stage's pages per second, from its first to its last page's event; with
   the default `ocr_workers` (one per core) and with 1 (pages one at a time);
3. the same 20 pages as a text PDF: the peer in the same run (what the scan costs on top).
Each runs `--rounds` times, interleaved (slides, scan, scan one at a time, text, slides, …);
medians and ranges. Then one scanned page through `tesseract` alone, with its OpenMP threads
and with one thread (OMP_THREAD_LIMIT=1, what ocr.py sets), interleaved `--page-runs` times.

    flock /tmp/tutorhub-heavy.lock .venv/bin/python load_tests/bench_formats.py [--rounds 2]

Prints a report and writes load_tests/reports/formats.md (a run with other rounds only prints).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chat_server.app import create_app  # noqa: E402
from chat_server.materials.formats.ocr import describe  # noqa: E402
from chat_server.materials.formats.ocr import workers as ocr_workers  # noqa: E402
from load_tests.report import Report, bench_settings, cpu_probe  # noqa: E402
from tests.support.formats import make_pptx, render_lines, scanned_pdf  # noqa: E402
from tests.support.ingest import make_pdf  # noqa: E402
from tests.support.services import serve_app  # noqa: E402
from tests.support.ws import new_user, socket  # noqa: E402

REPORT = ROOT / "load_tests" / "reports" / "formats.md"
DEFAULT_ROUNDS = 2
DEFAULT_PAGE_RUNS = 3
SLIDES = 40
SCAN_PAGES = 20

EN = ["the glacier", "the river delta", "the enzyme", "the Roman senate", "the heat engine",
      "the cell membrane", "the volcano", "the tide"]
RU = ["ледник", "дельта реки", "фермент", "римский сенат", "тепловая машина", "клеточная мембрана",
      "вулкан", "прилив"]
VERBS = ["shapes", "limits", "explains", "depends on", "produces"]
RU_VERBS = ["меняет", "ограничивает", "объясняет", "зависит от", "создаёт"]


def _line(rng: random.Random, n: int) -> str:
    if rng.random() < 0.5:
        return f"{n}. In this case {rng.choice(EN)} {rng.choice(VERBS)} {rng.choice(EN)} at {rng.randint(1, 999)}."
    return f"{n}. В этом случае {rng.choice(RU)} {rng.choice(RU_VERBS)} {rng.choice(RU)}, {rng.randint(1, 999)}."


def deck(rng: random.Random) -> bytes:
    return make_pptx([(f"Lecture part {i}", "\n".join(_line(rng, j) for j in range(1, 6)),
                       " ".join(_line(rng, j) for j in range(1, 4))) for i in range(1, SLIDES + 1)])


def scan_pages(rng: random.Random) -> list[list[str]]:
    return [[_line(rng, j) for j in range(1, 41)] for _ in range(SCAN_PAGES)]


async def ingest(base: str, client: httpx.AsyncClient, token: str, name: str, data: bytes
                 ) -> dict[str, Any]:
    """Upload → ready as the owner's socket sees it; when each stage began; process CPU."""
    headers = {"Authorization": f"Bearer {token}"}
    async with socket(base, token) as (ws, _):
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        r = await client.post("/materials", headers=headers,
                              files={"file": (name, data, "application/octet-stream")})
        assert r.status_code == 202, r.text
        mid = r.json()["id"]
        first: dict[str, float] = {}
        ocr_pages: list[tuple[float, int]] = []
        while True:
            event = json.loads(await asyncio.wait_for(ws.recv(), 900))
            if event.get("type") == "ping":  # a scan outlasts the socket's idle timeout
                await ws.send(json.dumps({"type": "pong"}))
                continue
            if event.get("material_id") != mid:
                continue
            at = time.perf_counter() - t0
            first.setdefault(str(event.get("stage", event["type"])), at)
            if event.get("stage") == "ocr":
                ocr_pages.append((at, int(event["done"])))
            if event["type"] in ("material.ready", "material.failed"):
                break
        wall = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
    assert event["type"] == "material.ready", event
    out: dict[str, Any] = {"wall_s": wall, "cpu_s": cpu, "chunks": event["chunks"],
                           "first": first, "bytes": len(data)}
    if ocr_pages:
        # From the event of the first page read to that of the last: pages per second of OCR.
        (t_a, n_a), (t_b, n_b) = min(p for p in ocr_pages if p[1] >= 1), max(ocr_pages, key=lambda p: p[1])
        out["ocr_pages_per_s"] = (n_b - n_a) / (t_b - t_a) if t_b > t_a else float("nan")
        out["ocr_s"] = first.get("chunking", wall) - first["ocr"]
    return out


def _span(values: list[float], fmt: Callable[[float], str]) -> str:
    if len(values) == 1:
        return fmt(values[0])
    return f"{fmt(statistics.median(values))} ({fmt(min(values))}–{fmt(max(values))})"


def page_ab(image_path: Path, runs: int) -> dict[str, list[float]]:
    """One page through `tesseract` alone, its OpenMP threads vs one thread, alternating."""
    out: dict[str, list[float]] = {"threads": [], "one": []}
    for _ in range(runs):
        for label in ("threads", "one"):
            env = dict(os.environ)
            env.pop("OMP_THREAD_LIMIT", None)
            if label == "one":
                env["OMP_THREAD_LIMIT"] = "1"
            t0 = time.perf_counter()
            subprocess.run(["tesseract", str(image_path), "stdout", "-l", "eng+rus", "--dpi", "300"],
                           env=env, capture_output=True, check=True, timeout=600)
            out[label].append(time.perf_counter() - t0)
    return out


async def main_async(rounds: int, page_runs: int, version: str) -> str:
    report = Report()
    say = report.say
    started = time.perf_counter()
    rng = random.Random(7)
    pptx = deck(rng)
    pages = scan_pages(rng)
    scan = scanned_pdf(list(pages), width=2480, size=42, fmt="JPEG")
    text = make_pdf(["\n".join(p) for p in pages])
    with tempfile.TemporaryDirectory(prefix="bench-formats-") as tmp:
        work = Path(tmp)
        async with bench_settings(work) as settings:
            # ingestion alone: no study tools generated after material.ready
            settings.study_on_ready = False
            say(f"# Slides and scans benchmark ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)")
            say()
            say(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                f"Python {platform.python_version()}; Postgres 16 + pgvector (pgserver); "
                f"embeddings {settings.embedding_provider} (default); {version} "
                f"({describe().removeprefix('OCR: ')}), `ocr_dpi` {settings.ocr_dpi}; CPU probe "
                f"{cpu_probe():.0f} ms. One server process (uvicorn, in-process broker), one "
                f"material at a time; {rounds} rounds, interleaved.")
            say()
            variants = (("pptx", "lecture.pptx", pptx, settings),
                        ("scan", "scan.pdf", scan, settings),
                        ("scan1", "scan.pdf", scan, settings.model_copy(update={"ocr_workers": 1})),
                        ("text", "text.pdf", text, settings))
            runs: dict[str, list[dict[str, Any]]] = {v[0]: [] for v in variants}
            for i in range(rounds):
                for kind, name, data, tuned in variants:
                    app = create_app(tuned)
                    async with serve_app(app) as base, \
                            httpx.AsyncClient(base_url=base, timeout=120) as client:
                        # A new learner each time: the same file twice would be found, not read.
                        _, token = await new_user(base, f"bench-{kind}-{i}@example.com")
                        result = await ingest(base, client, token, name, data)
                    runs[kind].append(result)
                    print(f"round {i + 1} {kind}: {result['wall_s']:.1f} s", flush=True)

            def col(kind: str, key: str) -> list[float]:
                return [r[key] for r in runs[kind] if key in r]

            say("## Upload → material.ready")
            say()
            say("| file | size | chunks | wall time | process CPU | OCR stage | OCR pages/s |")
            say("|---|---|---|---|---|---|---|")
            for kind, label in (("pptx", f"{SLIDES}-slide PPTX (text + notes)"),
                                ("scan", f"{SCAN_PAGES}-page scanned PDF (A4, 300 dpi JPEG), "
                                         f"`ocr_workers` {ocr_workers(settings)} (default)"),
                                ("scan1", "the same scan, `ocr_workers` 1"),
                                ("text", f"the same {SCAN_PAGES} pages as a text PDF")):
                r0 = runs[kind][0]
                ocr_s = col(kind, "ocr_s")
                rate = col(kind, "ocr_pages_per_s")
                say(f"| {label} | {r0['bytes'] / 1024:.0f} KB | {r0['chunks']} | "
                    f"{_span(col(kind, 'wall_s'), lambda v: f'{v:.1f} s')} | "
                    f"{_span(col(kind, 'cpu_s'), lambda v: f'{v:.1f} s')} | "
                    f"{_span(ocr_s, lambda v: f'{v:.1f} s') if ocr_s else '—'} | "
                    f"{_span(rate, lambda v: f'{v:.2f}') if rate else '—'} |")
            say()
            med = {k: statistics.median(col(k, "wall_s")) for k in runs}
            say(f"The scan takes {med['scan'] / med['text']:.1f}× the time of the same pages with "
                f"a text layer, and its OCR stage is "
                f"{statistics.median(col('scan', 'ocr_s')) / med['scan']:.0%} of it; pages one at "
                f"a time take {med['scan1'] / med['scan']:.2f}× as long (medians of {rounds}). "
                "Process CPU is the benchmark process's (server, embeddings, PDFium); Tesseract "
                "runs as a process of its own per page, so its CPU is not in that column.")
            say()
            for kind in ("pptx", "scan"):
                firsts = runs[kind][0]["first"]
                say(f"Stages of the first {kind} run began at (s after the upload): " + ", ".join(
                    f"{k} {v:.1f}" for k, v in firsts.items()) + ".")
                say()
            page = work / "page.png"
            render_lines(pages[0], 2480, 42).save(page)
            ab = await asyncio.to_thread(page_ab, page, page_runs)
            say("## One A4 page through tesseract: its OpenMP threads or one thread")
            say()
            say("| tesseract | seconds per page, median (min–max) |")
            say("|---|---|")
            say(f"| default (OpenMP threads) | {_span(ab['threads'], lambda v: f'{v:.2f}')} |")
            say(f"| OMP_THREAD_LIMIT=1 (ocr.py) | {_span(ab['one'], lambda v: f'{v:.2f}')} |")
            say()
            say(f"{page_runs} runs each, alternating, eng+rus, on the same cores as everything "
                "else on this machine.")
            say()
            say(f"Whole benchmark: {time.perf_counter() - started:.0f} s.")
    return report.text()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS)
    parser.add_argument("--page-runs", type=int, default=DEFAULT_PAGE_RUNS)
    args = parser.parse_args()
    version = subprocess.run(["tesseract", "--version"], capture_output=True, text=True,
                             check=True).stdout.splitlines()[0]
    report = asyncio.run(main_async(max(1, args.rounds), max(1, args.page_runs), version))
    if (args.rounds, args.page_runs) == (DEFAULT_ROUNDS, DEFAULT_PAGE_RUNS):
        REPORT.parent.mkdir(parents=True, exist_ok=True)  # a partial run only prints
        REPORT.write_text(report, encoding="utf-8")
        print(f"\nwritten to {REPORT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
