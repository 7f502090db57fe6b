"""Wire constants of /ws/v1: close codes, error codes and the server's own frames.

docs/protocol.md documents every one of these; keep them in step.
"""

from __future__ import annotations

import json
import re
from enum import IntEnum
from itertools import accumulate
from typing import Any

from chat_server.text import clean


class Close(IntEnum):
    NORMAL = 1000
    UNSUPPORTED_DATA = 1003  # a binary frame
    INVALID_DATA = 1007  # a text frame that is not UTF-8 (sent by the WebSocket layer)
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


MAX_DEPTH = 32  # client frames nest at most this deep (arrays and objects)


class FrameError(Exception):
    """A client frame that cannot be taken: `code` (bad_json | bad_frame) and a message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def loads(text: str) -> Any:
    """Parse a client frame: JSON nested at most MAX_DEPTH deep (the depth is counted before
    parsing, so a deep frame never reaches the recursive decoder), with no NUL character or
    lone surrogate in any string (Postgres and UTF-8 refuse them further on). Raises
    FrameError."""
    if text.count("[") + text.count("{") > MAX_DEPTH and _depth(text) > MAX_DEPTH:
        raise FrameError(BAD_FRAME, f"The frame is nested deeper than {MAX_DEPTH} levels.")
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        raise FrameError(BAD_JSON, "The frame is not valid JSON.") from None
    # A NUL or a surrogate can only come from a \u escape: the text itself is valid UTF-8.
    if "\\u" in text and not clean(value):
        raise FrameError(BAD_FRAME, "Text must not contain NUL characters or lone surrogates.")
    return value


def _depth(text: str) -> int:
    brackets = [_STEP[c] for c in _STRING.sub("", text) if c in _STEP]
    return max(accumulate(brackets), default=0)


def dumps(obj: dict[str, Any]) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def error(code: str, message: str, **extra: Any) -> str:
    return dumps({"type": "error", "code": code, "message": message, **extra})


PING = '{"type":"ping"}'
