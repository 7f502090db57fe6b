"""Tutor benchmark over a real /ws/v1: one server process, a zero-latency loopback provider.

    .venv/bin/python load_tests/bench_tutor.py [--quick] [--paced-only] [--timeline]
        [--server-root DIR]  # the server of another checkout (an interleaved A/B)
        [--relay]            # the peer instead: load_tests/relay_typed.py (streaming only)

1. chat.send → first reply.delta at the client, p50/p99, with 1 and with 200 concurrent
   conversations (each on its own user and socket). The provider answers at once, so this is
   the server's own overhead: persisting, ack, retrieval, prompt, provider request, bus, socket.
   The bench users have no materials (retrieval is skipped for them), except one learner with
   a seeded material who asks new questions, then one question again: retrieval's cost.
   The 200 conversations each send their next message a think time (uniform 1–3 s) after the
   previous reply ended, for a fixed time; the server-side histogram (chat.send handed to the
   tutor → first delta published) is read from /metrics around that phase. A stress line
   sends all 200 at the same instant.
2. 500 concurrent replies of 300 tokens, each emitted by the provider at 50 tokens/s: every
   token must arrive; latency = provider emit time (carried in the token text) → client receive.
   CPU seconds of each process (server, provider, redis, clients) are read around the phase.

Processes: PostgreSQL (pgserver), redis-server if the bus has a Redis engine (else the server
runs the in-process bus — the report says which), the loopback provider, the server (uvicorn),
and this process as the clients (raw sockets, load_tests/wsclient.py: cheap next to the
server, timestamps taken as frames arrive). A machine speed probe (a fixed Python loop) goes
into the report: on a shared VM every figure moves with it. Prints a report and writes
load_tests/reports/tutor.md.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import psutil  # noqa: E402
import uvloop  # noqa: E402
from jose import jwt  # noqa: E402

from load_tests.report import cpu_probe, no_gc_pauses, pct  # noqa: E402
from load_tests.wsclient import RawWebSocket  # noqa: E402
from tests.support.fake_providers import (  # noqa: E402
    FakeProvider,
    Paced,
    Recorded,
    Scripted,
    openai_stream,
)
from tests.support.services import free_port, postgres_server, redis_server  # noqa: E402

REPORT = ROOT / "load_tests" / "reports" / "tutor.md"
EMBED_SECRET = "bench-embed-secret-0123456789abcdef"
PACED_TOKENS = 300
PACED_RATE = 50.0
PHASE_TIMEOUT_S = 300.0
THINK_S = (1.0, 3.0)
DELTA_HEAD = b'{"type":"reply.delta","reply_id":"'
REFUSED: Counter[str] = Counter()  # error frames the clients got, by code (should stay empty)
MATERIAL_CHUNKS = 60  # passages of the learner with materials (retrieval runs for them)
TOPICS = ["photosynthesis", "entropy", "osmosis", "mitochondria", "enzymes", "diffusion",
          "respiration", "chlorophyll", "glucose", "membranes", "catalysts", "equilibrium"]


# --- the loopback provider (its own process) ------------------------------------------------

ZERO_LATENCY = dataclasses.replace(openai_stream(["Zero ", "latency ", "answer."]), at_once=True)


def _provider_reply(rec: Recorded) -> Scripted:
    last = rec.body["messages"][-1]["content"] if rec.body else ""
    if "PACED" in last:
        return Scripted(paced=Paced(PACED_TOKENS, PACED_RATE))
    return ZERO_LATENCY  # built once: the fake's own work is not the server's latency


async def _run_provider() -> None:
    async with FakeProvider(default=_provider_reply) as fake:  # one pacer task writes all
        print(fake.base_url, flush=True)
        while True:  # until the bench terminates this process
            # Nothing reads what the fake records here: dropped, its heap stays small (with
            # ~4,000 request bodies kept, a full collection paused it ~130 ms mid-phase, a
            # zero-latency provider that was not).
            await asyncio.sleep(1.0)
            fake.requests.clear()


# --- helpers ----------------------------------------------------------------------------------

def embed_token(sub: str) -> str:
    return str(jwt.encode({"sub": sub, "exp": int(time.time()) + 3600}, EMBED_SECRET, "HS256"))


class Client(RawWebSocket):
    """One user, one socket; records when frames arrive (in data_received: no task wakeup per
    frame, and waiters are woken only by what they wait for: an ack, a first delta, an end,
    an error)."""

    def __init__(self, host: str, token: str, welcomed: asyncio.Future[None]) -> None:
        super().__init__("/ws/v1", host, welcomed)
        self.token = token
        self.acks: dict[str, str] = {}  # client id → reply_id
        self.first_delta: dict[str, int] = {}  # reply_id → ns
        self.ended: dict[str, dict[str, Any]] = {}
        self.errors: dict[str, dict[str, Any]] = {}  # client id → error frame (a refused send)
        # Every delta as (arrival ns, frame), parsed after the phase (`paced_tokens`): a client
        # busy parsing one burst of frames would add its own delay to the next frames'.
        self.deltas: list[tuple[int, bytes]] = []
        self.changed = asyncio.Event()
        self.conversation: str | None = None

    def on_open(self) -> None:
        self.send_text(json.dumps({"type": "auth", "token": self.token}).encode())

    def on_text(self, payload: bytes) -> None:
        now = time.time_ns()
        if payload.startswith(DELTA_HEAD):  # the server's encoding: the reply id comes next
            self.deltas.append((now, payload))
            rid = payload[len(DELTA_HEAD):len(DELTA_HEAD) + 36].decode()
            if rid not in self.first_delta:
                self.first_delta[rid] = now
                self.changed.set()
            return
        frame = json.loads(payload)
        kind = frame.get("type")
        if kind == "ping":  # the hub closes sockets that don't answer its keepalive (4409)
            self.send_text(b'{"type":"pong"}')
            return
        if kind == "chat.ack":
            self.acks[frame["id"]] = frame["reply_id"]
            self.conversation = frame["conversation_id"]
        elif kind == "reply.end":
            self.ended[frame["reply_id"]] = frame
        elif kind == "welcome":
            if not self.opened.done():
                self.opened.set_result(None)
        elif kind == "error":
            print("error frame:", frame, file=sys.stderr)
            self.errors[frame.get("id") or ""] = frame
            REFUSED[str(frame.get("code"))] += 1
        self.changed.set()

    def send(self, text: str, conversation_id: str | None = None) -> tuple[str, int]:
        cid = uuid.uuid4().hex
        frame: dict[str, Any] = {"type": "chat.send", "id": cid, "text": text}
        if conversation_id:
            frame["conversation_id"] = conversation_id
        t0 = time.time_ns()
        self.send_text(json.dumps(frame).encode())
        return cid, t0

    def done(self, cid: str) -> bool:
        """The send `cid` was refused, or its reply ended."""
        return cid in self.errors or (cid in self.acks and self.acks[cid] in self.ended)

    async def until(self, pred: Any) -> None:
        while not pred():
            self.changed.clear()
            await self.changed.wait()


async def open_clients(port: int, n: int, tag: str) -> list[Client]:
    loop = asyncio.get_running_loop()

    async def one(i: int) -> Client:
        welcomed: asyncio.Future[None] = loop.create_future()
        _, client = await loop.create_connection(
            lambda: Client(f"127.0.0.1:{port}", embed_token(f"{tag}-{i}"), welcomed),
            "127.0.0.1", port)
        async with asyncio.timeout(60):
            await welcomed
        return client

    clients: list[Client] = []
    for start in range(0, n, 50):  # connect in waves: don't trip the accept backlog
        clients += await asyncio.gather(*(one(i) for i in range(start, min(n, start + 50))))
    return clients


async def close_clients(clients: list[Client]) -> None:
    for c in clients:
        if c.transport is not None:
            c.transport.close()
    await asyncio.sleep(0.1)  # let the closes go out


async def first_delta_round(clients: list[Client], rounds: int) -> list[float]:
    latencies: list[float] = []
    for _ in range(rounds):
        sent = [c.send("What is the main idea?") for c in clients]

        async def wait(c: Client, cid: str) -> None:
            await c.until(lambda: c.done(cid))

        async with asyncio.timeout(PHASE_TIMEOUT_S):
            await asyncio.gather(*(wait(c, cid) for c, (cid, _) in zip(clients, sent, strict=True)))
        for c, (cid, t0) in zip(clients, sent, strict=True):
            rid = c.acks.get(cid)
            if rid in c.first_delta:
                latencies.append((c.first_delta[rid] - t0) / 1e6)
    return latencies


async def think_time_phase(clients: list[Client], duration_s: float) -> tuple[list[float], int]:
    """Each conversation sends, waits for the reply's end, thinks 1–3 s, sends again."""
    latencies: list[float] = []
    sends = 0
    rng = random.Random(4)
    stop_at = time.monotonic() + duration_s

    async def conversation(c: Client) -> None:
        nonlocal sends
        await asyncio.sleep(rng.uniform(*THINK_S))  # spread the first sends
        while time.monotonic() < stop_at:
            cid, t0 = c.send("What is the main idea?", c.conversation)
            sends += 1
            await c.until(lambda cid=cid: c.done(cid))
            rid = c.acks.get(cid)
            if rid in c.first_delta:
                latencies.append((c.first_delta[rid] - t0) / 1e6)
            await asyncio.sleep(rng.uniform(*THINK_S))

    async with asyncio.timeout(duration_s + PHASE_TIMEOUT_S):
        await asyncio.gather(*(conversation(c) for c in clients))
    return latencies, sends


