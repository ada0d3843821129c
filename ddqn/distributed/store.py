"""The parameter store: θ, the target parameters θ⁻ and the Caffe-exact solver state, with no socket.

Every change and every consistent read happens under one lock, so the server thread (which applies
gradients) and the driver thread (which snapshots and evaluates) never see a half-applied update.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ddqn.solvers import kernels
from ddqn.solvers.flat import FlatSolver

if TYPE_CHECKING:
    from ddqn.distributed.server import ServerOptions
    from ddqn.distributed.stats import StatsView


@dataclass(frozen=True)
class StoreCopy:
    """A consistent copy of the store: θ and θ⁻ (flat float32), the solver, and their versions."""

    theta: np.ndarray
    target: np.ndarray
    solver: FlatSolver
    version: int
    target_version: int


class ParameterStore:
    """θ, θ⁻ ← θ every ``target_update`` updates, and the solver that applies gradients to θ.

    Args:
        solver: the Caffe-exact solver; its iteration count is the store's version (it continues on resume).
        theta, target: θ and θ⁻, flat float32 of the net's parameter count (owned by the store from now on).
        target_update: C, in applied updates.
        max_staleness: K; :meth:`admits` refuses a gradient more than K versions old (Gorila's discarding of
            stale gradients). 0: off, every gradient is admitted.
        staleness_lr: divide the learning rate (not the gradient, so AdaGrad/RMSProp histories see g unchanged) of
            an update with a gradient of staleness τ by τ + 1 (staleness-aware async SGD, Zhang et al. 2016).
        dc_lambda: λ of delay compensation (DC-ASGD, Zheng et al. 2017): a stale gradient g computed on θ_fetched
            is applied as g + λ·g⊙g⊙(θ − θ_fetched), when :meth:`apply` is given θ_fetched. 0: off.
    """

    def __init__(self, solver: FlatSolver, theta: np.ndarray, target: np.ndarray, target_update: int,
                 max_staleness: int = 0, staleness_lr: bool = False, dc_lambda: float = 0.0) -> None:
        if theta.shape != target.shape or theta.dtype != np.float32:
            raise ValueError("theta and target must be flat float32 vectors of the same size")
        self.solver, self.theta, self.target, self.target_update = solver, theta, target, target_update
        self.num_params = theta.size
        if max_staleness < 0:
            raise ValueError("max_staleness must be >= 0 (0: off)")
        self.max_staleness, self.staleness_lr = max_staleness, staleness_lr
        if dc_lambda < 0:
            raise ValueError("dc_lambda must be >= 0 (0: off)")
        self.dc_lambda = np.float32(dc_lambda)
        self._compensated = np.empty(self.num_params, np.float32) if dc_lambda else None
        self.version = solver.iter  # updates applied (continues across --resume)
        self.target_version = 0  # bumped each time θ⁻ ← θ
        self.lock = threading.Lock()
        self._published: tuple[int, np.ndarray] | None = None
        self._published_target: tuple[int, np.ndarray] | None = None
        self._published_both: tuple[int, int, np.ndarray] | None = None

    def admits(self, staleness: int) -> bool:
        """Whether a gradient ``staleness`` versions old may be applied (``max_staleness``; always, when off)."""
        return not 0 < self.max_staleness < staleness

    def apply(self, grad: np.ndarray, staleness: int = 0, fetched: np.ndarray | None = None) -> int:
        """θ ← solver step on ``grad`` (num_params float32, only read); θ⁻ ← θ every C updates. Returns the version.

        With ``staleness_lr`` the step's learning rate is divided by ``staleness`` + 1. With ``dc_lambda`` and
        ``fetched`` (the θ the gradient was computed on) a stale gradient is delay-compensated first.
        """
        with self.lock:
            if self._compensated is not None and fetched is not None and staleness > 0:
                kernels.delay_compensate(grad, self.theta, fetched, self.dc_lambda, self._compensated)
                grad = self._compensated
            self.solver.apply(self.theta, grad, staleness + 1 if self.staleness_lr else 1)
            self.version += 1
            if self.version % self.target_update == 0:
                self.target[...] = self.theta
                self.target_version += 1
            return self.version

    def published(self) -> tuple[int, np.ndarray]:
        """(version, θ): an immutable copy per version, made once and then sent without further copies."""
        with self.lock:
            if self._published is None or self._published[0] != self.version:
                self._published = (self.version, self.theta.copy())
            return self._published

    def published_target(self) -> tuple[int, np.ndarray]:
        """(target version, θ⁻), copied once per target version like :meth:`published`."""
        with self.lock:
            if self._published_target is None or self._published_target[0] != self.target_version:
                self._published_target = (self.target_version, self.target.copy())
            return self._published_target

    def published_both(self) -> tuple[int, int, np.ndarray]:
        """(version, target version, [θ | θ⁻]): one immutable buffer per version pair, for a FETCH that needs
        both (so repeated FETCHes share it instead of each concatenating 2 × num_params floats)."""
        with self.lock:
            if self._published_both is None or self._published_both[:2] != (self.version, self.target_version):
                self._published_both = (self.version, self.target_version, np.concatenate([self.theta, self.target]))
            return self._published_both

    def load(self, theta: np.ndarray, target: np.ndarray, history: list[np.ndarray], iteration: int, version: int,
             target_version: int) -> None:
        """Replace the whole state (a shard rolled back to a snapshot's cut): θ, θ⁻ and the solver's history and
        iteration count from it; the version counters continue at ``version``/``target_version`` (new numbers, so
        no worker takes the θ it holds for the restored one). The published copies are dropped."""
        with self.lock:
            self.theta[...] = theta
            self.target[...] = target
            for mine, h in zip(self.solver.history, history, strict=True):
                mine[...] = h
            self.solver.iter = iteration
            self.version, self.target_version = version, target_version
            self._published = self._published_target = self._published_both = None

    def copy(self) -> StoreCopy:
        """A consistent copy for a snapshot (≈ 3 memcpys under the lock; write files after releasing it)."""
        with self.lock:
            return StoreCopy(self.theta.copy(), self.target.copy(), self.solver.copy(), self.version,
                             self.target_version)

    # -- the lifecycle the driver runs every store through (a sharded one, ``shards.group.ShardGroup``, has
    # processes to start, watch and end; one store in the driver's process has none) --------------------------
    def start(self, secret: bytes, options: ServerOptions, sc=None) -> tuple[str, ...]:
        """Nothing to start: no shard addresses (the server's WELCOME stays as it is)."""
        return ()

    def where(self) -> tuple[tuple[str, ...], int]:
        """No shards: no addresses (version 0)."""
        return (), 0

    def supervise(self) -> None:
        """Nothing to watch: the store lives in the driver's process."""

    def request_stop(self) -> None:
        """Nothing to tell: the driver's server tells the workers."""

    def close(self) -> None:
        """Nothing to end."""

    def counted(self, view: StatsView) -> StatsView:
        """The driver's counters as they are: its server applies the gradients, so it counts them."""
        return view

    def summary(self) -> dict[str, Any]:
        """Nothing beyond the driver's summary."""
        return {}
