"""Serial deep Q-learning on the paper's setting: greedy score vs wall-clock minutes and env steps.

``python -m ddqn.bench.serial_curve [--minutes M] [--configs paper tuned]`` trains one serial run per
config side by side (one process and one OpenBLAS thread each; give at most as many configs as cores),
then writes results/serial_curve.json and results/serial_curve.png with, for each run, the minutes and env
steps at which the greedy mean score first reached 5 and 10 apples (null if it did not). Minutes are
training wall-clock, evaluation excluded.
"""
from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
from pathlib import Path

from ddqn.bench import figure, write_result

THRESHOLDS = (5, 10)


def read_curve(eval_csv: Path) -> list[dict[str, float]]:
    """Rows (env steps, training minutes, greedy mean, random mean) of a run's eval.csv."""
    with open(eval_csv, newline="") as f:
        return [{"env_steps": int(r["step"]), "minutes": float(r["wall_s"]) / 60,
                 "greedy_mean": float(r["eval/greedy_score_mean"]), "random_mean": float(r["eval/random_score_mean"])}
                for r in csv.DictReader(f)]


def first_reach(curve: list[dict[str, float]], score: float) -> dict[str, float] | None:
    """The first evaluation whose greedy mean is >= ``score``, or None."""
    return next(({"minutes": r["minutes"], "env_steps": r["env_steps"]} for r in curve if r["greedy_mean"] >= score), None)


def plot(curves: dict[str, list[dict[str, float]]], path: Path, title: str) -> Path:
    """Greedy mean score vs minutes and vs env steps, one line per run."""
    with figure(path, ncols=2, figsize=(11, 4)) as (fig, axes):
        for name, curve in curves.items():
            axes[0].plot([r["minutes"] for r in curve], [r["greedy_mean"] for r in curve], marker=".", label=name)
            axes[1].plot([r["env_steps"] for r in curve], [r["greedy_mean"] for r in curve], marker=".", label=name)
        rand = next((c[0]["random_mean"] for c in curves.values() if c and "random_mean" in c[0]), None)
        for ax, xlabel in zip(axes, ("training wall-clock minutes", "env steps")):
            if rand is not None:
                ax.axhline(rand, color="grey", ls="--", lw=1, label="random policy")
            ax.set_xlabel(xlabel)
            ax.set_ylabel("greedy mean score (apples)")
            ax.grid(alpha=0.3)
        axes[0].legend()
        fig.suptitle(title)
    return path


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
    reach = {c: {str(s): first_reach(curve, s) for s in THRESHOLDS} for c, curve in curves.items()}
    png = plot(curves, out / "serial_curve.png", "Serial DQN, 10x10 Snake, paper net (one core per run)")
    for c, curve in curves.items():
        for s, r in reach[c].items():
            print(f"{c}: mean greedy score {s}: " + (f"reached after {r['minutes']:.1f} min, {r['env_steps']} env steps"
                                                     if r else f"not reached in {args.minutes:g} min"))
        best = max(curve, key=lambda r: r["greedy_mean"])
        print(f"{c}: best greedy mean {best['greedy_mean']:.2f} at {best['minutes']:.1f} min ({best['env_steps']} steps); "
              f"final {curve[-1]['greedy_mean']:.2f} after {curve[-1]['env_steps']} steps; "
              f"random {curve[-1]['random_mean']:.2f}")
    write_result("serial_curve", {"budget_minutes": args.minutes, "reach": reach, "curves": curves, "png": str(png)},
                 out)


if __name__ == "__main__":
    main()
