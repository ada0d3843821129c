"""The distributed run's one snapshot writer: θ, θ⁻ and the solver state from the parameter store.

Each snapshot is written in Caffe's formats (``ddqn.net.snapshot``) under ``<run>/snapshots/``, named by
``server_state.json`` (what ``--resume`` reads, with each partition's env steps so ε schedules continue),
and appended to ``snapshots.csv`` (updates, wall seconds, env steps, path) for offline evaluation.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from ddqn.distributed.stats import ServerStats
from ddqn.distributed.store import ParameterStore
from ddqn.errors import DDQNError
from ddqn.net.netspec import NetSpec
from ddqn.net.snapshot import load_checkpoint, save_checkpoint
from ddqn.solvers.flat import FlatSolver

STATE_FILE = "server_state.json"  # names the latest snapshot (what --resume reads)


class Checkpointer:
    """Writes snapshots of ``store`` into ``out_dir``, one at a time, outside the store's lock."""

    def __init__(self, out_dir: Path, spec: NetSpec, store: ParameterStore, stats: ServerStats) -> None:
        self.out, self.spec, self.store, self.stats = out_dir, spec, store, stats
        self.started = time.monotonic()
        self._lock = threading.Lock()

    def snapshot(self) -> Path:
        """Copy the store (under its lock), then write the files; returns the ``.caffemodel`` path."""
        with self._lock:
            state = self.store.copy()
            played = self.stats.played()
            env_steps = self.stats.view().env_steps
            wall_s = time.monotonic() - self.started
            model = save_checkpoint(self.out, "server", self.spec, state.theta, state.target, state.solver,
                                    STATE_FILE, {"updates": state.version, "worker_env_steps": played})
            log = self.out / "snapshots.csv"
            new = not log.exists()
            with open(log, "a") as f:
                if new:
                    f.write("updates,wall_s,env_steps,model\n")
                f.write(f"{state.version},{wall_s:.3f},{env_steps},{model.relative_to(self.out)}\n")
        return model


def restore(out_dir: Path, spec: NetSpec, solver: FlatSolver) -> tuple[np.ndarray, np.ndarray, dict[int, int]]:
    """(θ, θ⁻, env steps per partition) from ``out_dir``'s last snapshot; ``solver`` gets its history."""
    theta, target, record = load_checkpoint(out_dir, STATE_FILE, spec, solver)
    raw = record.get("worker_env_steps", {})
    if not isinstance(raw, dict) or not all(
            k.isdigit() and isinstance(v, int) and not isinstance(v, bool) and v >= 0 for k, v in raw.items()):
        raise DDQNError(f"{out_dir / STATE_FILE}: worker_env_steps: must map partition numbers to step counts >= 0")
    return theta, target, {int(k): v for k, v in raw.items()}
