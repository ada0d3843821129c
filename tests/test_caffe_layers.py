"""Caffe's layers as ddqn's speed patches left them: max pooling's forward (``0003-maxpool-forward.patch``) and
ReLU's backward (``0004-relu-backward.patch``), both in ``ddqn/net/caffe_patches/``.

ReLU: the diff must be Caffe's expression ``top_diff · ((x > 0) + negative_slope · (x ≤ 0))`` in float32, bit for
bit, for every slope and every x (±0, ±inf, NaN), in place and not.

Max pooling: the patch must not change a bit: each output is the first element of its window, in row-major order, that is
strictly greater than every one before it and than −FLT_MAX (−FLT_MAX and index −1 when there is none), and the
mask (the index the backward routes the gradient to) is that element's. A numpy transcription of Caffe's original
loop is the reference, on data with ties, −inf, NaN and padding, for the internal mask and the ``top[1]`` mask; the
gradient, a pure routing, is checked against central differences on data without ties.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ddqn.net.caffe_env import caffe

FLT_MAX = np.finfo(np.float32).max
# (kernel, stride, pad) as pooling_param text: the nets' 2×2/2, overlapping windows, padding, a rectangular kernel.
POOLS = {
    "k2s2": "kernel_size: 2 stride: 2",
    "k3s2_overlap": "kernel_size: 3 stride: 2",
    "k3s2p1": "kernel_size: 3 stride: 2 pad: 1",
    "rect": "kernel_h: 2 kernel_w: 3 stride_h: 1 stride_w: 2 pad_h: 0 pad_w: 1",
}
SHAPE = (2, 3, 7, 6)


def _net(tmp_path: Path, pool: str, top_mask: bool = False) -> object:
    """A TRAIN net of one Input and one MAX Pooling (``pool``), optionally with the mask as a second top."""
    tops = "top: 'pool' top: 'mask'" if top_mask else "top: 'pool'"
    text = ("force_backward: true\n"
            "layer { name: 'data' type: 'Input' top: 'data' input_param { shape { "
            + " ".join(f"dim: {d}" for d in SHAPE) + " } } }\n"
            f"layer {{ name: 'pool' type: 'Pooling' bottom: 'data' {tops}\n"
            f"  pooling_param {{ pool: MAX {pool} }} }}\n")
    path = tmp_path / f"pool_{abs(hash(text))}.prototxt"
    path.write_text(text)
    cf = caffe()
    return cf.Net(str(path), cf.TRAIN)


def _param(pool: str, name: str, default: int) -> tuple[int, int]:
    """(h, w) of a pooling field from its text: ``name`` for both (``kernel_size``, ``stride``, ``pad``), or
    ``<stem>_h``/``<stem>_w``."""
    words = pool.split()
    get = {words[i].rstrip(":"): int(words[i + 1]) for i in range(0, len(words), 2)}
    stem, both = name.removesuffix("_size"), get.get(name, default)
    return get.get(f"{stem}_h", both), get.get(f"{stem}_w", both)


def reference(x: np.ndarray, pool: str) -> tuple[np.ndarray, np.ndarray]:
    """Caffe's original CPU max pooling loop, transcribed: (top, mask) for ``x`` of shape (N, C, H, W)."""
    (kh, kw), (sh, sw), (ph, pw) = _param(pool, "kernel_size", 1), _param(pool, "stride", 1), _param(pool, "pad", 0)
    n, c, h, w = x.shape
    oh = int(np.ceil((h + 2 * ph - kh) / sh)) + 1  # Caffe rounds up, then drops a window that starts in the padding
    ow = int(np.ceil((w + 2 * pw - kw) / sw)) + 1
    if (ph or pw) and (oh - 1) * sh >= h + ph:
        oh -= 1
    if (ph or pw) and (ow - 1) * sw >= w + pw:
        ow -= 1
    top = np.full((n, c, oh, ow), -FLT_MAX, np.float32)
    mask = np.full((n, c, oh, ow), -1, np.int64)
    for i, j, y, z in np.ndindex(n, c, oh, ow):
        hs, ws = y * sh - ph, z * sw - pw
        he, we = min(hs + kh, h), min(ws + kw, w)
        for a in range(max(hs, 0), he):
            for b in range(max(ws, 0), we):
                if x[i, j, a, b] > top[i, j, y, z]:
                    top[i, j, y, z] = x[i, j, a, b]
                    mask[i, j, y, z] = a * w + b
    return top, mask


def _hard_data(rng: np.random.Generator) -> np.ndarray:
    """Small integers (many ties), zeros as after a ReLU, −inf, −FLT_MAX and NaN; windows without a maximum
    (all −inf) in planes other than the first."""
    x = rng.integers(-2, 3, SHAPE).astype(np.float32)
    x[0, 0] = 0.0
    x[0, 1, :3] = -np.inf
    x[0, 2, :2] = -FLT_MAX
    x[1, 0].flat[rng.choice(x[1, 0].size, 7, replace=False)] = np.nan
    x[1, 1] = -np.inf
    return x


