"""What docs/protocol.md documents, read from its tables: frame types, error codes, close codes."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent.parent / "docs" / "protocol.md"


def table_keys(heading: str) -> set[str]:
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
    return keys - {"frame", "event", "code", "`reason`", "reason", "fault"}


HUB_ERRORS = "## Error codes (`error` frames)"
TUTOR_ERRORS = "### Refusals (`error` frame to the sending socket)"
REPLY_ERRORS = "### `reply.error` codes"


@cache
def close_codes() -> set[int]:
    return {int(k) for k in table_keys("## Close codes")}


@cache
def error_codes() -> set[str]:
    """Every `code` an `error` frame or a `reply.error` may carry."""
    return ((table_keys(HUB_ERRORS) - {"tutor codes"}) | table_keys(TUTOR_ERRORS)
            | table_keys(REPLY_ERRORS))


@cache
def server_frames() -> set[str]:
    """Every `type` the server may send."""
    return ({"welcome"} | table_keys("## Server → client frames of the hub")
            | table_keys("### Server → client (published on the bus)"))


@cache
def client_frames() -> set[str]:
    """Every `type` a client may send (`auth` first, in prose)."""
    return ({"auth"} | table_keys("## Client → server frames (after `auth`)")
            | table_keys("### Client → server"))


@cache
def resume_reasons() -> set[str]:
    return {k for k in table_keys("## Events, offsets and resume") if re.fullmatch(r"[a-z_]+", k)}
