"""The training runs the learning benches make (``scaling``, ``tuning``, ``atari``; ``scale_out`` and
``scale_projection`` through ``sim_runs``): ``spark-submit`` or a serial run (:func:`train_run`), and when a finished
one may be reused: the config values, evaluation grid (env steps) and CPU it was trained with (:func:`finished_run`);
its greedy-score curve; its snapshots played again on fresh games (:func:`confirm_best`)."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ddqn.bench.common import ROOT, cpu_differences, figure, machine
from ddqn.bench.stats import TRAILING_K, standard_error, trailing_means
from ddqn.config import Config, config_values, load_config, value_differences
from ddqn.distributed.cluster import spark_submit_env, spark_submit_path
from ddqn.dqn.evaluation import endings_summary, evaluate_greedy, play_greedy
from ddqn.dqn.serial import SNAPSHOT_NAME
from ddqn.game import game_actions
from ddqn.net.netspec import load_netspec
from ddqn.net.qnet import QNetwork
from ddqn.net.snapshot import load_caffemodel, snapshot_paths

# -- snapshots on fresh games --------------------------------------------------------------------------------

def snapshot_scores(out: Path, cfg: Config) -> Iterator[tuple[dict[str, Any], np.ndarray]]:
    """Each snapshot of the run in ``out`` (its snapshots.csv) with its evaluation scores: ``cfg.eval_episodes``
    games of the training-time evaluation (seed 10,000 + seed, ε = ``cfg.eval_epsilon``). Yields ({model,
    env_steps, updates, minutes}, scores (episodes,))."""
    q = QNetwork(load_netspec(cfg.path("net"), game_actions(cfg)))
    with open(out / "snapshots.csv", newline="") as f:
        for row in csv.DictReader(f):
            q.set_params(load_caffemodel(out / row["model"], q.spec))
            scores = evaluate_greedy(q, cfg, cfg.eval_episodes, seed=10_000 + cfg.seed)
            yield ({"model": row["model"], "env_steps": int(row["env_steps"]), "updates": int(row["updates"]),
                    "minutes": float(row["wall_s"]) / 60}, scores)


def snapshot_net(out: Path, cfg: Config, model: str) -> QNetwork:
    """The config's Q-network with the weights of snapshot ``model`` (relative to the run in ``out``)."""
    q = QNetwork(load_netspec(cfg.path("net"), game_actions(cfg)))
    q.set_params(load_caffemodel(out / model, q.spec))
    return q


CONFIRM_SEED = 20_000  # games never used to pick a snapshot (the training-time evaluation plays seed 10,000 + seed)


def confirm_snapshot(out: Path, cfg: Config, model: str, episodes: int) -> dict[str, Any]:
    """Snapshot ``model`` of the run in ``out`` played for ``episodes`` fresh games (seed 20,000 + seed): an unbiased
    score for the snapshot picked as best by the training-time evaluation, whose maximum over a curve is biased
    upward. Returns {model, episodes, seed, greedy_mean, greedy_se, percentiles, endings}; ``seed``: the fresh games'
    seed (so a result says which games it played); ``percentiles``: the scores' 10th, 50th and 90th; ``endings``: how
    those games ended, each ending's games and mean score (``evaluation.endings_summary``): what stops the snapshot's
    games. ``cfg`` must carry the run's own seed (``seed=``), as the run's training-time evaluation did."""
    scores, endings = play_greedy(snapshot_net(out, cfg, model), cfg, episodes, seed=CONFIRM_SEED + cfg.seed)
    return {"model": model, "episodes": episodes, "seed": CONFIRM_SEED + cfg.seed, "greedy_mean": float(scores.mean()),
            "greedy_se": standard_error(scores), "percentiles": [float(x) for x in np.percentile(scores, [10, 50, 90])],
            "endings": endings_summary(scores, endings)}


def run_parts(name: str) -> tuple[str, int]:
    """The mode and seed of a run named ``<mode>`` (seed 0) or ``<mode> s<seed>``, as the scaling benches name them."""
    head, _, seed = name.rpartition(" s")
    return (head, int(seed)) if head and seed.isdigit() else (name, 0)


def other_games(config: str, confirmed: dict[str, dict | None]) -> list[str]:
    """The runs in ``confirmed`` (named as :func:`run_parts` reads) whose best snapshot was played on another seed's
    fresh games than their run's own, ``CONFIRM_SEED`` + seed: a confirmation recorded before each run played its own
    seed's games (no ``seed`` recorded) played the config's seed's, and its curve, unless serial, too."""
    legacy = CONFIRM_SEED + load_config(config).seed
    return [n for n, k in confirmed.items() if k and k.get("seed", legacy) != CONFIRM_SEED + run_parts(n)[1]]


