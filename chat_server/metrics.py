"""Prometheus metrics. Every metric of the service is defined here, in one registry."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

REGISTRY = CollectorRegistry(auto_describe=True)

http_requests = Counter(
    "tutorhub_http_requests_total", "HTTP requests by route and status",
    ["route", "status"], registry=REGISTRY,
)

router = APIRouter(tags=["health"])


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


__all__ = ["REGISTRY", "Counter", "Gauge", "Histogram", "router", "http_requests"]
