"""The import direction of DESIGN.md's layout: `workers` (the taskiq tasks) imports chat_server,
never the other way; the web side enqueues a task by its name without the task's code."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _imported_modules(path: Path) -> list[tuple[int, str]]:
    """Every module an import statement of `path` names, anywhere in it (function bodies too)."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def test_nothing_in_chat_server_imports_workers() -> None:
    offenders = [f"{path.relative_to(ROOT)}:{line} imports {module}"
                 for path in sorted((ROOT / "chat_server").rglob("*.py"))
                 for line, module in _imported_modules(path)
                 if module == "workers" or module.startswith("workers.")]
    assert offenders == []
    # The other direction is the point of `workers`: its tasks call into chat_server.
    tasks = [module for path in (ROOT / "workers").glob("*.py") for _, module in _imported_modules(path)]
    assert "chat_server.materials.ingest" in tasks and "chat_server.jobs" in tasks


def test_the_web_side_enqueues_by_name_without_loading_workers(redis_url: str, tmp_path: Path) -> None:
    """In a fresh interpreter: every chat_server module imported, the app built and a material
    enqueued on the Redis broker; the message names the task, and `workers` was never loaded.
    Then the worker side: the task modules registered, the same name finds the task."""
    script = textwrap.dedent(f"""
        import asyncio, json, pkgutil, importlib, sys, uuid
        import chat_server
        for info in pkgutil.walk_packages(chat_server.__path__, "chat_server."):
            importlib.import_module(info.name)
        from chat_server.app import create_app
        from chat_server.jobs import INGEST_MATERIAL, QUEUE, enqueue_ingestion, load_tasks, make_broker
        from chat_server.settings import Settings
        import redis

        settings = Settings(_env_file=None, redis_url={redis_url!r}, data_dir={str(tmp_path)!r},
                            database_url="postgresql://nobody@127.0.0.1:1/none")
        create_app(settings)
        material_id = uuid.uuid4()

        async def web_side():
            broker = make_broker(settings)
            await broker.startup()
            try:
                await enqueue_ingestion(broker, material_id)
            finally:
                await broker.shutdown()

        asyncio.run(web_side())
        web_loaded = sorted(m for m in sys.modules if m == "workers" or m.startswith("workers."))
        queued = [json.loads(raw) for raw in redis.Redis.from_url({redis_url!r}).lrange(QUEUE, 0, -1)]
        load_tasks()
        found = make_broker(settings.model_copy(update={{"redis_url": None}})).find_task(INGEST_MATERIAL)
        print(json.dumps({{"web_loaded": web_loaded, "queued": queued, "id": str(material_id),
                          "name": INGEST_MATERIAL, "found": found is not None}}))
    """)
    run = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["web_loaded"] == []
    assert [(m["task_name"], m["args"]) for m in out["queued"]] == [(out["name"], [out["id"]])]
    assert out["found"]
