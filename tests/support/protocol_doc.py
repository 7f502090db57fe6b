"""What docs/protocol.md documents, read from its tables: frame types, error codes, close codes."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent.parent / "docs" / "protocol.md"


def _table_keys(heading: str) -> set[str]:
    """The first column (backticks stripped) of every table row under `heading`, up to the
    next heading of the same or a higher level."""
    lines = DOC.read_text().splitlines()
    level = len(heading) - len(heading.lstrip("#"))
    start = lines.index(heading) + 1
    keys: set[str] = set()
    for line in lines[start:]:
        hashes = len(line) - len(line.lstrip("#"))
        if 0 < hashes <= level and line[hashes:hashes + 1] == " ":
            break
        if line.startswith("|") and not set(line) <= set("|- "):
            keys.add(line.split("|")[1].strip().strip("`"))
    return keys - {"frame", "event", "code", "`reason`", "reason"}


@cache
def close_codes() -> set[int]:
    return {int(k) for k in _table_keys("## Close codes")}


@cache
def error_codes() -> set[str]:
    """Every `code` an `error` frame or a `reply.error` may carry."""
    hub = _table_keys("## Error codes (`error` frames)") - {"tutor codes"}
    return (hub | _table_keys("### Refusals (`error` frame to the sending socket)")
            | _table_keys("### `reply.error` codes"))


@cache
def server_frames() -> set[str]:
    """Every `type` the server may send."""
    return ({"welcome"} | _table_keys("## Server → client frames of the hub")
            | _table_keys("### Server → client (published on the bus)"))


@cache
def resume_reasons() -> set[str]:
    return {k for k in _table_keys("## Events, offsets and resume") if re.fullmatch(r"[a-z_]+", k)}
