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

from ddqn.bench.common import (
    baseline_builds,
    candidate_builds,
    check_caffe_from,
    figure,
    loaded_blas_path,
    openblas_core,
    start_server,
    worker_update_ms,
    write_result,
)
from ddqn.config import config_values, load_config
from ddqn.distributed import protocol
from ddqn.distributed.job import JobSpec
from ddqn.distributed.worker import Worker
from ddqn.dqn.phases import PHASES, PhaseClock
from ddqn.game import game_actions
from ddqn.net.caffe_build import BLAS_CHOICES, build_dir, build_key, python_dir
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
          "from ddqn.bench.common import openblas_core; "
          "r = breakdown(sys.argv[1], float(sys.argv[2]), sys.argv[3:]); r['blas_loaded'] = loaded_blas(); "
          "r['blas_core'] = openblas_core(); import caffe; r['caffe_module'] = caffe.__file__; print(json.dumps(r))")


def breakdown_in(label: str, caffe_dir: str | None, env: dict[str, str], config: str, seconds: float,
                 overrides: list[str]) -> dict:
    """:func:`breakdown` in a child process whose ``import caffe`` is the build in ``caffe_dir`` (None: as built;
    refused when the child imported another), with ``env`` added to its environment."""
    path = os.pathsep.join(p for p in (caffe_dir, os.environ.get("PYTHONPATH")) if p)
    res = subprocess.run([sys.executable, "-c", _CHILD, config, str(seconds), *overrides],
                         env={**os.environ, **env, "PYTHONPATH": path}, capture_output=True, text=True,
                         timeout=seconds + 900)
    if res.returncode:
        raise SystemExit(f"bench-worker: error: the breakdown's child failed (exit {res.returncode}):\n"
                         + "\n".join(res.stderr.strip().splitlines()[-5:]))
    got = json.loads(res.stdout.strip().splitlines()[-1])
    if caffe_dir:
        check_caffe_from(got["caffe_module"], caffe_dir, label, "bench-worker")
    return got


def variants(args: argparse.Namespace) -> list[tuple[str, str | None, dict[str, str]]]:
    """The Caffe builds the breakdown compares, as (label, caffe dir or None for as built, extra environment)."""
    if args.blas:
        out = []
        for b in args.blas:
            root = build_dir(build_key(b))
            if not (root / "BUILD_OK").exists():
                raise SystemExit(f"bench-worker: error: no cached Caffe build for BLAS={b} ({root}); "
                                 f"run `make install BLAS={b}` first")
            out.append((b, str(python_dir(root)), {}))
        return out
    out = [("as built", None, {})]
    if args.prescott:
        out.append(("as built, OPENBLAS_CORETYPE=Prescott", None, {"OPENBLAS_CORETYPE": "Prescott"}))
    out += [(label, d, {}) for label, d in candidate_builds(args.candidate, "bench-worker", ("as built",)).items()]
    return out + [(label, d, {}) for label, d in baseline_builds(args.without_patch).items()]


def merged(parts: list[dict]) -> dict:
    """Rounds of one (config, build) as one breakdown: gradients and phase times summed over them."""
    grads = sum(p["gradients"] for p in parts)
    phases = {k: sum(p["phases_ms"][k] * p["gradients"] for p in parts) / max(grads, 1) for k in PHASES}
    total = sum(phases.values())
    return {**parts[0], "gradients": grads, "env_steps": sum(p["env_steps"] for p in parts), "rounds": len(parts),
            "ms_per_gradient": total, "gradients_per_s": 1e3 / total, "phases_ms": phases}


def breakdowns(args: argparse.Namespace) -> list[dict]:
    """Every config's breakdown on every build: in this process when only the linked build is asked for, else
    each in a child process, in ``--rounds`` rounds that interleave the builds (the machine's drift hits each)."""
    builds = variants(args)
    if len(builds) == 1 and not args.blas:
        return [{**breakdown(c, args.seconds, args.set), "blas_loaded": loaded_blas(), "blas_core": openblas_core(),
                 "build": "as built"} for c in args.config]
    parts: dict[tuple[str, str], list[dict]] = {}
    for r in range(args.rounds):
        for config in args.config:
            for label, caffe_dir, env in builds:
                print(f"[bench-worker] round {r + 1}/{args.rounds}: {config} on {label}", flush=True)
                got = breakdown_in(label, caffe_dir, env, config, args.seconds / args.rounds, args.set)
                parts.setdefault((config, label), []).append({**got, "build": label, "env": env,
                                                              "caffe_dir": caffe_dir or "as built"})
    return [merged(v) for v in parts.values()]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="results", help="results directory")
    ap.add_argument("--members", nargs="*", default=["small", "paper", "large", "x64", "x128"])
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--config", nargs="+", default=["paper"], help="configs of the breakdown's worker (default paper)")
    ap.add_argument("--seconds", type=float, default=60.0, help="training time each breakdown measures")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    ap.add_argument("--blas", nargs="+", choices=BLAS_CHOICES,
                    help="run the breakdown once per cached Caffe build of these BLAS (instead of the builds below)")
    ap.add_argument("--candidate", action="append", default=[], metavar="LABEL=DIR",
                    help="also on another Caffe build: DIR holds its caffe package")
    ap.add_argument("--without-patch", action="append", default=[], metavar="PATCH[,PATCH…]",
                    help="also on Caffe without these patches (no-<name>+…; built once, cached apart)")
    ap.add_argument("--prescott", action="store_true",
                    help="also as built with OPENBLAS_CORETYPE=Prescott: the BLAS core before ddqn chose one")
    ap.add_argument("--rounds", type=int, default=2, help="rounds interleaving the builds (default 2)")
    args = ap.parse_args(argv)
    rows = []
    for m in args.members:
        rows.append(r := worker_update_ms(m, args.repeats))
        print(f"{m:>6s}: {r['params']:>10,d} params: compute {r['compute_ms']:9.1f} ms, "
              f"communicate {r['communicate_ms']:7.2f} ms per update", flush=True)
    x = np.array([r["params"] for r in rows], float)
    fits = {k: fit(x, np.array([r[k] for r in rows])) for k in ("compute_ms", "communicate_ms")} if rows else {}
    for k, f in fits.items():
        print(f"{k}: {f['slope_ms_per_mparam']:.2f} ms per million parameters + {f['intercept_ms']:.2f} ms, "
              f"R² {f['r2']:.4f}")
    png = plot(rows, fits, Path(args.out) / "worker_speed.png") if rows else None
    splits = breakdowns(args)
    for split in splits:
        print(f"a real {split['config']} worker on {split['build']} ({split['blas_loaded']}, core "
              f"{split['blas_core']}): {split['gradients']} "
              f"gradients, {split['ms_per_gradient']:.1f} ms each all in ({split['gradients_per_s']:.1f}/s):")
        for phase, ms in split["phases_ms"].items():
            print(f"  {phase:>17s} {ms:7.2f} ms  {100 * ms / split['ms_per_gradient']:5.1f} %")
    for config in args.config:
        mine = [b for b in splits if b["config"] == config]
        for b in mine[1:]:
            print(f"{config}: gradients/s {mine[0]['build']} ÷ {b['build']}: "
                  f"{mine[0]['gradients_per_s'] / b['gradients_per_s']:.2f}× (one run)")
    write_result("worker_speed", {"rows": rows, "fits": fits, "paper_2015": PAPER_2015,
                                  "png": str(png) if png else None, "config": args.config, "set": args.set,
                                  "config_values": {c: config_values(c, args.set) for c in args.config},
                                  "breakdowns": splits}, args.out)


if __name__ == "__main__":
    main()
