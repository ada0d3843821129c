"""Honest gradient norms: the L2 norm of every minibatch gradient serial deep Q-learning produces, per config.

``python -m ddqn.bench.grad_norms [--configs paper small tuned] [--steps N] [--bin 1000] [--set k=v] [--out DIR]``
runs, for each config (default: every named config in ``ddqn/configs``, one after the other in this process),
the project's own serial deep Q-learning: the nets, replay memory, ``ExperienceLoop`` and solver built as
``SerialTrainer`` builds them, the random warm-up, then ``--steps`` learning env steps, each gradient applied
with the config's solver (no evaluations, no snapshots). Every gradient ``ExperienceLoop.gradient()`` returns
is what a worker pushes with ``push_every: 1``; with ``push_every`` > 1 the server divides the sum by the
count, whose norm is at most the largest of its terms, so the per-minibatch norm is the bound a parameter
server's norm limit must respect.

Per config it prints and writes to ``<out>/grad_norms.json`` the number of updates and the max, p99.9, p99,
p50 of the norms (float64), max/p50, the update of the max, the first 20 and the 10 largest norms, and the
norms against training progress (max, p99, p50 per ``--bin`` updates), since early training (large TD
errors, fast-moving targets, the solver's first steps from an empty history) may push the largest gradients.
"""
from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ddqn.bench.common import write_result
from ddqn.config import NAMED_CONFIGS, Config, config_values, load_config
from ddqn.dqn.loop import ExperienceLoop
from ddqn.game import game_actions
from ddqn.net.netspec import load_netspec
from ddqn.net.qnet import QNetwork
from ddqn.replay import make_replay
from ddqn.solvers.flat import load_solver_spec, make_solver

# learning env steps per config after the warm-up: ≈ 10 min for the three shipped configs on 2 cores (paper and tuned
# ≈ 33 ms per step, small ≈ 10 ms; the random warm-up takes about a second)
DEFAULT_STEPS = 8_000
PERCENTILES = {"p50": 50.0, "p99": 99.0, "p99_9": 99.9}
HEAD, TOP = 20, 10  # norms of the first HEAD updates and the TOP largest, kept individually


def shipped_configs() -> list[str]:
    """The named configs in ``ddqn/configs`` (paper, small, tuned, …)."""
    return sorted(p.stem for p in NAMED_CONFIGS.glob("*.yaml"))


def l2_norm(grad: np.ndarray) -> float:
    """‖grad‖₂ accumulated in float64."""
    g = grad.astype(np.float64)
    return math.sqrt(float(np.dot(g, g)))


def summarize(norms: np.ndarray) -> dict[str, float]:
    """max, p99.9, p99, p50, min and mean of the finite ``norms``, and max/p50."""
    if norms.size == 0:
        return {"max": math.nan, **{k: math.nan for k in PERCENTILES}, "min": math.nan, "mean": math.nan,
                "max_over_p50": math.nan}
    out = {"max": float(norms.max()), **{k: float(np.percentile(norms, q)) for k, q in PERCENTILES.items()},
           "min": float(norms.min()), "mean": float(norms.mean())}
    out["max_over_p50"] = out["max"] / out["p50"] if out["p50"] > 0 else math.inf
    return out


