"""Log redaction: no password, hash, token, email, secret or SQL parameter in any log line.

The sources are told not to log such things (the SQLAlchemy engine hides its parameters; our
own messages name ids, never credentials); this is the net under them. `install()` sets a
log record factory, so every record of every logger (ours, uvicorn's, SQLAlchemy's…) is
redacted once, when it is made, whatever handler prints it: the message with its arguments
and the traceback of an exception are rewritten before any handler sees them.
"""

from __future__ import annotations

import contextlib
import logging
import re
import traceback
from collections.abc import Callable, Iterable
from typing import Any

_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # SQLAlchemy appends a statement's parameters to its errors (when not hidden).
    (re.compile(r"\[parameters: .*?\](?=\n|$)", re.S), "[parameters: <redacted>]"),
    # Postgres details quote the offending values: Key (email)=(a@b.c), Failing row contains (…).
    (re.compile(r"(Key \([^)]*\)=)\(.*?\)(?= already exists| is not present|\.|\n|$)"),
     r"\1(<redacted>)"),
    (re.compile(r"(Failing row contains )\(.*?\)(?=\.?\n|\.?$)", re.M), r"\1(<redacted>)"),
    (re.compile(r"\$argon2(?:id|i|d)\$[^\s'\",)]+"), "<password hash>"),
    (re.compile(r"\beyJ[\w-]+\.[\w-]+\.[\w-]*"), "<token>"),
    (re.compile(r"(?i)\b(bearer)\s+[\w.~+/=-]+"), r"\1 <token>"),
    (re.compile(r"(?i)\b(password|passwd|secret|token|api_key)(['\"]?\s*[:=]\s*['\"]?)[^\s'\",&)]+"),
     r"\1\2<redacted>"),
    # user:password@ in URLs (postgresql://, redis://…).
    (re.compile(r"(://[^:/@\s]*:)[^@\s/]+@"), r"\1<redacted>@"),
    (re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"), "<email>"),
]

_secrets: set[str] = set()
_previous: Callable[..., logging.LogRecord] | None = None


def redact(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, "<secret>")
    return text


def add_secrets(values: Iterable[str | None]) -> None:
    """Exact strings to hide wherever they appear (keys from the settings); short ones are
    ignored (they would blank out ordinary words)."""
    _secrets.update(v for v in values if v and len(v) >= 8)


def install(secrets: Iterable[str | None] = ()) -> None:
    """Redact every log record made from now on, in this process (idempotent)."""
    global _previous
    add_secrets(secrets)
    if _previous is not None:
        return
    _previous = logging.getLogRecordFactory()
    previous = _previous

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        _scrub(record)
        return record

    logging.setLogRecordFactory(factory)


def _scrub(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except Exception:  # a bad format string: logging reports it later, keep it as it is
        return
    clean = redact(message)
    if clean == message:
        return _scrub_exception(record)
    args = record.args
    if isinstance(args, tuple) and isinstance(record.msg, str) and redact(record.msg) == record.msg:
        # Keep the arguments' shape where redacting each one is enough: formatters such as
        # uvicorn's access log unpack them (a path with a token in its query string).
        record.args = tuple(redact(a) if isinstance(a, str) else a for a in args)
        with contextlib.suppress(Exception):
            message = record.getMessage()
            if redact(message) == message:
                return _scrub_exception(record)
    record.msg, record.args = clean, None
    _scrub_exception(record)


def _scrub_exception(record: logging.LogRecord) -> None:
    if record.exc_info and record.exc_info[0] is not None:
        text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
        # Formatters print exc_text when it is set (and only format exc_info when it is not).
        record.exc_text = redact(text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)
