"""Caffe-exact solvers on flat float32 parameter vectors (what the parameter server applies).

Each solver reproduces ``caffe::SGDSolver::ApplyUpdate`` and its AdaGrad/RMSProp/Adam subclasses step for
step: learning rate from the lr policy at the current iteration → gradient clipping → weight decay
(L2/L1, times ``decay_mult``) → the type's update rule (times ``lr_mult``) → θ -= update → iter += 1.
The solver is data: a ``SolverParameter`` read from a solver prototxt with ``caffe_pb2``.

Updates run in place, one fused pass per run of equal lr_mult/decay_mult (``ddqn.kernels``; a second
pass when clipping or weight decay applies); the gradient is only read.
"""
from __future__ import annotations

import copy
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ddqn.errors import ConfigError
from ddqn.net.caffe_env import caffe_pb2
from ddqn.net.netspec import ParamBlob
from ddqn.solvers import kernels

SOLVER_TYPES = ("SGD", "AdaGrad", "RMSProp", "Adam")
LR_POLICIES = ("fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid")
_LEGACY_TYPES = {0: "SGD", 1: "Nesterov", 2: "AdaGrad", 3: "RMSProp", 4: "AdaDelta", 5: "Adam"}


@dataclass(frozen=True)
class SolverSpec:
    """The fields of a Caffe ``SolverParameter`` that the update rules use."""

    source: str
    type: str
    base_lr: float
    lr_policy: str = "fixed"
    gamma: float = 0.0
    power: float = 0.0
    stepsize: int = 0
    stepvalue: tuple[int, ...] = ()
    max_iter: int = 0
    momentum: float = 0.0  # SGD's momentum; Adam's β1
    momentum2: float = 0.999  # Adam's β2
    weight_decay: float = 0.0
    regularization_type: str = "L2"
    delta: float = 1e-8
    rms_decay: float = 0.99
    clip_gradients: float = -1.0
    text: str = ""  # the prototxt itself (what the Spark driver broadcasts)


