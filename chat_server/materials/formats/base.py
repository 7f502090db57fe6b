"""What every format's extraction gives: segments of text with their place in the source.

Extraction is blocking and runs in a worker thread. Failures a learner can act on raise
`MaterialFailed` with a message meant for them; failures that may pass on their own (network,
YouTube throttling) raise `TransientError` so the task retries with backoff.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

Progress = Callable[[int, int], None]  # (done, total)
Sink = Callable[["Segment"], None]  # each segment as soon as it is extracted


class MaterialFailed(Exception):
    """The material can't be ingested; `reason` is shown to the learner as is."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TransientError(Exception):
    """A fault that may pass: the task retries it with backoff."""


@dataclass(frozen=True)
class Segment:
    """A run of text with its place in the source: a PDF page or a transcript time span."""

    text: str
    page: int | None = None
    start_s: float | None = None
    end_s: float | None = None


@dataclass
class Extracted:
    segments: list[Segment] = field(default_factory=list)
    pages: int | None = None
    duration_s: float | None = None
    truncated: bool = False


def clean(page_text: str) -> str:
    # Keep blank lines (paragraph breaks), squeeze runs of spaces, join hyphenated line breaks.
    page_text = page_text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    page_text = re.sub(r"(\w)-\n(\w)", r"\1\2", page_text)
    page_text = re.sub(r"[ \t\f\v\u00a0]+", " ", page_text)
    page_text = re.sub(r" *\n *", "\n", page_text)
    return re.sub(r"\n{3,}", "\n\n", page_text).strip()
