"""Snapshots in Caffe's own formats: ``.caffemodel`` weights and ``.solverstate`` solver history.

Weights are a binary ``NetParameter`` with one ``BlobProto`` per learnable blob, loadable with
``caffe.Net(prototxt, weights, caffe.TEST)``. Solver state is a binary ``SolverState`` (iteration,
history blobs, and the weights file name), so pycaffe's own ``Solver.restore`` reads it too.
Files are validated against the net's layout before anything reaches Caffe (whose CHECK failures
abort the process): a corrupt or foreign file is one :class:`ConfigError` line.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError

from ddqn.errors import ConfigError, DDQNError
from ddqn.net.caffe_env import caffe_pb2
from ddqn.net.netspec import NetSpec, ParamBlob
from ddqn.solvers.flat import FlatSolver


def _blob(arr: np.ndarray, shape: tuple[int, ...]):
    bp = caffe_pb2().BlobProto()
    bp.shape.dim.extend(shape)
    bp.data.extend(np.ascontiguousarray(arr, np.float32).reshape(-1))
    return bp


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def save_caffemodel(path: str | Path, spec: NetSpec, theta: np.ndarray) -> Path:
    """Write θ (flat, num_params float32) as a ``.caffemodel`` for the net ``spec``."""
    if theta.shape != (spec.num_params,):
        raise ValueError(f"expected {spec.num_params} parameters, got {theta.shape}")
    net = caffe_pb2().NetParameter()
    net.name = spec.name
    layers: dict[str, object] = {}
    for p in spec.params:
        if p.layer not in layers:
            layer = net.layer.add()
            layer.name = p.layer
            layers[p.layer] = layer
        layers[p.layer].blobs.append(_blob(theta[p.offset:p.offset + p.size], p.shape))
    path = Path(path)
    _atomic_write(path, net.SerializeToString())
    return path


def _parse(path: Path, message, what: str):
    try:
        message.ParseFromString(path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read {what} ({exc.strerror})") from exc
    except DecodeError as exc:
        raise ConfigError(f"{path}: not a valid {what} (corrupt or truncated)") from exc
    return message


def _blob_array(bp, p: ParamBlob, where: str) -> np.ndarray:
    shape = tuple(bp.shape.dim) if bp.HasField("shape") else tuple(
        d for d in (bp.num, bp.channels, bp.height, bp.width))
    if np.prod(shape, dtype=np.int64) != p.size or (bp.HasField("shape") and shape != p.shape):
        raise ConfigError(f"{where}: blob shape {shape} does not match the network's {p.shape} "
                          "(weights from another architecture?)")
    src = bp.data if len(bp.data) else bp.double_data
    if len(src) != p.size:
        raise ConfigError(f"{where}: holds {len(src)} values, the network needs {p.size}")
    return np.asarray(src, dtype=np.float32)


def load_caffemodel(path: str | Path, spec: NetSpec) -> np.ndarray:
    """Read a ``.caffemodel`` and return θ as a flat float32 vector laid out as ``spec.params``."""
    path = Path(path)
    net = _parse(path, caffe_pb2().NetParameter(), "Caffe weights file (.caffemodel)")
    by_name = {layer.name: layer for layer in net.layer if len(layer.blobs)}
    theta = np.empty(spec.num_params, np.float32)
    for p in spec.params:
        layer = by_name.get(p.layer)
        if layer is None or len(layer.blobs) <= p.index:
            raise ConfigError(f"{path}: no weights for layer '{p.layer}' blob {p.index} "
                              f"(weights from another architecture than {spec.source}?)")
        theta[p.offset:p.offset + p.size] = _blob_array(layer.blobs[p.index], p, f"{path}: layer '{p.layer}'")
    extra = set(by_name) - {p.layer for p in spec.params}
    if extra:
        raise ConfigError(f"{path}: has weights for layers not in {spec.source}: {', '.join(sorted(extra))}")
    return theta


def save_solverstate(path: str | Path, solver: FlatSolver, caffemodel: str | Path) -> Path:
    """Write the solver's iteration and history as a Caffe ``.solverstate``.

    ``caffemodel`` is recorded by file name and resolved beside the state file when loading.
    """
    state = caffe_pb2().SolverState()
    state.iter = solver.iter
    state.learned_net = Path(caffemodel).name
    state.current_step = 0
    for h in solver.history:
        for p in solver.params:
            state.history.append(_blob(h[p.offset:p.offset + p.size], p.shape))
    path = Path(path)
    _atomic_write(path, state.SerializeToString())
    return path


def load_solverstate(path: str | Path, solver: FlatSolver, spec: NetSpec) -> np.ndarray:
    """Restore ``solver`` (iteration and history) from ``path``; return θ from its weights file."""
    path = Path(path)
    state = _parse(path, caffe_pb2().SolverState(), "Caffe solver state (.solverstate)")
    want = len(solver.history) * len(solver.params)
    if len(state.history) != want:
        raise ConfigError(f"{path}: has {len(state.history)} history blobs, the {solver.spec.type} solver "
                          f"for {spec.source} needs {want}")
    history = [np.empty_like(h) for h in solver.history]
    for k, bp in enumerate(state.history):
        h, p = divmod(k, len(solver.params))
        blob = solver.params[p]
        history[h][blob.offset:blob.offset + blob.size] = _blob_array(bp, blob, f"{path}: history {k}")
    if not state.learned_net:
        raise ConfigError(f"{path}: names no weights file (learned_net)")
    theta = load_caffemodel(path.parent / Path(state.learned_net).name, spec)
    for dst, src in zip(solver.history, history):
        dst[...] = src
    solver.iter = int(state.iter)
    return theta


def snapshot_paths(prefix: str | Path, it: int) -> tuple[Path, Path]:
    """Caffe's naming: ``<prefix>_iter_<it>.caffemodel`` and ``.solverstate``."""
    base = f"{prefix}_iter_{it}"
    return Path(base + ".caffemodel"), Path(base + ".solverstate")


