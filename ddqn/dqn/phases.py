"""Where a learner's time goes: seconds per phase of the experience loop, charged lap by lap.

``clock.lap("act")`` charges the time since the previous lap to the phase ``"act"``; the loop laps after each
phase, so the phases add up to the whole loop. :data:`NO_CLOCK` does nothing (the default: no overhead but a
method call per phase).
"""
from __future__ import annotations

import time
from collections import defaultdict

PHASES = ("fetch", "θ copy-in", "act", "env step", "store", "replay sample", "target forward",
          "forward+backward", "push", "stats")


class PhaseClock:
    """Accumulated seconds per phase (see the module docstring)."""

    def __init__(self) -> None:
        self.seconds: defaultdict[str, float] = defaultdict(float)
        self._last = time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.seconds[phase] += now - self._last
        self._last = now

    def restart(self) -> None:
        """Forget everything so far (e.g. the warm-up), and start timing now."""
        self.seconds.clear()
        self._last = time.perf_counter()


class _NoClock(PhaseClock):
    def lap(self, phase: str) -> None:
        pass


NO_CLOCK: PhaseClock = _NoClock()