@pytest.mark.parametrize("name", sorted(POOLS))
def test_outputs_and_masks_are_caffes_bit_for_bit(tmp_path, name):
    rng = np.random.default_rng(11)
    with_mask = _net(tmp_path, POOLS[name], top_mask=True)
    internal = _net(tmp_path, POOLS[name])
    for x in (_hard_data(rng), rng.standard_normal(SHAPE).astype(np.float32)):
        want_top, want_mask = reference(x, POOLS[name])
        for net in (with_mask, internal):
            net.blobs["data"].data[...] = x
            net.forward()
            got = net.blobs["pool"].data
            assert got.shape == want_top.shape
            assert np.array_equal(got.view(np.uint32), want_top.view(np.uint32)), name  # bits, NaN-free outputs
        assert np.array_equal(with_mask.blobs["mask"].data, want_mask.astype(np.float32)), name
        # the internal mask is visible through the backward: each output's gradient lands on its mask's element.
        # Caffe's backward (unpatched) adds a window without a maximum (mask −1: all −inf or NaN) to the element
        # before its plane; the data keeps the first plane clear of such windows, so that stays inside the blob.
        r = rng.standard_normal(want_top.shape).astype(np.float32)
        internal.blobs["pool"].diff[...] = r
        internal.backward()
        want_diff = np.zeros(SHAPE, np.float64)
        plane = SHAPE[2] * SHAPE[3]
        for i, j, y, z in np.ndindex(*want_top.shape):
            want_diff.flat[(i * SHAPE[1] + j) * plane + want_mask[i, j, y, z]] += r[i, j, y, z]
        assert np.allclose(internal.blobs["data"].diff, want_diff, rtol=0, atol=1e-6), name


@pytest.mark.parametrize("name", ["k2s2", "k3s2p1"])
def test_gradient_matches_central_differences(tmp_path, name):
    """Without ties, max pooling is locally linear: L = Σ R·top has exact central differences for a small ε."""
    net = _net(tmp_path, POOLS[name])
    rng = np.random.default_rng(5)
    x = rng.permutation(np.arange(np.prod(SHAPE), dtype=np.float32)).reshape(SHAPE) * np.float32(0.25)  # distinct
    r = rng.standard_normal(net.blobs["pool"].data.shape)

    def loss(v: np.ndarray) -> float:
        net.blobs["data"].data[...] = v
        net.forward()
        return float(np.dot(net.blobs["pool"].data.ravel().astype(np.float64), r.ravel()))

    loss(x)
    net.blobs["pool"].diff[...] = r
    net.backward()
    grad = net.blobs["data"].diff.copy()
    eps = np.float32(0.05)  # below half the gap between distinct values: no window changes its maximum
    numeric = np.empty_like(grad, dtype=np.float64)
    for i in np.ndindex(SHAPE):
        up, down = x.copy(), x.copy()
        up[i] += eps
        down[i] -= eps
        numeric[i] = (loss(up) - loss(down)) / (2 * float(eps))
    assert np.allclose(grad, numeric, rtol=1e-4, atol=1e-4), name


def _relu_net(tmp_path: Path, slope: float, in_place: bool) -> object:
    """Input → Power (identity, so the ReLU's bottom needs a gradient) → ReLU, in place or not."""
    top = "y" if in_place else "r"
    text = ("force_backward: true\n"
            "layer { name: 'data' type: 'Input' top: 'data' input_param { shape { dim: 2 dim: 3 dim: 5 dim: 7 } } }\n"
            "layer { name: 'id' type: 'Power' bottom: 'data' top: 'y' }\n"
            f"layer {{ name: 'relu' type: 'ReLU' bottom: 'y' top: '{top}' relu_param {{ negative_slope: {slope} }} }}\n")
    path = tmp_path / f"relu_{abs(hash(text))}.prototxt"
    path.write_text(text)
    cf = caffe()
    return cf.Net(str(path), cf.TRAIN)


@pytest.mark.parametrize("in_place", [True, False], ids=["in place", "apart"])
@pytest.mark.parametrize("slope", [0.0, 0.01, -0.5, 3.0])
def test_relu_backward_is_caffes_expression_bit_for_bit(tmp_path, slope, in_place):
    net = _relu_net(tmp_path, slope, in_place)
    top = "y" if in_place else "r"
    rng = np.random.default_rng(2)
    shape = net.blobs["data"].data.shape
    x = rng.standard_normal(shape).astype(np.float32)
    x.flat[:6] = [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45]  # zeros of both signs, infinities, NaN, a denormal
    d = rng.standard_normal(shape).astype(np.float32)
    d.flat[6:10] = [np.inf, -np.inf, np.nan, -0.0]
    net.blobs["data"].data[...] = x
    net.forward()
    seen = net.blobs["y"].data.copy()  # the backward's bottom data: x, or in place the ReLU's own output (Caffe's)
    net.blobs[top].diff[...] = d
    net.backward(start="relu", end="relu")
    s32 = np.float32(slope)
    with np.errstate(invalid="ignore"):
        factor = (seen > 0).astype(np.float32) + s32 * (seen <= 0).astype(np.float32)
        want = d * factor  # inf · 0 is NaN, as in C++
    got = net.blobs["y"].diff
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), (slope, in_place)
