"""Soak: `tutorhub serve` in Redis mode (with a `tutorhub worker`) for --minutes (10) of learners
streaming replies, reconnect storms (every socket dropped at once, all resuming together) and
uploads (PDF and text, ingested by the worker, progress on the sockets).

The server's RSS is sampled every 10 s: it must end within 10% of its value after the warm-up
(the first tenth of the run, at least 60 s). Every event stream is checked by offset: zero gaps
and zero duplicates; every acknowledged message stored. Writes load_tests/reports/soak.md on a
full (10-minute) run; a shorter one prints its report only.

    flock /tmp/tutorhub-heavy.lock .venv/bin/python load_tests/soak.py [--minutes 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402
import psutil  # noqa: E402

from load_tests.report import Report, commit_of, log  # noqa: E402
from tests.support.fake_providers import openai_stream  # noqa: E402
from tests.support.learner import Learner, converse, losses, stop_all  # noqa: E402
from tests.support.processes import (  # noqa: E402
    postgres,
    provider_in_thread,
    serve,
    tutorhub_env,
    worker,
)
from tests.support.services import redis_server  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
REPORT = ROOT / "load_tests" / "reports" / "soak.md"
LEARNERS = 24
STORM_EVERY_S = 30.0
UPLOAD_EVERY_S = 3.0
SAMPLE_EVERY_S = 10.0
TEXT = ("Энтропия — мера беспорядка системы. Entropy measures how many microstates fit a "
        "macrostate; the second law says it does not decrease in an isolated system. ") * 6


def _pdf() -> bytes:
    from fpdf import FPDF

    doc = FPDF()
    for page in range(3):
        doc.add_page()
        doc.set_font("helvetica", size=12)
        doc.multi_cell(0, 8, f"Page {page + 1}. The enzyme lowers the activation energy. " * 8)
    return bytes(doc.output())


async def _uploads(learners: list[Learner], base: str, stop: asyncio.Event,
                   counts: dict[str, int]) -> None:
    pdf = _pdf()
    async with httpx.AsyncClient(base_url=base, timeout=60) as c:
        n = 0
        while not stop.is_set():
            learner = random.choice(learners)
            n += 1
            if n % 2:
                r = await c.post("/materials", headers=learner.auth, files={
                    "file": (f"notes-{n}.pdf", pdf + f"%{n}\n".encode(), "application/pdf")},
                    data={"title": f"Notes {n}"})
            else:
                r = await c.post("/materials/text", headers=learner.auth,
                                 json={"title": f"Text {n}", "text": f"{n}. {TEXT}"})
            key = f"upload {r.status_code}"
            counts[key] = counts.get(key, 0) + 1
            try:
                await asyncio.wait_for(stop.wait(), UPLOAD_EVERY_S)
            except TimeoutError:
                pass


async def _storms(learners: list[Learner], stop: asyncio.Event, counts: dict[str, int]) -> None:
    """Every STORM_EVERY_S, drop every socket at once (TCP abort, no close frame): every
    learner reconnects and resumes together."""
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), STORM_EVERY_S)
            return
        except TimeoutError:
            pass
        for learner in learners:
            if learner.ws is not None:
                learner.ws.transport.abort()
        counts["storms"] = counts.get("storms", 0) + 1


async def _materials(learners: list[Learner], base: str) -> dict[str, int]:
    """The uploaded materials by status at the end (ready, failed, still processing…)."""
    by_status: dict[str, int] = {}
    async with httpx.AsyncClient(base_url=base, timeout=60) as c:
        for learner in learners:
            r = await c.get("/materials", params={"limit": 500}, headers=learner.auth)
            for material in r.json():
                by_status[material["status"]] = by_status.get(material["status"], 0) + 1
    return by_status


async def run(minutes: float) -> tuple[Report, bool]:
    report = Report()
    duration = minutes * 60
    warmup = max(60.0, duration / 10)
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        redis = stack.enter_context(redis_server(workdir / "redis"))
        pg = stack.enter_context(postgres(workdir))
        url = await asyncio.to_thread(pg.database, "tutorhub")
        provider = stack.enter_context(provider_in_thread(
            openai_stream([f"w{i} " for i in range(30)], delay_s=0.02)))
        env = tutorhub_env(
            workdir / "data", TUTORHUB_DATABASE_URL=url, TUTORHUB_REDIS_URL=redis.url,
            TUTORHUB_AUTO_MIGRATE="false", TUTORHUB_SECRET_KEY="soak-secret-" + "k" * 40,
            TUTORHUB_LLM_PROVIDER="openai", TUTORHUB_OPENAI_BASE_URL=provider.base_url + "/v1",
            TUTORHUB_OPENAI_API_KEY="sk-test", TUTORHUB_OPENAI_MODEL="gpt-test",
            TUTORHUB_LOG_LEVEL="warning", PYTHONPATH=str(ROOT))
        server = stack.enter_context(serve(workdir, env, "soak"))
        await asyncio.to_thread(server.wait_ready)
        stack.enter_context(worker(env, workdir / "worker.log"))
        base = server.url
        proc = psutil.Process(server.proc.pid)
        log(f"server pid {proc.pid} on {base}; {minutes} min, warm-up {warmup:.0f} s")

        learners = [await Learner.create(base) for _ in range(LEARNERS)]
        stop = asyncio.Event()
        counts: dict[str, int] = {}
        tasks = [asyncio.create_task(converse(x, [base], stop)) for x in learners]
        tasks += [asyncio.create_task(_uploads(learners, base, stop, counts)),
                  asyncio.create_task(_storms(learners, stop, counts))]
        samples: list[tuple[float, int]] = []
        started = time.monotonic()
        try:
            while (elapsed := time.monotonic() - started) < duration:
                samples.append((elapsed, proc.memory_info().rss))
                replies = sum(len(x.book.ended) for x in learners)
                log(f"{elapsed:6.0f} s  RSS {samples[-1][1] / 2**20:7.1f} MiB  replies "
                    f"{replies}  {counts}")
                if any(t.done() for t in tasks):
                    break  # a task failed: reported below
                await asyncio.sleep(min(SAMPLE_EVERY_S, duration - elapsed))
            samples.append((time.monotonic() - started, proc.memory_info().rss))
        finally:
            stop_all(stop, learners)
            await asyncio.gather(*tasks, return_exceptions=True)
        failed = [t.exception() for t in tasks if t.done() and t.exception() is not None]
        lost = await losses(learners, base)
        materials = await _materials(learners, base)
        for learner in learners:
            await learner.disconnect()
        server_log = server.output()

    post = next(rss for t, rss in samples if t >= warmup)
    end = samples[-1][1]
    peak = max(rss for _, rss in samples)
    change = (end - post) / post
    ok = abs(change) <= 0.10 and not any(lost.values()) and not failed
    replies = sum(len(x.book.ended) for x in learners)
    say = report.say
    say("# Soak: reconnect storms, uploads and streaming (Redis mode)")
    say()
    say(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, commit {commit_of(ROOT)}, {platform.node()}, "
        f"{os.cpu_count()} CPUs (shared), Python {platform.python_version()}.")
    say(f"Command: `flock /tmp/tutorhub-heavy.lock .venv/bin/python load_tests/soak.py "
        f"--minutes {minutes:g}`")
    say()
    say(f"One `tutorhub serve` (Redis bus, pgserver PostgreSQL) and one `tutorhub worker`; "
        f"{LEARNERS} learners each asking, reading the streamed answer (30 tokens, 20 ms apart, "
        f"from a loopback OpenAI-compatible provider) and asking again; every "
        f"{STORM_EVERY_S:.0f} s every socket is dropped at once (TCP abort) and all resume "
        f"together; an upload every {UPLOAD_EVERY_S:.0f} s (PDF and text, alternating).")
    say()
    say("| what | value |")
    say("|---|---|")
    say(f"| duration | {samples[-1][0]:.0f} s (warm-up {warmup:.0f} s) |")
    finish: dict[str, int] = {}
    for end_frame in (e for x in learners for e in x.book.ended.values()):
        reason = str(end_frame.get("finish_reason"))
        finish[reason] = finish.get(reason, 0) + 1
    say(f"| replies ended (`reply.end` received), by finish_reason | {replies} {finish} |")
    say(f"| provider: requests, responses the server abandoned | {len(provider.requests)}, "
        f"{provider.client_closed} |")
    connects = sum(x.book.connects for x in learners)
    say(f"| socket connects (resumes included) | {connects} ({connects - LEARNERS} reconnects) |")
    say(f"| storms, uploads | {counts} |")
    say(f"| materials at the end, by status | {materials} |")
    say(f"| RSS after warm-up | {post / 2**20:.1f} MiB |")
    say(f"| RSS at the end | {end / 2**20:.1f} MiB ({change:+.1%}; limit ±10%: "
        f"{'ok' if abs(change) <= 0.10 else 'FAILED'}) |")
    say(f"| RSS max | {peak / 2**20:.1f} MiB |")
    say(f"| gaps, duplicates (events by offset) | {lost['gaps']}, {lost['duplicates']} |")
    say(f"| resumes the history could not serve (history_trimmed, offset_ahead) | "
        f"{lost['resume_failed']} |")
    say(f"| acknowledged messages not stored, replies missing | {lost['acked_not_stored']}, "
        f"{lost['reply_missing']} |")
    say(f"| errors refused to learners | "
        f"{ {k: sum(x.book.refused.get(k, 0) for x in learners) for k in {c for x in learners for c in x.book.refused}} } |")
    say(f"| server log lines at ERROR | {server_log.count(' ERROR ')} |")
    if failed:
        say(f"| failed tasks | {failed!r} |")
    say()
    say("RSS every 10 s (MiB): " + ", ".join(f"{rss / 2**20:.0f}" for _, rss in samples))
    return report, ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    args = parser.parse_args()
    report, ok = asyncio.run(run(args.minutes))
    if args.minutes == 10.0:
        REPORT.write_text(report.text())
        log(f"wrote {REPORT}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
