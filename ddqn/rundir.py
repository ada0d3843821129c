"""A run directory holds one run: a new run never writes into an earlier run's files.

Metrics files are appended to (``metrics.MetricsLogger``) and TensorBoard reads every event file under a directory,
so a second run started with the same ``--out`` would mix its rows and curves into the first one's. Instead the
earlier run is moved to ``<out>.1`` (the first free number), whole, before the new run writes anything; ``--resume``
continues a run in place and never moves it.
"""
from __future__ import annotations

import sys
from pathlib import Path

MARK = "config.yaml"  # what every run (serial, distributed, simulated) writes into its directory first


def set_aside_earlier_run(out: Path) -> Path | None:
    """Move the run in ``out`` (a directory holding :data:`MARK`), finished or not, to ``<out>.N``, the lowest N ≥ 1
    not taken, and say so on stderr; returns where it went, or None when ``out`` holds no run (absent, empty, or
    only files a bench put there beforehand)."""
    if not (out / MARK).is_file():
        return None
    n = 1
    while out.with_name(f"{out.name}.{n}").exists():
        n += 1
    aside = out.with_name(f"{out.name}.{n}")
    out.rename(aside)
    print(f"{out}: holds an earlier run, moved to {aside} (give --resume to continue a run instead)", file=sys.stderr,
          flush=True)
    return aside
