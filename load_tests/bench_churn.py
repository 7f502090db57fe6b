"""Socket churn benchmark: does the server give back what a socket took, however it ended?

    .venv/bin/python load_tests/bench_churn.py [--cycles 3000] [--code DIR]

One `tutorhub serve` process (embedded PostgreSQL, in-process bus) and one client process.
One user; a first socket stays open throughout. Then, per flavour, `--cycles` sockets that open,
authenticate, get their welcome and end — the client closes (1000), the server closes (a binary
frame: 1003), or the TCP connection is aborted (no close frame) — 8 at a time. After each
flavour: `tutorhub_ws_open_sockets` and `tutorhub_ws_users_online` from /metrics (should be
1 and 1) and the server's RSS against its value before that flavour (the first after a warm-up
of 100 cycles per flavour). `--code DIR` runs the server from another checkout (e.g. main's).
Prints a report; writes load_tests/reports/churn.md (a full run of this checkout only).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402

from load_tests.report import commit_of, log, serve_checkout  # noqa: E402
from tests.support.churn import FLAVOURS, churn, gauges  # noqa: E402
from tests.support.services import free_port  # noqa: E402
from tests.support.ws import new_user, socket  # noqa: E402

DEFAULT_CYCLES = 3000
WARMUP = 100


async def run(base: str, server: psutil.Process, cycles: int) -> list[dict[str, Any]]:
    _, token = await new_user(base)
    rows: list[dict[str, Any]] = []
    async with socket(base, token):
        for flavour in FLAVOURS:
            await churn(base, token, flavour, WARMUP)
        await asyncio.sleep(1.0)
        rss0 = server.memory_info().rss
        log(f"after warm-up: gauges {await gauges(base)}, RSS {rss0 / 1e6:.1f} MB")
        for flavour in FLAVOURS:
            started = time.monotonic()
            await churn(base, token, flavour, cycles)
            took = time.monotonic() - started
            await asyncio.sleep(1.0)  # the last sockets finish
            open_sockets, online = await gauges(base)
            rss = server.memory_info().rss
            rows.append({"flavour": flavour, "open": open_sockets, "online": online,
                         "rss_mb": rss / 1e6, "growth_kb": (rss - rss0) / 1e3,
                         "per_cycle_b": (rss - rss0) / cycles, "cycles_s": cycles / took})
            log(f"{flavour}: {cycles} cycles in {took:.1f}s; open sockets {open_sockets:.0f}, "
                f"users online {online:.0f}, RSS {rss / 1e6:.1f} MB ({(rss - rss0) / 1e3:+.0f} KB, "
                f"{(rss - rss0) / cycles:+.0f} B per cycle)")
            rss0 = rss
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=DEFAULT_CYCLES, help="sockets per flavour")
    parser.add_argument("--code", type=Path, default=ROOT,
                        help="checkout whose chat_server the server runs (default: this one)")
    args = parser.parse_args()
    code = args.code.resolve()
    port = free_port()
    with serve_checkout(code, port) as proc:
        log(f"server from {code} on :{port}")
        rows = asyncio.run(run(f"http://127.0.0.1:{port}", psutil.Process(proc.pid), args.cycles))
    lines = [
        "# Socket churn",
        "",
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, {os.cpu_count()} CPUs; "
        f"server from `{code.name}` at {commit_of(code)}; {args.cycles} sockets per flavour after "
        f"{WARMUP} per flavour of warm-up; one socket stays open throughout (1 and 1 are right).",
        "`.venv/bin/python load_tests/bench_churn.py`",
        "",
        "| flavour | open sockets | users online | server RSS MB | RSS growth KB | B per cycle | cycles/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['flavour']} | {r['open']:.0f} | {r['online']:.0f} | {r['rss_mb']:.1f} | "
                     f"{r['growth_kb']:+.0f} | {r['per_cycle_b']:+.0f} | {r['cycles_s']:.0f} |")
    report = "\n".join(lines) + "\n"
    print(report)
    if code == ROOT and args.cycles == DEFAULT_CYCLES:
        (ROOT / "load_tests/reports/churn.md").write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