def confirm_best(out: Path, cfg: Config, curve: list[dict], episodes: int) -> dict[str, Any] | None:
    """The best point of a run's snapshot curve (rows with ``model``) re-played on ``episodes`` fresh games
    (:func:`confirm_snapshot`), with its minutes and curve mean; None for a curve without snapshots."""
    best = max((r for r in curve if "model" in r), key=lambda r: r["greedy_mean"], default=None)
    return {**confirm_snapshot(out, cfg, best["model"], episodes), "minutes": best["minutes"],
            "curve_mean": best["greedy_mean"]} if best else None


# -- runs, and when a finished one is reused -----------------------------------------------------------------

GRID_KEYS = ("eval_every", "snapshot_every")  # env steps (summed over workers): one grid for every run of a comparison
RECORD = "bench.json"  # what a bench records in a run directory it trained: the machine and the config values


def grid_overrides(every: int) -> list[str]:
    """``key=value`` overrides that evaluate and snapshot every ``every`` env steps (summed over workers)."""
    return [f"{k}={every}" for k in GRID_KEYS]


def record_run(out: Path, values: dict[str, Any]) -> None:
    """Record in ``out`` (its :data:`RECORD`) the machine it was trained on and its ``values``."""
    (out / RECORD).write_text(json.dumps({"machine": machine(), "config_values": values}, indent=2) + "\n")


def run_record(out: Path) -> dict[str, Any] | None:
    """What :func:`record_run` wrote in ``out``, or None for a run trained before benches recorded it."""
    path = out / RECORD
    return json.loads(path.read_text()) if path.is_file() else None


def finished_run(out: Path, config: str, values: dict[str, Any]) -> bool:
    """True when ``out`` holds a finished run (its summary.json) trained with ``values`` (``config``'s
    :func:`config_values`, evaluation grid included) on this CPU (``common.CPU_KEYS``); exits with a one-line error
    naming the run and what differs otherwise (a stale run or another grid or CPU is never mixed into a comparison).
    A run trained before its CPU was recorded is reused with a line saying its CPU is unknown."""
    if not (out / "summary.json").exists():
        return False
    record = run_record(out)
    got = record["config_values"] if record else config_values(str(out / "config.yaml"))
    diff = value_differences(got, values)
    if diff:
        sys.exit(f"{out}: trained with other values than {config} has now ({', '.join(diff)}); move it away to rerun")
    cpu = cpu_differences(record["machine"], machine()) if record else None
    if cpu:
        sys.exit(f"{out}: trained on another CPU than this one ({', '.join(cpu)}); a comparison does not mix CPUs: "
                 "move it away to rerun")
    if cpu is None:
        print(f"{out}: its CPU was not recorded ({RECORD}): it cannot be checked against this one", flush=True)
    return True


def same_grid(runs: list[Path]) -> dict[str, int]:
    """The evaluation grid (:data:`GRID_KEYS`, env steps) the runs in ``runs`` share, from their config.yaml; exits
    with a one-line error naming the first run whose grid differs from the first run's."""
    grids = {run: {k: load_config(str(run / "config.yaml")).to_dict()[k] for k in GRID_KEYS} for run in runs}
    first = runs[0] if runs else None
    for run, grid in grids.items():
        diff = [f"{k} {grid[k]} ≠ {grids[first][k]}" for k in GRID_KEYS if grid[k] != grids[first][k]]
        if diff:
            sys.exit(f"{run}: another evaluation grid than {first} ({', '.join(diff)}); a comparison uses one grid")
    return grids[first] if first else {}


def train_run(config: str, minutes: float, out: Path, args: list[str], serial: bool = False,
              values: dict[str, Any] | None = None) -> int:
    """Train ``config`` for ``minutes`` of wall clock into ``out``: the Spark job (``spark-submit
    spark_jobs/train.py``) with ``args`` (e.g. ``--workers 2``, ``--set k=v``), or ``ddqn train --mode serial``.
    Prints the command; when it succeeds, records the machine and ``values`` in ``out`` (:func:`record_run`).
    Returns its exit code."""
    head = ([sys.executable, "-m", "ddqn.cli", "train", "--mode", "serial", "--no-progress"] if serial else
            [str(spark_submit_path()), str(ROOT / "spark_jobs" / "train.py"), "--quiet"])
    cmd = [*head, "--config", str(config), "--minutes", str(minutes), "--out", str(out), *args]
    print("running:", " ".join(cmd), flush=True)
    code = subprocess.call(cmd, env={**os.environ, **spark_submit_env(sys.executable)})
    if code == 0 and values is not None:
        record_run(out, values)
    return code


