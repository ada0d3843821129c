"""The slides' "compute/communicate times scale linearly with model size", measured per update.

``python -m ddqn.bench.worker_speed [--members small paper large x64 x128] [--repeats N]`` times, for each
member of the Q-network family, one worker update's gradient computation (targets from Q̂ + forward and
backward on a minibatch of 32, one OpenBLAS thread) and its communication with a real parameter server on
127.0.0.1 (FETCH of a new θ + PUSH of the gradient, authenticated). Fits a line to each against the
parameter count, prints R², and writes results/worker_speed.json and results/worker_speed.png.

Then the **breakdown**: a real worker (``ddqn.distributed.worker.Worker``, the same experience loop as every Spark
task) of ``--config`` trains for ``--seconds`` against a real parameter server in this process, and its time
per gradient, all in, is split by phase (fetch, θ copy-in, act, env step, store, replay sample, target
forward, forward+backward, push, stats; ``ddqn.dqn.phases``). With ``--blas openblas mkl`` the breakdown runs once
per cached Caffe build (``make install BLAS=…`` made each), one after another in this run, each in its own
process with that build first on its path: a worker's gradients/s before and after a BLAS change, measured together.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np

from ddqn.bench.common import config_values, figure, loaded_blas_path, start_server, worker_update_ms, write_result
from ddqn.config import load_config
from ddqn.distributed import protocol
from ddqn.distributed.job import JobSpec
from ddqn.distributed.worker import Worker
from ddqn.dqn.phases import PHASES, PhaseClock
from ddqn.game import game_actions
from ddqn.net.caffe_build import BLAS_CHOICES, build_dir, build_key
from ddqn.net.netspec import load_netspec
from ddqn.net.qnet import QNetwork

# the 2015 system's own figures (../shared/FACTS.md): parameters → gradient compute ms, server latency ms
PAPER_2015 = {228_132: (81.7, 5), 621_348: (252.8, 15), 2_194_212: (981.5, 40), 8_484_668: (4044, 116)}


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


class _StopAfter(PhaseClock):
    """A phase clock that, once the worker starts timing (after its warm-up fill), stops the server after
    ``seconds`` — so the worker trains exactly that long, then ends as in a real run."""

    def __init__(self, seconds: float, stop) -> None:
        super().__init__()
        self.timer = threading.Timer(seconds, stop)

    def restart(self) -> None:
        super().restart()
        self.timer.start()


def breakdown(config: str, seconds: float, overrides: list[str] | None = None) -> dict:
    """A real worker of ``config`` for ``seconds`` (after its warm-up fill): ms per gradient, all in and by phase."""
    cfg = load_config(config, overrides)
    spec = load_netspec(cfg.path("net"), game_actions(cfg))
    secret = protocol.new_secret()
    server = start_server(spec, QNetwork(spec, seed=cfg.seed).get_params(), secret)
    clock = _StopAfter(seconds, server.request_stop)
    try:
        job = JobSpec(spec.text, spec.source, cfg.to_dict(), server.address, secret.hex())
        counts = Worker(job, 0, 0, clock).run()
    finally:
        clock.timer.cancel()
        server.close()
    grads = max(counts["pushes"], 1)
    total = sum(clock.seconds.values()) * 1e3 / grads
    return {"config": config, "overrides": overrides or [], "gradients": counts["pushes"],
            "env_steps": counts["env_steps"], "ms_per_gradient": total, "gradients_per_s": 1e3 / total,
            "phases_ms": {k: 1e3 * clock.seconds.get(k, 0.0) / grads for k in PHASES}}


def loaded_blas() -> str:
    """The BLAS library this process has mapped (after Caffe loaded): its file name, or "?"."""
    path = loaded_blas_path()
    return path.name if path else "?"


_CHILD = ("import json, sys; from ddqn.bench.worker_speed import breakdown, loaded_blas; "
          "r = breakdown(sys.argv[1], float(sys.argv[2]), sys.argv[3:]); r['blas_loaded'] = loaded_blas(); "
          "print(json.dumps(r))")


def breakdown_on(blas: str, config: str, seconds: float, overrides: list[str]) -> dict:
    """:func:`breakdown` in a child process whose ``import caffe`` is the cached ``blas`` build."""
    root = build_dir(build_key(blas))
    if not (root / "BUILD_OK").exists():
        raise SystemExit(f"bench-worker: error: no cached Caffe build for BLAS={blas} ({root}); "
                         f"run `make install BLAS={blas}` first")
    path = os.pathsep.join(p for p in (str(root / "src" / "python"), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path}
    res = subprocess.run([sys.executable, "-c", _CHILD, config, str(seconds), *overrides], env=env,
                         capture_output=True, text=True, timeout=seconds + 900, check=True)
    return {**json.loads(res.stdout.strip().splitlines()[-1]), "blas": blas}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="results", help="results directory")
    ap.add_argument("--members", nargs="+", default=["small", "paper", "large", "x64", "x128"])
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--config", default="paper", help="config of the breakdown's worker (default paper)")
    ap.add_argument("--seconds", type=float, default=60.0, help="training time the breakdown measures")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    ap.add_argument("--blas", nargs="+", choices=BLAS_CHOICES,
                    help="run the breakdown once per cached Caffe build (default: only the linked one, in-process)")
    args = ap.parse_args(argv)
    rows = []
    for m in args.members:
        rows.append(r := worker_update_ms(m, args.repeats))
        print(f"{m:>6s}: {r['params']:>10,d} params: compute {r['compute_ms']:9.1f} ms, "
              f"communicate {r['communicate_ms']:7.2f} ms per update", flush=True)
    x = np.array([r["params"] for r in rows], float)
    fits = {k: fit(x, np.array([r[k] for r in rows])) for k in ("compute_ms", "communicate_ms")}
    for k, f in fits.items():
        print(f"{k}: {f['slope_ms_per_mparam']:.2f} ms per million parameters + {f['intercept_ms']:.2f} ms, "
              f"R² {f['r2']:.4f}")
    png = plot(rows, fits, Path(args.out) / "worker_speed.png")
    splits = ([breakdown_on(b, args.config, args.seconds, args.set) for b in args.blas] if args.blas
              else [{**breakdown(args.config, args.seconds, args.set), "blas_loaded": loaded_blas()}])
    for split in splits:
        print(f"a real {args.config} worker ({split['blas_loaded']}): {split['gradients']} gradients, "
              f"{split['ms_per_gradient']:.1f} ms each all in ({split['gradients_per_s']:.1f}/s):")
        for phase, ms in split["phases_ms"].items():
            print(f"  {phase:>17s} {ms:7.2f} ms  {100 * ms / split['ms_per_gradient']:5.1f} %")
    write_result("worker_speed", {"rows": rows, "fits": fits, "paper_2015": PAPER_2015, "png": str(png),
                                  "config": args.config, "config_values": config_values(args.config, args.set),
                                  "breakdowns": splits}, args.out)


if __name__ == "__main__":
    main()