def histogram(metrics_text: str, name: str) -> dict[float, float]:
    """Cumulative bucket counts of a Prometheus histogram: upper bound → count."""
    out: dict[float, float] = {}
    for line in metrics_text.splitlines():
        if line.startswith(name + "_bucket{"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            out[float("inf") if le == "+Inf" else float(le)] = float(line.rsplit(" ", 1)[1])
    return out


def histogram_quantile(before: dict[float, float], after: dict[float, float], q: float) -> float:
    """The bucket upper bound (ms) holding quantile q of what was observed in between."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1] if counts else 0.0
    for bound, count in zip(bounds, counts, strict=True):
        if total and count >= q * total:
            return bound * 1000
    return float("nan")


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    out = {}
    for name, pid in pids.items():
        t = psutil.Process(pid).cpu_times()
        out[name] = t.user + t.system
    return out


def paced_tokens(deltas: list[tuple[int, bytes]]
                 ) -> tuple[dict[str, int], list[tuple[int, float]]]:
    """Tokens per reply and, per token, (arrival ns, latency ms) in these delta frames: paced
    tokens carry their emit time (a hub that merges deltas still counts every token)."""
    tokens: dict[str, int] = {}
    stamped: list[tuple[int, float]] = []
    for now, payload in deltas:
        frame = json.loads(payload)
        for word in frame["text"].split():
            if word.isdigit():
                stamped.append((now, (now - int(word)) / 1e6))
                tokens[frame["reply_id"]] = tokens.get(frame["reply_id"], 0) + 1
    return tokens, stamped


def timeline(stamped: list[tuple[int, float]], bin_s: float = 0.5) -> list[str]:
    """Token latency p50 / p99 / max per `bin_s` of arrival time: shows when in the phase the
    tail comes (the replies' starts, their ends, a pause of some process)."""
    if not stamped:
        return []
    t0 = min(now for now, _ in stamped)
    bins: dict[int, list[float]] = {}
    for now, latency in stamped:
        bins.setdefault(int((now - t0) / (bin_s * 1e9)), []).append(latency)
    lines = ["| arrival (s) | tokens | p50 ms | p99 ms | max ms |", "|---|---|---|---|---|"]
    for k in sorted(bins):
        values = bins[k]
        lines.append(f"| {k * bin_s:.1f} | {len(values)} | {pct(values, 0.5):.1f} | "
                     f"{pct(values, 0.99):.1f} | {max(values):.1f} |")
    return lines


async def paced_phase(clients: list[Client], pids: dict[str, int]) -> dict[str, Any]:
    """All replies start together; besides the totals, a steady-state window (every reply
    streaming: from the last first delta to the first reply.end) gives CPU per token."""
    t0 = time.monotonic()
    start = [len(c.deltas) for c in clients]
    sent = [c.send("PACED: tell me everything") for c in clients]

    async def wait(c: Client, cid: str) -> None:
        await c.until(lambda: c.done(cid))

    async def window() -> dict[str, Any]:
        async def started(c: Client, cid: str) -> None:
            await c.until(lambda: cid in c.errors or c.acks.get(cid) in c.first_delta)

        await asyncio.gather(*(started(c, cid) for c, (cid, _) in zip(clients, sent, strict=True)))
        cpu0, marks0, w0 = cpu_seconds(pids), [len(c.deltas) for c in clients], time.monotonic()
        ends = [asyncio.create_task(c.until(lambda c=c: bool(c.ended))) for c in clients]
        await asyncio.wait(ends, return_when=asyncio.FIRST_COMPLETED)
        for task in ends:
            task.cancel()
        cpu1, marks1, w1 = cpu_seconds(pids), [len(c.deltas) for c in clients], time.monotonic()
        return {"cpu": {k: cpu1[k] - cpu0[k] for k in cpu0}, "seconds": w1 - w0,
                "marks": list(zip(marks0, marks1, strict=True))}

    async with asyncio.timeout(PHASE_TIMEOUT_S):
        steady_task = asyncio.create_task(window())
        await asyncio.gather(*(wait(c, cid) for c, (cid, _) in zip(clients, sent, strict=True)))
        steady = await steady_task
    elapsed = time.monotonic() - t0
    got = 0
    stamped: list[tuple[int, float]] = []
    in_window: list[float] = []
    finishes: dict[str, int] = {}
    for c, (cid, _), first, (lo, hi) in zip(clients, sent, start, steady["marks"], strict=True):
        # Before, in and after the steady window: each frame parsed once.
        parts = [paced_tokens(c.deltas[a:b]) for a, b in ((first, lo), (lo, hi), (hi, None))]
        for tokens, mine in parts:
            got += tokens.get(c.acks.get(cid, ""), 0)
            stamped += mine
        in_window += [latency for _, latency in parts[1][1]]
        reason = c.ended.get(c.acks.get(cid, ""), {}).get("finish_reason", "refused")
        finishes[reason] = finishes.get(reason, 0) + 1
    steady["tokens"] = len(in_window)
    lat = [latency for _, latency in stamped]
    return {"expected": len(clients) * PACED_TOKENS, "received": got, "elapsed_s": elapsed,
            "timeline": timeline(stamped),
            "tokens_per_s": got / elapsed, "p50": pct(lat, 0.5), "p99": pct(lat, 0.99),
            "max": max(lat) if lat else float("nan"), "finishes": finishes, "steady": steady,
            "steady_p50": pct(in_window, 0.5), "steady_p99": pct(in_window, 0.99)}


async def seed_materials(db_url: str, sub: str) -> None:
    """One ready text material of MATERIAL_CHUNKS passages for the embed user `sub`, written
    straight into the tables (random unit vectors: the server's cost of embedding the question
    and searching is the same as with real ones; the answers' quality is not measured here)."""
    import asyncpg

    from chat_server.db import libpq_url

    rng = random.Random(7)
    conn = await asyncpg.connect(libpq_url(db_url))
    try:
        uid = await conn.fetchval("select id from users where external_id = $1", f"embed:{sub}")
        mid = uuid.uuid4()
        await conn.execute(
            "insert into materials (id, user_id, kind, title, status, content_hash, chunk_count) "
            "values ($1, $2, 'text', 'Bench lecture', 'ready', $3, $4)",
            mid, uid, mid.hex, MATERIAL_CHUNKS)
        rows = []
        for i in range(MATERIAL_CHUNKS):
            words = [rng.choice(TOPICS) for _ in range(12)]
            text = (f"Passage {i} explains how {words[0]} relates to {words[1]} and {words[2]}. "
                    + " ".join(f"The {w} matters." for w in words[3:]))
            vec = [rng.gauss(0, 1) for _ in range(384)]
            norm = sum(x * x for x in vec) ** 0.5
            rows.append((mid, uid, i, text, "[" + ",".join(f"{x / norm:.6f}" for x in vec) + "]"))
        await conn.executemany(
            "insert into chunks (material_id, user_id, idx, text, language, embedding, tsv) "
            "values ($1, $2, $3, $4, 'english', $5::text::vector, to_tsvector('english', $4))",
            rows)
    finally:
        await conn.close()


async def materials_round(client: Client, questions: list[str]) -> list[float]:
    latencies: list[float] = []
    for q in questions:
        cid, t0 = client.send(q, client.conversation)
        await client.until(lambda cid=cid: client.done(cid))
        rid = client.acks.get(cid)
        if rid in client.first_delta:
            latencies.append((client.first_delta[rid] - t0) / 1e6)
    return latencies


# --- orchestration ----------------------------------------------------------------------------

async def bus_engine(redis_url: str) -> str:
    from chat_server.bus import open_bus

    try:
        async with open_bus(redis_url, lambda *a: None):
            return "redis"
    except ValueError:
        return "memory"


def wait_ready(base: str, proc: subprocess.Popen[bytes]) -> None:
    """Until `proc` answers /readyz; else it is terminated and this raises."""
    try:
        _wait_ready(base, proc)
    except BaseException:
        proc.terminate()
        proc.wait(60)
        raise


def _wait_ready(base: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the server exited during start")
        try:
            if httpx.get(base + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError("the server did not become ready")


_PROFILED_UVICORN = """
import cProfile, os, signal, sys
import uvicorn.main
profile = cProfile.Profile()
def dump(*_):  # uvicorn shuts down, restores this handler and re-raises SIGTERM
    profile.disable()
    profile.dump_stats(os.environ["BENCH_PROFILE"])
    os._exit(0)
signal.signal(signal.SIGTERM, dump)
profile.enable()
uvicorn.main.main(args=sys.argv[1:])
"""


# BENCH_TRACE=<file>: the server runs with a temporary instrument (not the product's code): a
# JSON line per second with its cyclic collections (generation, pause), its loop lag (a 5 ms
# sleep's overshoot), each flush tick (lateness, publish time, deltas) and each paced token's
# wait from the provider's emit to the tutor's `Coalescer.add` (the emit time is its text).
_TRACED_UVICORN = """
import asyncio, gc, json, os, sys, time, types
import uvicorn.main
out = open(os.environ["BENCH_TRACE"], "a", buffering=1)
rec = {"gc": [], "lag": [], "read": [], "tick": []}
started = {}
def on_gc(phase, info):
    if phase == "start":
        started["t"] = time.perf_counter()
    elif "t" in started:
        rec["gc"].append((info["generation"], 1000 * (time.perf_counter() - started.pop("t"))))
gc.callbacks.append(on_gc)
def patch():
    from chat_server.tutor import stream
    add = stream.Coalescer.add
    async def traced_add(self, pending, text):
        try:
            rec["read"].append((time.time_ns() - int(text)) / 1e6)
        except ValueError:
            pass
        return await add(self, pending, text)
    stream.Coalescer.add = traced_add
    publish = stream.Coalescer.__init__
    def traced_init(self, publish_many, flush_s):
        async def timed(events):
            t = time.perf_counter()
            try:
                return await publish_many(events)
            finally:
                if len(events) > 1:
                    rec["tick"].append((len(events), 1000 * (time.perf_counter() - t)))
        publish(self, timed, flush_s)
    stream.Coalescer.__init__ = traced_init
async def monitor():
    loop = asyncio.get_running_loop()
    last = time.time()
    while True:
        t = loop.time()
        await asyncio.sleep(0.005)
        rec["lag"].append(1000 * (loop.time() - t - 0.005))
        if time.time() - last >= 1.0:
            last = time.time()
            out.write(json.dumps({"t": last, **rec}) + "\\n")
            for v in rec.values():
                v.clear()
def factory():
    from chat_server.app import create_app
    patch()
    inner = create_app()
    tasks = []
    async def app(scope, receive, send):
        if scope["type"] == "lifespan" and not tasks:
            tasks.append(asyncio.get_running_loop().create_task(monitor()))
        return await inner(scope, receive, send)
    return app
sys.modules["bench_trace"] = types.ModuleType("bench_trace")
sys.modules["bench_trace"].factory = factory
uvicorn.main.main(args=["bench_trace:factory", *sys.argv[2:]])
"""


def trace_summary(path: str, t0: float, t1: float) -> dict[str, Any]:
    """The BENCH_TRACE records written between wall times t0 and t1 (a phase), summed up."""
    gcs: list[tuple[int, float]] = []
    lag: list[float] = []
    read: list[float] = []
    ticks: list[tuple[int, float]] = []
    for line in Path(path).read_text().splitlines():
        r = json.loads(line)
        if t0 <= r["t"] <= t1 + 1.0:
            gcs += [tuple(g) for g in r["gc"]]
            lag += r["lag"]
            read += r["read"]
            ticks += [tuple(k) for k in r["tick"]]
    by_gen = {g: [ms for gen, ms in gcs if gen == g] for g in (0, 1, 2)}
    return {
        "gc": {g: {"n": len(v), "total_ms": round(sum(v), 1), "max_ms": round(max(v), 1)}
               for g, v in by_gen.items() if v},
        "loop_lag_ms": {"p50": round(pct(lag, 0.5), 1), "p99": round(pct(lag, 0.99), 1),
                        "max": round(max(lag), 1) if lag else None, "n": len(lag)},
        "emit_to_add_ms": {"p50": round(pct(read, 0.5), 1), "p99": round(pct(read, 0.99), 1),
                           "n": len(read)},
        "tick_publish_ms": {"p50": round(pct([ms for _, ms in ticks], 0.5), 1),
                            "p99": round(pct([ms for _, ms in ticks], 0.99), 1),
                            "deltas_p50": pct([float(n) for n, _ in ticks], 0.5),
                            "n": len(ticks)},
    }


def _hub_ws(root: Path) -> str:
    """uvicorn's --ws as `tutorhub serve` picks it, for this checkout or an older one."""
    if (root / "chat_server/hub/fastpath.py").exists():
        return "chat_server.hub.fastpath:HubWebSocketProtocol"
    return "chat_server.hub.wsproto:HubWebSocketProtocol"


def start_relay(provider_url: str, root: Path) -> tuple[subprocess.Popen[bytes], int]:
    """The peer: load_tests/relay_typed.py (the SDK's typed stream), served as such an app is."""
    port = free_port()
    env = {**os.environ, "RELAY_PROVIDER_URL": provider_url + "/v1", "PYTHONPATH": str(root)}
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "load_tests.relay_typed:app", "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "warning", "--loop", "uvloop", "--http", "httptools",
         "--ws-ping-interval", "0", "--no-access-log"], env=env, cwd=root)
    wait_ready(f"http://127.0.0.1:{port}", server)
    return server, port


def start_server(db_url: str, redis_url: str, engine: str, provider_url: str,
                 workdir: Path, root: Path) -> tuple[subprocess.Popen[bytes], int]:
    """The Tutorhub server of the checkout at `root` (this one, or another for an A/B)."""
    port = free_port()
    env = {**os.environ,
           "TUTORHUB_DATABASE_URL": db_url, "TUTORHUB_AUTO_MIGRATE": "true",
           "TUTORHUB_DATA_DIR": str(workdir / "data"),
           "TUTORHUB_SECRET_KEY": "bench-secret-key-0123456789abcdef0123456789",
           "TUTORHUB_EMBED_SECRET": EMBED_SECRET,
           "TUTORHUB_LLM_PROVIDER": "openai", "TUTORHUB_OPENAI_BASE_URL": provider_url + "/v1",
           "TUTORHUB_OPENAI_API_KEY": "bench", "TUTORHUB_OPENAI_MODEL": "bench",
           "TUTORHUB_LLM_MAX_CONCURRENT_STREAMS": "1000", "TUTORHUB_DB_POOL_SIZE": "20",
           # One bench user sends many chat.send frames back to back; the default per-user
           # rate limit (20/s) would throttle the load generator, not measure the server.
           "TUTORHUB_WS_RATE_LIMIT_PER_S": "100000", "TUTORHUB_WS_RATE_LIMIT_BURST": "100000",
           "TUTORHUB_LOG_LEVEL": "warning", "PYTHONPATH": str(root)}
    if engine == "redis":
        env["TUTORHUB_REDIS_URL"] = redis_url
    # BENCH_PROFILE=<file>: run the server under cProfile (written when it is terminated).
    profile = ["-c", _PROFILED_UVICORN] if os.environ.get("BENCH_PROFILE") else ["-m", "uvicorn"]
    if os.environ.get("BENCH_TRACE"):
        profile = ["-c", _TRACED_UVICORN]
    server = subprocess.Popen(
        [sys.executable, *profile, "chat_server.app:create_app", "--factory",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
         # as `tutorhub serve` runs it: uvloop, httptools and the hub's WebSocket protocol
         "--loop", "uvloop", "--http", "httptools",
         "--ws", _hub_ws(root),
         "--ws-ping-interval", "0", "--no-access-log"], env=env, cwd=root)
    wait_ready(f"http://127.0.0.1:{port}", server)
    return server, port


async def bench(args: argparse.Namespace, port: int, engine: str,
                pids: dict[str, int], db_url: str) -> str:
    base = f"http://127.0.0.1:{port}"
    probes = [cpu_probe()]
    n_conc = 50 if args.quick else 200
    lat1: list[float] = []
    lat_think: list[float] = []
    lat_burst: list[float] = []
    sends, think_elapsed, server_p50, server_p99 = 0, 1.0, float("nan"), float("nan")
    send_cpu_ms = float("nan")
    h0: dict[float, float] = {}
    h1: dict[float, float] = {}
    lat_new_q: list[float] = []
    lat_same_q: list[float] = []
    if not args.paced_only:
        one = await open_clients(port, 1, "one")
        await first_delta_round(one, 5)  # warm-up
        with no_gc_pauses():
            cpu_a = cpu_seconds(pids)
            lat1 = await first_delta_round(one, 20 if args.quick else 100)
            cpu_b = cpu_seconds(pids)
        send_cpu_ms = 1000 * (cpu_b["server"] - cpu_a["server"]) / max(1, len(lat1))
        await close_clients(one)
        # A learner with materials: retrieval runs (the question is embedded on this CPU, then
        # the hybrid search); new questions each time, then one question asked again (its
        # embedding is cached).
        (reader,) = await open_clients(port, 1, "materials")
        await seed_materials(db_url, "materials-0")
        n_q = 20 if args.quick else 100
        await materials_round(reader, ["Warm-up: what is photosynthesis?"] * 3)
        with no_gc_pauses():
            lat_new_q = await materials_round(reader, [
                f"Question {i}: how does {TOPICS[i % len(TOPICS)]} relate to "
                f"{TOPICS[(i * 5 + 1) % len(TOPICS)]}?" for i in range(n_q)])
            lat_same_q = await materials_round(
                reader, ["How does entropy relate to osmosis?"] * n_q)
        await close_clients([reader])
        many = await open_clients(port, n_conc, "many")
        await first_delta_round(many, 1)  # warm-up
        think_s = 15.0 if args.quick else 40.0
        async with httpx.AsyncClient() as http:
            m0 = (await http.get(base + "/metrics")).text
            t0 = time.monotonic()
            with no_gc_pauses():
                lat_think, sends = await think_time_phase(many, think_s)
            think_elapsed = time.monotonic() - t0
            m1 = (await http.get(base + "/metrics")).text
        name = "tutorhub_tutor_first_delta_seconds"
        h0, h1 = histogram(m0, name), histogram(m1, name)
        server_p50, server_p99 = histogram_quantile(h0, h1, 0.5), histogram_quantile(h0, h1, 0.99)
        with no_gc_pauses():
            lat_burst = await first_delta_round(many, 2 if args.quick else 5)
        await close_clients(many)
    n_paced = 100 if args.quick else 500
    paced_clients = await open_clients(port, n_paced, "paced")
    tick = "tutorhub_tutor_flush_tick_seconds"

    async def ticks_histogram(http: httpx.AsyncClient) -> dict[float, float]:
        return {} if args.relay else histogram((await http.get(base + "/metrics")).text, tick)

    async with httpx.AsyncClient() as http:
        t0_metrics = await ticks_histogram(http)
        cpu0 = cpu_seconds(pids)
        probes.append(cpu_probe())
        # BENCH_PYSPY=<file>: py-spy samples the server through the phase (collapsed stacks).
        spy = None if not os.environ.get("BENCH_PYSPY") else await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "py-spy"), "record", "-p", str(pids["server"]),
            "-d", "12", "-r", "250", "--nonblocking", "-f", "raw", "-o",
            os.environ["BENCH_PYSPY"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall0 = time.time()
        with no_gc_pauses():
            paced = await paced_phase(paced_clients, pids)
        wall1 = time.time()
        cpu1 = cpu_seconds(pids)
        if spy is not None:
            await spy.wait()
        t1_metrics = await ticks_histogram(http)
    ticks = int(t1_metrics.get(float("inf"), 0) - t0_metrics.get(float("inf"), 0))
    tick_line = (f"{ticks} ticks, p50 ≤ {histogram_quantile(t0_metrics, t1_metrics, 0.5):.0f} ms, "
                 f"p99 ≤ {histogram_quantile(t0_metrics, t1_metrics, 0.99):.0f} ms (bucket upper "
                 "bounds; one tick publishes the deltas of every streaming reply, every "
                 "TUTORHUB_REPLY_FLUSH_MS = 30 ms)")
    await close_clients(paced_clients)
    cpu = {k: cpu1[k] - cpu0[k] for k in cpu0}
    cpu_line = ", ".join(f"{k} {v:.1f} s ({100 * v / paced['elapsed_s']:.0f}% of a core)"
                         for k, v in cpu.items())
    per_token_us = 1e6 * cpu["server"] / max(1, paced["received"])
    st = paced["steady"]
    steady_line = "none: starting the replies outlasted the first reply" if st[
        "tokens"] <= 0 else (
        f"{st['tokens']} tokens in {st['seconds']:.1f} s ({st['tokens'] / st['seconds']:.0f} "
        f"tokens/s); CPU " + ", ".join(
            f"{k} {1e6 * v / max(1, st['tokens']):.0f} µs/token "
            f"({100 * v / st['seconds']:.0f}% of a core)" for k, v in st["cpu"].items())
        + f"; token latency p50 {paced['steady_p50']:.1f} ms, p99 {paced['steady_p99']:.1f} ms")
    # One line per run for an interleaved A/B table (the figures of the report below).
    print("SUMMARY " + json.dumps({
        "server": "relay" if args.relay else str(args.server_root or ROOT),
        "cpu_per_message_ms": round(send_cpu_ms, 2), "one_p50": round(pct(lat1, 0.5), 1),
        "one_p99": round(pct(lat1, 0.99), 1), "many_p50": round(pct(lat_think, 0.5), 1),
        "many_p99": round(pct(lat_think, 0.99), 1), "token_p50": round(paced["p50"], 1),
        "token_p99": round(paced["p99"], 1), "tokens": paced["received"],
        "expected": paced["expected"], "server_us_per_token": round(per_token_us, 1),
        "steady_us_per_token": round(1e6 * st["cpu"]["server"] / max(1, st["tokens"]), 1),
        "probes": [round(p) for p in probes]}), flush=True)
    if os.environ.get("BENCH_TRACE") and not args.relay:
        await asyncio.sleep(1.5)  # the server's last trace line of the phase
        print("TRACE " + json.dumps(trace_summary(os.environ["BENCH_TRACE"], wall0, wall1)),
              flush=True)
    if args.relay:
        server = ("**the peer**: load_tests/relay_typed.py, a plain FastAPI relay on the OpenAI "
                  "SDK's typed stream (one reply.delta per token; no database, no bus)")
    else:
        server = (f"one Tutorhub server process (uvicorn), bus engine: **{engine}**"
                  f"{' (redis-server on loopback)' if engine == 'redis' else ' (in-process)'}; "
                  "PostgreSQL 16 (pgserver)")
    lines = [
        "# Tutor benchmark",
        "",
        f"{datetime.now(UTC):%Y-%m-%d %H:%M UTC}, {platform.node()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}. Server: {server}; "
        "OpenAI-compatible loopback provider in its own process; "
        "clients in one more process. Latencies measured at the client (loopback both ways "
        f"included). Mode: {'--quick (50 concurrent, 100 paced)' if args.quick else 'full'}.",
        "",
        f"Machine speed probe (a fixed 2M-step Python loop, best of 3; lower is faster): "
        f"{probes[0]:.0f} ms before the first phase, {probes[-1]:.0f} ms before the streaming "
        "phase. On this shared VM it varies from ~100 to ~155 ms within a minute, and every "
        "figure below with it.",
        "",
        "## chat.send → first reply.delta (zero-latency provider)",
        "",
        f"Server CPU per message (1 conversation: chat.send → stored, acked, prompt built, "
        f"3-token reply streamed, stored, ended): {send_cpu_ms:.1f} ms.",
        "",
        "| concurrent conversations | samples | p50 ms | p99 ms | goal |",
        "|---|---|---|---|---|",
        f"| 1 | {len(lat1)} | {pct(lat1, 0.5):.1f} | {pct(lat1, 0.99):.1f} | |",
        f"| 1, learner with {MATERIAL_CHUNKS} passages, a new question each time (retrieval: "
        f"question embedded on this CPU + hybrid search) | {len(lat_new_q)} | "
        f"{pct(lat_new_q, 0.5):.1f} | {pct(lat_new_q, 0.99):.1f} | |",
        f"| 1, same learner, one question asked again (embedding cached; the search runs) | "
        f"{len(lat_same_q)} | {pct(lat_same_q, 0.5):.1f} | {pct(lat_same_q, 0.99):.1f} | |",
        f"| {n_conc}, think time {THINK_S[0]:.0f}–{THINK_S[1]:.0f} s after each reply "
        f"({sends / think_elapsed:.0f} sends/s over {think_elapsed:.0f} s) | {len(lat_think)} | "
        f"{pct(lat_think, 0.5):.1f} | {pct(lat_think, 0.99):.1f} | p50 ≤ 10, p99 ≤ 50 at 200 |",
        f"| same, server side (send handed to the tutor → first delta published; bucket "
        f"upper bounds) | {int(h1.get(float('inf'), 0) - h0.get(float('inf'), 0))} | "
        f"≤ {server_p50:.1f} | ≤ {server_p99:.1f} | |",
        f"| {n_conc}, all sending at the same instant (stress) | {len(lat_burst)} | "
        f"{pct(lat_burst, 0.5):.1f} | {pct(lat_burst, 0.99):.1f} | |",
        "",
        f"Error frames received by the clients: {dict(REFUSED) or 'none'}.",
        "",
        f"## {n_paced} concurrent replies × {PACED_TOKENS} tokens at {PACED_RATE:.0f} tokens/s",
        "",
        f"- tokens delivered: {paced['received']} of {paced['expected']} "
        f"({'all' if paced['received'] == paced['expected'] else 'MISSING SOME'})",
        f"- finish reasons: {paced['finishes']}",
        f"- wall time {paced['elapsed_s']:.1f} s, {paced['tokens_per_s']:.0f} tokens/s delivered",
        f"- token latency provider emit → client receive: p50 {paced['p50']:.1f} ms, "
        f"p99 {paced['p99']:.1f} ms, max {paced['max']:.1f} ms (goal p99 ≤ 100 ms)",
        f"- CPU during the phase: {cpu_line}; server {per_token_us:.0f} µs per delivered token "
        "(the phase includes starting every reply: send, DB, retrieval, provider request)",
        f"- steady state (every reply streaming: last first delta → first reply.end): "
        f"{steady_line}",
        f"- server flush ticks during the phase: {tick_line}",
        "",
    ]
    if args.timeline:
        lines += ["Token latency by arrival time (since the phase's first token):", "",
                  *paced["timeline"], ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer users (a smoke run)")
    parser.add_argument("--paced-only", action="store_true", help="only the streaming phase")
    parser.add_argument("--timeline", action="store_true",
                        help="also the streaming phase's token latency per half second")
    parser.add_argument("--engine", choices=["auto", "redis", "memory"], default="auto",
                        help="the server's bus: auto = Redis when redis-server runs here (the "
                             "report's setup); memory = the embedded single-process mode")
    parser.add_argument("--server-root", type=Path, metavar="DIR",
                        help="run the server of another checkout (an A/B against this one)")
    parser.add_argument("--relay", action="store_true",
                        help="measure the peer instead (load_tests/relay_typed.py): the "
                             "streaming phase only")
    parser.add_argument("--provider", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.relay:
        args.paced_only = True
    if args.provider:
        uvloop.run(_run_provider())
        return
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        provider = subprocess.Popen([sys.executable, __file__, "--provider"],
                                    stdout=subprocess.PIPE, cwd=ROOT)
        try:
            assert provider.stdout is not None
            provider_url = provider.stdout.readline().decode().strip()
            with postgres_server(workdir / "pg") as pg_uri, redis_server(workdir / "redis") as rs:
                from tests.support.services import database_uri

                db_url = database_uri(pg_uri, "postgres")
                engine = (args.engine if args.engine != "auto"
                          else asyncio.run(bus_engine(rs.url)))
                if args.relay:
                    engine = "none"
                    server, port = start_relay(provider_url, ROOT)
                else:
                    server, port = start_server(db_url, rs.url, engine, provider_url, workdir,
                                                (args.server_root or ROOT).resolve())
                try:
                    pids = {"server": server.pid, "provider": provider.pid, "clients": os.getpid()}
                    if engine == "redis" and rs.proc is not None:
                        pids["redis"] = rs.proc.pid
                    report = uvloop.run(bench(args, port, engine, pids, db_url))
                finally:
                    server.terminate()
                    server.wait(60)
        finally:
            provider.terminate()
            provider.wait(30)
    print(report)
    # A partial run, one on the in-process bus or of another server does not replace the report.
    if not (args.paced_only or args.quick or args.engine == "memory" or args.server_root):
        REPORT.parent.mkdir(parents=True, exist_ok=True)
        REPORT.write_text(report, encoding="utf-8")


if __name__ == "__main__":
    main()
