"""Ingestion benchmark on real parts (pgserver Postgres + pgvector, the app under
uvicorn with the in-process broker, local MiniLM embeddings on CPU).

1. A 100-page text PDF: POST /materials → material.ready on the owner's socket (wall time,
   pages/s, chunks, CPU, stage times, longest gap between progress events).
2. Embedding throughput of the local model (chunks/s, 1000-character chunks).
3. Query embedding: µs per embed_query() for one short question, English and Russian, new
   and repeated (the cache).
Retrieval latency at 100,000 chunks is load_tests/bench_retrieval.py.

    .venv/bin/python load_tests/bench_ingest.py [--queries 300]

Prints a report and writes load_tests/reports/ingest.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chat_server.app import create_app  # noqa: E402
from chat_server.embeddings import LocalEmbedder, load_local_model  # noqa: E402
from chat_server.retrieval import (  # noqa: E402
    embed_query,
)
from chat_server.settings import Settings  # noqa: E402
from load_tests.report import Report, bench_settings, pct  # noqa: E402
from tests.support.ingest import make_pdf  # noqa: E402
from tests.support.services import serve_app  # noqa: E402
from tests.support.ws import new_user, recv, socket  # noqa: E402

REPORT = ROOT / "load_tests" / "reports" / "ingest.md"
def lecture_pages(pages: int, rng: random.Random) -> list[str]:
    subjects = ["the enzyme", "the cell membrane", "the mitochondrion", "entropy", "the heat engine",
                "the Roman senate", "the consul", "the ribosome", "the Calvin cycle", "the gas"]
    verbs = ["regulates", "transforms", "depends on", "limits", "explains", "produces", "absorbs"]
    objects = ["the energy balance", "chemical reactions", "the pressure of the system",
               "the flow of ions", "the political order", "protein synthesis", "the temperature"]
    out = []
    for p in range(pages):
        sentences: list[str] = []
        while sum(len(s) + 1 for s in sentences) < 2600:
            sentences.append(f"In section {p + 1}.{len(sentences) + 1}, {rng.choice(subjects)} "
                             f"{rng.choice(verbs)} {rng.choice(objects)} under condition {rng.randint(1, 999)}.")
        paragraphs = [" ".join(sentences[i:i + 5]) for i in range(0, len(sentences), 5)]
        out.append("\n\n".join(paragraphs))
    return out


async def bench_pdf(settings: Settings) -> dict[str, float]:
    """Upload → `material.ready` as the owner's socket sees it (no REST polling competing with
    the ingestion for the same cores); also the longest gap between progress events."""
    pages = 100
    pdf = make_pdf(lecture_pages(pages, random.Random(1)))
    app = create_app(settings)
    async with serve_app(app) as base, httpx.AsyncClient(base_url=base, timeout=60) as client:
        _, token = await new_user(base, "bench@example.com")
        headers = {"Authorization": f"Bearer {token}"}
        async with socket(base, token) as (ws, _):
            cpu0 = time.process_time()
            t0 = time.perf_counter()
            r = await client.post("/materials", headers=headers,
                                  files={"file": ("bench.pdf", pdf, "application/pdf")})
            assert r.status_code == 202, r.text
            mid = r.json()["id"]
            seen: list[tuple[float, dict[str, object]]] = []
            while True:
                event = await recv(ws, 300)
                if event.get("material_id") != mid:
                    continue
                seen.append((time.perf_counter() - t0, event))
                if event["type"] in ("material.ready", "material.failed"):
                    break
            wall = time.perf_counter() - t0
            cpu = time.process_time() - cpu0
        assert seen[-1][1]["type"] == "material.ready", seen[-1]
        stage_at: dict[str, float] = {}
        for at, event in seen:
            stage_at.setdefault(str(event.get("stage", event["type"])), at)
        gaps = [b[0] - a[0] for a, b in zip(seen, seen[1:], strict=False)]
    return {"pdf_bytes": len(pdf), "pages": pages, "wall_s": wall, "pages_per_s": pages / wall,
            "chunks": int(str(seen[-1][1]["chunks"])), "cpu_s": cpu, "max_gap_s": max(gaps),
            "events": len(seen), **{f"at_{k}": v for k, v in stage_at.items()}}


def bench_embedding(batch: int) -> dict[str, float]:
    rng = random.Random(2)
    texts = [" ".join(lecture_pages(1, rng)[0].split()[:160])[:1000] for _ in range(256)]
    embedder = LocalEmbedder(batch)
    embedder.embed_sync(texts[:64])  # warm-up
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    embedder.embed_sync(texts)
    wall = time.perf_counter() - t0
    return {"chunks": len(texts), "chunks_per_s": len(texts) / wall,
            "cpu_ms_per_chunk": (time.process_time() - cpu0) * 1000 / len(texts)}


def eval_questions() -> dict[str, list[str]]:
    """The retrieval evaluation's questions (tests/eval), English and Russian."""
    out: dict[str, list[str]] = {"EN": [], "RU": []}
    for path in sorted((ROOT / "tests" / "eval").glob("*_questions.json")):
        for question, _ in json.loads(path.read_text(encoding="utf-8")):
            out["RU" if re.search("[а-яё]", question, re.I) else "EN"].append(question)
    return out


