"""The distributed run's one snapshot writer: θ, θ⁻ and the solver state from the parameter store.

Each snapshot is written in Caffe's formats (``ddqn.net.snapshot``) under ``<run>/snapshots/``, named by
``server_state.json`` (what ``--resume`` reads, with each partition's env steps so ε schedules continue),
and appended to ``snapshots.csv`` (updates, wall seconds, env steps, path) for offline evaluation.

The driver's process may run out of file descriptors (connections that send nothing hold one each until their
handshake times out: ``ddqn.distributed.server.HANDSHAKE_S``). The checkpointer keeps a few of its own, released
just before it writes, and a snapshot that still finds none (EMFILE, ENFILE) is logged and retried, never an error
of the run.
"""
from __future__ import annotations

import errno
import logging
import os
import threading
import time
import weakref
from pathlib import Path

import numpy as np

from ddqn.distributed.stats import ServerStats
from ddqn.distributed.store import ParameterStore
from ddqn.errors import DDQNError
from ddqn.net.netspec import NetSpec
from ddqn.net.snapshot import load_checkpoint, save_checkpoint
from ddqn.solvers.flat import FlatSolver

log = logging.getLogger("ddqn.distributed.checkpointer")
STATE_FILE = "server_state.json"  # names the latest snapshot (what --resume reads)
# Descriptors held (on /dev/null) for snapshots and released just before one is written: a snapshot opens one file
# at a time (each written to a temporary, then renamed), and libzmq may accept a waiting connection into one or two
# of the released descriptors before the snapshot opens its first file.
RESERVED_FDS = 4
RETRY_S = 0.5  # between the attempts of a final snapshot that finds no free descriptor
NO_DESCRIPTORS = (errno.EMFILE, errno.ENFILE)  # this process's limit, the system's


class Checkpointer:
    """Writes snapshots of ``store`` into ``out_dir``, one at a time, outside the store's lock."""

    def __init__(self, out_dir: Path, spec: NetSpec, store: ParameterStore, stats: ServerStats) -> None:
        self.out, self.spec, self.store, self.stats = out_dir, spec, store, stats
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self._reserve: list[int] = []
        self._failing = False  # the last attempt found no free descriptor (logged once per streak)
        self._refill()
        weakref.finalize(self, _close_all, self._reserve)

    def snapshot(self) -> Path:
        """Copy the store (under its lock), then write the files; returns the ``.caffemodel`` path.

        The reserved descriptors are released for the write and taken again after it; an OSError is raised."""
        with self._lock:
            _close_all(self._reserve)
            try:
                return self._write()
            finally:
                self._refill()

    def try_snapshot(self) -> Path | None:
        """:meth:`snapshot`, or None if no file descriptor was free (logged once until a snapshot is written)."""
        try:
            model = self.snapshot()
        except OSError as exc:
            if exc.errno not in NO_DESCRIPTORS:
                raise
            if not self._failing:
                log.warning("snapshot not written: %s (%s): retried until a descriptor is free",
                            exc.strerror, errno.errorcode[exc.errno])
            self._failing = True
            return None
        if self._failing:
            log.info("snapshot written to %s once descriptors were free again", model)
        self._failing = False
        return model

    def final_snapshot(self, within_s: float) -> Path:
        """:meth:`try_snapshot` every RETRY_S for up to ``within_s`` seconds, then :meth:`snapshot` (raising)."""
        end = time.monotonic() + within_s
        while time.monotonic() < end:
            if (model := self.try_snapshot()) is not None:
                return model
            time.sleep(min(RETRY_S, max(0.0, end - time.monotonic())))
        return self.snapshot()

    def _refill(self) -> None:
        """Take the reserved descriptors again, as many as are free."""
        try:
            while len(self._reserve) < RESERVED_FDS:
                self._reserve.append(os.open(os.devnull, os.O_RDONLY))
        except OSError as exc:
            if exc.errno not in NO_DESCRIPTORS:
                raise

    def _write(self) -> Path:
        state = self.store.copy()
        played = self.stats.played()
        env_steps = self.stats.view().env_steps
        wall_s = time.monotonic() - self.started
        model = save_checkpoint(self.out, "server", self.spec, state.theta, state.target, state.solver,
                                STATE_FILE, {"updates": state.version, "worker_env_steps": played})
        table = self.out / "snapshots.csv"
        new = not table.exists()
        with open(table, "a") as f:
            if new:
                f.write("updates,wall_s,env_steps,model\n")
            f.write(f"{state.version},{wall_s:.3f},{env_steps},{model.relative_to(self.out)}\n")
        return model


def _close_all(fds: list[int]) -> None:
    while fds:
        os.close(fds.pop())


def restore(out_dir: Path, spec: NetSpec, solver: FlatSolver) -> tuple[np.ndarray, np.ndarray, dict[int, int]]:
    """(θ, θ⁻, env steps per partition) from ``out_dir``'s last snapshot; ``solver`` gets its history."""
    theta, target, record = load_checkpoint(out_dir, STATE_FILE, spec, solver)
    raw = record.get("worker_env_steps", {})
    if not isinstance(raw, dict) or not all(
            k.isdigit() and isinstance(v, int) and not isinstance(v, bool) and v >= 0 for k, v in raw.items()):
        raise DDQNError(f"{out_dir / STATE_FILE}: worker_env_steps: must map partition numbers to step counts >= 0")
    return theta, target, {int(k): v for k, v in raw.items()}
