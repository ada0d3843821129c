"""Metrics of a run: one logger, namespaced keys (``rollout/…``, ``train/…``, ``eval/…``), two sinks.

Every :meth:`MetricsLogger.log` call appends one row to ``<dir>/<table>.csv`` and writes the same
numbers as TensorBoard scalars (event files in ``<dir>/tb``) at the given step.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import IO

from tensorboardX import SummaryWriter


class MetricsLogger:
    """CSV + TensorBoard sink. Columns of each CSV table are fixed by its first row."""

    def __init__(self, out_dir: str | Path) -> None:
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._tb = SummaryWriter(str(self.dir / "tb"))
        self._files: dict[str, tuple[IO[str], csv.DictWriter]] = {}

    def log(self, table: str, step: int, values: dict[str, float], wall_s: float | None = None) -> None:
        """Append ``values`` at env step ``step`` (and wall-clock seconds) to ``table``.csv and TensorBoard."""
        row = {"step": step, **({"wall_s": round(wall_s, 3)} if wall_s is not None else {}), **values}
        if table not in self._files:
            path = self.dir / f"{table}.csv"
            new = not path.exists() or path.stat().st_size == 0
            f = open(path, "a", newline="")
            writer = csv.DictWriter(f, fieldnames=list(row), extrasaction="ignore")
            if new:
                writer.writeheader()
            self._files[table] = (f, writer)
        f, writer = self._files[table]
        writer.writerow(row)
        f.flush()
        for key, value in values.items():
            self._tb.add_scalar(key, value, step)

    def close(self) -> None:
        """Flush and close every sink."""
        for f, _ in self._files.values():
            f.close()
        self._files.clear()
        self._tb.close()

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Every:
    """Fires once each time a counter passes the next multiple of ``period`` (when a metrics row, an evaluation or a
    snapshot is due; the driver's and the simulator's rule)."""

    def __init__(self, period: int) -> None:
        self.period, self.next = period, period

    def due(self, count: int) -> bool:
        if count < self.next:
            return False
        self.next = (count // self.period + 1) * self.period
        return True
