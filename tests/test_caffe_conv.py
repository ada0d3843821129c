"""Caffe's ConvolutionLayer on the oneDNN engine (``ddqn/net/caffe_patches/0002-onednn-convolution.patch``).

A convolution is linear in its input, its weights and its bias, so the loss L = Σ R·top (R fixed) has exact
central differences: each gradient entry is checked against (L(p + ε) − L(p − ε)) / 2ε computed by the layer's
own forward pass in float32. The engine must also keep Caffe's semantics: parameter gradients are added to the
diffs, the data gradient overwrites, ``lr_mult: 0`` and ``propagate_down`` are honoured, the batch size may change
between calls (acting at batch 1, training at 32), and ``engine: CAFFE`` (im2col + BLAS) gives the same numbers.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ddqn.config import PROTOTXT_DIR
from ddqn.net.caffe_env import caffe

# Odd sizes, stride 2 (Caffe's output size rounds down), a rectangular kernel and a dilated one.
CONV = {
    "pad1_stride2": "num_output: 4 kernel_size: 3 pad: 1 stride: 2",
    "stride2_nopad": "num_output: 3 kernel_size: 3 stride: 2",
    "rect_kernel": "num_output: 3 kernel_h: 2 kernel_w: 4 pad_h: 1 pad_w: 0",
    "dilated": "num_output: 2 kernel_size: 3 dilation: 2 pad: 2",
}


def _net(tmp_path: Path, conv: str, shape=(2, 3, 7, 6), engine: str = "DEFAULT", extra: str = "",
         force_backward: bool = True) -> object:
    """A net of one Input and one Convolution ``conv`` with Gaussian weights and bias."""
    text = (f"force_backward: {'true' if force_backward else 'false'}\n"
            f"layer {{ name: 'data' type: 'Input' top: 'data' input_param {{ shape {{ "
            + " ".join(f"dim: {d}" for d in shape) + " } } }\n"
            f"layer {{ name: 'conv' type: 'Convolution' bottom: 'data' top: 'conv' {extra}\n"
            f"  convolution_param {{ {conv} engine: {engine}\n"
            "    weight_filler { type: 'gaussian' std: 0.5 } bias_filler { type: 'gaussian' std: 0.5 } } }\n")
    return _seeded_net(tmp_path / f"conv_{abs(hash(text))}.prototxt", text)


def _seeded_net(path: Path, text: str) -> object:
    """Prototxt ``text`` written to ``path``, loaded as a TRAIN net after Caffe's seed 7 (same text, same weights)."""
    path.write_text(text)
    cf = caffe()
    cf.set_random_seed(7)
    return cf.Net(str(path), cf.TRAIN)


def _loss(net, data: np.ndarray, r: np.ndarray) -> float:
    net.blobs["data"].data[...] = data
    net.forward()
    return float(np.dot(net.blobs["conv"].data.ravel().astype(np.float64), r.ravel()))


@pytest.mark.parametrize("name", sorted(CONV))
def test_gradients_match_central_differences(tmp_path, name):
    net = _net(tmp_path, CONV[name])
    rng = np.random.default_rng(3)
    data = rng.standard_normal(net.blobs["data"].data.shape).astype(np.float32)
    r = rng.standard_normal(net.blobs["conv"].data.shape).astype(np.float32)
    _loss(net, data, r)
    for p in net.params["conv"]:
        p.diff[...] = 0
    net.blobs["conv"].diff[...] = r
    net.backward(start="conv")
    grads = {"data": net.blobs["data"].diff.copy(), "weights": net.params["conv"][0].diff.copy(),
             "bias": net.params["conv"][1].diff.copy()}
    eps = np.float32(1e-2)
    for what, grad in grads.items():
        target = data if what == "data" else net.params["conv"][0 if what == "weights" else 1].data
        numeric = np.empty_like(grad, dtype=np.float64)
        for i in np.ndindex(grad.shape):
            keep = target[i]
            target[i] = keep + eps
            up = _loss(net, data, r)
            target[i] = keep - eps
            down = _loss(net, data, r)
            target[i] = keep
            numeric[i] = (up - down) / (2 * float(eps))
        scale = np.abs(numeric).max()
        assert np.abs(grad - numeric).max() <= 1e-3 * scale, (what, np.abs(grad - numeric).max(), scale)


