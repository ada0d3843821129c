"""Learning that scales to 64 workers (issue 32): the simulator's projection with seeds and honest intervals, the
server's staleness options, and its learning model checked at W = 2 against a criterion written down before it ran.

    python -m ddqn.bench.scale_projection [--screen] [--project] [--tune-dc] [--staleness] [--validate]
        [--config tuned] [--schedules ...] [--screen-seeds 7] [--screen-workers 16 64]
        [--seeds 0 1 2] [--workers 1 16 64] [--one-seed 2 4 8 32]
        [--levels 3 4 5] [--updates 80000] [--shards 16] [--placement executors] [--gbps 10] [--at-updates 20000]
        [--tune-seeds 5 6] [--lambdas 0.1 0.5 1 2] [--dc-lambda L] [--real-minutes 20] [--parallel 2]

Every simulation is ``python -m ddqn.sim`` learning for real (Caffe computes each simulated worker's gradients and
its compute is timed on this CPU), so minutes are **simulated minutes on one core of this CPU per worker**; every run
records the CPU and config values it ran with, and a run of another CPU or config is refused, never mixed in
(``runs.finished_run``). The server's costs are this CPU's too (:func:`service_file`, :func:`shard_cost_file`).
Levels are read off each run's curve by the causal trailing mean (``stats.reach``).

* ``--screen``: every ε schedule (or ``--schedules``) at W of ``--screen-workers`` on ``--screen-seeds`` (seeds no
  other table reports), ranked by the rule fixed in docs/simulator.md before it ran (:func:`screen_rank`): more runs
  that reach the highest level; then fewer mean minutes to it (∞ unless every run reached it); then a higher mean
  best trailing mean. The projection then runs ``worker`` (the default) and the best other schedule.
* ``--project``: for each ε schedule (``--schedules``; else the screen's two, else every one), W of ``--workers``
  with every seed of ``--seeds`` and W of ``--one-seed`` with the first seed only (marked "1 seed"), on ``--gbps``
  links with ``--shards`` shards at ``--placement``; a run stops once its trailing mean reaches the highest level,
  else at ``--updates``. Per schedule and W: minutes to each level per seed and their mean with a t interval; the
  speedup over the baseline W = 1 (per level, the schedule whose W = 1 got there soonest on average, so a schedule
  that slows W = 1 cannot inflate speedups) with the worst and best seed's ratio (``stats.seed_speedup``: not
  reached is never the budget, above W is flagged as noise); the trailing mean at ``--at-updates`` server updates
  (learning per update); updates/s, staleness p50/p95, the busiest server thread's and card's use. The goal: at
  score 5 the worst seed's speedup is at least 0.75·W at W = 16 and 0.5·W at W = 64.
* ``--tune-dc``: DC-ASGD's λ at W = 16 (``--tune-workers``) on ``--tune-seeds`` (seeds no table reports), the best
  schedule: the λ of ``--lambdas`` whose runs reach the highest level soonest on average (not reached: never).
* ``--staleness``: at W = 16 and 64 (``--staleness-workers``), the first two seeds, the best schedule: none (the
  projection's runs), ``max_staleness`` W/2, ``staleness_lr``, ``dc_lambda`` (``--dc-lambda``, else the tuned λ).
* ``--validate``: W = 2, every seed, real (the Spark job on this machine, ``--real-minutes``) and simulated to the
  real run's update count, one server; greedy score against server updates on the first real seed's evaluation
  points inside every curve's range; the criterion fixed in docs/simulator.md before it ran: ``stats.split_test``
  passes (a perfect simulator passes with probability 0.9 for 3 + 3 curves).

Writes results/scale_projection.json (parts not rerun are kept when they ran on this CPU) and
results/scale_projection.png.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ddqn.bench.common import add_restart, figure, kept_or_restart, machine, made_elsewhere, measured_here, write_result
from ddqn.bench.sim_runs import eval_curve, in_parallel, real_run, run_numbers, seeded_config, simulate
from ddqn.bench.stats import (
    RULE,
    best_trailing_mean,
    mean_if_all,
    reach_levels,
    seed_interval,
    seed_speedup,
    split_test,
    trailing_means,
)
from ddqn.config import EPS_SCHEDULES, config_values, load_config
from ddqn.game import game_actions
from ddqn.net.netspec import load_netspec
from ddqn.sim.service import find_service, measure_service
from ddqn.solvers.flat import load_solver_spec

STATEMENT = "simulated minutes on one core of this CPU per worker"
GOAL = {"level": 5.0, "factor": {"16": 0.75, "64": 0.5}}  # issue 32: worst seed's speedup to 5 ≥ factor × W


# -- runs ----------------------------------------------------------------------------------------------------

def this_cpu(path: Path, key: str | None = None) -> bool:
    """Whether results file ``path`` (its ``key`` block, if given) was measured on this CPU model."""
    if not path.is_file():
        return False
    data = json.loads(path.read_text())
    return measured_here(data.get(key) if key else data)


def service_file(args: argparse.Namespace, root: Path) -> Path:
    """One server's service times for the config's net and solver, found once for every run and kept in
    ``root``/service.json, which every simulation reads: results/ps_speed.json's row when this CPU model measured it
    (or with ``--fixed-cycle``, a test), else measured now on this CPU (a table never mixes CPUs)."""
    path = root / "service.json"
    if not path.is_file():
        cfg = load_config(args.config)
        spec, solver = load_netspec(cfg.path("net"), game_actions(cfg)), load_solver_spec(cfg.path("solver"))
        ps_speed = Path(args.out) / "ps_speed.json"
        found = (find_service(ps_speed, spec.num_params, solver.type, cfg.auth)
                 if args.fixed_cycle or this_cpu(ps_speed) else None)
        service, source = (found, str(ps_speed)) if found else (measure_service(spec, solver, cfg.auth),
                                                                  "measured now on this CPU")
        row = {"params": spec.num_params, "solver": solver.type, "auth": cfg.auth, **service.row()}
        root.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"service": [row], "source": source, "machine": machine()}, indent=2) + "\n")
    return path


def shard_cost_file(args: argparse.Namespace, root: Path) -> Path:
    """Each shard's a + b/S for the config's net and solver: results/shard_cost.json's ``alone`` block when this CPU
    model measured it for this config (or with ``--fixed-cycle``, a test), else ``make bench-shard-cost-alone``'s
    measurement made once now into ``root``/shard_cost.json (before any run, so nothing else is running)."""
    given = Path(args.out) / "shard_cost.json"
    if args.fixed_cycle or args.shards == 1:
        return given
    alone = json.loads(given.read_text()).get("alone") if given.is_file() else None
    if measured_here(alone) and alone["config"]["config"] == Path(args.config).stem:
        return given
    path = root / "shard_cost.json"
    if not this_cpu(path, "alone"):
        print(f"{given}: no shard costs of {Path(args.config).stem} measured on this CPU: measuring them now "
              f"(bench-shard-cost-alone, into {path})", flush=True)
        root.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "ddqn.bench.shard_cost", "--alone", "--config", args.config,
                        "--rounds", "6", "--out", str(root)], check=True, timeout=3600)
    return path


def sim_flags(args: argparse.Namespace, root: Path) -> list[str]:
    """The simulator's flags every projection, tuning and staleness run shares."""
    return ["--service", str(service_file(args, root)), "--shards", str(args.shards), "--placement", args.placement,
            "--gbps", str(args.gbps), "--shard-costs", str(shard_cost_file(args, root)),
            "--stop-score", str(max(args.levels)), *(["--fixed-cycle"] if args.fixed_cycle else [])]


