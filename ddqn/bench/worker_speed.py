"""The slides' "compute/communicate times scale linearly with model size", measured per update.

``python -m ddqn.bench.worker_speed [--members small paper large x64 x128] [--repeats N]`` times, for each
member of the Q-network family, one worker update's gradient computation (targets from Q̂ + forward and
backward on a minibatch of 32, one OpenBLAS thread) and its communication with a real parameter server on
127.0.0.1 (FETCH of a new θ + PUSH of the gradient, authenticated). Fits a line to each against the
parameter count, prints R², and writes results/worker_speed.json and results/worker_speed.png.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from ddqn.config import PROTOTXT_DIR
from ddqn.dist import protocol
from ddqn.dqn.qlearning import dqn_gradient
from ddqn.dist.client import ServerClient
from ddqn.net.netspec import load_netspec
from ddqn.net.qnet import QNetwork
from ddqn.replay.memory import Batch
from ddqn.dist.server import ParameterServer
from ddqn.solvers.flat import make_solver
from ddqn.bench import figure, write_result
from ddqn.bench.ps_speed import SOLVERS

PROTOTXT = PROTOTXT_DIR
# the 2015 system's own figures (../shared/FACTS.md): parameters → gradient compute ms, server latency ms
PAPER_2015 = {228_132: (81.7, 5), 621_348: (252.8, 15), 2_194_212: (981.5, 40), 8_484_668: (4044, 116)}


def measure(member: str, repeats: int) -> dict[str, float]:
    """Median compute and communicate seconds per update for one family member."""
    spec = load_netspec(PROTOTXT / f"snake_{member}.prototxt")
    q, q_hat = QNetwork(spec, seed=0), QNetwork(spec, seed=1)
    rng = np.random.default_rng(0)
    b, shape = spec.batch_size, (spec.batch_size, *spec.state_shape)
    batch = Batch(rng.integers(0, 256, shape, dtype=np.uint8), rng.integers(0, 4, b),
                  rng.standard_normal(b).astype(np.float32), rng.integers(0, 256, shape, dtype=np.uint8),
                  rng.random(b) < 0.1)
    theta = q.get_params()
    secret = protocol.new_secret()
    server = ParameterServer(spec, make_solver(SOLVERS["AdaGrad"], spec.params), theta.copy(), theta.copy(), secret,
                             target_update=10**9).start()
    client = ServerClient(server.address, secret, 0, 0, spec.num_params, timeout=60)
    try:
        p = client.fetch()
        compute, communicate = [], []
        for _ in range(repeats + 1):
            t = time.perf_counter()
            _, grad = dqn_gradient(q, q_hat, batch, 0.95)
            t_compute = time.perf_counter() - t
            t = time.perf_counter()
            p = client.fetch(p.version - 1 if p.version else protocol.NO_VERSION, p.target_version)  # a new θ
            q.set_params(p.theta)
            client.push(grad, p.version)
            compute.append(t_compute)
            communicate.append(time.perf_counter() - t)
    finally:
        client.close()
        server.close()
    return {"member": member, "params": spec.num_params, "compute_ms": 1e3 * float(np.median(compute[1:])),
            "communicate_ms": 1e3 * float(np.median(communicate[1:]))}


def fit(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Least-squares line y = a·x + b and its R²."""
    a, b = np.polyfit(x, y, 1)
    resid = y - (a * x + b)
    r2 = 1 - float(resid @ resid) / float(((y - y.mean()) ** 2).sum())
    return {"slope_ms_per_mparam": float(a * 1e6), "intercept_ms": float(b), "r2": r2}


def plot(rows: list[dict], fits: dict[str, dict], path: Path) -> Path:
    """Compute and communicate ms per update vs parameters, with the fitted lines and the 2015 system's compute."""
    x = np.array([r["params"] for r in rows]) / 1e6
    with figure(path) as (_, ax):
        for key, label in (("compute_ms", "gradient compute"), ("communicate_ms", "communicate (fetch + push)")):
            f = fits[key]
            ax.plot(x, [r[key] for r in rows], "o", label=f"{label} (R² {f['r2']:.3f})")
            xs = np.linspace(0, x.max(), 50)
            ax.plot(xs, f["slope_ms_per_mparam"] * xs + f["intercept_ms"], "--", lw=1)
        px = np.array(list(PAPER_2015)) / 1e6
        ax.plot(px, [v[0] for v in PAPER_2015.values()], "x", color="grey", label="2015 system: compute")
        ax.set_xlabel("parameters (millions)")
        ax.set_ylabel("ms per update")
        ax.set_title("Compute/communicate time per update vs model size")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="results", help="results directory")
    ap.add_argument("--members", nargs="+", default=["small", "paper", "large", "x64", "x128"])
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args(argv)
    rows = []
    for m in args.members:
        rows.append(r := measure(m, args.repeats))
        print(f"{m:>6s}: {r['params']:>10,d} params: compute {r['compute_ms']:9.1f} ms, "
              f"communicate {r['communicate_ms']:7.2f} ms per update", flush=True)
    x = np.array([r["params"] for r in rows], float)
    fits = {k: fit(x, np.array([r[k] for r in rows])) for k in ("compute_ms", "communicate_ms")}
    for k, f in fits.items():
        print(f"{k}: {f['slope_ms_per_mparam']:.2f} ms per million parameters + {f['intercept_ms']:.2f} ms, "
              f"R² {f['r2']:.4f}")
    png = plot(rows, fits, Path(args.out) / "worker_speed.png")
    write_result("worker_speed", {"rows": rows, "fits": fits, "paper_2015": PAPER_2015, "png": str(png)}, args.out)


if __name__ == "__main__":
    main()
