"""Serial deep Q-learning on the paper's setting: greedy score vs wall-clock minutes and env steps.

``python -m ddqn.bench.serial_curve [--minutes M] [--configs paper tuned]`` trains one serial run per
config side by side (one process and one OpenBLAS thread each; give at most as many configs as cores),
then writes results/serial_curve.json and results/serial_curve.png with, for each run, its config values and
the minutes, env steps and updates at which the trailing mean of ``stats.TRAILING_K`` evaluations first reached 5
and 10 apples (``ddqn.bench.stats.reach``; null if it did not). Minutes are training wall-clock, evaluation
excluded.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from ddqn.bench.common import config_values, plot_curves, read_curve, write_result
from ddqn.bench.stats import RULE, reach_levels

THRESHOLDS = (5, 10)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30.0, help="training wall-clock budget per run (default 30)")
    ap.add_argument("--configs", nargs="+", default=["paper", "tuned"], help="named configs or files, run side by side")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every run")
    ap.add_argument("--out", default="results", help="results directory")
    args = ap.parse_args(argv)
    out = Path(args.out)
    runs = {c: out / "runs" / f"serial-{Path(c).stem}" for c in args.configs}
    procs = []
    for config, run in runs.items():
        cmd = [sys.executable, "-m", "ddqn.cli", "train", "--mode", "serial", "--config", config, "--minutes",
               str(args.minutes), "--out", str(run), "--no-progress", *(x for s in args.set for x in ("--set", s))]
        print("running:", " ".join(cmd), flush=True)
        procs.append(subprocess.Popen(cmd, env=dict(os.environ, OPENBLAS_NUM_THREADS="1")))
    codes = [p.wait() for p in procs]
    if any(codes):
        sys.exit(f"a serial run failed (exit codes {codes})")
    curves = {c: read_curve(run / "eval.csv") for c, run in runs.items()}
    reach = {c: reach_levels(curve, THRESHOLDS) for c, curve in curves.items()}
    png = plot_curves(curves, out / "serial_curve.png", "Serial DQN, 10x10 Snake, paper net (one core per run)")
    for c, curve in curves.items():
        for s, r in reach[c].items():
            print(f"{c}: mean greedy score {s}: " + (f"reached after {r['minutes']:.1f} min, {r['env_steps']} env steps"
                                                     if r else f"not reached in {args.minutes:g} min"))
        best = max(curve, key=lambda r: r["greedy_mean"])
        print(f"{c}: best greedy mean {best['greedy_mean']:.2f} at {best['minutes']:.1f} min "
              f"({best['env_steps']} steps); final {curve[-1]['greedy_mean']:.2f} after {curve[-1]['env_steps']} "
              f"steps; random {curve[-1]['random_mean']:.2f}")
    values = {c: config_values(c, args.set) for c in args.configs}
    write_result("serial_curve", {"budget_minutes": args.minutes, "config_values": values, "reach": reach,
                                  "reach_rule": RULE, "curves": curves, "png": str(png)}, out)


if __name__ == "__main__":
    main()
