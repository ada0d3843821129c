"""Serial deep Q-learning on the paper's setting: greedy score vs wall-clock minutes and env steps.

``python -m ddqn.bench.serial_curve [--minutes M] [--config paper]`` trains with ``SerialTrainer``, then
reads its eval.csv and writes results/serial_curve.json and results/serial_curve.png with the minutes
(and env steps) at which the greedy mean score first reached 5 and 10 apples (null if it did not).
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

from ..config import load_config
from ..serial import SerialTrainer
from . import write_result

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
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, curve in curves.items():
        axes[0].plot([r["minutes"] for r in curve], [r["greedy_mean"] for r in curve], marker=".", label=name)
        axes[1].plot([r["env_steps"] for r in curve], [r["greedy_mean"] for r in curve], marker=".", label=name)
    rand = next(iter(curves.values()))[0]["random_mean"] if curves else 0.0
    for ax, xlabel in zip(axes, ("training wall-clock minutes", "env steps")):
        ax.axhline(rand, color="grey", ls="--", lw=1, label="random policy")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("greedy mean score (apples)")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=60.0, help="training wall-clock budget (default 60)")
    ap.add_argument("--config", default="paper", help="config file or named config (default paper)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--out", default="results/runs/serial_curve", help="run directory")
    args = ap.parse_args(argv)
    cfg = load_config(args.config, args.set)
    summary = SerialTrainer(cfg, args.out, progress=True).train(minutes=args.minutes)
    curve = read_curve(Path(args.out) / "eval.csv")
    reach = {str(s): first_reach(curve, s) for s in THRESHOLDS}
    png = plot({f"serial ({args.config})": curve}, Path("results/serial_curve.png"),
               f"Serial DQN, {cfg.board_size}x{cfg.board_size} Snake, {Path(cfg.net).stem}")
    for s, r in reach.items():
        print(f"mean greedy score {s}: " + (f"reached after {r['minutes']:.1f} min, {r['env_steps']} env steps"
                                            if r else f"not reached in {args.minutes:g} min"))
    print(f"final greedy mean {summary['greedy_score_mean']:.2f} vs random {summary['random_score_mean']:.2f}")
    write_result("serial_curve", {"config": cfg.to_dict(), "budget_minutes": args.minutes, "summary": summary,
                                  "reach": reach, "curve": curve, "png": str(png)})


if __name__ == "__main__":
    main()
