"""Q-network speed on real pycaffe beside a PyTorch twin of the same prototxt (batch 32, one thread each).

``python -m ddqn.bench.caffe_speed [--nets …] [--rounds N] [--torch-python PATH] [--candidate LABEL=DIR …]`` times,
for each net (default: the Snake family and both Atari nets), forward+backward (the prototxt's own loss — the taken
action's Q-value against its target — and backward to every parameter's gradient) and forward alone (to the
Q-values). Each implementation runs in a process of its own, driven over a pipe (the peer protocol in
``torch_twin.py``'s docstring):

- ``caffe``: Caffe as built (``QNetwork``; one OpenBLAS thread through ``ddqn.net.caffe_env``);
- candidates (``--candidate LABEL=DIR``): other builds of Caffe, the same peer with ``DIR`` (holding a ``caffe``
  package, e.g. ``<build>/src/python``) first on its path, as bench-worker's ``--blas`` runs a cached build;
- ``torch``: the PyTorch twin, run by ``--torch-python`` (``make bench-caffe`` makes ``.venv-torch``, torch==2.13.0
  alone); when that interpreter is missing the run says why and records it.

Every peer gets the same θ (Caffe's fillers, seed 0) and fixed input, and its Q-values, loss and gradient there are
checked against Caffe's before any timing (beyond the float32 tolerances below: an error naming the net). Rounds
interleave the implementations (each times one batch of each pass per round; the order rotates) and medians are
reported: ms per batch, each Caffe ÷ torch, and the share of the FLOP floor reached: the convolutions' and inner
products' FLOPs from the layer shapes ÷ the best single-thread 1024³ sgemm rate measured in this run (Caffe's BLAS
and torch's). Writes results/caffe_speed.json. The 2015 system: 81.7 ms for the paper net (../shared/FACTS.md).
"""
from __future__ import annotations

import argparse
import ctypes
import json
import math
import os
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ddqn.bench.common import (
    ROOT,
    baseline_builds,
    candidate_builds,
    check_caffe_from,
    loaded_blas_path,
    openblas_core,
    write_result,
)
from ddqn.config import PROTOTXT_DIR
from ddqn.net.caffe_env import caffe
from ddqn.net.netspec import NetSpec, describe_layers, load_netspec, parse_netspec
from ddqn.net.qnet import QNetwork

NETS = ("snake_small", "snake_paper", "snake_large", "atari_nips", "atari_nature")  # prototxt/<name>.prototxt
PASSES = ("forward_backward", "forward")
REFERENCE, TWIN = "caffe", "torch"  # Caffe as built: what every peer is checked against; the twin's label
TWIN_SCRIPT = Path(__file__).with_name("torch_twin.py")
TWIN_PYTHON = ROOT / ".venv-torch" / "bin" / "python"  # made by make bench-caffe
THREADS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
# float32 tolerances against Caffe on the fixed input (another summation order, e.g. oneDNN's, moves the last bits)
Q_RTOL = 1e-4  # max |Δq| ≤ Q_RTOL · max |q|
LOSS_RTOL = 1e-4  # |Δloss| ≤ LOSS_RTOL · loss
GRAD_RTOL = 1e-3  # ‖Δg‖ ≤ GRAD_RTOL · ‖g‖, over the flat gradient
WARMUP = 3  # passes of each kind after a load, before timing
SGEMM_N, SGEMM_REPEATS = 1024, 10
REPLY_S = 600.0  # the longest a peer may take to answer one request (starting: imports, Caffe, torch)


# -- the peers -----------------------------------------------------------------------------------------------

