"""Benchmarks (not tests): each measures, prints its headline figures and writes results/<name>.json."""
from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def machine() -> dict[str, Any]:
    """Cores, CPU model, Python version and date of this run."""
    model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cores": os.cpu_count(), "cpu": model, "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def write_result(name: str, data: dict[str, Any], out_dir: str | Path = "results") -> Path:
    """Write ``data`` plus the machine description to ``<out_dir>/<name>.json``; return the path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps({"name": name, "machine": machine(), **data}, indent=2) + "\n")
    print(f"wrote {path}")
    return path


@contextmanager
def figure(path: Path, ncols: int = 1, figsize: tuple[float, float] = (6.5, 4.5)) -> Iterator[tuple[Any, Any]]:
    """A matplotlib figure (Agg) with ``ncols`` axes, saved to ``path`` (PNG, 100 dpi) and closed on exit."""
    import matplotlib  # noqa: PLC0415 - only benchmarks draw

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, axes = plt.subplots(1, ncols, figsize=figsize)
    try:
        yield fig, axes
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)
