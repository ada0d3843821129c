"""The PyTorch twin of a ddqn prototxt: `make bench-caffe`'s peer, never a dependency of ddqn.

Run by the twin virtualenv's interpreter (``.venv-torch``: torch and numpy only) as ``python -I torch_twin.py``; it
imports nothing from ddqn, and ddqn never imports it. It speaks the bench's peer protocol, one JSON object a line:
it first writes ``{"info": …}`` (torch's version and ``torch.__config__.show()``, threads, a 1024³ sgemm's GFLOP/s);
then for ``{"cmd": "load", "net": N, "dir": D}`` it builds net N from ``D/N.json`` (the layers as
``ddqn.net.netspec.describe_layers`` gives them, ``shapes`` of every blob in Caffe) and ``D/N.npz`` (``w/<layer>/<i>``
parameter blobs; the fixed input ``states`` (B, C, H, W) uint8, ``actions`` (B,), ``targets`` (B,)), writes its
Q-values, loss and gradients on that input to ``D/N.torch.npz`` and warms up; for ``{"cmd": "time", "pass": P}``
(``forward_backward`` or ``forward``) it times one batch and answers ``{"s": seconds}``. Any failure is answered
``{"error": …}``. One thread (``torch.set_num_threads(1)``), default backends (oneDNN on).
"""
from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

LABEL = "torch"
WARMUP = 3  # passes of each kind after a load, before timing (oneDNN builds its primitives on the first call)
SGEMM_N, SGEMM_REPEATS = 1024, 10


def _pool(d: dict, x: torch.Tensor) -> torch.Tensor:
    if d["pool"] != "MAX":
        raise ValueError(f"layer '{d['name']}': {d['pool']} pooling is not in the twin (only MAX)")
    if d["global_pooling"]:
        return F.adaptive_max_pool2d(x, 1)
    return F.max_pool2d(x, d["kernel"], d["stride"], d["pad"], ceil_mode=d["ceil_mode"])


def _inner(d: dict, x: torch.Tensor, w: list[torch.Tensor]) -> torch.Tensor:
    x = x.flatten(d["axis"])
    return F.linear(x, w[0].t() if d["transpose"] else w[0], w[1] if d["bias_term"] else None)


def _eltwise(d: dict, xs: list[torch.Tensor]) -> torch.Tensor:
    op, out = d["operation"], xs[0]
    if op == "SUM":
        coeff = d["coeff"] or [1.0] * len(xs)
        return sum((c * x for c, x in zip(coeff[1:], xs[1:])), coeff[0] * out)
    for x in xs[1:]:
        out = out * x if op == "PROD" else torch.maximum(out, x)
    return out


