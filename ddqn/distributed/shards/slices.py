"""Slices of the flat parameter vector for a sharded parameter server (issue 31): which shard owns which floats.

With ``ps_shards: S`` the vector θ (and θ⁻, and the solver's history) is cut into S contiguous slices of nearly
equal size; shard ``i`` owns ``θ[lo_i:hi_i]`` and applies its slice of every gradient with the same Caffe-exact
solver over its part of the layout (:func:`shard_solver`). Every solver rule is element by element (the learning-rate
policy and Adam's bias correction depend only on the iteration count, which every shard keeps), so S shards that
apply the same gradients hold, together, exactly the θ one server would: bit for bit. The one rule that is not
element by element, Caffe's ``clip_gradients`` (a norm over the whole gradient), is refused with more than one
shard.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from ddqn.errors import ConfigError
from ddqn.net.netspec import ParamBlob
from ddqn.solvers.flat import FlatSolver, SolverSpec, make_solver


def bounds(num_params: int, shards: int) -> list[tuple[int, int]]:
    """The S slices ``[lo, hi)`` of a vector of ``num_params`` floats: contiguous, in order, sizes differing by at
    most one float."""
    if not 1 <= shards <= num_params:
        raise ConfigError(f"ps_shards: {shards} is not between 1 and the net's {num_params:,} parameters")
    cuts = [num_params * i // shards for i in range(shards + 1)]
    return list(zip(cuts[:-1], cuts[1:]))


def layout_slice(params: tuple[ParamBlob, ...], lo: int, hi: int) -> tuple[ParamBlob, ...]:
    """The part of the flat layout ``params`` that lies in ``[lo, hi)``, with offsets from ``lo``. A blob cut by a
    bound keeps its name, index and multipliers, and gets a flat shape of the floats it keeps."""
    out = []
    for p in params:
        a, b = max(p.offset, lo), min(p.offset + p.size, hi)
        if a < b:
            shape = p.shape if (a, b) == (p.offset, p.offset + p.size) else (b - a,)
            out.append(replace(p, shape=shape, offset=a - lo, size=b - a))
    if not out:
        raise ValueError(f"no parameters in [{lo}, {hi})")
    return tuple(out)


def shard_solver(spec: SolverSpec, params: tuple[ParamBlob, ...], lo: int, hi: int, threads: int = 1) -> FlatSolver:
    """The solver of the shard that owns ``[lo, hi)`` of the layout ``params`` (a fresh history; the iteration
    count is set by the caller, as for one server)."""
    whole = (lo, hi) == (0, params[-1].offset + params[-1].size)
    if not whole and spec.clip_gradients >= 0:
        raise ConfigError(f"{spec.source}: clip_gradients needs the whole gradient's norm, so it cannot be used "
                          "with ps_shards > 1")
    return make_solver(spec, layout_slice(params, lo, hi), threads)


def slice_history(solver: FlatSolver, lo: int, hi: int) -> list[np.ndarray]:
    """A whole solver's history vectors cut to ``[lo, hi)`` (what a shard restores from a snapshot)."""
    return [h[lo:hi].copy() for h in solver.history]
