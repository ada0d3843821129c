"""The slides' "serial vs distributed": greedy score vs wall-clock time for serial, 1 and 2 asynchronous
workers and the synchronous mode — same config, same budget, same seeds, one run after another.

``python -m ddqn.bench.scaling [--minutes M] [--config paper] [--modes serial async-1 …] [--seeds 0 …] [--every N]
[--result scaling] [--levels 1 2 …] [--budgets 60 …] [--goal 60=15 …] [--plan async-2:3 …]``. The
serial run evaluates itself every N env steps (its eval.csv; evaluation time excluded); distributed runs
snapshot every N env steps (summed over workers) and their snapshots are evaluated afterwards with the same
greedy evaluation, against the wall-clock time each snapshot was taken. Every run plays the protocol's games of
its own seed s: its curve on seed 10,000 + s (as the serial run's own evaluation), its best snapshot again on
``runs.CONFIRM_SEED`` + s (:func:`run_config`); a kept curve whose fresh games were another seed's is dropped,
so naming its run again re-evaluates it. Reports
minutes to reach mean scores 1-5 and 10 — the first evaluation whose trailing mean of ``stats.TRAILING_K``
evaluations is at or above the score (``ddqn.bench.stats.reach``) — the speedups over serial, and per mode the mean
and 95 % t interval over seeds (``--summarize`` recomputes them from an earlier run's results without training);
writes results/<result>.json and .png. A run is named by config, mode, seed and budget
(``runs/scaling-<config>-<mode>-s<seed>-<M>min``); a finished one (its summary.json) is reused if its config has
the same values, evaluation grid (``--every``) included, and it ran on this CPU (``runs.finished_run``: else a
one-line error), and curves of the same config (values), budget and CPU already in the result are kept, so a long
comparison can be run in parts (serial seed 0 now, async-2 seed 1 later); a result of another config, budget, grid
or CPU model stops the bench before it trains (``--restart`` drops it). ``--per-cpu`` keeps one result per CPU
model instead, ``results/<result>-<CPU>.json`` (``common.cpu_tag``), so a comparison run in parts on machines of
several models fills one table per model and never mixes them. Seed 0's curve is named by its mode, other seeds'
``<mode> s<seed>``. On a 2-core machine two workers and the driver share two cores: say so when
quoting the numbers.

**Shorter budgets from the same runs** (``--budgets``): each run's curve cut at B minutes
(``stats.within_budget``) gives the B-minute figures (minutes to each level, the best snapshot up to B re-played on
fresh games, intervals over seeds), so a 120-minute comparison also answers the 60-minute one without running
anything twice. The trailing mean is causal, so a level reached by minute B is reached at the same time in the cut
curve. ``--goal B=S`` marks, per mode and budget, whether every seed's best snapshot up to B minutes scored at least
S on the fresh games (met / missed, with the worst seed's and the mean score); ``--plan MODE:SEED …`` names every run
of the comparison, so a comparison run in parts says "open" while seeds are still to run (never met on the first).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from ddqn.bench.common import add_restart, cpu_tag, kept_or_restart, machine, made_elsewhere, write_result
from ddqn.bench.runs import (
    confirm_best,
    grid_overrides,
    other_games,
    plot_curves,
    read_curve,
    run_parts,
    run_record,
    same_grid,
    snapshot_scores,
    train_or_reuse,
)
from ddqn.bench.stats import (
    RULE,
    SeedInterval,
    format_goal,
    format_interval,
    reach_levels,
    seed_interval,
    speedup,
    within_budget,
)
from ddqn.config import Config, config_values, load_config

MODES = {"serial": [], "async-1": ["--workers", "1"], "async-2": ["--workers", "2"],
         "sync-2": ["--workers", "2", "--sync"]}


def run(mode: str, config: str, values: dict[str, Any], minutes: float, every: int, out: Path, seed: int) -> int:
    """Train one mode with ``seed`` into ``out`` (kept as it is when it already finished with ``values``, the
    config's :func:`config_values`); returns the exit code."""
    return train_or_reuse(config, minutes, out, MODES[mode], values, [*grid_overrides(every), f"seed={seed}"],
                          serial=mode == "serial")


def run_name(mode: str, seed: int) -> str:
    """A curve's name: the mode for seed 0, ``<mode> s<seed>`` for the others."""
    return mode if seed == 0 else f"{mode} s{seed}"


def mode_of(name: str) -> str:
    """The mode of a curve named by :func:`run_name`."""
    return run_parts(name)[0]


def run_config(config: str, seed: int) -> Config:
    """``config`` as the run of ``seed`` was trained with it: its evaluation games are seed 10,000 + ``seed`` and its
    fresh games ``runs.CONFIRM_SEED`` + ``seed``, not the config's own seed's."""
    return load_config(config, [f"seed={seed}"])


def snapshot_curve(out: Path, cfg: Config) -> list[dict[str, float]]:
    """Greedy mean score of each snapshot in ``out/snapshots.csv`` against its wall-clock time (``cfg``: the run's,
    :func:`run_config`)."""
    return [{"model": r["model"], "env_steps": r["env_steps"], "updates": r["updates"], "minutes": r["minutes"],
             "greedy_mean": float(scores.mean())} for r, scores in snapshot_scores(out, cfg)]


LEVELS = (1, 2, 3, 4, 5, 10)  # greedy mean scores whose reach times are compared (the 5 and 10 + lower)


def summarize(curves: dict[str, list[dict[str, float]]], levels: tuple[float, ...] = LEVELS) -> tuple[dict, dict]:
    """Minutes each run reached each score level (``stats.reach``: trailing mean), and the speedup over serial
    (serial ÷ run minutes; None when either did not reach the level in the budget)."""
    reach = {m: reach_levels(c, levels) for m, c in curves.items()}
    base = reach.get("serial", {})
    ratio = {s: {m: speedup(base.get(s), r[s]) for m, r in reach.items()} for s in map(str, levels)}
    return reach, ratio


def parse_goals(specs: list[str]) -> dict[str, float]:
    """``--goal B=S`` pairs as {budget minutes (str, as the JSON keys them): score}; SystemExit on a bad one."""
    goals = {}
    for spec in specs:
        b, _, score = spec.partition("=")
        try:
            goals[f"{float(b):g}"] = float(score)
        except ValueError:
            raise SystemExit(f"--goal {spec}: expected MINUTES=SCORE, e.g. 60=15") from None
    return goals


def parse_plan(specs: list[str]) -> dict[str, list[int]]:
    """``--plan MODE:SEED`` pairs (every run of the comparison, the ones still to train too) as {mode: [seeds]};
    SystemExit on a bad one."""
    plan: dict[str, list[int]] = {}
    for spec in specs:
        mode, _, seed = spec.partition(":")
        if mode not in MODES or not seed.isdigit():
            raise SystemExit(f"--plan {spec}: expected MODE:SEED with a mode of {', '.join(MODES)}, e.g. async-2:3")
        plan.setdefault(mode, []).append(int(seed))
    return plan


def goal_check(confirmed: dict[str, dict | None], score: float,
               plan: dict[str, list[int]] | None = None) -> dict[str, dict]:
    """Per mode: whether every seed's best snapshot (``confirmed``: its fresh-game mean; None = no snapshot) scored at
    least ``score``; with the worst seed's score, the mean over seeds and the seed count. With the comparison's
    ``plan`` ({mode: seeds}) a goal is met only once every planned seed has run and scored it, missed as soon as one
    seed did not, and open (``met`` None) while seeds are still to run (``to_run``)."""
    modes: dict[str, dict[int, float]] = {m: {} for m in plan or {}}
    for name, k in confirmed.items():
        mode, seed = run_parts(name)
        modes.setdefault(mode, {})[seed] = k["greedy_mean"] if k else 0.0
    out = {}
    for m, by_seed in modes.items():
        v = list(by_seed.values())
        to_run = sorted(set((plan or {}).get(m, [])) - set(by_seed))
        met = None if not v or (to_run and min(v) >= score) else min(v) >= score
        out[m] = {"score": score, "met": met, "worst": min(v, default=None),
                  "mean": sum(v) / len(v) if v else None, "seeds": len(v), **({"to_run": to_run} if plan else {})}
    return out


def over_seeds(reach: dict[str, dict], confirmed: dict[str, dict | None]) -> dict[str, dict]:
    """Per mode, over its seeds: minutes to each level and the best snapshot's fresh-game mean, each as
    ``stats.seed_interval`` (mean, 95 % t interval, seeds reached of seeds)."""
    modes: dict[str, list[str]] = {}
    for name in reach:
        modes.setdefault(mode_of(name), []).append(name)
    return {mode: {"seeds": len(names),
                   "minutes": {s: seed_interval([(reach[n][s] or {}).get("minutes") for n in names]).to_dict()
                               for s in reach[names[0]]},
                   "confirmed_mean": seed_interval([(confirmed.get(n) or {}).get("greedy_mean")
                                                    for n in names]).to_dict()}
            for mode, names in modes.items()}


def run_stats(out: Path) -> dict[str, Any]:
    """Throughput of one finished run (its summary.json): env steps or server updates per second, staleness; when its
    training ended (the date the bench recorded beside it then); and where the run came from when its directory
    holds an ORIGIN note (a run made by another bench, same config)."""
    path = out / "summary.json"
    if not path.exists():
        return {}
    s = json.loads(path.read_text())
    record = run_record(out)
    origin = {"origin": (out / "ORIGIN").read_text().strip()} if (out / "ORIGIN").is_file() else {}
    origin |= {"trained": record["machine"]["date"]} if record and "date" in record["machine"] else {}
    if "train_minutes" in s:  # serial
        return {"env_steps": s["env_steps"], "updates_per_s": s["updates"] / (60 * s["train_minutes"]),
                "final_greedy_mean": s["greedy_score_mean"], **origin}
    comm = [w["comm_s"] / max(w["comm_s"] + w["compute_s"], 1e-9) for w in s["workers"].values()]
    return {"env_steps": s["env_steps"], "updates_per_s": s["updates_per_s"], "staleness_p50": s["staleness_p50"],
            "staleness_p95": s["staleness_p95"], "comm_share": sum(comm) / max(len(comm), 1),
            "final_greedy_mean": s["greedy_score_mean"], **origin}


def print_runs(curves: dict, reach: dict, confirmed: dict, stats: dict, head: str = "") -> None:
    """One line per run: best greedy mean, its fresh-game score, rate and minutes to each level."""
    for m, c in curves.items():
        best = max((r["greedy_mean"] for r in c), default=0.0)
        got = ", ".join(f"{s}: {v['minutes']:.1f} min" if v else f"{s}: -" for s, v in reach[m].items())
        rate = stats.get(m, {}).get("updates_per_s")
        k = confirmed.get(m)
        fresh = f" ({k['greedy_mean']:.2f} ± {k['greedy_se']:.2f} on {k['episodes']} fresh games)" if k else ""
        print(f"{head}{m:>8s}: best greedy mean {best:.2f}{fresh}; " + (f"{rate:.1f} updates/s; " if rate else "")
              + f"minutes to score {got}")


def print_seeds(seeds: dict, head: str = "") -> None:
    """Modes with more than one seed: minutes to each level over the seeds."""
    for mode, o in seeds.items():
        if o["seeds"] > 1:
            print(f"{head}{mode} over {o['seeds']} seeds, mean [95 % t interval] (seeds reached): minutes to score "
                  + ", ".join(f"{s}: {format_interval(SeedInterval(**iv))}" for s, iv in o["minutes"].items()))


def budget_parts(curves: dict, budget_confirmed: dict[str, dict], levels: tuple[float, ...]) -> dict[str, dict]:
    """Per shorter budget B (minutes, as a str): every curve cut at B (``stats.within_budget``), its reach of each
    level, the best snapshot up to B on fresh games (``budget_confirmed[B]``) and both over seeds."""
    parts = {}
    for b, conf in budget_confirmed.items():
        reach, _ = summarize({n: within_budget(c, float(b)) for n, c in curves.items()}, levels)
        parts[b] = {"reach": reach, "confirmed": conf, "over_seeds": over_seeds(reach, conf)}
    return parts


def report(args: argparse.Namespace, values: dict, curves: dict, stats: dict, confirmed: dict,
           budget_confirmed: dict[str, dict]) -> None:
    """Print the comparison, plot it and write results/<result>.json (``values``: the config's, as trained;
    ``args.runs_machine``: the machine the runs were trained on, this one unless ``--summarize``d; ``budget_confirmed``:
    per shorter budget, each run's best snapshot up to it on fresh games)."""
    reach, ratios = summarize(curves, args.levels)
    print_runs(curves, reach, confirmed, stats)
    for s, by_run in ratios.items():
        if any(by_run.values()):
            print(f"speedup over serial to score {s}: " + ", ".join(
                f"{m} {x:.2f}x" for m, x in by_run.items() if x and m != "serial"))
    seeds = over_seeds(reach, confirmed)
    print_seeds(seeds)
    parts = budget_parts(curves, budget_confirmed, args.levels)
    for b, part in parts.items():
        cut = {n: within_budget(c, float(b)) for n, c in curves.items()}
        print_runs(cut, part["reach"], part["confirmed"], {}, head=f"within {b} min: ")
        print_seeds(part["over_seeds"], head=f"within {b} min: ")
    full = f"{args.minutes:g}"
    goals = {}
    for b, score in args.goals.items():
        conf = confirmed if b == full else parts.get(b, {}).get("confirmed")
        if conf is None:
            raise SystemExit(f"--goal {b}={score:g}: {b} minutes is neither the budget ({full}) nor one of --budgets")
        goals[b] = goal_check(conf, score, args.plan)
        for mode, g in goals[b].items():
            print(f"goal: {mode} >= {score:g} within {b} min on fresh games, every seed: {format_goal(g)}")
    png = plot_curves(curves, Path(args.out) / f"{args.result}.png",
                      f"Serial vs distributed ({args.config}, {os.cpu_count()} cores)")
    write_result(args.result, {"config": args.config, "config_values": values, "budget_minutes": args.minutes,
                               "cores": os.cpu_count(), "every": args.every, "runs_machine": args.runs_machine,
                               "levels": list(args.levels), "curves": curves, "reach": reach, "reach_rule": RULE,
                               "speedup_vs_serial": ratios, "over_seeds": seeds, "runs": stats,
                               "confirmed": confirmed, "budgets": parts, "goals": goals, "plan": args.plan,
                               "png": png.name}, args.out)


def kept_differences(old: dict[str, Any], config: str, minutes: float, values: dict[str, Any]) -> list[str]:
    """How a kept result (``old``) differs from the comparison asked for now: its config, budget, config values
    (evaluation grid included) or CPU model; empty when its curves belong to this comparison."""
    why = [f"config {old.get('config')} ≠ {config}"] if old.get("config") != config else []
    why += [f"budget {old.get('budget_minutes')} ≠ {minutes:g} min"] if old.get("budget_minutes") != minutes else []
    # values are listed only when config and budget agree (another config's values differ of course)
    return why + made_elsewhere(values if why else old.get("config_values"),
                                old.get("runs_machine") or old.get("machine"), values)


def confirm_within(out: Path, cfg: Any, curve: list[dict], full: dict | None, budget: float,
                   episodes: int) -> dict | None:
    """The best snapshot of ``curve`` up to ``budget`` minutes on fresh games; the full budget's confirmation
    (``full``) when it is the same snapshot, so no snapshot is played twice."""
    cut = within_budget(curve, budget)
    best = max((r for r in cut if "model" in r), key=lambda r: r["greedy_mean"], default=None)
    if best and full and full["model"] == best["model"]:
        return full
    return confirm_best(out, cfg, cut, episodes)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=20.0, help="wall-clock budget per mode (default 20)")
    ap.add_argument("--config", default="paper")
    ap.add_argument("--every", type=int, default=5000,
                    help="env steps (summed over workers) between evaluations and snapshots: the evaluation grid")
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0], help="seeds of each mode (default 0)")
    ap.add_argument("--result", default="scaling", help="name of the result (results/<result>.json and .png)")
    ap.add_argument("--out", default="results")
    ap.add_argument("--confirm-episodes", type=int, default=500,
                    help="fresh games a run's best snapshot is re-played on (an unbiased score for it)")
    ap.add_argument("--levels", nargs="+", type=float, default=None,
                    help=f"greedy mean scores whose crossing times are compared (default {' '.join(map(str, LEVELS))})")
    ap.add_argument("--budgets", nargs="+", type=float, default=[],
                    help="shorter budgets (minutes) read from the same runs: each curve cut there")
    ap.add_argument("--goal", action="append", default=[], metavar="MINUTES=SCORE",
                    help="mark whether every seed's best snapshot up to MINUTES scored SCORE on fresh games")
    ap.add_argument("--plan", nargs="+", default=[], metavar="MODE:SEED",
                    help="every run of the comparison, those still to train too: a goal is met only once all have "
                    "run (default: the runs in the result)")
    ap.add_argument("--per-cpu", action="store_true",
                    help="one result per CPU model, results/<result>-<CPU>.json: this machine's, so runs made on "
                    "another model are neither refused nor mixed in but fill that model's table")
    add_restart(ap, "another config, budget, grid or CPU model")
    ap.add_argument("--summarize", action="store_true",
                    help="no training: recompute the comparison from results/<result>.json's curves and the runs' "
                    "summaries")
    args = ap.parse_args(argv)
    args.goals, args.plan = parse_goals(args.goal), parse_plan(args.plan)
    if args.per_cpu:
        args.result = f"{args.result}-{cpu_tag(machine())}"
    if not args.summarize and any(not 0 < b < args.minutes for b in args.budgets):
        ap.error(f"--budgets must lie between 0 and --minutes ({args.minutes:g})")
    tag = Path(args.config).stem
    runs = {run_name(m, seed): (m, seed, Path(args.out) / "runs" / f"scaling-{tag}-{m}-s{seed}-{args.minutes:g}min")
            for m in args.modes for seed in args.seeds}
    if args.plan and not args.summarize and (extra := [f"{m}:{seed}" for m, seed, _ in runs.values()
                                                       if seed not in args.plan.get(m, [])]):
        ap.error(f"--plan: {', '.join(extra)} not in it (the plan names every run of the comparison)")
    path = Path(args.out) / f"{args.result}.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    if args.summarize:
        args.config, args.minutes, values = old["config"], old["budget_minutes"], old.get("config_values", {})
        args.every, args.runs_machine = old.get("every"), old.get("runs_machine", old.get("machine"))
        curves, confirmed, stats = old["curves"], old.get("confirmed", {}), old.get("runs", {})
        args.budgets = args.budgets or [float(b) for b in old.get("budgets", {})]
        args.plan = args.plan or old.get("plan") or {}
    else:
        values = config_values(args.config, grid_overrides(args.every))
        # the CPU every run was checked against (runs.finished_run); each run's own date is in its stats
        args.runs_machine = {k: v for k, v in machine().items() if k != "date"}
        n = len(old.get("curves", {}))
        if old and not kept_or_restart(path, f"its {n} run{'s' * (n != 1)}",
                                       kept_differences(old, args.config, args.minutes, values), args.restart):
            old = {}
        curves, confirmed, stats = old.get("curves", {}), old.get("confirmed", {}), old.get("runs", {})
        for name in other_games(args.config, confirmed):
            print(f"{path}: {name} played another seed's games than its own: dropped (name its run to re-evaluate it)",
                  flush=True)
            for kept in (curves, confirmed, stats):
                kept.pop(name, None)
        for name, (mode, seed, out) in runs.items():  # curves of this comparison's other runs are kept
            if run(mode, args.config, values, args.minutes, args.every, out, seed):
                sys.exit(f"the {name} run failed")
        same_grid([out for _, _, out in runs.values()])
        for name, (mode, seed, out) in runs.items():
            cfg = run_config(args.config, seed)
            curves[name] = read_curve(out / "eval.csv") if mode == "serial" else snapshot_curve(out, cfg)
            confirmed[name] = confirm_best(out, cfg, curves[name], args.confirm_episodes)
            stats[name] = run_stats(out)
    args.levels = tuple(args.levels or old.get("levels") or LEVELS)
    kept = {b: part.get("confirmed", {}) for b, part in old.get("budgets", {}).items()}
    budget_confirmed = {}
    for b in (f"{x:g}" for x in args.budgets):
        budget_confirmed[b] = {n: kept.get(b, {}).get(n) for n in curves}
        for name, (_, seed, out) in ({} if args.summarize else runs).items():
            budget_confirmed[b][name] = confirm_within(out, run_config(args.config, seed), curves[name],
                                                       confirmed[name], float(b), args.confirm_episodes)
    report(args, values, curves, stats, confirmed, budget_confirmed)


if __name__ == "__main__":
    main()
