"""Startup benchmark: time from exec of `tutorhub serve` to the first 200 from /readyz on
embedded Postgres, for a cold first start (fresh data folder: initdb + migrations) and a warm
restart (same folder), plus the time from SIGTERM to exit (Postgres stopped).

    .venv/bin/python load_tests/bench_startup.py [--runs 3]

Prints a report and writes it to load_tests/reports/startup.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
TUTORHUB = ROOT / ".venv" / "bin" / "tutorhub"
REPORT = ROOT / "load_tests" / "reports" / "startup.md"
READY_TIMEOUT_S = 120.0
POLL_S = 0.01


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def one_start(data_dir: Path, workdir: Path) -> tuple[float, float]:
    """(seconds from exec to /readyz 200, seconds from SIGTERM to exit)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUTORHUB_")}
    env.update(TUTORHUB_DATA_DIR=str(data_dir), TUTORHUB_LOG_LEVEL="warning",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    log = (workdir / f"serve-{port}.log").open("wb")
    t0 = time.perf_counter()
    proc = subprocess.Popen([str(TUTORHUB), "serve", "--port", str(port)], cwd=workdir, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        with httpx.Client(timeout=2) as client:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"serve exited with {proc.returncode}; see {log.name}")
                if time.perf_counter() - t0 > READY_TIMEOUT_S:
                    raise RuntimeError(f"not ready within {READY_TIMEOUT_S}s")
                try:
                    if client.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(POLL_S)
        ready = time.perf_counter() - t0
        t1 = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
        stopped = time.perf_counter() - t1
        if code != 0:
            raise RuntimeError(f"serve exited with {code} after SIGTERM")
        return ready, stopped
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        log.close()


def summary(label: str, values: list[float]) -> str:
    runs = ", ".join(f"{v:.2f}" for v in values)
    return (f"| {label} | {min(values):.2f} | {statistics.median(values):.2f} | "
            f"{max(values):.2f} | {runs} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    cold: list[float] = []
    warm: list[float] = []
    stops: list[float] = []
    with tempfile.TemporaryDirectory(prefix="tutorhub-bench-") as tmp:
        work = Path(tmp)
        for i in range(args.runs):
            ready, stop = one_start(work / f"cold-{i}", work)
            cold.append(ready)
            stops.append(stop)
            print(f"cold {i + 1}: ready in {ready:.2f} s, stopped in {stop:.2f} s", flush=True)
        warm_dir = work / "cold-0"  # already initialised and migrated by the first cold run
        for i in range(args.runs):
            ready, stop = one_start(warm_dir, work)
            warm.append(ready)
            stops.append(stop)
            print(f"warm {i + 1}: ready in {ready:.2f} s, stopped in {stop:.2f} s", flush=True)

    lines = [
        "# Startup: `tutorhub serve` exec → `/readyz` 200 (embedded Postgres)",
        "",
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC · {platform.node()} · {os.cpu_count()} CPUs · "
        f"Python {platform.python_version()} · {args.runs} runs each · polled every "
        f"{POLL_S * 1000:.0f} ms",
        "",
        "| scenario | min s | median s | max s | runs (s) |",
        "|---|---|---|---|---|",
        summary("cold first start (fresh data folder: initdb, start, migrate)", cold),
        summary("warm restart (same folder: start, check migrations)", warm),
        summary("SIGTERM → exit, Postgres stopped", stops),
        "",
        "Cold includes initdb of a new cluster, `CREATE EXTENSION vector` and the migrations; "
        "warm reuses the folder. Both include Python start-up and imports of the app.",
    ]
    report = "\n".join(lines) + "\n"
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(report)
    print()
    print(report)
    print(f"written to {REPORT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
