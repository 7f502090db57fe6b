"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from chat_server.db import check_migrated

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: database reachable and migrated, bus and broker up")
async def readyz(request: Request) -> JSONResponse:
    checks: dict[str, str] = {}
    try:
        await check_migrated(request.app.state.db.engine)
        checks["database"] = "ok"
    except Exception as exc:  # any failure means not ready; say which
        checks["database"] = f"error: {exc}"[:300]
    for name, probe in getattr(request.app.state, "readiness", {}).items():
        try:
            ok = await probe()
            checks[name] = "ok" if ok else "down"
        except Exception as exc:
            checks[name] = f"error: {exc}"[:300]
    ready = all(v == "ok" for v in checks.values())
    body: dict[str, object] = {"status": "ready" if ready else "not_ready", "checks": checks}
    tutor = getattr(request.app.state, "tutor", None)
    if tutor is not None:
        # Which providers answer, so a load test can confirm it measures what it thinks it does
        # (and a deployment left on the benchmark provider is visible at once).
        body["llm"] = [{"provider": p.name, "model": p.model} for p in tutor.providers]
        if any(p.name == "loopback" for p in tutor.providers):
            body["benchmark"] = ("loopback LLM provider: replies are generated words, "
                                 "not a model's answers")
    return JSONResponse(
        body,
        status_code=200 if ready else 503,
    )
