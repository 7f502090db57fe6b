"""How an event becomes its wire frame: the only module that knows the encoding.

An event is a JSON object with a string "type". Between publisher and history it travels
without an offset (`event_json`); its wire frame is the same object with the offset it got
as "o" (`frame`, `frame_from_json`), encoded by a JSON encoder (below): compact, UTF-8 text
as is (not \\u-escaped), "type" first and "o" last. Nothing assembles or edits
the JSON text by hand — a frame is always an object encoded whole.

Encoders: the standard library's `json` encodes an event once, when it is published — its
errors are the publisher's (TypeError for what is not JSON, ValueError for NaN,
UnicodeEncodeError for lone surrogates). orjson decodes and re-encodes it with its offset on
the fan-out path, once per event and instance: that JSON is our own, and orjson does it in
about a quarter of the time (load_tests/reports/hub.md). Integers beyond 64 bits would come
back from orjson as floats; events carry none.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from chat_server.bus.base import Event

# One encoder, built once: json.dumps with options builds a new one per call.
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False,
                           check_circular=False).encode
_DELTA_HEAD = '{"type":"reply.delta",'  # what frame() writes first for a reply.delta


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


def frame_from_json(data: bytes | str, offset: int) -> str:
    """The wire frame of an event kept as `event_json` gave it, published at `offset`."""
    event = orjson.loads(data)
    event["o"] = offset
    return orjson.dumps(event).decode()


def offset(frame: str) -> int:
    """The offset "o" of a wire frame."""
    value = orjson.loads(frame)["o"]
    assert isinstance(value, int)
    return value


def is_delta(frame: str) -> bool:
    """Whether a wire frame (or a hub frame encoded with "type" first) is a reply.delta —
    told without decoding it, for the hub's per-socket coalescing on the fan-out path."""
    return frame.startswith(_DELTA_HEAD)


def signal_json(message: dict[str, Any]) -> str:
    return _encode(message)


def signal_from_json(data: bytes | str) -> dict[str, Any] | None:
    """A signal as sent by `signal_json`; None for anything else."""
    try:
        message = json.loads(data)
    except ValueError:
        return None
    return message if isinstance(message, dict) else None