def _euclidean(d: dict, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Caffe's EuclideanLoss: Σ (a − b)² / (2·N), N = a's first dimension, times the layer's loss weight."""
    diff = a - b.reshape(a.shape)
    return (diff * diff).sum() * (d["loss_weight"] / (2 * a.shape[0]))


def _power(d: dict, x: torch.Tensor) -> torch.Tensor:
    y = x * d["scale"] + d["shift"] if d["shift"] else x * d["scale"]
    return y if d["power"] == 1 else y ** d["power"]


def layer_fn(d: dict, w: list[torch.Tensor]) -> Callable[..., torch.Tensor]:
    """The computation of one described layer (``d``; ``w`` its parameter blobs) on its bottom tensors."""
    t = d["type"]
    if t == "Convolution":
        return lambda x: F.conv2d(x, w[0], w[1] if d["bias_term"] else None, d["stride"], d["pad"], d["dilation"],
                                  d["group"])
    if t == "ReLU":
        slope = d["negative_slope"]
        return (lambda x: F.leaky_relu(x, slope)) if slope else F.relu
    simple = {"Pooling": lambda x: _pool(d, x), "InnerProduct": lambda x: _inner(d, x, w),
              "Eltwise": lambda *xs: _eltwise(d, list(xs)), "EuclideanLoss": lambda a, b: _euclidean(d, a, b),
              "Power": lambda x: _power(d, x), "Flatten": lambda x: x.flatten(d["axis"], d["end_axis"]),
              "Sigmoid": torch.sigmoid, "TanH": torch.tanh, "AbsVal": torch.abs}
    if t == "Dropout" and d["dropout_ratio"] == 0:
        return lambda x: x
    if t not in simple:
        raise ValueError(f"layer '{d['name']}': type {t} is not in the twin")
    return simple[t]


class Twin:
    """Net ``name`` of ``work`` (see the module docstring) as torch tensors: parameters copied from Caffe's blobs."""

    def __init__(self, work: Path, name: str) -> None:
        desc = json.loads((work / f"{name}.json").read_text())
        arrays = np.load(work / f"{name}.npz")
        self.shapes = {k: tuple(v) for k, v in desc["shapes"].items()}
        self.blobs = [(d, sorted(k for k in arrays.files if k.startswith(f"w/{d['name']}/"))) for d in desc["layers"]]
        self.params = {k: torch.from_numpy(arrays[k].copy()).requires_grad_() for d, keys in self.blobs for k in keys}
        self.layers = [(d, layer_fn(d, [self.params[k] for k in keys])) for d, keys in self.blobs
                       if d["type"] != "Input"]
        self.states, self.actions = arrays["states"], torch.from_numpy(arrays["actions"].astype(np.int64))
        self.targets = torch.from_numpy(arrays["targets"].astype(np.float32))
        self.eye = torch.eye(self.shapes["q"][1])

    def run(self, to_loss: bool, check: bool = False) -> dict[str, torch.Tensor]:
        """The net's blobs after a forward pass on the fixed input: to the loss (the taken action's one-hot mask and
        target = mask · y, as ``QNetwork.loss_and_grad`` feeds Caffe) or only to ``q`` (as ``q_values``).
        ``check`` compares every top's shape with Caffe's."""
        blobs = {"data": torch.from_numpy(self.states).float()}
        if to_loss:
            blobs["action_mask"] = mask = self.eye[self.actions]
            blobs["target"] = mask * self.targets[:, None]
        for d, fn in self.layers:
            out = fn(*(blobs[b] for b in d["bottom"]))
            blobs[d["top"][0]] = out
            if check and tuple(out.shape) != self.shapes[d["top"][0]]:
                raise ValueError(f"layer '{d['name']}': top {tuple(out.shape)}, Caffe's {self.shapes[d['top'][0]]}")
            if not to_loss and "q" in d["top"]:
                break
        return blobs

    def forward_backward(self) -> torch.Tensor:
        """Loss on the fixed input and its gradient to every parameter, flat (num_params,) as Caffe's is copied."""
        for p in self.params.values():
            p.grad = None
        self.run(True)["loss"].backward()
        return torch.cat([p.grad.reshape(-1) for p in self.params.values()])

    def forward(self) -> torch.Tensor:
        """Q-values (B, A) on the fixed input, without autograd (``torch.inference_mode``)."""
        with torch.inference_mode():
            return self.run(False)["q"].clone()

    def check(self, path: Path) -> None:
        """Write Q-values, loss and ``g/<layer>/<i>`` gradients on the fixed input to ``path`` (npz); warm up."""
        with torch.inference_mode():
            q = self.run(False, check=True)["q"]
        for p in self.params.values():
            p.grad = None
        loss = self.run(True, check=True)["loss"]
        loss.backward()
        grads = {"g" + k[1:]: p.grad.numpy() for k, p in self.params.items()}
        np.savez(path, q=q.numpy(), loss=np.float32(loss.item()), **grads)
        for _ in range(WARMUP):
            self.forward_backward()
            self.forward()


def sgemm_gflops() -> float:
    """The best of :data:`SGEMM_REPEATS` single-threaded float32 1024³ matrix products, GFLOP/s."""
    a, b = torch.randn(SGEMM_N, SGEMM_N), torch.randn(SGEMM_N, SGEMM_N)
    out, best = torch.empty(SGEMM_N, SGEMM_N), float("inf")
    for _ in range(SGEMM_REPEATS + 1):
        t = time.perf_counter()
        torch.mm(a, b, out=out)
        best = min(best, time.perf_counter() - t)
    return 2 * SGEMM_N**3 / best / 1e9


def main() -> None:
    out = os.fdopen(os.dup(1), "w")  # the protocol's own stdout; anything else printed goes to stderr
    os.dup2(2, 1)
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)

    def say(msg: dict) -> None:
        out.write(json.dumps(msg) + "\n")
        out.flush()

    say({"info": {"impl": LABEL, "torch": torch.__version__, "config": torch.__config__.show(),
                  "threads": torch.get_num_threads(), "mkldnn": torch.backends.mkldnn.is_available()
                  and torch.backends.mkldnn.enabled, "python": sys.version.split()[0], "sgemm_gflops": sgemm_gflops()}})
    twin = None
    passes = {"forward_backward": lambda: twin.forward_backward(), "forward": lambda: twin.forward()}
    for line in sys.stdin:
        msg = json.loads(line)
        try:
            if msg["cmd"] == "load":
                twin, work = None, Path(msg["dir"])
                twin = Twin(work, msg["net"])
                twin.check(work / f"{msg['net']}.{LABEL}.npz")
                say({"ok": True})
            else:
                run = passes[msg["pass"]]
                t = time.perf_counter()
                run()
                say({"s": time.perf_counter() - t})
        except Exception as exc:  # any failure is the parent's to report, naming the net
            say({"error": f"{type(exc).__name__}: {exc}"})


if __name__ == "__main__":
    main()
