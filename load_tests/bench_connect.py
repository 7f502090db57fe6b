"""Connect-rate benchmark: authenticated sockets opened per second by one server process.

    .venv/bin/python load_tests/bench_connect.py [--sockets 5000] [--base <checkout>]

A reconnect storm (every socket of an instance comes back at once after a deploy): N sockets of
N users, 100 connecting at a time (2 client processes × 50), each through TCP, the WebSocket
upgrade and authentication, until the server says it is ready. In the same run, one after the
other on the same machine and clients:

- Tutorhub (`tutorhub serve`: uvicorn, embedded PostgreSQL, the Redis bus): `auth {token}` with
  an embed token → `welcome` (the user looked up in Postgres, subscribed on Redis, its stream
  head read);
- with `--base <checkout>`: the same from another checkout (e.g. main before a change);
- python-socketio + AsyncRedisManager (load_tests/sio_server.py): the connect packet carries the
  same token, verified in its `connect` handler, which joins the user's room → connect ack;
- a plain `websockets` server (load_tests/ws_server.py): the same auth frame verified → a
  welcome; no database, no bus.

Every server first sees each user once (a warm-up pass: Tutorhub creates the embed users), then
the timed pass opens all N again. Connects/s = N / wall time of that pass; the server's CPU is
read around it. Prints a table; `--json` keeps the figures (load_tests/reports/hub.md cites them).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "load_tests"))

import psutil  # noqa: E402
from bench_hub import EMBED_SECRET, Fleet, cpu_s, raise_fd_limit, start_ours, stop  # noqa: E402

from load_tests.report import cpu_probe, log, wait_http  # noqa: E402
from tests.support.services import RedisServer, free_port  # noqa: E402

CONCURRENCY = 100  # sockets connecting at a time, over the client processes


def storm(fleet: Fleet, dialect: str, port: int, server: psutil.Process, n: int,
          rounds: int) -> list[dict[str, Any]]:
    labels = [f"storm-{i}" for i in range(n)]
    per_process = CONCURRENCY // len(fleet.pipes)
    fleet.open(dialect, port, labels, per_process, sio_token=True)  # warm-up: every user once
    fleet.close()
    results = []
    for _ in range(rounds):
        _quiet(server)
        cpu0, t0 = cpu_s([server]), time.monotonic()
        users = fleet.open(dialect, port, labels, per_process, sio_token=True)
        wall, cpu = time.monotonic() - t0, cpu_s([server]) - cpu0
        opened = sum(users.values())
        fleet.close()
        res = {"opened": opened, "wall_s": wall, "per_s": opened / wall,
               "server_cpu_ms": cpu / max(opened, 1) * 1000, "server_cpu": cpu / wall}
        log(f"  {opened} sockets in {wall:.2f} s: {res['per_s']:,.0f}/s, server "
            f"{res['server_cpu_ms']:.2f} ms CPU per connect ({res['server_cpu']:.0%} of a core)")
        results.append(res)
    return results


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sockets", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=2, help="timed passes per server")
    parser.add_argument("--base", type=Path, help="also run Tutorhub from this checkout")
    parser.add_argument("--servers", default="tutorhub,base,sio,websockets",
                        help="which, in this order (base only with --base)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    raise_fd_limit()
    tmp = Path(tempfile.mkdtemp(prefix="bench-connect-"))
    redis = RedisServer(tmp / "redis")
    redis.start()
    fleet = Fleet()
    probe = cpu_probe()
    out: dict[str, Any] = {"sockets": args.sockets, "concurrency": CONCURRENCY, "cpu_probe_ms": probe,
                           "servers": {}}
    try:
        for name in args.servers.split(","):
            if name == "base" and args.base is None:
                continue
            port = free_port()
            log(f"{name} on :{port}")
            if name in ("tutorhub", "base"):
                (tmp / name).mkdir()
                proc = start_ours(tmp / name, port, redis.url, args.base if name == "base" else None)
                dialect = "hub"
            elif name == "sio":
                proc = subprocess.Popen([sys.executable, str(ROOT / "load_tests/sio_server.py"), "--port",
                                         str(port), "--redis", redis.url, "--secret", EMBED_SECRET],
                                        preexec_fn=raise_fd_limit)
                wait_http(f"http://127.0.0.1:{port}/socket.io/?EIO=4&transport=polling")
                dialect = "sio"
            else:
                proc = subprocess.Popen([sys.executable, str(ROOT / "load_tests/ws_server.py"), "--port",
                                         str(port), "--secret", EMBED_SECRET], preexec_fn=raise_fd_limit)
                _wait_port(port)
                dialect = "hub"
            try:
                out["servers"][name] = storm(fleet, dialect, port, psutil.Process(proc.pid), args.sockets,
                                             args.rounds)
            finally:
                stop(proc)
    finally:
        fleet.exit()
        redis.stop()
    print(f"\nAuthenticated connects per second, one server process: {args.sockets:,} sockets of as many "
          f"users, {CONCURRENCY} connecting at a time (machine probe {probe:.0f} ms)\n")
    print("| server | connects/s (each timed pass) | server CPU per connect |")
    print("|---|---|---|")
    for name, runs in out["servers"].items():
        rates = " / ".join(f"{r['per_s']:,.0f}" for r in runs)
        cpus = " / ".join(f"{r['server_cpu_ms']:.2f} ms" for r in runs)
        print(f"| {name} | {rates} | {cpus} |")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


def _quiet(server: psutil.Process, wait_s: float = 15) -> None:
    """Until the server is done with the last pass's closes (under 5 % of a core for 0.5 s)."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        before = cpu_s([server])
        time.sleep(0.5)
        if cpu_s([server]) - before < 0.025:
            return


def _wait_port(port: int, wait_s: float = 30) -> None:
    import socket

    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"port {port} did not open")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    sys.exit(main())
