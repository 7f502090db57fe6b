"""What the benchmarks share: percentiles, and a report printed as it is written."""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from contextlib import contextmanager


def pct(values: list[float], q: float) -> float:
    """The q-quantile (0 ≤ q ≤ 1) by nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def cpu_probe() -> float:
    """Milliseconds of CPU a fixed pure-Python loop takes here now (best of 3). On a shared VM
    the same loop varies by half within a minute: printed beside a benchmark's figures, it
    says how fast the machine was while they were taken."""
    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        x = 0
        for i in range(2_000_000):
            x += i & 7
        best = min(best, time.process_time() - started)
    return best * 1000


@contextmanager
def no_gc_pauses() -> Iterator[None]:
    """The load generator's own cyclic collector off while it measures: holding every frame
    it received (~150,000 in the streaming phase), a full collection paused the clients'
    loop ~190 ms in the middle of a phase, and every frame arriving meanwhile was stamped
    late: the server's latency, as measured, with the clients' pause added to it."""
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.unfreeze()


class Report:
    """Markdown lines, each printed as it is added (a long run shows its progress)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def say(self, line: str = "") -> None:
        print(line, flush=True)
        self.lines.append(line)

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"
