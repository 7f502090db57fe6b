"""load_tests/locustfile.py, headless for a few seconds against a server with the loopback
provider: every user class runs, nothing fails, no gap and no duplicate."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from chat_server.app import create_app
from chat_server.settings import Settings
from load_tests.mint_tokens import mint
from tests.conftest import register
from tests.support.services import serve_app

ROOT = Path(__file__).parent.parent


WANTED = ("connect", "first delta", "reply", "tokens/s", "resume", "material ready",
          "listener reply", "/materials/text")


def _counts(path: Path) -> dict[str, int]:
    """Requests per name in locust's CSV (rewritten every second while it runs)."""
    try:
        rows = csv.DictReader(path.read_text().splitlines())
        return {row["Name"]: int(row["Request Count"]) for row in rows}
    except (OSError, KeyError, ValueError):
        return {}


async def _locust(base: str, tmp: Path, *extra: str) -> tuple[int, str, list[dict[str, Any]],
                                                               dict[str, int]]:
    """Run locust until every wanted entry has counts (at least 4 s, at most 30 s), then stop
    it as an operator would (SIGTERM: its statistics and our summary are written on quit)."""
    summary = tmp / "summary.json"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "locust", "-f", str(ROOT / "load_tests" / "locustfile.py"),
        "--headless", "--host", base, "--run-time", "30s", "--stop-timeout", "3",
        "--csv", str(tmp / "run"), "--json-file", str(tmp / "stats"), "--loglevel", "WARNING",
        "--only-summary", "--tutorhub-summary", str(summary),
        "--tutorhub-listener-sockets", "4", "--tutorhub-reply-timeout", "10", *extra,
        cwd=tmp, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    started = time.monotonic()
    while proc.returncode is None and time.monotonic() - started < 30:
        await asyncio.sleep(0.5)
        counts = _counts(tmp / "run_stats.csv")
        if time.monotonic() - started > 4 and all(counts.get(n, 0) for n in WANTED):
            proc.terminate()
            break
    async with asyncio.timeout(20):
        out, _ = await proc.communicate()
    assert proc.returncode is not None
    stats = json.loads((tmp / "stats.json").read_text())
    return proc.returncode, out.decode(), stats, json.loads(summary.read_text())


async def _warm_up_embeddings(base: str) -> None:
    """One material ingested first, so the model's first load is not inside the 6 s run."""
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        auth = {"Authorization": f"Bearer {await register(client, 'warm-up@example.com')}"}
        r = await client.post("/materials/text", headers=auth,
                              json={"title": "Warm-up", "text": "Mitosis divides a nucleus."})
        assert r.status_code == 202, r.text
        async with asyncio.timeout(30):
            while True:
                status = (await client.get(f"/materials/{r.json()['id']}", headers=auth)
                          ).json()["status"]
                if status == "ready":
                    return
                await asyncio.sleep(0.1)


async def test_every_user_class_runs_without_failures_gaps_or_duplicates(
        settings: Settings, tmp_path: Path) -> None:
    settings = settings.model_copy(update={
        "llm_provider": "loopback", "llm_loopback_allowed": True,
        "llm_loopback_tokens_per_s": 400.0, "llm_loopback_reply_tokens": 60})
    assert settings.embed_secret
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("\n".join(mint(settings.embed_secret, 3)) + "\n")
    async with serve_app(create_app(settings)) as base:
        await _warm_up_embeddings(base)
        # Weights 6/1/1/1: nine users are one of each class and six learners.
        code, out, stats, counters = await _locust(
            base, tmp_path, "--users", "9", "--spawn-rate", "9",
            "--tutorhub-tokens", str(tokens))
    assert code == 0, out[-3000:]
    requests = {entry["name"]: entry["num_requests"] for entry in stats}
    for name in WANTED:
        assert requests.get(name), (name, out[-3000:])
    assert sum(entry["num_failures"] for entry in stats) == 0, out[-3000:]
    assert counters.get("gap", 0) == 0 and counters.get("duplicate", 0) == 0, counters
    assert counters["drops"] > 0 and counters["resumes"] >= counters["drops"]
