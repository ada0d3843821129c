"""Caffe-exact solvers on flat float32 parameter vectors (what the parameter server applies).

Each solver reproduces ``caffe::SGDSolver::ApplyUpdate`` and its AdaGrad/RMSProp subclasses step for
step: learning rate from the lr policy at the current iteration → gradient clipping → weight decay
(L2/L1, times ``decay_mult``) → the type's update rule (times ``lr_mult``) → θ -= update → iter += 1.
The solver is data: a ``SolverParameter`` read from a solver prototxt with ``caffe_pb2``.

Updates run in place on preallocated buffers; ``apply`` consumes the gradient buffer as Caffe
consumes its diffs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .caffe_env import caffe_pb2
from .errors import ConfigError
from .netspec import ParamBlob

SOLVER_TYPES = ("SGD", "AdaGrad", "RMSProp")
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
    momentum: float = 0.0
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
    if kind != "SGD" and p.momentum != 0:
        raise ConfigError(f"{source}: momentum: {kind} does not use momentum; set it to 0")
    if not 0 <= p.momentum < 1:
        raise ConfigError(f"{source}: momentum: must be in [0, 1)")
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
                      momentum=p.momentum, weight_decay=p.weight_decay,
                      regularization_type=p.regularization_type, delta=p.delta, rms_decay=p.rms_decay,
                      clip_gradients=p.clip_gradients, text=text)


def learning_rate(spec: SolverSpec, it: int) -> np.float32:
    """Caffe's ``SGDSolver::GetLearningRate`` at iteration ``it``, with Caffe's float/double mix."""
    s, f32 = spec, np.float32
    base, gamma, power = f32(s.base_lr), f32(s.gamma), f32(s.power)
    if s.lr_policy == "fixed":
        return base
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


class FlatSolver:
    """Base: Caffe's SGD family on one flat float32 vector laid out as ``params``.

    Args:
        spec: the validated solver prototxt.
        params: the net's flat layout (``NetSpec.params``): gives per-blob lr_mult/decay_mult.
    """

    n_history = 1

    def __init__(self, spec: SolverSpec, params: tuple[ParamBlob, ...]) -> None:
        self.spec = spec
        self.params = params
        self.size = params[-1].offset + params[-1].size
        self.iter = 0
        self.history = [np.zeros(self.size, np.float32) for _ in range(self.n_history)]
        self._scratch = np.empty(self.size, np.float32)
        self._runs = _runs(params)

    def rate(self) -> np.float32:
        """Learning rate for the next update."""
        return learning_rate(self.spec, self.iter)

    def apply(self, theta: np.ndarray, grad: np.ndarray) -> None:
        """One update: θ ← θ − update(grad). ``grad`` is used as scratch and left modified."""
        if theta.shape != (self.size,) or grad.shape != (self.size,):
            raise ValueError(f"expected vectors of {self.size} floats, got {theta.shape} and {grad.shape}")
        rate = self.rate()
        self._clip(grad)
        self._regularize(theta, grad)
        upd = self._update(grad, rate)
        np.subtract(theta, upd, out=theta)
        self.iter += 1

    def _clip(self, grad: np.ndarray) -> None:
        clip = np.float32(self.spec.clip_gradients)
        if clip < 0:
            return
        norm = np.float32(math.sqrt(float(np.dot(grad, grad))))
        if norm > clip:
            np.multiply(grad, np.float32(clip / norm), out=grad)

    def _regularize(self, theta: np.ndarray, grad: np.ndarray) -> None:
        wd = np.float32(self.spec.weight_decay)
        if wd == 0:
            return
        tmp = self._scratch
        for lo, hi, _, decay in self._runs:
            local = np.float32(wd * np.float32(decay))
            if local == 0:
                continue
            src = theta[lo:hi] if self.spec.regularization_type == "L2" else np.sign(theta[lo:hi])
            np.multiply(src, local, out=tmp[lo:hi])
            np.add(grad[lo:hi], tmp[lo:hi], out=grad[lo:hi])

    def _scale_by_local_rate(self, vec: np.ndarray, rate: np.float32) -> None:
        for lo, hi, lr_mult, _ in self._runs:
            np.multiply(vec[lo:hi], np.float32(rate * np.float32(lr_mult)), out=vec[lo:hi])

    def _update(self, grad: np.ndarray, rate: np.float32) -> np.ndarray:
        raise NotImplementedError

    def _adaptive_step(self, grad: np.ndarray, rate: np.float32) -> np.ndarray:
        """AdaGrad's and RMSProp's common tail: local_rate · g / (√h + δ), into the scratch buffer."""
        u = self._scratch
        np.sqrt(self.history[0], out=u)
        np.add(u, np.float32(self.spec.delta), out=u)
        np.divide(grad, u, out=u)
        self._scale_by_local_rate(u, rate)
        return u


class SGDSolver(FlatSolver):
    """v ← momentum·v + local_rate·g ; θ ← θ − v."""

    def _update(self, grad: np.ndarray, rate: np.float32) -> np.ndarray:
        v = self.history[0]
        self._scale_by_local_rate(grad, rate)
        np.multiply(v, np.float32(self.spec.momentum), out=v)
        np.add(v, grad, out=v)
        return v


class AdaGradSolver(FlatSolver):
    """h ← h + g² ; θ ← θ − local_rate·g / (√h + δ)."""

    def _update(self, grad: np.ndarray, rate: np.float32) -> np.ndarray:
        h, u = self.history[0], self._scratch
        np.multiply(grad, grad, out=u)
        np.add(h, u, out=h)
        return self._adaptive_step(grad, rate)


class RMSPropSolver(FlatSolver):
    """h ← ρ·h + (1−ρ)·g² ; θ ← θ − local_rate·g / (√h + δ)."""

    def _update(self, grad: np.ndarray, rate: np.float32) -> np.ndarray:
        h, u = self.history[0], self._scratch
        rho = np.float32(self.spec.rms_decay)
        np.multiply(grad, grad, out=u)
        np.multiply(u, np.float32(1) - rho, out=u)
        np.multiply(h, rho, out=h)
        np.add(h, u, out=h)
        return self._adaptive_step(grad, rate)


_SOLVERS = {"SGD": SGDSolver, "AdaGrad": AdaGradSolver, "RMSProp": RMSPropSolver}


def make_solver(spec: SolverSpec, params: tuple[ParamBlob, ...]) -> FlatSolver:
    """The solver class for ``spec.type`` over the flat layout ``params``."""
    return _SOLVERS[spec.type](spec, params)


def _runs(params: tuple[ParamBlob, ...]) -> list[tuple[int, int, float, float]]:
    """Contiguous (lo, hi, lr_mult, decay_mult) runs of equal multipliers."""
    runs: list[tuple[int, int, float, float]] = []
    for p in params:
        if runs and runs[-1][2:] == (p.lr_mult, p.decay_mult) and runs[-1][1] == p.offset:
            runs[-1] = (runs[-1][0], p.offset + p.size, p.lr_mult, p.decay_mult)
        else:
            runs.append((p.offset, p.offset + p.size, p.lr_mult, p.decay_mult))
    return runs