def measure(cfg: Config, steps: int, bin_size: int, progress: bool = True) -> dict[str, Any]:
    """Serial deep Q-learning with ``cfg`` for ``steps`` learning env steps after the random warm-up, recording the
    L2 norm of every gradient before applying it; the summary, per-bin curve and timings."""
    spec = load_netspec(cfg.path("net"), game_actions(cfg))
    solver_spec = load_solver_spec(cfg.path("solver"))
    solver = make_solver(solver_spec, spec.params)
    q, q_hat = QNetwork(spec, seed=cfg.seed), QNetwork(spec)
    theta = q.get_params()
    q_hat.set_params(theta)
    history, h, w = spec.state_shape
    norms: list[float] = []
    losses: list[float] = []
    eps_at: list[float] = []  # ε when each gradient was computed
    with tempfile.TemporaryDirectory(prefix="ddqn-grad-norms-") as tmp:
        replay = make_replay(cfg, (h, w), history, cfg.seed, Path(tmp) / "replay")
        try:
            loop = ExperienceLoop(cfg, q, q_hat, replay, np.random.default_rng([cfg.seed, 0]), cfg.seed, 0)
            t0 = time.monotonic()
            warm = loop.warm_up(cfg.replay_warmup)
            t1 = time.monotonic()
            for _ in tqdm(range(steps), disable=not progress, unit="step", dynamic_ncols=True, mininterval=2):
                eps = loop.current_epsilon
                if loop.step():  # 1-4
                    loss, grad = loop.gradient()  # 5-7: exactly what a worker pushes
                    norms.append(l2_norm(grad))
                    losses.append(loss)
                    eps_at.append(eps)
                    solver.apply(theta, grad)  # 7. the gradient step, as SerialTrainer and the server apply it
                    q.set_params(theta)
                    if len(norms) % cfg.target_update == 0:
                        q_hat.set_params(theta)  # 8. every C updates Q̂ = Q
            t2 = time.monotonic()
        finally:
            replay.close()
    all_norms = np.asarray(norms, np.float64)
    finite = np.isfinite(all_norms)
    good = all_norms[finite]
    bins = []
    for lo in range(0, len(all_norms), bin_size):
        hi = min(lo + bin_size, len(all_norms))
        chunk = all_norms[lo:hi]
        s = summarize(chunk[np.isfinite(chunk)])
        bins.append({"updates": [lo, hi], "max": s["max"], "p99": s["p99"], "p50": s["p50"],
                     "epsilon": float(eps_at[lo]), "loss_mean": float(np.mean(losses[lo:hi]))})
    return {
        "net": str(cfg.path("net").name), "solver": str(cfg.path("solver").name), "solver_type": solver_spec.type,
        "params": spec.num_params, "batch_size": spec.batch_size, "error_clip": cfg.error_clip,
        "double_dqn": cfg.double_dqn, "warmup_transitions": warm, "env_steps": loop.env_steps,
        "updates": len(norms), "nonfinite": int((~finite).sum()), **summarize(good),
        "argmax_update": int(np.nanargmax(np.where(finite, all_norms, np.nan))) if good.size else None,
        "head": [float(x) for x in all_norms[:HEAD]],  # the first updates' norms, one by one
        "top": [{"update": int(i), "norm": float(all_norms[i])}  # the largest norms and when they came
                for i in np.argsort(np.where(finite, all_norms, -np.inf))[::-1][:TOP] if finite[i]],
        "max_rms_per_param": float(good.max() / math.sqrt(spec.num_params)) if good.size else None,
        "warmup_s": t1 - t0, "train_s": t2 - t1, "bins": bins,
    }


def table(results: dict[str, dict[str, Any]]) -> str:
    """The per-config summary as aligned text."""
    head = f"{'config':<8} {'params':>7} {'updates':>7} {'max':>10} {'p99.9':>10} {'p99':>10} {'p50':>10} " \
           f"{'max/p50':>8} {'argmax':>7}"
    rows = [head]
    for name, r in results.items():
        rows.append(f"{name:<8} {r['params']:>7} {r['updates']:>7} {r['max']:>10.4g} {r['p99_9']:>10.4g} "
                    f"{r['p99']:>10.4g} {r['p50']:>10.4g} {r['max_over_p50']:>8.2f} {r['argmax_update']!s:>7}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", nargs="+", default=None,
                    help="named configs or YAML files (default: every config in ddqn/configs)")
    ap.add_argument("--steps", type=int, default=DEFAULT_STEPS,
                    help=f"learning env steps per config after the random warm-up (default {DEFAULT_STEPS})")
    ap.add_argument("--bin", type=int, default=1000, help="updates per point of the norm-vs-progress curve")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every config")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    ap.add_argument("--out", default="results", help="results directory")
    args = ap.parse_args(argv)
    if args.steps <= 0 or args.bin <= 0:
        ap.error("--steps and --bin must be > 0")
    configs = args.configs or shipped_configs()
    results: dict[str, dict[str, Any]] = {}
    for c in configs:
        cfg = load_config(c, args.set)
        name = Path(c).stem
        print(f"{name}: {cfg.replay_warmup} random warm-up transitions, then {args.steps} learning env steps "
              f"({cfg.net}, {cfg.solver})", flush=True)
        results[name] = r = {**measure(cfg, args.steps, args.bin, progress=not args.no_progress),
                             "config_values": config_values(c, args.set)}
        print(f"{name}: {r['updates']} updates, max {r['max']:.4g} at update {r['argmax_update']}, "
              f"p99.9 {r['p99_9']:.4g}, p50 {r['p50']:.4g} ({r['warmup_s']:.0f} s warm-up, "
              f"{r['train_s']:.0f} s training)", flush=True)
    print(table(results))
    largest = max(results, key=lambda n: results[n]["max"])
    write_result("grad_norms", {"steps": args.steps, "bin": args.bin, "overrides": args.set,
                                "largest_max": {"config": largest, "max": results[largest]["max"]},
                                "configs": results}, args.out)


if __name__ == "__main__":
    main()