async def bench_query(settings: Settings, n: int) -> dict[str, float]:
    """embed_query() for one short question from the event loop, as retrieve() calls it: µs
    per call for new questions (model + hop to the query thread) and for repeated ones."""
    out: dict[str, float] = {}
    for lang, questions in eval_questions().items():
        # Distinct texts so none is answered by the cache: the question with a counter.
        fresh = [f"{questions[i % len(questions)]} ({i})" for i in range(n)]
        for q in questions[:10]:
            await embed_query(settings, q)  # warm-up
        # Repeated: the latest 100, still in the cache (an LRU scanned in order keeps the tail).
        for label, texts in (("new", fresh), ("repeat", fresh[-100:])):
            us = []
            cpu0 = time.process_time()
            for q in texts:
                t0 = time.perf_counter()
                await embed_query(settings, q)
                us.append((time.perf_counter() - t0) * 1e6)
            out[f"{lang}_{label}_cpu"] = (time.process_time() - cpu0) * 1e6 / len(texts)
            out[f"{lang}_{label}_p50"] = statistics.median(us)
            out[f"{lang}_{label}_p99"] = pct(us, 0.99)
        out[f"{lang}_n"] = len(fresh)
    return out


async def main_async(args: argparse.Namespace) -> str:
    report = Report()
    say = report.say
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        work = Path(tmp)
        async with bench_settings(work) as settings:
            # ingestion alone: no study tools generated after material.ready
            settings.study_on_ready = False
            t0 = time.perf_counter()
            model = await asyncio.to_thread(load_local_model, settings.embedding_threads)
            model_s = time.perf_counter() - t0
            say(f"# Ingestion benchmark ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)")
            say()
            say(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                f"Python {platform.python_version()}; Postgres 16 + pgvector (pgserver); "
                f"local all-MiniLM-L6-v2 on CPU ({model.pool._max_workers} batches at once, one "
                f"torch thread each). Model load (sha256 check + load): {model_s:.1f} s.")
            say()
            pdf = await bench_pdf(settings)
            say("## 100-page text PDF, upload → material.ready (in-process broker, local embeddings)")
            say()
            say("| pages | PDF size | chunks | wall time | pages/s | process CPU | longest gap between events |")
            say("|---|---|---|---|---|---|---|")
            say(f"| {pdf['pages']} | {pdf['pdf_bytes'] / 1024:.0f} KB | {pdf['chunks']} | "
                f"{pdf['wall_s']:.1f} s | {pdf['pages_per_s']:.1f} | {pdf['cpu_s']:.1f} s | "
                f"{pdf['max_gap_s']:.2f} s |")
            say()
            say("Stages began at (s after the upload, from the socket's events): " + ", ".join(
                f"{k.removeprefix('at_')} {v:.1f}" for k, v in pdf.items() if k.startswith("at_"))
                + f"; {pdf['events']} events. Pages are chunked as they are read and embedded in "
                "batches while later pages are still being read.")
            say()
            emb = await asyncio.to_thread(bench_embedding, settings.embedding_batch_size)
            say(f"## Embedding throughput (local, batch {settings.embedding_batch_size}, "
                "~1000-character chunks)")
            say()
            say(f"{emb['chunks_per_s']:.1f} chunks/s over {emb['chunks']} chunks; "
                f"{emb['cpu_ms_per_chunk']:.0f} ms of CPU per chunk")
            say()
            q = await bench_query(settings, args.queries)
            say("## Query embedding, one short question (embed_query from the event loop)")
            say()
            say("| questions | new: p50 / p99 | new: process CPU per question | "
                "repeated (cache), 100: p50 / p99 |")
            say("|---|---|---|---|")
            for lang in ("EN", "RU"):
                say(f"| {lang}, {q[f'{lang}_n']:.0f} | {q[f'{lang}_new_p50']:.0f} / "
                    f"{q[f'{lang}_new_p99']:.0f} µs | {q[f'{lang}_new_cpu']:.0f} µs | "
                    f"{q[f'{lang}_repeat_p50']:.1f} / {q[f'{lang}_repeat_p99']:.1f} µs |")
            say()
            say(f"Whole benchmark: {time.perf_counter() - started:.0f} s.")
    return report.text()


DEFAULT_QUERIES = 300


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--queries", type=int, default=DEFAULT_QUERIES)
    args = parser.parse_args()
    report = asyncio.run(main_async(args))
    if args.queries == DEFAULT_QUERIES:  # a partial run does not replace the report
        REPORT.parent.mkdir(parents=True, exist_ok=True)
        REPORT.write_text(report, encoding="utf-8")
        print(f"\nwritten to {REPORT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