def run_dir(root: Path, schedule: str, workers: int, seed: int, option: str = "") -> Path:
    return root / f"{schedule}-w{workers}-s{seed}{'-' + option if option else ''}"


def sims(args: argparse.Namespace, root: Path, plan: list[tuple[Path, int, list[str]]]) -> list[Path]:
    """Run (or reuse) each (directory, W, config overrides) of ``plan``, ``--parallel`` at a time."""
    flags = sim_flags(args, root)
    return in_parallel([lambda out=out, w=w, sets=sets: simulate(args.config, w, out, None, args.updates, sets, flags)
                        for out, w, sets in plan], args.parallel)


def read(run: Path, levels: list[float], at_updates: int) -> dict[str, Any]:
    """One run: minutes to each level, its best trailing mean, the trailing mean at ``at_updates`` updates (None when
    it ended before, or had fewer than ``TRAILING_K`` evaluations by then), updates/s, staleness, the busiest server
    thread's and card's use."""
    curve = eval_curve(run)
    means = trailing_means([r["greedy_mean"] for r in curve])
    before = [m for r, m in zip(curve, means) if r["updates"] <= at_updates and m is not None]
    ended = curve[-1]["updates"] if curve else 0
    sim = json.loads((run / "summary.json").read_text()).get("simulated", {})
    cards = sim.get("card_use") or ({"server": sim["server_nic_use"]} if sim.get("server_nic_use") else {})
    numbers = run_numbers(run)
    return {"reach": {k: (v["minutes"] if v else None) for k, v in reach_levels(curve, levels).items()},
            "best": best_trailing_mean(curve), "at_updates": before[-1] if before and ended >= at_updates else None,
            "updates": numbers["updates"], "minutes": numbers["minutes"],
            "updates_per_s": numbers["steady_updates_per_s"], "staleness_p50": numbers["staleness_p50"],
            "staleness_p95": numbers["staleness_p95"], "server": max(sim.get("shard_utilisation") or
                                                                      [sim.get("server_utilisation") or 0.0]),
            "card": max((v for c in cards.values() for v in c.values()), default=None),
            "dropped": numbers["dropped"], "curve": curve}


