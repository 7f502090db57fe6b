"""The tutor's answers scored against the grounding evaluation set, over the public protocol.

A fresh learner uploads every document of tests/eval/grounding/ as a real PDF (REST
`POST /materials`), waits for `material.ready` on the socket, then asks each question in a new
conversation (`chat.send`) and reads the reply (`reply.delta`s, `reply.citations`). Prints, by
question kind: the right page in any citation / in the first one, the right document, the key
fact in the answer, replies that cite nothing, repeated sentences; "not covered" precision and
recall; time from `chat.send` to the first `reply.delta`. Writes load_tests/reports/eval.md.

    .venv/bin/python load_tests/eval_tutor.py --url http://127.0.0.1:8000   # a running server
    .venv/bin/python load_tests/eval_tutor.py --serve                       # starts its own

`--serve` starts `tutorhub serve` on embedded Postgres in a throwaway data folder with this
process's environment (so TUTORHUB_EMBEDDING_PROVIDER=… picks the provider under test) and
stops it afterwards. `--report PATH` writes elsewhere (`-` for nowhere); `--misses` lists
every question whose first citation names a wrong page.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from load_tests.report import Report, pct  # noqa: E402
from tests.support.grounding import Outcome, load, score, table  # noqa: E402
from tests.support.services import free_port  # noqa: E402

REPORT = ROOT / "load_tests" / "reports" / "eval.md"
READY_TIMEOUT_S = 600.0
REPLY_TIMEOUT_S = 60.0


async def _frames(ws: ClientConnection, timeout_s: float) -> dict[str, Any]:
    """The next frame that is not a keepalive ping (answered: a quiet socket gets closed)."""
    while True:
        frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout_s))
        if frame.get("type") != "ping":
            return frame
        await ws.send('{"type": "pong"}')


async def _learner(client: httpx.AsyncClient) -> str:
    email = f"eval-{uuid.uuid4().hex[:10]}@example.com"
    r = await client.post("/auth/register", json={"email": email, "password": "password-123"})
    r.raise_for_status()
    r = await client.post("/auth/token", data={"username": email, "password": "password-123"})
    r.raise_for_status()
    return str(r.json()["access_token"])


async def run(url: str, report: Report, misses: bool) -> None:
    documents, questions = load()
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        token = await _learner(client)
        headers = {"Authorization": f"Bearer {token}"}
        ws_url = url.replace("http://", "ws://", 1) + "/ws/v1"
        async with connect(ws_url, open_timeout=10, compression=None) as ws:
            await ws.send(json.dumps({"type": "auth", "token": token}))
            welcome = await _frames(ws, 10)
            assert welcome["type"] == "welcome", welcome
            started = time.perf_counter()
            names: dict[str, str] = {}
            for doc in documents:
                r = await client.post("/materials", headers=headers, data={"title": doc.title},
                                      files={"file": (f"{doc.name}.pdf", doc.pdf(),
                                                      "application/pdf")})
                assert r.status_code in (200, 202), r.text
                names[str(r.json()["id"])] = doc.name
            waiting = set(names)
            for mid in list(waiting):  # ready before the socket saw it (identical content)
                if (await client.get(f"/materials/{mid}", headers=headers)).json()[
                        "status"] == "ready":
                    waiting.discard(mid)
            while waiting:
                frame = await _frames(ws, READY_TIMEOUT_S)
                if frame["type"] == "material.ready":
                    waiting.discard(frame["material_id"])
                elif frame["type"] == "material.failed":
                    raise RuntimeError(f"ingestion failed: {frame}")
            ingest_s = time.perf_counter() - started
            pages = sum(len(d.pages) for d in documents)
            report.say(f"{len(documents)} PDFs ({pages} pages) uploaded and ready in "
                       f"{ingest_s:.1f} s; {len(questions)} questions.")
            report.say()

            outcomes: list[Outcome] = []
            for question in questions:
                cid = uuid.uuid4().hex
                sent = time.perf_counter()
                await ws.send(json.dumps({"type": "chat.send", "id": cid,
                                          "text": question.text}))
                reply_id: str | None = None
                first: float | None = None
                deltas: list[tuple[int, str]] = []
                citations: list[dict[str, Any]] = []
                async with asyncio.timeout(REPLY_TIMEOUT_S):
                    while True:
                        frame = await _frames(ws, REPLY_TIMEOUT_S)
                        kind = frame["type"]
                        if kind == "chat.ack" and frame["id"] == cid:
                            reply_id = frame["reply_id"]
                        elif kind == "error" and frame.get("code") == "rate_limited":
                            # One learner asking a hundred questions back to back outruns the
                            # per-user frame rate: wait as told and send the same message again.
                            await asyncio.sleep(float(frame.get("retry_after") or 0.1))
                            await ws.send(json.dumps({"type": "chat.send", "id": cid,
                                                      "text": question.text}))
                        elif kind == "error":
                            raise RuntimeError(f"{question.text!r} was refused: {frame}")
                        elif frame.get("reply_id") != reply_id or reply_id is None:
                            continue
                        elif kind == "reply.delta":
                            first = first or time.perf_counter() - sent
                            deltas.append((frame["seq"], frame["text"]))
                        elif kind == "reply.citations":
                            citations = frame["citations"]
                        elif kind == "reply.end":
                            break
                answer = "".join(t for _, t in sorted(deltas))
                outcomes.append(Outcome(question, answer, citations, names, first))

    scores = score(outcomes)
    for line in table(scores):
        report.say(line)
    ttfd = [s * 1000 for s in scores.first_delta_s]
    report.say()
    report.say(f"Time from chat.send to the first reply.delta: p50 {pct(ttfd, 0.5):.0f} ms, "
               f"p95 {pct(ttfd, 0.95):.0f} ms, max {max(ttfd, default=float('nan')):.0f} ms "
               f"({len(ttfd)} replies, asked one at a time).")
    if misses:
        report.say()
        report.say("Questions whose first citation names another page:")
        for o in outcomes:
            q = o.question
            if q.kind != "out_of_scope" and o.cited()[:1] != [(q.doc, q.page)]:
                report.say(f"- [{q.kind}] {q.text} — want {q.doc} p.{q.page}, cited "
                           f"{o.cited()}; answer: {o.answer[:160]!r}")


def _serve() -> tuple[subprocess.Popen[bytes], str, tempfile.TemporaryDirectory[str]]:
    data = tempfile.TemporaryDirectory(prefix="tutorhub-eval-")
    port = free_port()
    env = {**os.environ, "TUTORHUB_DATA_DIR": data.name, "PYTHONPATH": str(ROOT),
           "TUTORHUB_LOG_LEVEL": "warning", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           # the tutor alone: no study tools generated beside the questions' timing
           "TUTORHUB_STUDY_ON_READY": "false"}
    proc = subprocess.Popen([sys.executable, "-m", "chat_server.cli", "serve", "--port",
                             str(port)], env=env, cwd=str(ROOT))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return proc, url, data
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.3)
    proc.terminate()
    raise RuntimeError("the server did not become ready")


def embedding_speed(report: Report, rounds: int = 3) -> None:
    """ms per question embedding for e5 and MiniLM, interleaved in this process (each model
    warm, its cache bypassed): the same questions, alternating model by round."""
    from chat_server.embeddings import load_e5_model, load_local_model

    _, questions = load()
    texts = [q.text for q in questions]
    e5, minilm = load_e5_model(), load_local_model(1)
    run = {"e5": lambda t: e5.query(t), "minilm": lambda t: minilm.encode([t])}
    for encode in run.values():
        encode(texts[0])
    spent: dict[str, list[float]] = {name: [] for name in run}
    for _ in range(rounds):
        for name, encode in run.items():
            for text in texts:
                started = time.perf_counter()
                encode(text)
                spent[name].append((time.perf_counter() - started) * 1000)
    p50 = {name: pct(v, 0.5) for name, v in spent.items()}
    report.say(f"Question embedding, {len(texts)} questions x {rounds} rounds, interleaved by "
               f"round: e5 p50 {p50['e5']:.1f} ms (p95 {pct(spent['e5'], 0.95):.1f}), MiniLM "
               f"p50 {p50['minilm']:.1f} ms (p95 {pct(spent['minilm'], 0.95):.1f}); e5 / MiniLM "
               f"= {p50['e5'] / p50['minilm']:.2f}.")
    # Ingestion: the evaluation's pages chunked as ingestion does, embedded as passages in
    # batches of 16 (MiniLM: on one thread, as with TUTORHUB_EMBEDDING_THREADS=1; e5: the
    # engine's OpenMP threads over the batch).
    from chat_server.materials.chunking import Chunker
    from chat_server.materials.formats import Segment

    documents, _ = load()
    chunks: list[str] = []
    for doc in documents:
        chunker = Chunker(1000, 150)
        segments = [Segment(p, page=i) for i, p in enumerate(doc.pages, 1)]
        chunks += [c.text for c in chunker.feed(segments) + chunker.finish()]
    batches = [chunks[i:i + 16] for i in range(0, len(chunks), 16)]
    embed = {"e5": lambda b: e5.passages(b), "minilm": lambda b: minilm.encode(b)}
    took: dict[str, list[float]] = {name: [] for name in embed}
    for _ in range(rounds):
        for name, passages in embed.items():
            started = time.perf_counter()
            for batch in batches:
                passages(batch)
            took[name].append((time.perf_counter() - started) * 1000 / len(chunks))
    best = {name: min(v) for name, v in took.items()}
    report.say(f"Passage embedding ({len(chunks)} chunks of the evaluation's PDFs, ~1000 "
               f"characters, batches of 16, {rounds} rounds interleaved, best round): e5 "
               f"{best['e5']:.0f} ms per chunk, MiniLM {best['minilm']:.0f} ms per chunk; "
               f"e5 / MiniLM = {best['e5'] / best['minilm']:.2f}.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--url", help="a running Tutorhub, e.g. http://127.0.0.1:8000")
    where.add_argument("--serve", action="store_true", help="start a throwaway server")
    parser.add_argument("--report", default=str(REPORT), help="where to write ('-': nowhere)")
    parser.add_argument("--misses", action="store_true", help="list wrong first citations")
    parser.add_argument("--speed", action="store_true",
                        help="also time question embedding with e5 and MiniLM (interleaved)")
    args = parser.parse_args()

    report = Report()
    provider = os.environ.get("TUTORHUB_EMBEDDING_PROVIDER", "(default)")
    report.say(f"# Tutor evaluation ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)")
    report.say()
    report.say(f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
               f"{platform.python_version()}. Server: "
               f"{'started by this script, embedded mode' if args.serve else args.url}; "
               f"TUTORHUB_EMBEDDING_PROVIDER={provider} (as this script sees it), "
               f"TUTORHUB_LLM_PROVIDER={os.environ.get('TUTORHUB_LLM_PROVIDER', '(default)')}.")
    report.say()
    if not (args.url or args.serve or args.speed):
        parser.error("say --url or --serve (or --speed alone)")
    proc = None
    data: tempfile.TemporaryDirectory[str] | None = None
    url = args.url
    try:
        if args.serve:
            proc, url, data = _serve()
        if url:
            asyncio.run(run(url, report, args.misses))
        if args.speed:
            report.say()
            embedding_speed(report)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(60)
        if data is not None:
            data.cleanup()
    if args.report != "-":
        Path(args.report).write_text(report.text(), encoding="utf-8")
        print(f"\nwritten to {args.report}")


if __name__ == "__main__":
    main()