def save_snapshot(prefix: str | Path, spec: NetSpec, theta: np.ndarray, solver: FlatSolver) -> tuple[Path, Path]:
    """Write weights and solver state for the solver's current iteration; return both paths."""
    model, state = snapshot_paths(prefix, solver.iter)
    Path(model).parent.mkdir(parents=True, exist_ok=True)
    save_caffemodel(model, spec, theta)
    save_solverstate(state, solver, model)
    return model, state


def save_checkpoint(out_dir: Path, name: str, spec: NetSpec, theta: np.ndarray, target: np.ndarray,
                    solver: FlatSolver, state_file: str, extra: dict[str, Any]) -> Path:
    """Snapshot a run: θ, solver state and θ⁻ under ``out_dir/snapshots/<name>_iter_<n>``, then (last, atomically)
    ``out_dir/<state_file>`` naming them, with ``extra`` counters. Returns the ``.caffemodel`` path."""
    model, state = save_snapshot(out_dir / "snapshots" / name, spec, theta, solver)
    tgt = save_caffemodel(model.with_suffix(".target.caffemodel"), spec, target)
    record = {k: str(p.relative_to(out_dir)) for k, p in (("model", model), ("solverstate", state), ("target", tgt))}
    _atomic_write(out_dir / state_file, json.dumps({**record, **extra}, indent=2).encode())
    return model


def load_checkpoint(out_dir: Path, state_file: str, spec: NetSpec, solver: FlatSolver
                    ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Restore the solver from the snapshot ``out_dir/<state_file>`` names; return (θ, θ⁻, its record)."""
    path = out_dir / state_file
    try:
        record = json.loads(path.read_text())
        state, target = out_dir / record["solverstate"], out_dir / record["target"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DDQNError(f"{path}: cannot resume: no readable snapshot record ({exc})") from exc
    theta = load_solverstate(state, solver, spec)
    print(f"resumed from {state} (update {solver.iter})", flush=True)
    return theta, load_caffemodel(target, spec), record
