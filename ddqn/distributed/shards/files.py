"""A shard's state on disk: its slice of θ and θ⁻, its solver history and counts, written at a snapshot's cut.

A directory holds ``theta.f32``, ``target.f32`` and ``history<i>.f32`` (raw little-endian float32, the slice's
length each) and ``state.json`` (``version``, ``target_version``, ``iter``, ``lo``, ``hi``), written last, so a
directory without it is incomplete. Nothing here is unpickled; every length is checked against the slice.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ddqn.errors import DDQNError

STATE = "state.json"


@dataclass(frozen=True)
class SliceState:
    """One shard's state: θ, θ⁻ and history slices (float32, ``hi - lo`` each) and its counts."""

    lo: int
    hi: int
    theta: np.ndarray
    target: np.ndarray
    history: list[np.ndarray]
    version: int
    target_version: int
    iter: int


def write_slice(path: Path, state: SliceState) -> None:
    """Write ``state`` into the directory ``path`` (created), ``state.json`` last."""
    path.mkdir(parents=True, exist_ok=True)
    arrays = {"theta": state.theta, "target": state.target, **{f"history{i}": h for i, h in enumerate(state.history)}}
    for name, a in arrays.items():
        np.ascontiguousarray(a, "<f4").tofile(path / f"{name}.f32")
    record = {"lo": state.lo, "hi": state.hi, "version": state.version, "target_version": state.target_version,
              "iter": state.iter, "histories": len(state.history)}
    tmp = path / (STATE + ".tmp")
    tmp.write_text(json.dumps(record))
    os.replace(tmp, path / STATE)


def read_slice(path: Path) -> SliceState:
    """The state written by :func:`write_slice`; DDQNError naming the file if it is missing or of the wrong size."""
    try:
        record = json.loads((path / STATE).read_text())
        lo, hi, histories = (int(record[k]) for k in ("lo", "hi", "histories"))
        counts = [int(record[k]) for k in ("version", "target_version", "iter")]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DDQNError(f"{path / STATE}: not a shard's state ({exc})") from exc

    def load(name: str) -> np.ndarray:
        f = path / f"{name}.f32"
        try:
            a = np.fromfile(f, "<f4")
        except OSError as exc:
            raise DDQNError(f"{f}: cannot read ({exc.strerror})") from exc
        if a.size != hi - lo:
            raise DDQNError(f"{f}: {a.size} floats, the slice [{lo}, {hi}) has {hi - lo}")
        return a.astype(np.float32, copy=False)

    return SliceState(lo, hi, load("theta"), load("target"), [load(f"history{i}") for i in range(histories)],
                      *counts)
