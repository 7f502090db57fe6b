"""Wire constants of /ws/v1: close codes, error codes and the server's own frames.

docs/protocol.md documents every one of these; keep them in step.
"""

from __future__ import annotations

import json
from enum import IntEnum
from typing import Any


class Close(IntEnum):
    NORMAL = 1000
    UNSUPPORTED_DATA = 1003  # a binary frame
    TOO_BIG = 1009  # a frame over ws_max_frame_bytes (sent by the WebSocket layer)
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012  # graceful shutdown: reconnect (to another instance) and resume
    TRY_AGAIN_LATER = 1013  # the bus is unavailable right now
    AUTH_FAILED = 4401  # no/invalid auth frame, bad token, or auth timeout
    TOKEN_EXPIRED = 4403  # the socket's token expired without an auth.refresh
    SLOW_CONSUMER = 4408  # the send queue overflowed: reconnect and resume
    IDLE_TIMEOUT = 4409  # nothing received (not even a pong) for ws_idle_timeout_s
    FLOODING = 4429  # kept sending while rate limited


# Stable `code` values of `error` frames.
BAD_JSON = "bad_json"
BAD_FRAME = "bad_frame"
UNKNOWN_TYPE = "unknown_type"
RATE_LIMITED = "rate_limited"
AUTH_FAILED = "auth_failed"
UNAVAILABLE = "unavailable"
INTERNAL = "internal"


def dumps(obj: dict[str, Any]) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def error(code: str, message: str, **extra: Any) -> str:
    return dumps({"type": "error", "code": code, "message": message, **extra})


PING = '{"type":"ping"}'
