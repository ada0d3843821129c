"""The paper net's Q-values and gradient on a fixed input, against a reference stored from an earlier build.

The parity tests (test_qnet, test_solvers) compare ddqn with pycaffe on whatever BLAS Caffe runs, so a BLAS that
computes wrong numbers would pass them. This check does not depend on the BLAS: θ, states, actions and targets
come from numpy's seeded generator (no Caffe filler), and the results must match what the build recorded in
``tests/data/paper_net_reference.npz`` (Caffe 9b89154 on Debian's OpenBLAS 0.3.21, one thread) within float32
summation-order tolerances:

* Q-values: |ΔQ| ≤ 1e-5 · max|Q|;
* loss: relative 1e-5;
* gradient, per parameter blob: |Δg| ≤ 1e-4 · max|g| of that blob at 2,048 stored entries, and its L2 norm within
  relative 1e-5.

With Intel MKL 2026.2 and Debian's BLIS 0.9.0 swapped in for OpenBLAS (``ddqn.bench.blas``'s interposition, one
thread, Intel Xeon), the largest difference was 7 % of its bound (Q-values; the gradient's at most 0.8 %), and
PyPI's OpenBLAS 0.3.34 gave identical numbers. ``test_the_tolerance_sees_a_small_error`` shows the bounds catch a
0.01 % change in one layer's weights.

``python tests/test_reference.py --write`` records a new reference (only after a change meant to alter the numbers).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ddqn.config import PROTOTXT_DIR
from ddqn.net.netspec import load_netspec
from ddqn.net.qnet import QNetwork

REFERENCE = Path(__file__).parent / "data" / "paper_net_reference.npz"
NET = PROTOTXT_DIR / "snake_paper.prototxt"
SAMPLED = 2048  # gradient entries stored (the full gradient is 228,132 floats)
TOL = {"q": 1e-5, "loss": 1e-5, "grad_entry": 1e-4, "grad_norm": 1e-5}


def _inputs(spec) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """θ (fan-in scaled normal weights, small biases), 32 uint8 states, actions and targets: numpy only."""
    rng = np.random.default_rng(20261126)
    theta = np.empty(spec.num_params, np.float32)
    for p in spec.params:
        fan_in = p.size // p.shape[0] if len(p.shape) > 1 else 1
        scale = 1 / np.sqrt(fan_in) if len(p.shape) > 1 else 0.01
        theta[p.offset:p.offset + p.size] = rng.standard_normal(p.size) * scale
    n = spec.batch_size
    states = rng.integers(0, 256, (n, *spec.state_shape), dtype=np.uint8)
    return theta, states, rng.integers(0, spec.num_actions, n), rng.standard_normal(n).astype(np.float32)


def _blob_norms(spec, grad: np.ndarray) -> np.ndarray:
    """The L2 norm of each parameter blob's part of ``grad`` (float64)."""
    return np.array([np.linalg.norm(grad[p.offset:p.offset + p.size].astype(np.float64)) for p in spec.params])


def compute() -> dict[str, np.ndarray]:
    """Q-values, loss, sampled gradient entries and per-blob gradient norms (plain and error-clipped loss)."""
    spec = load_netspec(NET)
    theta, states, actions, targets = _inputs(spec)
    net = QNetwork(spec)
    net.set_params(theta)
    out = {"q": net.q_values(states).copy(), "index": np.random.default_rng(1).choice(spec.num_params, SAMPLED,
                                                                                       replace=False)}
    for name, clip in (("plain", 0.0), ("clipped", 1.0)):
        loss, grad = net.loss_and_grad(states, actions, targets, error_clip=clip)
        out[f"{name}_loss"] = np.float64(loss)
        out[f"{name}_grad"] = grad[out["index"]].copy()
        out[f"{name}_norms"] = _blob_norms(spec, grad)
        out[f"{name}_max"] = np.array([np.abs(grad[p.offset:p.offset + p.size]).max() for p in spec.params])
    return out


def differences(got: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> dict[str, float]:
    """Each compared quantity's largest difference as a fraction of its tolerance bound (≤ 1 passes)."""
    spec = load_netspec(NET)
    blob = np.searchsorted([p.offset for p in spec.params], ref["index"], side="right") - 1  # entry → its blob
    out = {"q": float(np.abs(got["q"] - ref["q"]).max() / (TOL["q"] * np.abs(ref["q"]).max()))}
    for name in ("plain", "clipped"):
        out[f"{name}_loss"] = float(abs(got[f"{name}_loss"] - ref[f"{name}_loss"])
                                    / (TOL["loss"] * abs(ref[f"{name}_loss"])))
        bound = TOL["grad_entry"] * ref[f"{name}_max"][blob]
        out[f"{name}_grad"] = float((np.abs(got[f"{name}_grad"] - ref[f"{name}_grad"]) / bound).max())
        out[f"{name}_norms"] = float((np.abs(got[f"{name}_norms"] - ref[f"{name}_norms"])
                                      / (TOL["grad_norm"] * ref[f"{name}_norms"])).max())
    return out


def _reference() -> dict[str, np.ndarray]:
    with np.load(REFERENCE) as f:
        return dict(f)


def test_paper_net_matches_the_stored_reference() -> None:
    ref = _reference()
    got = compute()
    assert np.array_equal(got["index"], ref["index"])
    worst = differences(got, ref)
    assert max(worst.values()) <= 1.0, worst  # fractions of the stated bounds


def test_the_tolerance_sees_a_small_error() -> None:
    """A 0.01 % change in conv2's weights (as a wrong BLAS kernel on one layer might make) fails the check."""
    spec = load_netspec(NET)
    theta, states, actions, targets = _inputs(spec)
    conv2 = next(p for p in spec.params if p.layer == "conv2" and p.index == 0)
    theta[conv2.offset:conv2.offset + conv2.size] *= np.float32(1.0001)
    net = QNetwork(spec)
    net.set_params(theta)
    ref = _reference()
    _, grad = net.loss_and_grad(states, actions, targets)
    got = {**ref, "q": net.q_values(states), "plain_grad": grad[ref["index"]], "plain_norms": _blob_norms(spec, grad)}
    worst = differences(got, ref)
    assert worst["q"] > 1 and worst["plain_grad"] > 1 and worst["plain_norms"] > 1, worst


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        REFERENCE.parent.mkdir(exist_ok=True)
        np.savez(REFERENCE, **compute())
        print(f"wrote {REFERENCE}")
    else:
        print({k: f"{v:.3g}" for k, v in differences(compute(), _reference()).items()})