class Peer:
    """One implementation in a child process (``cmd``), driven one JSON line at a time over its stdin/stdout."""

    def __init__(self, label: str, cmd: list[str], env: dict[str, str]) -> None:
        self.label = label
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.info: dict[str, Any] = self._reply("starting")["info"]

    def ask(self, what: str, **msg: Any) -> dict[str, Any]:
        """Send ``msg``; its answer, or exit with a one-line error naming ``what`` (e.g. the net) and the peer."""
        try:
            self.proc.stdin.write(json.dumps(msg) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass  # the peer has gone: _reply says so
        return self._reply(what)

    def _reply(self, what: str) -> dict[str, Any]:
        if not select.select([self.proc.stdout], [], [], REPLY_S)[0]:  # bounded: a hung peer ends the bench
            self.proc.kill()
            sys.exit(f"bench-caffe: error: {what}: {self.label} did not answer within {REPLY_S:g} s")
        line = self.proc.stdout.readline()
        if not line:
            sys.exit(f"bench-caffe: error: {what}: {self.label} exited (code {self.proc.wait()})")
        answer = json.loads(line)
        if "error" in answer:
            sys.exit(f"bench-caffe: error: {what}: {self.label}: {answer['error']}")
        return answer

    def close(self) -> None:
        """End the peer: its stdin closes, so it leaves its loop."""
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def caffe_peer(label: str, caffe_dir: str | None = None) -> Peer:
    """Caffe in a child process: as built (this interpreter's ``caffe``), or the ``caffe`` package in ``caffe_dir``
    first on its path (a candidate build), refused when the child imported another Caffe than that one."""
    path = [p for p in (caffe_dir, str(ROOT), os.environ.get("PYTHONPATH")) if p]
    env = {**os.environ, **THREADS, "PYTHONPATH": os.pathsep.join(path)}
    peer = Peer(label, [sys.executable, "-m", "ddqn.bench.caffe_speed", "--serve", label], env)
    if caffe_dir:
        try:
            check_caffe_from(peer.info["module"], caffe_dir, label, "bench-caffe")
        except SystemExit:
            peer.close()
            raise
    return peer


def twin_peer(python: Path) -> tuple[Peer | None, str | None]:
    """The PyTorch twin run by ``python`` (isolated: no PYTHONPATH, not ddqn's path), or None and why it is absent."""
    if not python.is_file():
        return None, (f"{python} not found (make bench-caffe makes it: a virtualenv of its own with "
                      "pip install torch==2.13.0)")
    return Peer(TWIN, [str(python), "-I", str(TWIN_SCRIPT)], {**os.environ, **THREADS}), None


class CaffeNet:
    """Net ``name`` of ``work`` on Caffe (``QNetwork``): its prototxt from ``<name>.json``, θ and the fixed input
    from ``<name>.npz`` (as :func:`prepare` writes them)."""

    def __init__(self, work: Path, name: str) -> None:
        desc, arrays = json.loads((work / f"{name}.json").read_text()), np.load(work / f"{name}.npz")
        self.q = QNetwork(parse_netspec(desc["prototxt"], desc["source"], desc["actions"]))
        self.q.set_params(np.concatenate([arrays[f"w/{p.layer}/{p.index}"].ravel() for p in self.q.spec.params]))
        self.states, self.actions, self.targets = arrays["states"], arrays["actions"], arrays["targets"]

    def forward_backward(self) -> None:
        """Loss and flat gradient on the fixed input (``QNetwork.loss_and_grad``)."""
        self.q.loss_and_grad(self.states, self.actions, self.targets)

    def forward(self) -> None:
        """Q-values (B, A) on the fixed input (``QNetwork.q_values``)."""
        self.q.q_values(self.states)

    def check(self, path: Path) -> None:
        """Write Q-values, loss and ``g/<layer>/<i>`` gradients on the fixed input to ``path`` (npz); warm up."""
        q = self.q.q_values(self.states)
        loss, grad = self.q.loss_and_grad(self.states, self.actions, self.targets)
        np.savez(path, q=q, loss=np.float32(loss), **{f"g/{p.layer}/{p.index}": grad[p.offset:p.offset + p.size]
                                                      .reshape(p.shape) for p in self.q.spec.params})
        for _ in range(WARMUP):
            self.forward_backward()
            self.forward()


def blas_sgemm_gflops(library: Path) -> float:
    """The best of :data:`SGEMM_REPEATS` float32 1024³ products by ``library``'s ``cblas_sgemm``, GFLOP/s."""
    sgemm = ctypes.CDLL(str(library)).cblas_sgemm
    n, i, p = SGEMM_N, ctypes.c_int, ctypes.c_void_p
    sgemm.argtypes = [i, i, i, i, i, i, ctypes.c_float, p, i, p, i, ctypes.c_float, p, i]
    a, b = np.random.default_rng(0).standard_normal((2, n, n), dtype=np.float32)
    c, best = np.empty((n, n), np.float32), float("inf")
    for _ in range(SGEMM_REPEATS + 1):
        t = time.perf_counter()
        sgemm(101, 111, 111, n, n, n, 1.0, a.ctypes.data, n, b.ctypes.data, n, 0.0, c.ctypes.data, n)  # row-major
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def serve(label: str) -> None:
    """The Caffe peer (``--serve LABEL``): ``torch_twin.py``'s protocol on :class:`CaffeNet`."""
    out = os.fdopen(os.dup(1), "w")  # the protocol's own stdout; anything else printed goes to stderr
    os.dup2(2, 1)

    def say(msg: dict[str, Any]) -> None:
        out.write(json.dumps(msg) + "\n")
        out.flush()

    module, blas = Path(caffe().__file__).resolve().parent, loaded_blas_path()
    say({"info": {"impl": "caffe", "module": str(module), "blas": blas.name if blas else None,
                  "openblas_core": openblas_core() if blas and blas.name.startswith("libopenblas") else None,
                  "sgemm_gflops": blas_sgemm_gflops(blas) if blas else None}})
    net = None
    for line in sys.stdin:
        msg = json.loads(line)
        try:
            if msg["cmd"] == "load":
                net, work = None, Path(msg["dir"])
                net = CaffeNet(work, msg["net"])
                net.check(work / f"{msg['net']}.{label}.npz")
                say({"ok": True})
            else:
                run = net.forward_backward if msg["pass"] == "forward_backward" else net.forward
                t = time.perf_counter()
                run()
                say({"s": time.perf_counter() - t})
        except Exception as exc:  # any failure is the parent's to report, naming the net
            say({"error": f"{type(exc).__name__}: {exc}"})


# -- the parent: nets, checks, interleaved rounds --------------------------------------------------------------

def flops(layers: list[dict], shapes: dict[str, list[int]], spec: NetSpec) -> tuple[float, float]:
    """FLOPs (2 per multiply-add) of the convolutions and inner products at the batch of ``shapes``: (forward,
    forward+backward). The backward is a weight gradient as large as the forward, plus an input gradient as large
    again wherever the bottom needs one (not for the first learnable layer, whose input is data)."""
    weights = {p.layer: p.shape for p in spec.params if p.index == 0}
    needs: set[str] = set()  # blobs whose gradient the backward computes
    fwd = bwd = 0
    for d in layers:
        grad_in = any(b in needs for b in d["bottom"])
        if d["type"] in ("Convolution", "InnerProduct"):
            macs = math.prod(shapes[d["top"][0]]) * math.prod(weights[d["name"]]) // d["num_output"]
            fwd, bwd = fwd + macs, bwd + macs * (2 if grad_in else 1)
        if grad_in or d["name"] in weights:
            needs.update(d["top"])
    return 2.0 * fwd, 2.0 * (fwd + bwd)


def prepare(name: str, work: Path) -> dict[str, Any]:
    """Write net ``name``'s description to ``work`` (``<name>.json``: the prototxt, its layers, Caffe's blob shapes)
    and its arrays (``<name>.npz``: θ from Caffe's fillers with seed 0 as ``w/<layer>/<i>``; the fixed input
    ``states`` (B, C, H, W) uint8, ``actions`` (B,), ``targets`` (B,)); return its size and GFLOPs."""
    spec = load_netspec(PROTOTXT_DIR / f"{name}.prototxt")
    net = QNetwork(spec, seed=0).net
    shapes, layers = {b: list(v.data.shape) for b, v in net.blobs.items()}, describe_layers(spec)
    (work / f"{name}.json").write_text(json.dumps({"prototxt": spec.text, "source": spec.source, "layers": layers,
                                                   "actions": spec.num_actions, "shapes": shapes}))
    rng, b = np.random.default_rng(0), spec.batch_size
    np.savez(work / f"{name}.npz", states=rng.integers(0, 256, (b, *spec.state_shape), dtype=np.uint8),
             actions=rng.integers(0, spec.num_actions, b), targets=rng.standard_normal(b).astype(np.float32),
             **{f"w/{p.layer}/{p.index}": net.params[p.layer][p.index].data for p in spec.params})
    fwd, fb = flops(layers, shapes, spec)
    return {"params": spec.num_params, "frames": spec.state_shape[0], "input": spec.state_shape[1], "batch": b,
            "gflop": {"forward_backward": fb / 1e9, "forward": fwd / 1e9}}


def check(name: str, label: str, work: Path) -> dict[str, float]:
    """``label``'s Q-values, loss and gradient on the fixed input against Caffe's (:data:`REFERENCE`): the errors;
    exits with a one-line error naming the net when one is beyond its tolerance."""
    ref, got = np.load(work / f"{name}.{REFERENCE}.npz"), np.load(work / f"{name}.{label}.npz")
    keys = sorted(k for k in ref.files if k.startswith("g/"))
    if got["q"].shape != ref["q"].shape or keys != sorted(k for k in got.files if k.startswith("g/")):
        sys.exit(f"bench-caffe: error: {name}: {label}'s Q-values or parameters are not Caffe's shapes")
    g_ref, g = (np.concatenate([a[k].ravel() for k in keys]) for a in (ref, got))
    err = {"q_rel_err": float(np.abs(got["q"] - ref["q"]).max() / np.abs(ref["q"]).max()),
           "loss_rel_err": float(abs(got["loss"] - ref["loss"]) / abs(ref["loss"])),
           "grad_rel_err": float(np.linalg.norm(g - g_ref) / np.linalg.norm(g_ref))}
    bad = [f"{what} off by {err[key]:.1e} > {tol:g}" for what, key, tol in (
        ("Q-values", "q_rel_err", Q_RTOL), ("loss", "loss_rel_err", LOSS_RTOL), ("gradient", "grad_rel_err", GRAD_RTOL))
        if not err[key] <= tol]
    if bad:
        sys.exit(f"bench-caffe: error: {name}: {label} does not compute Caffe's net on the fixed input "
                 f"({'; '.join(bad)})")
    return err


def time_rounds(peers: list[Peer], name: str, rounds: int) -> dict[str, dict[str, float]]:
    """Median ms per batch of each peer and pass, over ``rounds`` rounds; in each round every peer times one batch
    of a pass in turn, then the next pass (the peers' order rotates from round to round)."""
    samples: dict[str, dict[str, list[float]]] = {p.label: {k: [] for k in PASSES} for p in peers}
    for r in range(rounds):
        order = peers[r % len(peers):] + peers[:r % len(peers)]
        for k in PASSES:
            for p in order:
                samples[p.label][k].append(p.ask(f"{name} ({k})", cmd="time", **{"pass": k})["s"])
    return {label: {k: 1e3 * float(np.median(v)) for k, v in s.items()} for label, s in samples.items()}


def summarise(facts: dict[str, Any], ms: dict[str, dict[str, float]], checks: dict[str, dict], peak: float) -> dict:
    """One net's row: its facts, ms per implementation and pass, the floor (ms at ``peak`` GFLOP/s) and each
    implementation's share of it, each Caffe ÷ torch, and the checks."""
    floor = {k: facts["gflop"][k] / peak * 1e3 for k in PASSES}
    row = {**facts, "floor_ms": floor, "ms": ms, "checks": checks,
           "floor_share": {impl: {k: floor[k] / v[k] for k in PASSES} for impl, v in ms.items()}}
    if TWIN in ms:
        row["over_torch"] = {impl: {k: v[k] / ms[TWIN][k] for k in PASSES} for impl, v in ms.items() if impl != TWIN}
    return row


def columns(impls: list[str]) -> list[tuple[str, int, Any]]:
    """The printed table's columns: (header, width, row → text)."""
    cols: list[tuple[str, int, Any]] = [("GFLOP", 6, lambda r: f"{r['gflop']['forward_backward']:.2f}"),
                                        ("floor", 6, lambda r: f"{r['floor_ms']['forward_backward']:.1f}")]
    for k, short in (("forward_backward", "f+b"), ("forward", "fwd")):
        cols += [(f"{i} {short}", max(8, len(i) + 4), lambda r, i=i, k=k: f"{r['ms'][i][k]:.1f}") for i in impls]
        cols += [(f"{i}÷{TWIN}", len(i) + 6, lambda r, i=i, k=k: f"{r['over_torch'][i][k]:.2f}")
                 for i in impls if TWIN in impls and i != TWIN]
    return cols + [(f"{i} %floor", len(i) + 7, lambda r, i=i: f"{100 * r['floor_share'][i]['forward_backward']:.0f} %")
                   for i in impls]


def measure(peers: list[Peer], nets: list[str], rounds: int) -> tuple[dict[str, Any], dict[str, float]]:
    """Each net checked and timed on every peer, a table row printed as each is done: (rows by net, each peer's
    sgemm GFLOP/s)."""
    rates = {p.label: p.info["sgemm_gflops"] for p in peers if p.info.get("sgemm_gflops")}
    peak = max(rates.values())
    print(f"one core's peak: {peak:.1f} GFLOP/s, the best {SGEMM_N}³ sgemm (" +
          ", ".join(f"{k} {v:.1f}" for k, v in rates.items()) + ")")
    print(f"ms per batch of 32 (f+b: forward+backward, fwd: forward), medians of {rounds} interleaved rounds; "
          "floor: GFLOP ÷ peak, ms; %floor: floor ÷ f+b")
    cols, rows = columns([p.label for p in peers]), {}
    print(f"{'net':<13s}" + "".join(f"{h:>{w + 2}s}" for h, w, _ in cols), flush=True)
    with tempfile.TemporaryDirectory(prefix="ddqn-caffe-speed-") as tmp:
        work = Path(tmp)
        for name in nets:
            facts = prepare(name, work)
            for p in peers:
                p.ask(name, cmd="load", net=name, dir=str(work))
            checks = {p.label: check(name, p.label, work) for p in peers[1:]}
            rows[name] = row = summarise(facts, time_rounds(peers, name, rounds), checks, peak)
            print(f"{name:<13s}" + "".join(f"{f(row):>{w + 2}s}" for _, w, f in cols), flush=True)
    return rows, rates


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="results", help="results directory")
    ap.add_argument("--rounds", type=int, default=40, help="interleaved rounds; medians over them (default 40)")
    ap.add_argument("--nets", nargs="+", default=list(NETS), help=f"prototxt/<name> (default {' '.join(NETS)})")
    ap.add_argument("--torch-python", default=str(TWIN_PYTHON), help="the twin's interpreter (default .venv-torch)")
    ap.add_argument("--candidate", action="append", default=[], metavar="LABEL=DIR",
                    help="another Caffe build: DIR holds its caffe package (e.g. <build>/src/python)")
    ap.add_argument("--without-patch", action="append", default=[], metavar="PATCH[,PATCH…]",
                    help="also time Caffe without these patches (labelled no-<name>+…; built once, cached apart)")
    ap.add_argument("--serve", metavar="LABEL", help=argparse.SUPPRESS)  # run as a Caffe peer
    args = ap.parse_args(argv)
    if args.serve:
        return serve(args.serve)
    candidates = candidate_builds(args.candidate, "bench-caffe", (REFERENCE, TWIN))
    candidates.update(baseline_builds(args.without_patch))
    peers = [caffe_peer(REFERENCE)] + [caffe_peer(label, d) for label, d in candidates.items()]
    try:
        twin, absent = twin_peer(Path(args.torch_python))
        if twin:
            peers.append(twin)
        else:
            print(f"no PyTorch twin: {absent}", flush=True)
        rows, rates = measure(peers, args.nets, args.rounds)
    finally:
        for p in peers:
            p.close()
    if twin:
        keys = ("q_rel_err", "loss_rel_err", "grad_rel_err")
        worst = {k: max(r["checks"][TWIN][k] for r in rows.values()) for k in keys}
        print(f"{TWIN} {twin.info['torch']}, {twin.info['threads']} thread, oneDNN "
              f"{'on' if twin.info['mkldnn'] else 'off'}; against Caffe on the fixed input, the largest relative "
              f"error: Q-values {worst['q_rel_err']:.1e} (tolerance {Q_RTOL:g}), loss {worst['loss_rel_err']:.1e} "
              f"({LOSS_RTOL:g}), gradient {worst['grad_rel_err']:.1e} ({GRAD_RTOL:g})")
    write_result("caffe_speed", {
        "nets": rows, "rounds": args.rounds, "implementations": {p.label: p.info for p in peers if p is not twin},
        "candidates": candidates, "twin": {"python": args.torch_python, **twin.info} if twin else {"absent": absent},
        "peak": {"gflops": max(rates.values()), "sgemm_gflops": rates, "sgemm_n": SGEMM_N},
        "tolerance": {"q_rtol": Q_RTOL, "loss_rtol": LOSS_RTOL, "grad_rtol": GRAD_RTOL}}, args.out)


if __name__ == "__main__":
    main()
