"""Prometheus metrics. Every metric of the service is defined here, in one registry."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request
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

# --- hub (WebSocket) and bus ---------------------------------------------------
ws_open_sockets = Gauge(
    "tutorhub_ws_open_sockets", "Authenticated WebSocket connections open", registry=REGISTRY,
)
ws_users_online = Gauge(
    "tutorhub_ws_users_online", "Users with at least one socket on this instance",
    registry=REGISTRY,
)
ws_frames = Counter(
    "tutorhub_ws_frames_total", "WebSocket frames by direction (in/out)", ["direction"],
    registry=REGISTRY,
)
ws_bytes = Counter(
    "tutorhub_ws_bytes_total", "WebSocket payload bytes by direction (in/out)", ["direction"],
    registry=REGISTRY,
)
ws_send_queue_overflows = Counter(
    "tutorhub_ws_send_queue_overflows_total", "Sockets closed because their send queue overflowed",
    registry=REGISTRY,
)
ws_closes = Counter(
    "tutorhub_ws_closes_total", "WebSocket closes by close code", ["code"], registry=REGISTRY,
)
ws_coalesced = Counter(
    "tutorhub_ws_coalesced_deltas_total", "reply.delta events merged into a queued delta",
    registry=REGISTRY,
)
bus_publish_seconds = Histogram(
    "tutorhub_bus_publish_seconds",
    "Bus publish round trips: one batch of publishes (append to history + publish each)",
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0),
    registry=REGISTRY,
)
tutor_first_delta_seconds = Histogram(
    "tutorhub_tutor_first_delta_seconds",
    "chat.send handed to the tutor → its first reply.delta published (retrieval included)",
    buckets=(0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25,
             0.5, 1.0, 2.5, 5.0),
    registry=REGISTRY,
)
tutor_flush_tick_seconds = Histogram(
    "tutorhub_tutor_flush_tick_seconds",
    "One reply flush tick's work: streams read, their deltas published. Near or above "
    "TUTORHUB_REPLY_FLUSH_MS the process is saturated (deltas grow, token latency rises)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0),
    registry=REGISTRY,
)
bus_reconnects = Counter(
    "tutorhub_bus_reconnects_total", "Redis pub/sub connection losses and failed reconnects",
    registry=REGISTRY,
)

router = APIRouter(tags=["health"])


@router.get("/metrics", summary="Prometheus metrics (Bearer TUTORHUB_METRICS_TOKEN when set)",
            response_class=Response)
async def metrics(request: Request) -> Response:
    token: str | None = request.app.state.settings.metrics_token
    if token:  # it tells how many users and sockets there are: not for everyone when set
        given = request.headers.get("authorization", "").encode("utf-8", "replace")
        if not hmac.compare_digest(given, f"Bearer {token}".encode()):
            from chat_server.errors import ApiError

            raise ApiError(401, "Send `Authorization: Bearer <TUTORHUB_METRICS_TOKEN>`.",
                           headers={"WWW-Authenticate": "Bearer"})
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


__all__ = ["REGISTRY", "Counter", "Gauge", "Histogram", "router", "http_requests"]
