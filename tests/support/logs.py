"""Collecting what every logger writes, uvicorn's own included (they do not propagate)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

# uvicorn's loggers don't propagate to the root logger: they are watched on their own.
LOGGERS = ("", "uvicorn", "uvicorn.error", "uvicorn.access")


class Collected(logging.Handler):
    def __init__(self, level: int) -> None:
        super().__init__(level)
        self.records: list[logging.LogRecord] = []
        self._seen: set[int] = set()

    def emit(self, record: logging.LogRecord) -> None:
        if id(record) not in self._seen:  # a uvicorn.error record reaches "uvicorn" as well
            self._seen.add(id(record))
            self.records.append(record)

    @property
    def lines(self) -> list[str]:
        fmt = logging.Formatter("%(name)s %(levelname)s %(message)s")
        return [fmt.format(r) for r in self.records]


@contextmanager
def collect_logs(level: int = logging.DEBUG) -> Iterator[Collected]:
    """Every record at `level` or above of every logger while the block runs (the loggers'
    levels are lowered to `level` meanwhile when they were higher)."""
    handler = Collected(level)
    loggers = [logging.getLogger(name or None) for name in LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        if lg.level > level:  # a NOTSET logger inherits from its parent, lowered here
            lg.setLevel(level)
    try:
        yield handler
    finally:
        for lg, old in zip(loggers, levels, strict=True):
            lg.removeHandler(handler)
            lg.setLevel(old)
