"""Text that can be stored: no NUL character, no lone surrogate.

Postgres refuses NUL in text and UTF-8 cannot encode a lone surrogate (JSON can carry both
as \\u escapes), so such text is refused where it comes in — 422 on REST (`SafeStr`), a
`bad_frame` error on the socket — instead of failing deep inside a statement.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator

PROBLEM = "must not contain NUL characters or lone surrogates"


def clean_text(value: str) -> bool:
    """No NUL character and no lone surrogate."""
    if "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def clean(value: Any) -> bool:
    """`clean_text` for every string (keys included) of a parsed JSON value."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return all(clean_text(k) and clean(v) for k, v in value.items())
    if isinstance(value, list):
        return all(clean(v) for v in value)
    return True


def _checked(value: str) -> str:
    if not clean_text(value):
        raise ValueError(PROBLEM)
    return value


# A str field of a request schema whose text can be stored (422 otherwise).
SafeStr = Annotated[str, AfterValidator(_checked)]