def test_parameter_gradients_accumulate_and_the_data_gradient_overwrites(tmp_path):
    net = _net(tmp_path, CONV["pad1_stride2"])
    rng = np.random.default_rng(4)
    net.blobs["data"].data[...] = rng.standard_normal(net.blobs["data"].data.shape)
    net.forward()
    net.blobs["conv"].diff[...] = rng.standard_normal(net.blobs["conv"].diff.shape)
    w, b, x = net.params["conv"][0], net.params["conv"][1], net.blobs["data"]
    w.diff[...], b.diff[...], x.diff[...] = 0, 0, 0
    net.backward(start="conv")
    once = w.diff.copy(), b.diff.copy(), x.diff.copy()
    w.diff[...] += 5
    b.diff[...] += 7
    x.diff[...] = 1e6  # stale: must be overwritten, not added to
    net.backward(start="conv")
    np.testing.assert_allclose(w.diff, 2 * once[0] + 5, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(b.diff, 2 * once[1] + 7, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(x.diff, once[2])


def test_lr_mult_zero_and_no_data_gradient_are_honoured(tmp_path):
    """Weights with ``lr_mult: 0`` get no gradient (their diff is left as it was) while the bias gets its own; an
    input that needs no gradient (no ``force_backward``) keeps its diff. The conv feeds a Euclidean loss, so that
    Caffe runs its backward without ``force_backward``, which would override both."""
    def net(weights_lr: int, force: bool):
        text = (f"force_backward: {'true' if force else 'false'}\n"
                "layer { name: 'data' type: 'Input' top: 'data' top: 'target'\n"
                "  input_param { shape { dim: 2 dim: 3 dim: 7 dim: 6 } shape { dim: 2 dim: 4 dim: 4 dim: 3 } } }\n"
                "layer { name: 'conv' type: 'Convolution' bottom: 'data' top: 'conv'\n"
                f"  param {{ lr_mult: {weights_lr} }} param {{ lr_mult: 1 }}\n"
                f"  convolution_param {{ {CONV['pad1_stride2']}\n"
                "    weight_filler { type: 'gaussian' std: 0.5 } bias_filler { type: 'gaussian' std: 0.5 } } }\n"
                "layer { name: 'loss' type: 'EuclideanLoss' bottom: 'conv' bottom: 'target' top: 'loss' }\n")
        return _seeded_net(tmp_path / f"loss_{weights_lr}_{force}.prototxt", text)

    frozen, ref = net(0, False), net(1, True)  # same seed: same weights and bias
    rng = np.random.default_rng(5)
    data = rng.standard_normal(frozen.blobs["data"].data.shape)
    target = rng.standard_normal(frozen.blobs["target"].data.shape)
    for n in (frozen, ref):
        n.blobs["data"].data[...] = data
        n.blobs["target"].data[...] = target
        n.forward()
        n.params["conv"][0].diff[...] = 3
        n.params["conv"][1].diff[...] = 0
        n.blobs["data"].diff[...] = 9
        n.backward()
    assert (frozen.params["conv"][0].diff == 3).all()
    assert not (ref.params["conv"][0].diff == 3).all()
    assert np.abs(ref.params["conv"][1].diff).max() > 0
    np.testing.assert_allclose(frozen.params["conv"][1].diff, ref.params["conv"][1].diff, rtol=1e-5, atol=1e-5)
    assert (frozen.blobs["data"].diff == 9).all()
    assert not (ref.blobs["data"].diff == 9).all()


def _shipped_net(tmp_path: Path, name: str, engine: str):
    """The shipped net ``name`` with every convolution on ``engine`` (DEFAULT: oneDNN; CAFFE: im2col + BLAS)."""
    text = (PROTOTXT_DIR / f"{name}.prototxt").read_text()
    text = text.replace("convolution_param {", f"convolution_param {{ engine: {engine}")
    path = tmp_path / f"{name}_{engine}.prototxt"
    path.write_text(text.replace("force_backward: true", "") + "\nforce_backward: true\n")
    cf = caffe()
    return cf.Net(str(path), cf.TRAIN)


@pytest.mark.parametrize("name", ["snake_paper", "atari_nature"])
def test_the_engine_agrees_with_im2col_at_every_batch_size(tmp_path, name):
    """The paper net (and the Nature DQN's strided convolutions) at batch 32, then 1, 5 and 32 again (primitives
    cached per shape): Q-values and every gradient match the im2col path within float32 summation error."""
    nets = {e: _shipped_net(tmp_path, name, e) for e in ("DEFAULT", "CAFFE")}
    names = [n for n in nets["DEFAULT"].params]
    rng = np.random.default_rng(6)
    for n in names:  # fan-in scaled weights, as test_reference's: with std 0.1, Atari's conv3 at batch 5 had a
        for i, p in enumerate(nets["DEFAULT"].params[n]):  # pre-activation within float error of 0, whose ReLU
            scale = 1 / np.sqrt(p.data[0].size) if i == 0 else 0.01  # flip moved conv1's gradient by 1.4 %
            p.data[...] = rng.standard_normal(p.data.shape) * scale
            nets["CAFFE"].params[n][i].data[...] = p.data
    data_blob = nets["DEFAULT"].inputs[0]
    for batch in (32, 1, 5, 32):
        out = {}
        for engine, net in nets.items():
            shape = (batch, *net.blobs[data_blob].data.shape[1:])
            for name in net.inputs:
                net.blobs[name].reshape(batch, *net.blobs[name].data.shape[1:])
            net.reshape()
            data = np.random.default_rng(batch).integers(0, 256, shape).astype(np.float32)
            net.blobs[data_blob].data[...] = data
            for name in net.inputs[1:]:
                net.blobs[name].data[...] = np.random.default_rng(batch + 1).random(net.blobs[name].data.shape)
            net.forward()
            for p in (p for n in names for p in net.params[n]):
                p.diff[...] = 0
            net.backward()
            out[engine] = {"q": net.blobs["q"].data.copy(),
                           **{f"{n}/{i}": p.diff.copy() for n in names for i, p in enumerate(net.params[n])}}
        for key, got in out["DEFAULT"].items():
            want = out["CAFFE"][key]
            assert np.abs(got - want).max() <= 1e-4 * max(np.abs(want).max(), 1e-12), (batch, key)


def test_onednn_runs_the_convolutions():
    """The convolutions of the paper net execute as oneDNN primitives (ONEDNN_VERBOSE), on one thread."""
    code = ("import numpy as np; from ddqn.config import PROTOTXT_DIR; from ddqn.net.caffe_env import caffe; "
            "cf = caffe(); net = cf.Net(str(PROTOTXT_DIR / 'snake_paper.prototxt'), cf.TRAIN); net.forward(); "
            "net.backward()")
    env = {**os.environ, "ONEDNN_VERBOSE": "1"}
    env.pop("OMP_NUM_THREADS", None)  # caffe_env must set it
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                         check=True).stdout
    execs = [line for line in out.splitlines() if line.startswith("onednn_verbose") and ",exec," in line]
    for kind in ("forward_training", "backward_data", "backward_weights"):
        assert sum(",convolution," in e and f",{kind}," in e for e in execs) >= 2, (kind, out[-2000:])
    assert "nthr:1" in out, out[:2000]
