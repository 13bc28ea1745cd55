"""Timing and ETA for long steps reported as log lines (export's verification, sanity's exports).

The CLI shows tqdm bars where work comes in many small units; a few long units (one graph
verified in 10-60 s) read better as one line each with the time taken and the time left.
"""

from __future__ import annotations

import time
from typing import Callable


class Eta:
    """Counts ``total`` units; ``step()`` -> "k/total, 12.3 s, ~45 s left" (mean time per unit so far)."""

    def __init__(self, total: int, clock: Callable[[], float] = time.perf_counter) -> None:
        self.total = max(int(total), 0)
        self.done = 0
        self._clock = clock
        self._start = self._last = clock()

    def step(self) -> str:
        now = self._clock()
        took, self._last = now - self._last, now
        self.done += 1
        left = (now - self._start) / self.done * max(self.total - self.done, 0)
        tail = f", ~{format_seconds(left)} left" if self.done < self.total else f", {format_seconds(now - self._start)} in all"
        return f"{self.done}/{self.total}, {format_seconds(took)}{tail}"


def format_seconds(seconds: float) -> str:
    """12.3 s, 4 min 05 s, 1 h 02 min."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
