"""Logins under attack: does a live socket stay responsive, and does guessing stop?

    .venv/bin/python load_tests/bench_login.py [--no-throttle] [--code DIR] [--seconds 10]

One `tutorhub serve` process (embedded PostgreSQL, in-process bus). A learner's socket pings
every 50 ms and times each pong: idle for 3 s, then while 4 clients post wrong passwords to
/auth/token as fast as they are answered (`--seconds`). Before that, 40 wrong passwords for one
account followed by the right one. `--no-throttle` sets the login limits out of reach (password hashing
alone); `--code DIR` runs another checkout's server (e.g. main's, which ignores the limits).
Prints a report; writes load_tests/reports/login.md (a full run of this checkout only).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from load_tests.report import commit_of, pct, serve_checkout  # noqa: E402
from tests.support.services import free_port  # noqa: E402
from tests.support.ws import socket  # noqa: E402

HAMMERS = 4


async def pings(ws: Any, seconds: float) -> list[float]:
    rtts: list[float] = []
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        n += 1
        sent = time.perf_counter()
        await ws.send(json.dumps({"type": "ping", "t": n}))
        while True:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if frame.get("type") == "pong" and frame.get("t") == n:
                break
        rtts.append((time.perf_counter() - sent) * 1000)
        await asyncio.sleep(0.05)
    return rtts


async def run(base: str, seconds: float) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=base, timeout=60) as c:
        for email in ("learner@example.com", "victim@example.com"):
            await c.post("/auth/register", json={"email": email, "password": "right password"})
        token = (await c.post("/auth/token", data={"username": "learner@example.com",
                                                    "password": "right password"})).json()["access_token"]
        # First (the address's window still empty): one account guessed at.
        guesses = []
        for _ in range(40):
            r = await c.post("/auth/token", data={"username": "victim@example.com", "password": "wrong"})
            guesses.append(r.status_code)
        right = await c.post("/auth/token", data={"username": "victim@example.com",
                                                  "password": "right password"})
        statuses: dict[int, int] = {}
        stop = asyncio.Event()

        async def hammer(i: int) -> None:
            async with httpx.AsyncClient(base_url=base, timeout=60) as h:
                n = 0
                while not stop.is_set():
                    n += 1
                    r = await h.post("/auth/token", data={"username": f"guess{i}-{n % 50}@example.com",
                                                          "password": "wrong password"})
                    statuses[r.status_code] = statuses.get(r.status_code, 0) + 1

        async with socket(base, token) as (ws, _):
            idle = await pings(ws, 3.0)
            tasks = [asyncio.create_task(hammer(i)) for i in range(HAMMERS)]
            started = time.monotonic()
            busy = await pings(ws, seconds)
            stop.set()
            await asyncio.gather(*tasks)
            took = time.monotonic() - started
    return {"idle": idle, "busy": busy, "statuses": statuses, "per_s": sum(statuses.values()) / took,
            "guesses": {s: guesses.count(s) for s in sorted(set(guesses))}, "right": right.status_code,
            "retry_after": right.headers.get("retry-after")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--no-throttle", action="store_true")
    parser.add_argument("--code", type=Path, default=ROOT)
    args = parser.parse_args()
    code = args.code.resolve()
    port = free_port()
    limits = ({"TUTORHUB_LOGIN_RATE_LIMIT_ACCOUNT": "1000000/minute",
               "TUTORHUB_LOGIN_RATE_LIMIT_ADDRESS": "1000000/minute"} if args.no_throttle else {})
    with serve_checkout(code, port, **limits):
        res = asyncio.run(run(f"http://127.0.0.1:{port}", args.seconds))
    commit = commit_of(code)

    def line(name: str, rtts: list[float]) -> str:
        return (f"| {name} | {len(rtts)} | {pct(rtts, 0.5):.1f} | {pct(rtts, 0.99):.1f} | "
                f"{max(rtts):.1f} |")

    report = "\n".join([
        "# Logins under attack",
        "",
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, {os.cpu_count()} CPUs; "
        f"server from `{code.name}` at {commit}{', login limits out of reach' if args.no_throttle else ''}; "
        f"{HAMMERS} clients posting wrong passwords for {args.seconds:.0f} s.",
        "`.venv/bin/python load_tests/bench_login.py" + (" --no-throttle" if args.no_throttle else "") + "`",
        "",
        "| socket ping | pings | p50 ms | p99 ms | max ms |",
        "|---|---|---|---|---|",
        line("idle", res["idle"]),
        line("while logins hammer", res["busy"]),
        "",
        f"- login answers while hammering: {res['statuses']} ({res['per_s']:.0f}/s)",
        f"- 40 wrong passwords for one account: {res['guesses']}; then the right one: "
        f"{res['right']} (Retry-After {res['retry_after']})",
    ]) + "\n"
    print(report)
    if code == ROOT and not args.no_throttle and args.seconds == 10.0:
        (ROOT / "load_tests/reports/login.md").write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
