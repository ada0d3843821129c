"""Simulated time: a heap of (time, sequence, callback) events, run in time order (ties in scheduling order)."""
from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any


class EventQueue:
    """Callbacks scheduled at simulated seconds; :meth:`run` calls them in order until a bound is reached."""

    def __init__(self) -> None:
        self.now = 0.0  # simulated seconds
        self._heap: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._seq = 0  # breaks ties deterministically: first scheduled, first run

    def at(self, t: float, fn: Callable[..., None], *args: Any) -> None:
        """Call ``fn(*args)`` at simulated time ``t`` (never before now)."""
        heapq.heappush(self._heap, (max(t, self.now), self._seq, fn, args))
        self._seq += 1

    def run(self, until_s: float, done: Callable[[], bool]) -> None:
        """Run events up to simulated second ``until_s``, or until ``done()`` is true after an event."""
        while self._heap and self._heap[0][0] <= until_s:
            t, _, fn, args = heapq.heappop(self._heap)
            self.now = t
            fn(*args)
            if done():
                return
        if self._heap:  # the next event lies beyond the bound: time has run up to it
            self.now = max(self.now, until_s)