def train_or_reuse(config: str, minutes: float, out: Path, args: list[str], values: dict[str, Any],
                   overrides: list[str] | tuple[str, ...] = (), serial: bool = False) -> int:
    """A bench's run in ``out``: kept as it is when it already finished with ``values`` on this CPU
    (:func:`finished_run`, which exits on a stale one), else trained by :func:`train_run` with ``args`` and each of
    ``overrides`` (``key=value``) as a ``--set``. Returns the exit code (0 when reused)."""
    if finished_run(out, config, values):
        print(f"reusing {out}", flush=True)
        return 0
    sets = [x for kv in overrides for x in ("--set", kv)]
    return train_run(config, minutes, out, [*args, *sets], serial=serial, values=values)


# -- greedy-score curves -------------------------------------------------------------------------------------

def read_curve(eval_csv: Path) -> list[dict[str, Any]]:
    """Rows (env steps, training minutes, greedy mean, random mean) of a serial run's eval.csv; a row also names
    its updates and, when the run wrote one at that update, its snapshot (``model``, relative to the run)."""
    with open(eval_csv, newline="") as f:
        return [_curve_row(r, eval_csv.parent) for r in csv.DictReader(f)]


def _curve_row(r: dict[str, str], run: Path) -> dict[str, Any]:
    row: dict[str, Any] = {"env_steps": int(r["step"]), "minutes": float(r["wall_s"]) / 60,
                           "greedy_mean": float(r["eval/greedy_score_mean"]),
                           "random_mean": float(r["eval/random_score_mean"])}
    if r.get("eval/updates"):
        row["updates"] = int(r["eval/updates"])
        model, _ = snapshot_paths(Path("snapshots") / SNAPSHOT_NAME, row["updates"])
        if (run / model).is_file():
            row["model"] = str(model)  # the θ that evaluation played: a serial run snapshots at its evaluation steps
    return row


def plot_curves(curves: dict[str, list[dict[str, float]]], path: Path, title: str) -> Path:
    """Each run's greedy mean score vs minutes and vs env steps, one line per run; PNG at ``path``. A line is the
    trailing mean of ``TRAILING_K`` evaluations (the curve minutes to a level are read from; raw evaluations are
    faint dots), each run in a colour of its own (up to 20, then dashed), the legend beside the axes."""
    from matplotlib import colormaps  # noqa: PLC0415 - only the benchmarks that draw pay for matplotlib

    tab = colormaps["tab10" if len(curves) <= 10 else "tab20"].colors
    colors = tab if len(tab) == 10 else tab[0::2] + tab[1::2]  # tab20's 10 dark colours, then their light pairs
    with figure(path, ncols=3, figsize=(14, 4.5), width_ratios=[1, 1, 0.5]) as (fig, axes):
        for i, (name, curve) in enumerate(curves.items()):
            y = [r["greedy_mean"] for r in curve]
            smooth = trailing_means(y)
            style = {"color": colors[i % len(colors)], "ls": ("-", "--", ":")[i // len(colors) % 3]}
            for ax, key in zip(axes, ("minutes", "env_steps")):
                x = [r[key] for r in curve]
                ax.plot(x, y, ".", ms=2, alpha=0.3, color=style["color"])
                ax.plot([a for a, m in zip(x, smooth) if m is not None], [m for m in smooth if m is not None],
                        lw=1.5, label=name, **style)
        rand = next((c[0]["random_mean"] for c in curves.values() if c and "random_mean" in c[0]), None)
        for ax, xlabel in zip(axes, ("training wall-clock minutes", "env steps")):
            if rand is not None:
                ax.axhline(rand, color="grey", ls="--", lw=1, label="random policy")
            ax.set_xlabel(xlabel)
            ax.set_ylabel(f"greedy mean score (apples), trailing mean of {TRAILING_K}")
            ax.grid(alpha=0.3)
        axes[2].set_axis_off()
        axes[2].legend(*axes[0].get_legend_handles_labels(), loc="center left", fontsize="small", frameon=False)
        fig.suptitle(title)
    return path
