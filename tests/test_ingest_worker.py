"""Redis mode: a real `tutorhub worker` process is killed mid-ingestion and another one started;
the material ends ready with exactly one set of chunks, and the learner's socket saw the
progress in order."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text
from websockets.asyncio.client import ClientConnection

from chat_server.app import create_app
from chat_server.settings import Settings
from tests.support.processes import settings_env, worker
from tests.support.services import serve_app
from tests.support.ws import new_user, socket


async def _until(ws: ClientConnection, seen: list[dict[str, Any]], pred: Any, within_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + within_s
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"no matching event within {within_s}s; saw {seen[-5:]}"
        frame = json.loads(await asyncio.wait_for(ws.recv(), left))
        if frame.get("type") == "ping":
            await ws.send(json.dumps({"type": "pong"}))  # the hub drops silent sockets
            continue
        seen.append(frame)
        if pred(frame):
            return frame


async def test_worker_killed_mid_ingestion_then_restarted_gives_one_set_of_chunks(
    settings: Settings, redis_url: str, tmp_path: Path
) -> None:
    s = settings.model_copy(update={"redis_url": redis_url, "ingest_stale_s": 2.0,
                                    "embedding_batch_size": 4})
    app = create_app(s)
    log = tmp_path / "worker.log"
    body = "\n\n".join(
        f"Lecture paragraph {i}. The enzyme number {i} lowers the activation energy of reaction {i}. "
        f"Катализатор номер {i} ускоряет реакцию, но не расходуется в ней." for i in range(150))
    async with serve_app(app) as base:
        uid, token = await new_user(base)
        headers = {"Authorization": f"Bearer {token}"}
        async with socket(base, token) as (ws, _welcome), httpx.AsyncClient(base_url=base, timeout=30) as client:
            r = await client.post("/materials/text", headers=headers, json={"title": "Enzymes", "text": body})
            assert r.status_code == 202, r.text
            mid = r.json()["id"]
            seen: list[dict[str, Any]] = []
            with worker(settings_env(s), log) as first:
                await _until(ws, seen, lambda f: f.get("type") == "material.progress"
                             and f["stage"] == "embedding" and f["done"] > 0, 150)
                os.killpg(first.pid, signal.SIGKILL)
                first.wait(10)
            async with app.state.db.engine.connect() as conn:
                status = await conn.scalar(text("select status from materials where id = :m"), {"m": mid})
            assert status == "processing"
            killed_at = len(seen)
            with worker(settings_env(s), log):
                ready = await _until(ws, seen, lambda f: f.get("type") in ("material.ready", "material.failed"), 150)
            assert ready["type"] == "material.ready", (ready, log.read_text()[-3000:])

            material = (await client.get(f"/materials/{mid}", headers=headers)).json()
            assert material["status"] == "ready" and material["chunk_count"] == ready["chunks"]
            async with app.state.db.engine.connect() as conn:
                idx = (await conn.execute(text("select idx from chunks where material_id = :m order by idx"),
                                          {"m": mid})).scalars().all()
            assert list(idx) == list(range(material["chunk_count"]))

            # The socket saw each run's stages in order, offsets strictly increasing.
            mine = [f for f in seen if f.get("material_id") == mid]
            offsets = [f["o"] for f in mine]
            assert offsets == sorted(set(offsets))
            order = ["extracting", "chunking", "embedding", "indexing"]
            for run in (seen[:killed_at], seen[killed_at:]):
                stages = [f["stage"] for f in run if f.get("type") == "material.progress"]
                changes = [x for i, x in enumerate(stages) if i == 0 or stages[i - 1] != x]
                assert changes == order[:len(changes)] and changes, changes
            assert "indexing" in [f.get("stage") for f in seen[killed_at:]]
            assert uid