def mean_or_none(xs: list[float | None]) -> float | None:
    got = [x for x in xs if x is not None]
    return sum(got) / len(got) if got else None


# -- the screen: which schedules the projection runs -----------------------------------------------------------

def screen_rank(rows: dict[int, dict[int, dict[str, Any]]], top: str) -> tuple[float, float, float]:
    """A schedule's screen key (smaller is better), from its runs ``rows`` (W → seed → :func:`read`): minus the
    number of runs whose trailing mean reached ``top``; the mean minutes to it when every run reached it (else ∞);
    minus the mean of the runs' best trailing means."""
    runs = [r for per_seed in rows.values() for r in per_seed.values()]
    minutes = [r["reach"][top] for r in runs]
    reached = len(runs) - minutes.count(None)
    return -float(reached), mean_if_all(minutes), -sum(r["best"] for r in runs) / len(runs)


def screen(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """Every schedule at each W of ``--screen-workers`` on ``--screen-seeds``; the ranking and the two schedules
    the projection runs: ``worker`` and the best other one."""
    schedules = args.schedules or list(EPS_SCHEDULES)
    plan = [(run_dir(root, sch, w, s), w, [f"seed={s}", f"eps_schedule={sch}"])
            for sch in schedules for w in args.screen_workers for s in args.screen_seeds]
    sims(args, root, plan)
    top = str(max(args.levels))
    rows = {sch: {w: {s: read(run_dir(root, sch, w, s), args.levels, args.at_updates) for s in args.screen_seeds}
                  for w in args.screen_workers} for sch in schedules}
    ranked = sorted(schedules, key=lambda sch: screen_rank(rows[sch], top))
    best = next((sch for sch in ranked if sch != "worker"), "worker")
    keep = ("reach", "best", "updates", "minutes", "staleness_p50")
    table = {sch: {str(w): {str(s): {k: r[k] for k in keep} for s, r in per_seed.items()}
                   for w, per_seed in by_w.items()} for sch, by_w in rows.items()}
    return {"seeds": args.screen_seeds, "workers": args.screen_workers, "level": max(args.levels), "table": table,
            "ranked": ranked, "best": best, "projected": list(dict.fromkeys(["worker", best]))}


# -- the projection -------------------------------------------------------------------------------------------

def project(args: argparse.Namespace, root: Path, schedules: list[str]) -> dict[str, Any]:
    """Every schedule of ``schedules`` × W × seed (see the module docstring); per W the seeds summarised; speedups
    over the best W = 1 per level."""
    grid = {w: list(args.seeds) for w in args.workers} | {w: args.seeds[:1] for w in args.one_seed}
    plan = [(run_dir(root, sch, w, s), w, [f"seed={s}", f"eps_schedule={sch}"])
            for sch in schedules for w in sorted(grid) for s in grid[w]]
    sims(args, root, plan)
    levels = [str(lv) for lv in args.levels]
    runs = {sch: {w: {s: read(run_dir(root, sch, w, s), args.levels, args.at_updates) for s in grid[w]}
                  for w in sorted(grid)} for sch in schedules}
    base = baseline(runs, levels)
    table = {sch: {str(w): summarise(per_seed, base, levels, w) for w, per_seed in by_w.items()}
             for sch, by_w in runs.items()}
    return {"levels": args.levels, "reach_rule": RULE, "seeds": args.seeds, "workers": sorted(grid),
            "one_seed": args.one_seed, "schedules": schedules, "updates_budget": args.updates,
            "at_updates": args.at_updates, "shards": args.shards, "placement": args.placement, "gbps": args.gbps,
            "baseline": {lv: {"schedule": b[0], "minutes": b[1]} for lv, b in base.items()}, "table": table,
            "goal": goal(table, args.levels), "curves": {sch: {str(w): {str(s): r["curve"] for s, r in per_seed.items()}
                                                  for w, per_seed in by_w.items()} for sch, by_w in runs.items()}}


def baseline(runs: dict[str, dict[int, dict[int, dict]]], levels: list[str]) -> dict[str, tuple[str | None, list]]:
    """Per level, the W = 1 that got there soonest on average over every schedule (all its seeds reached it):
    (schedule, its minutes per seed); (None, []) when no schedule's W = 1 did."""
    out: dict[str, tuple[str | None, list]] = {}
    for lv in levels:
        best: tuple[str | None, list] = (None, [])
        for sch, by_w in runs.items():
            minutes = [r["reach"][lv] for r in by_w.get(1, {}).values()]
            if mean_if_all(minutes) < mean_if_all(best[1]):
                best = (sch, minutes)
        out[lv] = best
    return out


def summarise(per_seed: dict[int, dict], base: dict[str, tuple], levels: list[str], workers: int) -> dict[str, Any]:
    """One W's seeds: minutes per level (each seed, the mean and its interval), the speedup over the baseline, the
    score at a fixed update count, and the timing figures' means."""
    rows = list(per_seed.values())
    return {"seeds": list(per_seed), "minutes": {lv: [r["reach"][lv] for r in rows] for lv in levels},
            "interval": {lv: seed_interval([r["reach"][lv] for r in rows]).to_dict() for lv in levels},
            "speedup": {lv: seed_speedup(base[lv][1], [r["reach"][lv] for r in rows], workers) if base[lv][1] else None
                        for lv in levels},
            "best": [r["best"] for r in rows], "at_updates": [r["at_updates"] for r in rows],
            **{k: mean_or_none([r[k] for r in rows]) for k in ("updates_per_s", "staleness_p50", "staleness_p95",
                                                              "server", "card")},
            "updates": [r["updates"] for r in rows], "dropped": [r["dropped"] for r in rows]}


def goal(table: dict[str, dict[str, dict]], levels: list[float]) -> dict[str, Any] | None:
    """The goal per W of :data:`GOAL` for the schedule whose worst seeds come closest (the best schedule); None when
    its level is not in the table."""
    if GOAL["level"] not in levels:
        return None
    lv, out = str(GOAL["level"]), {}
    for w, factor in GOAL["factor"].items():
        cells = [(sch, t[w]["speedup"].get(lv)) for sch, t in table.items() if w in t and t[w]["speedup"].get(lv)]
        worst = [(sch, s["worst"]) for sch, s in cells if s["worst"] is not None]
        sch, got = max(worst, key=lambda x: x[1]) if worst else (None, None)
        out[w] = {"schedule": sch, "worst": got, "want": factor * int(w), "level": GOAL["level"],
                  "met": got is not None and got >= factor * int(w) and got <= int(w)}
    return out


def best_schedule(data: dict[str, Any]) -> str:
    """The projection's schedule that does best at its largest W: fewest mean minutes to the highest level every seed
    of that W reached (∞ unless all did), trying each level from the highest down, then the same at each smaller W
    with every seed; left tied (nothing reached anywhere), the higher mean best trailing mean at the largest W."""
    proj = data["projection"]
    levels = [str(lv) for lv in sorted(proj["levels"], reverse=True)]
    ws = [str(w) for w in sorted(proj["workers"], reverse=True)]

    def key(sch: str) -> tuple[float, ...]:
        t = proj["table"][sch]
        minutes = [mean_if_all(t[w]["minutes"][lv]) for w in ws if w in t for lv in levels]
        return (*minutes, -(mean_or_none(t[ws[0]]["best"]) or 0.0) if ws[0] in t else 0.0)

    return min(proj["schedules"], key=key)


# -- staleness options, and λ tuned on other seeds ------------------------------------------------------------

def tune_dc(args: argparse.Namespace, root: Path, schedule: str) -> dict[str, Any]:
    """λ at W = ``--tune-workers`` on the tuning seeds: the one that reaches the highest level soonest on average."""
    w = args.tune_workers
    plan = [(run_dir(root, schedule, w, s, f"dc{lam:g}"), w, [f"seed={s}", f"eps_schedule={schedule}",
                                                            f"dc_lambda={lam}"])
            for lam in args.lambdas for s in args.tune_seeds]
    sims(args, root, plan)
    top = str(max(args.levels))
    rows = {}
    for lam in args.lambdas:
        minutes = [read(run_dir(root, schedule, w, s, f"dc{lam:g}"), args.levels, args.at_updates)["reach"][top]
                   for s in args.tune_seeds]
        rows[f"{lam:g}"] = {"minutes": minutes, "mean": mean_if_all(minutes)}
    chosen = min(rows, key=lambda k: rows[k]["mean"])
    return {"schedule": schedule, "seeds": args.tune_seeds, "workers": w, "level": max(args.levels),
            "rows": {k: {**v, "mean": v["mean"] if math.isfinite(v["mean"]) else None} for k, v in rows.items()},
            "lambda": float(chosen)}


def staleness(args: argparse.Namespace, root: Path, schedule: str, lam: float, base: dict) -> dict[str, Any]:
    """At each W of ``--staleness-workers``, the first two seeds: none, max_staleness W/2, staleness_lr, dc_lambda λ."""
    seeds, levels = args.seeds[:2], [str(lv) for lv in args.levels]
    options = {w: {"none": [], "max_staleness": [f"max_staleness={w // 2}"], "staleness_lr": ["staleness_lr=true"],
                   "dc_lambda": [f"dc_lambda={lam}"]} for w in args.staleness_workers}
    plan = [(run_dir(root, schedule, w, s, "" if name == "none" else name), w,
             [f"seed={s}", f"eps_schedule={schedule}", *extra])
            for w, opts in options.items() for name, extra in opts.items() for s in seeds]
    sims(args, root, plan)
    table = {str(w): {name: summarise({s: read(run_dir(root, schedule, w, s, "" if name == "none" else name),
                                                args.levels, args.at_updates) for s in seeds},
                                       {lv: base[lv] for lv in levels}, levels, w)
                      for name in opts} for w, opts in options.items()}
    return {"schedule": schedule, "seeds": seeds, "dc_lambda": lam, "max_staleness": "W/2", "table": table}


# -- validation at W = 2 --------------------------------------------------------------------------------------

def validate(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """W = 2, real and simulated, every seed; the split test on greedy score against server updates."""
    configs = {s: seeded_config(args.config, s, root) for s in args.seeds}
    for s in args.seeds:  # real runs one at a time, alone on the machine
        real_run(configs[s], 2, args.real_minutes, root / f"real-w2-s{s}")
    reals = {s: eval_curve(root / f"real-w2-s{s}") for s in args.seeds}
    flags = ["--service", str(service_file(args, root)), *(["--fixed-cycle"] if args.fixed_cycle else [])]
    in_parallel([lambda s=s: simulate(configs[s], 2, root / f"sim-w2-s{s}", None, reals[s][-1]["updates"], (), flags)
                 for s in args.seeds], args.parallel)
    simulated = {s: eval_curve(root / f"sim-w2-s{s}") for s in args.seeds}
    curves = [*simulated.values(), *reals.values()]
    lo, hi = max(c[0]["updates"] for c in curves), min(c[-1]["updates"] for c in curves)
    grid = [r["updates"] for r in reals[args.seeds[0]] if lo <= r["updates"] <= hi]
    on = [list(np.interp(grid, [r["updates"] for r in c], [r["greedy_mean"] for r in c])) for c in curves]
    k = len(simulated)
    test = split_test(on[:k], on[k:]) if grid else None
    timing = {str(s): {"real": run_numbers(root / f"real-w2-s{s}"), "sim": run_numbers(root / f"sim-w2-s{s}")}
              for s in args.seeds}
    return {"seeds": args.seeds, "real_minutes": args.real_minutes, "grid_updates": grid, "test": test,
            "criterion": "stats.split_test passes (docs/simulator.md, fixed before the runs)", "timing": timing,
            "curves": {"sim": {str(s): c for s, c in simulated.items()}, "real": {str(s): c for s, c in reals.items()}}}


# -- figure and main ------------------------------------------------------------------------------------------

def band(curves: list[list[dict]], x: str, points: int = 60) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Greedy score of several seeds on one grid of ``x`` (each seed inside its own range): grid, mean, min, max."""
    top = max(c[-1][x] for c in curves)
    xs = np.linspace(0.0, top, points)
    ys = np.array([np.where(xs <= c[-1][x], np.interp(xs, [r[x] for r in c], [r["greedy_mean"] for r in c]), np.nan)
                   for c in curves])
    with np.errstate(all="ignore"):
        return xs, np.nanmean(ys, 0), np.nanmin(ys, 0), np.nanmax(ys, 0)


def plot(data: dict[str, Any], path: Path) -> Path:
    """The best schedule's mean curve per W with its range over seeds, against minutes and against updates; speedup
    to the highest level per schedule (worst to best seed) against W; the validation at W = 2, once it ran."""
    proj, v = data["projection"], data.get("validation")
    sch, top = best_schedule(data), str(max(proj["levels"]))
    with figure(path, ncols=4 if v else 3, figsize=(21 if v else 16, 4.5)) as (fig, axes):
        for w, seeds in proj["curves"][sch].items():
            curves = [c for c in seeds.values() if c]
            for ax, x in ((axes[0], "minutes"), (axes[2], "updates")):
                xs, mean, low, high = band(curves, x)
                ax.plot(xs, mean, label=f"W={w}" + (" (1 seed)" if len(curves) == 1 else ""))
                ax.fill_between(xs, low, high, alpha=0.2)
        for name, t in proj["table"].items():
            pts = [(int(w), c["speedup"][top]) for w, c in t.items() if c["speedup"].get(top)
                   and c["speedup"][top]["best"] is not None]
            if pts:
                ws = [w for w, _ in pts]
                mid = [s["speedup"] or s["best"] for _, s in pts]
                lo = [m - (s["worst"] or 0.0) for m, (_, s) in zip(mid, pts)]
                hi = [s["best"] - m for m, (_, s) in zip(mid, pts)]
                axes[1].errorbar(ws, mid, yerr=[lo, hi], marker="o", capsize=3, label=name)
        ws = proj["workers"]
        axes[1].plot(ws, ws, "k--", lw=1, label="linear")
        axes[1].set_xscale("log", base=2)
        axes[1].set_yscale("log", base=2)
        for ax, (x, t) in zip(axes, [("simulated minutes", f"{sch}: mean and range over seeds"),
                                     ("workers W", f"speedup to score {top} (worst to best seed)"),
                                     ("server updates", f"{sch}: score per update")]):
            ax.set_xlabel(x)
            ax.set_ylabel("greedy mean score" if ax is not axes[1] else "speedup over the best W = 1")
            ax.set_title(t)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        if v:
            plot_validation(axes[3], v)
        fig.suptitle(f"Learning at scale ({data['config']} config): {STATEMENT}")
    return path


def plot_validation(ax: Any, v: dict[str, Any]) -> None:
    """The validation at W = 2: each seed's real (solid) and simulated (dashed) greedy score against updates."""
    for i, s in enumerate(v["curves"]["real"]):
        for kind, style, name in (("real", "-", "real"), ("sim", "--", "simulated")):
            c = v["curves"][kind].get(s) or []
            ax.plot([r["updates"] / 1000 for r in c], [r["greedy_mean"] for r in c], style, color=f"C{i}", lw=1,
                    label=f"seed {s}, {name}")
    t = v["test"]
    verdict = f"split test p = {t['p']:.2f}, {'passed' if t['pass'] else 'failed'}" if t else "no shared grid"
    ax.set_xlabel("server updates (thousands)")
    ax.set_ylabel("greedy mean score")
    ax.set_title(f"W = 2, real vs simulated: {verdict}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--screen", action="store_true")
    ap.add_argument("--project", action="store_true")
    ap.add_argument("--tune-dc", action="store_true")
    ap.add_argument("--staleness", action="store_true")
    ap.add_argument("--validate", action="store_true")
    ap.add_argument("--config", default="tuned")
    ap.add_argument("--schedules", nargs="+", choices=EPS_SCHEDULES,
                    help="default: --screen every one, --project the screen's two (else every one)")
    ap.add_argument("--screen-seeds", type=int, nargs="+", default=[7], help="seeds only the screen uses")
    ap.add_argument("--screen-workers", type=int, nargs="+", default=[16, 64])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 16, 64], help="W with every seed")
    ap.add_argument("--one-seed", type=int, nargs="*", default=[2, 4, 8, 32], help="W with the first seed only")
    ap.add_argument("--levels", type=float, nargs="+", default=[3.0, 4.0, 5.0])
    ap.add_argument("--updates", type=int, default=80_000,
                    help="server updates budget of a run (tuned at W = 2 reached 5 after ≈ 33,000–40,000)")
    ap.add_argument("--at-updates", type=int, default=20_000,
                    help="learning per update: the trailing mean here (it needs k evaluations before it)")
    ap.add_argument("--shards", type=int, default=16, help="bench-shard-projection's best S at W = 64")
    ap.add_argument("--placement", choices=["driver", "executors"], default="executors")
    ap.add_argument("--gbps", type=float, default=10.0)
    ap.add_argument("--tune-seeds", type=int, nargs="+", default=[5, 6])
    ap.add_argument("--tune-workers", type=int, default=16, help="W at which --tune-dc tunes λ")
    ap.add_argument("--staleness-workers", type=int, nargs="+", default=[16, 64])
    ap.add_argument("--lambdas", type=float, nargs="+", default=[0.1, 0.5, 1.0, 2.0])
    ap.add_argument("--dc-lambda", type=float, help="DC-ASGD's λ for --staleness (default: --tune-dc's)")
    ap.add_argument("--real-minutes", type=float, default=20.0)
    ap.add_argument("--parallel", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--fixed-cycle", action="store_true",
                    help="tests only: the simulator's fixed compute times, not this CPU's (recorded; not a result)")
    ap.add_argument("--out", default="results")
    add_restart(ap, "other config values or on another CPU model")
    args = ap.parse_args(argv)
    if not (args.screen or args.project or args.tune_dc or args.staleness or args.validate):
        ap.error("give --screen, --project, --tune-dc, --staleness and/or --validate")
    if 1 not in args.workers or len(args.seeds) < 2 or min(
            [*args.workers, *args.one_seed, *args.staleness_workers, args.tune_workers, *args.screen_workers]) < 1:
        ap.error("--workers must include 1, --seeds at least two, and every W at least 1")
    if (set(args.tune_seeds) | set(args.screen_seeds)) & set(args.seeds) or set(args.tune_seeds) & set(
            args.screen_seeds):
        ap.error("--seeds, --tune-seeds and --screen-seeds must not share a seed (no table reports a seed that chose "
                 "something)")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    results = Path(args.out)
    root = results / "runs" / f"scale-projection-{Path(args.config).stem}"
    path = results / "scale_projection.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    values = config_values(args.config)
    done = [k for k in ("screen", "projection", "tune_dc", "staleness", "validation") if k in data]
    if done and not kept_or_restart(path, f"its {', '.join(done)}",
                                    made_elsewhere(data.get("config_values"), data.get("machine"), values),
                                    args.restart):
        data = {}
    data.update({"config": Path(args.config).stem, "config_values": values, "runs": str(root),
                 "statement": "FIXED CYCLE (a test, not a result)" if args.fixed_cycle else STATEMENT})
    data.pop("name", None)
    if args.screen:
        data["screen"] = screen(args, root)
    if args.project:
        schedules = args.schedules or data.get("screen", {}).get("projected") or list(EPS_SCHEDULES)
        data["projection"] = project(args, root, schedules)
    if (args.tune_dc or args.staleness) and "projection" not in data:
        raise SystemExit(f"{path}: no projection yet (--project first): the staleness runs use its best schedule")
    if args.tune_dc:
        data["tune_dc"] = tune_dc(args, root, best_schedule(data))
    if args.staleness:
        lam = args.dc_lambda if args.dc_lambda is not None else data.get("tune_dc", {}).get("lambda")
        if lam is None:
            raise SystemExit("--staleness: give --dc-lambda or run --tune-dc first")
        base = {lv: (b["schedule"], b["minutes"]) for lv, b in data["projection"]["baseline"].items()}
        data["staleness"] = staleness(args, root, best_schedule(data), lam, base)
    if args.validate:
        data["validation"] = validate(args, root)
    if "projection" in data:
        data["png"] = plot(data, results / "scale_projection.png").name
    data.pop("machine", None)
    write_result("scale_projection", data, results)


if __name__ == "__main__":
    main()
