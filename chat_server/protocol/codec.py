"""The wire's JSON: the only module that encodes or decodes it.

Events: an event is a JSON object with a string "type". Between publisher and history it
travels without an offset (`event_json`); its wire frame is the same object with the offset it
got as "o" (`frame`, `frame_from_json`): compact, UTF-8 text as is (not \\u-escaped), "type"
first and "o" last. The hub's own frames (welcome, pong, error…) are encoded by `dumps`, and a
client's frames decoded by `loads_client` (our own clients, the Telegram bridge: `dumps` and
`loads_server`). Nothing assembles, slices or pattern-matches JSON text anywhere else: a frame
is always an object encoded or decoded whole.

Encoders: the standard library's `json` encodes an event once, when it is published — its
errors are the publisher's (TypeError for what is not JSON, ValueError for NaN,
UnicodeEncodeError for lone surrogates) — and decodes client frames (it keeps a lone surrogate,
which `loads_client` then refuses as `bad_frame`; orjson would call it `bad_json`). orjson
decodes and re-encodes events on the fan-out path, once per event and instance, and encodes
the hub's frames: that JSON is our own, and orjson does it in about a quarter of the time
(load_tests/reports/hub.md). Integers beyond 64 bits would come back from orjson as floats;
events carry none.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from itertools import accumulate
from typing import Any

import orjson

from chat_server.protocol.codes import ErrorCode
from chat_server.text import clean

Event = Mapping[str, Any]

MAX_DEPTH = 32  # client frames nest at most this deep (arrays and objects)

# One encoder, built once: json.dumps with options builds a new one per call.
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False,
                           check_circular=False).encode


class FrameError(Exception):
    """A client frame that cannot be taken: its stable `code` and a message for the client."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# --- events -------------------------------------------------------------------------------

def _ordered(event: Event) -> dict[str, Any]:
    kind = event.get("type")
    if not isinstance(kind, str):
        raise ValueError('An event needs a string "type".')
    if "o" in event:
        raise ValueError('"o" is set by the bus, not by the publisher.')
    return {"type": kind, **event}


def event_json(event: Event) -> bytes:
    """The event as history keeps it and instances pass it on: UTF-8 JSON without "o".

    Raises ValueError / TypeError for an event that cannot be encoded (and
    UnicodeEncodeError for text with lone surrogates)."""
    return _encode(_ordered(event)).encode()


def frame(event: Event, offset: int) -> str:
    """The wire frame of `event` published at `offset`."""
    ordered = _ordered(event)
    ordered["o"] = offset
    text = _encode(ordered)
    text.encode()  # the hub sends UTF-8: refuse lone surrogates here, not at every socket
    return text


def decode_event(data: bytes | str) -> dict[str, Any]:
    """An event as `event_json` gave it (or a wire frame)."""
    event = orjson.loads(data)
    assert isinstance(event, dict)
    return event


def frame_of(event: dict[str, Any], offset: int) -> str:
    """The wire frame of a decoded event published at `offset` (the dict gets its "o")."""
    event["o"] = offset
    return orjson.dumps(event).decode()


def frame_from_json(data: bytes | str, offset: int) -> str:
    """The wire frame of an event kept as `event_json` gave it, published at `offset`."""
    return frame_of(decode_event(data), offset)


# --- the hub's frames and the client's ---------------------------------------------------

def dumps(obj: Mapping[str, Any]) -> str:
    """A server frame (welcome, pong, error, a merged delta…) as its text; also a client frame
    sent by our own clients (the Telegram bridge)."""
    return orjson.dumps(obj).decode()


def loads_server(data: bytes | str) -> dict[str, Any]:
    """A frame from the hub, as our own clients (the Telegram bridge) read it. Raises
    ValueError for anything but a JSON object."""
    value = orjson.loads(data)
    if not isinstance(value, dict):
        raise ValueError("A server frame is a JSON object.")
    return value


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def loads_client(text: str) -> Any:
    """Decode a client frame: JSON nested at most MAX_DEPTH deep (the depth is counted before
    decoding, so a deep frame never reaches the recursive decoder), with no NUL character or
    lone surrogate in any string (Postgres and UTF-8 refuse them further on). Raises
    FrameError (bad_json, bad_frame)."""
    if text.count("[") + text.count("{") > MAX_DEPTH and _depth(text) > MAX_DEPTH:
        raise FrameError(ErrorCode.BAD_FRAME,
                         f"The frame is nested deeper than {MAX_DEPTH} levels.")
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        raise FrameError(ErrorCode.BAD_JSON, "The frame is not valid JSON.") from None
    # A NUL or a surrogate can only come from a \u escape: the text itself is valid UTF-8.
    if "\\u" in text and not clean(value):
        raise FrameError(ErrorCode.BAD_FRAME,
                         "Text must not contain NUL characters or lone surrogates.")
    return value


def _depth(text: str) -> int:
    # Brackets outside strings only: strings are cut out first (a counting pass, not a parse).
    brackets = [_STEP[c] for c in _STRING.sub("", text) if c in _STEP]
    return max(accumulate(brackets), default=0)


# --- signals between instances ------------------------------------------------------------

def signal_json(message: Mapping[str, Any]) -> str:
    return _encode(message)


def signal_from_json(data: bytes | str) -> dict[str, Any] | None:
    """A signal as sent by `signal_json`; None for anything else."""
    try:
        message = json.loads(data)
    except ValueError:
        return None
    return message if isinstance(message, dict) else None