def load_solver_spec(path: str | Path) -> SolverSpec:
    """Read and validate a solver prototxt."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read solver prototxt ({exc.strerror})") from exc
    return parse_solver_spec(text, str(path))


def parse_solver_spec(text: str, source: str) -> SolverSpec:
    """Validate solver prototxt ``text``; errors name ``source`` and the field."""
    from google.protobuf import text_format  # noqa: PLC0415

    p = caffe_pb2().SolverParameter()
    try:
        text_format.Merge(text, p)
    except text_format.ParseError as exc:
        raise ConfigError(f"{source}: not a valid Caffe solver prototxt: {exc}") from exc
    kind = p.type if p.HasField("type") or not p.HasField("solver_type") else _LEGACY_TYPES[p.solver_type]
    if kind not in SOLVER_TYPES:
        raise ConfigError(f"{source}: type: unsupported solver type '{kind}' (supported: {', '.join(SOLVER_TYPES)})")
    if not p.HasField("base_lr") or not p.base_lr > 0:
        raise ConfigError(f"{source}: base_lr: must be set and > 0")
    if not p.lr_policy:
        raise ConfigError(f"{source}: lr_policy: must be set (one of {', '.join(LR_POLICIES)})")
    if p.lr_policy not in LR_POLICIES:
        raise ConfigError(f"{source}: lr_policy: unsupported '{p.lr_policy}' (supported: {', '.join(LR_POLICIES)})")
    if p.lr_policy == "step" and p.stepsize <= 0:
        raise ConfigError(f"{source}: stepsize: must be > 0 for lr_policy 'step'")
    if p.lr_policy == "poly" and p.max_iter <= 0:
        raise ConfigError(f"{source}: max_iter: must be > 0 for lr_policy 'poly'")
    if list(p.stepvalue) != sorted(p.stepvalue):
        raise ConfigError(f"{source}: stepvalue: must be increasing")
    if p.regularization_type not in ("L1", "L2"):
        raise ConfigError(f"{source}: regularization_type: must be 'L1' or 'L2'")
    if kind not in ("SGD", "Adam") and p.momentum != 0:
        raise ConfigError(f"{source}: momentum: {kind} does not use momentum; set it to 0")
    if kind == "Adam" and not p.HasField("momentum"):  # Caffe would silently use its proto default, 0
        raise ConfigError(f"{source}: momentum: must be set for Adam (beta1, usually 0.9; Caffe's default is 0)")
    if not 0 <= p.momentum < 1:
        raise ConfigError(f"{source}: momentum: must be in [0, 1)")
    if kind != "Adam" and p.HasField("momentum2"):
        raise ConfigError(f"{source}: momentum2: only Adam uses momentum2 (beta2); remove it")
    if not 0 <= p.momentum2 < 1:
        raise ConfigError(f"{source}: momentum2: must be in [0, 1)")
    if p.weight_decay < 0:
        raise ConfigError(f"{source}: weight_decay: must be >= 0")
    if kind != "SGD" and not p.delta > 0:
        raise ConfigError(f"{source}: delta: must be > 0")
    if not 0 <= p.rms_decay <= 1:
        raise ConfigError(f"{source}: rms_decay: must be in [0, 1]")
    if p.iter_size != 1:
        raise ConfigError(f"{source}: iter_size: only 1 is supported (workers push per minibatch)")
    return SolverSpec(source=source, type=kind, base_lr=p.base_lr, lr_policy=p.lr_policy, gamma=p.gamma,
                      power=p.power, stepsize=p.stepsize, stepvalue=tuple(p.stepvalue), max_iter=p.max_iter,
                      momentum=p.momentum, momentum2=p.momentum2, weight_decay=p.weight_decay,
                      regularization_type=p.regularization_type, delta=p.delta, rms_decay=p.rms_decay,
                      clip_gradients=p.clip_gradients, text=text)


def learning_rate(spec: SolverSpec, it: int) -> np.float32:
    """Caffe's ``SGDSolver::GetLearningRate`` at iteration ``it``, with Caffe's float/double mix."""
    s, f32 = spec, np.float32
    if s.lr_policy == "fixed":
        return f32(s.base_lr)
    base, gamma, power = f32(s.base_lr), f32(s.gamma), f32(s.power)
    if s.lr_policy == "step":  # pow(float, int) is computed in double
        return f32(float(base) * float(gamma) ** (it // s.stepsize))
    if s.lr_policy == "exp":
        return f32(float(base) * float(gamma) ** it)
    if s.lr_policy == "multistep":
        return f32(float(base) * float(gamma) ** sum(it >= v for v in s.stepvalue))
    if s.lr_policy == "inv":  # float throughout
        return base * np.power(f32(1) + gamma * f32(it), -power)
    if s.lr_policy == "poly":
        return base * np.power(f32(1) - f32(it) / f32(s.max_iter), power)
    return base * (f32(1) / (f32(1) + np.exp(-gamma * (f32(it) - f32(s.stepsize)))))  # sigmoid


PARALLEL_MIN = 200_000  # floats: shorter runs are applied on one core even with threads > 1


class FlatSolver:
    """Base: Caffe's SGD family on one flat float32 vector laid out as ``params``.

    Args:
        spec: the validated solver prototxt.
        params: the net's flat layout (``NetSpec.params``): gives per-blob lr_mult/decay_mult.
        threads: cores one apply may use (>1: the ``*_par`` kernels; same result bit for bit). The thread
            pool is set up for the thread that calls :meth:`apply` first.
        parallel_min: runs shorter than this (floats) stay on one core: below ≈ 0.2 M floats waking the pool
            cost more than it saved (``make bench-ps``: 130 k floats took 4.6-5.9× a memcpy on 2 cores, 3.4× on 1).
    """

    HISTORIES = 1  # history vectors, each laid out as θ (a .solverstate holds HISTORIES × blobs, in this order)

    def __init__(self, spec: SolverSpec, params: tuple[ParamBlob, ...], threads: int = 1,
                 parallel_min: int = PARALLEL_MIN) -> None:
        self.spec = spec
        self.threads, self.parallel_min = threads, parallel_min
        self._pool_thread: int | None = None
        self.params = params
        self.size = params[-1].offset + params[-1].size
        self.iter = 0
        self.history = [np.zeros(self.size, np.float32) for _ in range(self.HISTORIES)]
        self._scratch = np.empty(self.size, np.float32)  # clipped/regularized gradient, when needed
        self._runs = _runs(params, spec.weight_decay)
        self._l1 = spec.regularization_type == "L1"
        # per run: [lo, hi), lr_mult and weight_decay × decay_mult as float32, computed once (as apply did per update)
        f32, wd = np.float32, np.float32(spec.weight_decay)
        self._scaled = [(lo, hi, f32(lr), f32(wd * f32(dm))) for lo, hi, lr, dm in self._runs]
        self._clip = f32(spec.clip_gradients)

    def copy(self) -> FlatSolver:
        """A copy with its own history (what a snapshot writes while the original keeps training)."""
        twin = copy.copy(self)
        twin.history = [h.copy() for h in self.history]
        return twin

    def rate(self) -> np.float32:
        """Learning rate for the next update."""
        return learning_rate(self.spec, self.iter)

    def apply(self, theta: np.ndarray, grad: np.ndarray, lr_divisor: int = 1) -> None:
        """One update in place: θ ← θ − update(grad). ``grad`` is only read (it may be a read-only buffer).

        Caffe's ``ApplyUpdate`` order: rate from the lr policy → gradient clipping → weight decay → the rule.
        ``lr_divisor`` divides this update's rate (float32), not the gradient: the history sees g unchanged
        (the parameter server's ``staleness_lr`` passes τ + 1).
        """
        if theta.shape != (self.size,) or grad.shape != (self.size,) or grad.dtype != np.float32:
            raise ValueError(f"expected float32 vectors of {self.size}, "
                             f"got {theta.shape} and {grad.shape} {grad.dtype}")
        if self.threads > 1 and self._pool_thread != threading.get_ident():
            self.threads = kernels.use_threads(self.threads)
            self._pool_thread = threading.get_ident()
        rate, f32 = self.rate(), np.float32
        if lr_divisor != 1:
            rate = f32(rate / f32(lr_divisor))
        scale = self._clip_scale(grad)
        for lo, hi, lr_mult, decay in self._scaled:
            g = grad[lo:hi]
            if scale != 1 or decay != 0:  # Caffe's separate clip/regularize passes, fused into one
                g = self._scratch[lo:hi]
                kernels.regularize(theta[lo:hi], grad[lo:hi], g, scale, decay, self._l1)
            self._step(theta[lo:hi], g, [h[lo:hi] for h in self.history], f32(rate * lr_mult))
        self.iter += 1

    def _clip_scale(self, grad: np.ndarray) -> np.float32:
        """Caffe's ClipGradients: scale by clip / ‖g‖ when the L2 norm exceeds ``clip_gradients``."""
        clip = self._clip
        if clip < 0:
            return np.float32(1)
        sumsq = np.float32(0)
        for p in self.params:
            sumsq = np.float32(sumsq + kernels.sum_of_squares(grad[p.offset:p.offset + p.size]))
        norm = np.sqrt(sumsq)
        return np.float32(clip / norm) if norm > clip else np.float32(1)

    def _step(self, theta: np.ndarray, grad: np.ndarray, hist: list[np.ndarray], rate: np.float32) -> None:
        """The rule on one run: ``hist`` holds the run's slice of each history vector; ``rate`` is the local rate
        (lr policy × lr_mult); ``self.iter`` is still the iteration being applied."""
        raise NotImplementedError

    def _kernel(self, serial, parallel, theta: np.ndarray, *args) -> None:
        """``serial(theta, *args)``, or ``parallel(theta, *args, threads)`` for a run of ≥ ``parallel_min`` floats."""
        if self.threads > 1 and theta.size >= self.parallel_min:
            parallel(theta, *args, self.threads)
        else:
            serial(theta, *args)


class SGDSolver(FlatSolver):
    """v ← momentum·v + local_rate·g ; θ ← θ − v."""

    def _step(self, theta, grad, hist, rate) -> None:
        self._kernel(kernels.sgd, kernels.sgd_par, theta, grad, hist[0], rate, np.float32(self.spec.momentum))


class AdaGradSolver(FlatSolver):
    """h ← h + g² ; θ ← θ − local_rate·g / (√h + δ)."""

    def _step(self, theta, grad, hist, rate) -> None:
        self._kernel(kernels.adagrad, kernels.adagrad_par, theta, grad, hist[0], rate, np.float32(self.spec.delta))


class RMSPropSolver(FlatSolver):
    """h ← ρ·h + (1−ρ)·g² ; θ ← θ − local_rate·g / (√h + δ)."""

    def _step(self, theta, grad, hist, rate) -> None:
        rho = np.float32(self.spec.rms_decay)
        self._kernel(kernels.rmsprop, kernels.rmsprop_par, theta, grad, hist[0], rate, np.float32(self.spec.delta), rho,
                     np.float32(1) - rho)


class AdamSolver(FlatSolver):
    """m ← β1·m + (1−β1)·g ; v ← β2·v + (1−β2)·g² ; θ ← θ − local_rate·c_t·m / (√v + δ),
    c_t = √(1−β2^t) / (1−β1^t) with t = iter + 1 (Caffe's AdamSolver; β1 = ``momentum``, β2 = ``momentum2``).

    ``history`` is [m, v]: Caffe's history_ holds m for every blob, then v for every blob.
    """

    HISTORIES = 2

    def __init__(self, spec: SolverSpec, params: tuple[ParamBlob, ...], threads: int = 1,
                 parallel_min: int = PARALLEL_MIN) -> None:
        super().__init__(spec, params, threads, parallel_min)
        f32 = np.float32
        b1, b2 = f32(spec.momentum), f32(spec.momentum2)
        self._betas = (b1, f32(1) - b1, b2, f32(1) - b2, f32(spec.delta))  # the kernel's constants, as float32

    def correction(self) -> np.float32:
        """c_t for the next update, as Caffe computes it: pow(float, int) and the rest in double, then float."""
        b1, b2, t = float(self._betas[0]), float(self._betas[2]), self.iter + 1
        return np.float32(np.sqrt(1.0 - b2 ** t) / (1.0 - b1 ** t))

    def _step(self, theta, grad, hist, rate) -> None:
        scale = np.float32(rate * self.correction())
        self._kernel(kernels.adam, kernels.adam_par, theta, grad, hist[0], hist[1], scale, *self._betas)


_SOLVERS = {"SGD": SGDSolver, "AdaGrad": AdaGradSolver, "RMSProp": RMSPropSolver, "Adam": AdamSolver}


def make_solver(spec: SolverSpec, params: tuple[ParamBlob, ...], threads: int = 1) -> FlatSolver:
    """The solver class for ``spec.type`` over the flat layout ``params``, applying with ``threads`` cores."""
    return _SOLVERS[spec.type](spec, params, threads)


def _runs(params: tuple[ParamBlob, ...], weight_decay: float) -> list[tuple[int, int, float, float]]:
    """Contiguous (lo, hi, lr_mult, decay_mult) runs of equal multipliers (decay_mult ignored without decay)."""
    runs: list[tuple[int, int, float, float]] = []
    for p in params:
        key = (p.lr_mult, p.decay_mult if weight_decay else 0.0)
        if runs and runs[-1][2:] == key and runs[-1][1] == p.offset:
            runs[-1] = (runs[-1][0], p.offset + p.size, *key)
        else:
            runs.append((p.offset, p.offset + p.size, *key))
    return runs
