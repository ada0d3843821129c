"""Fused single-pass solver updates on flat float32 vectors (numba), Caffe's arithmetic element by element.

Caffe applies an update as a chain of BLAS-like passes over the whole vector (regularize, square,
accumulate, square root, divide, scale, subtract); numpy in-place ufuncs mirror that and read/write the
vectors ~8 times. These kernels do the same float32 operations in the same order for each element in one
pass (θ, g, h read once; θ, h written once), so results are identical and a step costs a few memcpys.

Arguments are equal-length slices (θ, g, h of one run of equal lr_mult/decay_mult) and float32 scalars
(``np.float32``, so that no operation is promoted to double). Loops start at 0 and the error model is
numpy's (no zero-division branch), which lets LLVM vectorise them.

The ``*_par`` variants split the vector into ``chunks`` contiguous pieces run by numba's thread pool (a
parameter server sharded over cores, as DistBelief shards it over machines); every element gets exactly
the same operations, so the result is bit-identical to the one-thread kernel. They need a threadsafe
threading layer (OpenMP or TBB, ``threadsafe``) because the server calls them from its own thread. OpenMP's
default wait policy is kept: a pool thread spins briefly after a call, then sleeps (measured: with
``OMP_WAIT_POLICY=PASSIVE`` the wake-up made a 2-core apply of 130k-230k floats slower than one core).
"""
from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

_jit = njit(cache=True, nogil=True, error_model="numpy")
_pjit = njit(cache=True, nogil=True, error_model="numpy", parallel=True)


def use_threads(threads: int) -> int:
    """Prepare numba's thread pool for ``threads``-way kernels in the calling thread; returns the count used."""
    numba.config.THREADING_LAYER = "threadsafe"
    threads = max(1, min(threads, numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(threads)
    return threads


@_jit
def regularize(theta, grad, out, scale, decay, l1):
    """Caffe's ClipGradients scale, then Regularize, into ``out``: g·scale + decay·θ (L2) or + decay·sign(θ) (L1)."""
    for i in range(theta.size):
        g = grad[i] * scale if scale != 1 else grad[i]
        if l1:
            t = theta[i]
            s = np.float32(1) if t > 0 else (np.float32(-1) if t < 0 else np.float32(0))
            out[i] = decay * s + g
        else:
            out[i] = decay * theta[i] + g


@_jit
def delay_compensate(grad, theta, fetched, lam, out):
    """DC-ASGD (Zheng et al. 2017): g + λ·g⊙g⊙(θ − θ_fetched) into ``out``, float32, element by element."""
    for i in range(grad.size):
        g = grad[i]
        out[i] = g + lam * g * g * (theta[i] - fetched[i])


@_jit
def sgd(theta, grad, hist, rate, momentum):
    """v ← rate·g + momentum·v ; θ ← θ − v."""
    for i in range(theta.size):
        v = rate * grad[i] + momentum * hist[i]
        hist[i] = v
        theta[i] = theta[i] - v


@_jit
def adagrad(theta, grad, hist, rate, delta):
    """h ← h + g² ; θ ← θ − rate·(g / (√h + δ))."""
    for i in range(theta.size):
        g = grad[i]
        h = hist[i] + g * g
        hist[i] = h
        theta[i] = theta[i] - (g / (np.sqrt(h) + delta)) * rate


@_jit
def rmsprop(theta, grad, hist, rate, delta, rho, one_minus_rho):
    """h ← ρ·h + (1−ρ)·g² ; θ ← θ − rate·(g / (√h + δ))."""
    for i in range(theta.size):
        g = grad[i]
        h = hist[i] * rho + (g * g) * one_minus_rho
        hist[i] = h
        theta[i] = theta[i] - (g / (np.sqrt(h) + delta)) * rate


@_jit
def adam(theta, grad, m, v, scale, beta1, one_minus_beta1, beta2, one_minus_beta2, delta):
    """m ← (1−β1)·g + β1·m ; v ← (1−β2)·g² + β2·v ; θ ← θ − scale·(m / (√v + δ)), scale = local_rate·c_t."""
    for i in range(theta.size):
        g = grad[i]
        mi = one_minus_beta1 * g + beta1 * m[i]
        vi = one_minus_beta2 * (g * g) + beta2 * v[i]
        m[i] = mi
        v[i] = vi
        theta[i] = theta[i] - scale * (mi / (np.sqrt(vi) + delta))


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc"})
def norm_squared(x):
    """Σ x² accumulated in float64 (no finite float32 vector overflows it); NaN or ±inf if any element is.

    The sum may be reassociated (``fastmath`` reassoc only: NaN and ±inf still propagate), so it vectorises instead
    of waiting on one add per element; it validates a gradient and never enters θ, so its last bits may differ from
    a sequential sum's."""
    acc = 0.0
    for i in range(x.size):
        v = np.float64(x[i])
        acc += v * v
    return acc


@_jit
def sum_of_squares(x):
    """Σ x² accumulated in float32, as Caffe's sumsq_diff."""
    acc = np.float32(0)
    for i in range(x.size):
        acc += x[i] * x[i]
    return acc


@_pjit
def adagrad_par(theta, grad, hist, rate, delta, chunks):
    """:func:`adagrad` over ``chunks`` contiguous pieces in parallel."""
    step = (theta.size + chunks - 1) // chunks
    for c in prange(chunks):
        lo, hi = c * step, min(theta.size, (c + 1) * step)
        adagrad(theta[lo:hi], grad[lo:hi], hist[lo:hi], rate, delta)


@_pjit
def rmsprop_par(theta, grad, hist, rate, delta, rho, one_minus_rho, chunks):
    """:func:`rmsprop` over ``chunks`` contiguous pieces in parallel."""
    step = (theta.size + chunks - 1) // chunks
    for c in prange(chunks):
        lo, hi = c * step, min(theta.size, (c + 1) * step)
        rmsprop(theta[lo:hi], grad[lo:hi], hist[lo:hi], rate, delta, rho, one_minus_rho)


@_pjit
def sgd_par(theta, grad, hist, rate, momentum, chunks):
    """:func:`sgd` over ``chunks`` contiguous pieces in parallel."""
    step = (theta.size + chunks - 1) // chunks
    for c in prange(chunks):
        lo, hi = c * step, min(theta.size, (c + 1) * step)
        sgd(theta[lo:hi], grad[lo:hi], hist[lo:hi], rate, momentum)


@_pjit
def adam_par(theta, grad, m, v, scale, beta1, one_minus_beta1, beta2, one_minus_beta2, delta, chunks):
    """:func:`adam` over ``chunks`` contiguous pieces in parallel."""
    step = (theta.size + chunks - 1) // chunks
    for c in prange(chunks):
        lo, hi = c * step, min(theta.size, (c + 1) * step)
        adam(theta[lo:hi], grad[lo:hi], m[lo:hi], v[lo:hi], scale, beta1, one_minus_beta1, beta2, one_minus_beta2,
             delta)
