"""Scale-out beyond this machine: validate the simulator (``ddqn.sim``) against real runs, then project W workers.

    python -m ddqn.bench.scale_out [--validate] [--project] [--controls] [--config small] [--workers 1 2 4 …]
        [--minutes M] [--updates N] [--seeds 0 1] [--real-minutes M] [--levels 1 2 3] [--parallel 2]

* ``--validate``: real asynchronous runs with W = 1 and 2 (``ddqn.bench.runs.train_run``: spark-submit, this
  machine's 2 cores; one at a time, nothing else running) and simulations of the same config and seeds; compares
  updates/s (tolerance 15 %), staleness p50/p95 (within 1) and greedy score against updates (inside the spread of
  the real seeds at ≥ 90 % of the compared update counts). The tolerances were fixed before anything ran.
* ``--project``: simulations for each W (default 1, 2, 4, 8, 16, 32, 64): simulated minutes to three score levels
  (the trailing mean of ``stats.TRAILING_K`` evaluations, ``ddqn.bench.stats.reach``), speedup over W = 1 against
  linear, staleness p50/p95, server utilisation; the saturation W per net from ``results/ps_speed.json``
  (``make bench-ps``: timing, not learning).
* ``--controls``: the server's staleness controls (``max_staleness`` K = W/2, ``staleness_lr``) at W = 16 and 64.

Every run, real or simulated, evaluates on the config's own grid (``eval_every``, ``snapshot_every``). Simulations
run ``--parallel`` at a time (one core each); a run directory that already holds a summary.json is reused when its
config values (grid and ``--sim-set`` included) are today's and it ran on this CPU (``runs.finished_run``: else a
one-line error), so an interrupted sweep continues; the budget (``--minutes``/``--updates``) is not checked. Writes
results/scale_out.json (one entry per config, other configs kept) and results/scale_out_<config>.png. Every number
is in **simulated minutes on one core per worker of this machine type**.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

from ddqn.bench.common import add_restart, figure, kept_or_restart, machine, made_elsewhere, write_result
from ddqn.bench.runs import same_grid
from ddqn.bench.sim_runs import eval_curve, in_parallel, real_run, run_numbers, seeded_config, simulate
from ddqn.bench.stats import RULE, best_trailing_mean, reach_levels, speedup
from ddqn.config import config_values

STATEMENT = "simulated minutes on one core per worker of this machine type"
PAPER_LEVELS = (3.0, 5.0, 10.0)  # the levels on the paper config
TOLERANCE = {"updates_per_s_rel": 0.15, "staleness_abs": 1.0, "inside_spread": 0.9}


# -- runs ----------------------------------------------------------------------------------------------------

# -- reading a run -------------------------------------------------------------------------------------------

# -- validation ----------------------------------------------------------------------------------------------

def compared_points(sim: list[dict], reals: list[list[dict]]) -> list[dict]:
    """The simulation's evaluations within the update range every real run covers (none if a real curve is empty)."""
    if any(not r for r in reals):
        return []
    top = min(r[-1]["updates"] for r in reals)
    return [p for p in sim if p["updates"] <= top]


def spread_share(sim: list[dict], reals: list[list[dict]]) -> float | None:
    """Share of the simulation's evaluations whose greedy mean lies inside [min, max] of the real seeds' curves
    (each interpolated at the same update count), over the update range all real runs cover."""
    pts = compared_points(sim, reals) if len(reals) >= 2 else []
    if not pts:
        return None
    inside = 0
    for p in pts:
        vals = [float(np.interp(p["updates"], [x["updates"] for x in r], [x["greedy_mean"] for x in r]))
                for r in reals]
        inside += bool(min(vals) - 1e-9 <= p["greedy_mean"] <= max(vals) + 1e-9)
    return inside / len(pts)


def noise_ratio(sim: list[dict], reals: list[list[dict]]) -> dict[str, float] | None:
    """Added after the first validation ran, beside the fixed tolerances, not instead of them: with two real seeds,
    a curve that is just one more seed lies inside their spread at a point only 1/3 of the time (the middle of three
    exchangeable values), so "inside the spread at ≥ 90 %" fails a perfect simulator. Instead: RMS of (simulation −
    mean of the two real seeds) over RMS of (real seed A − real seed B), at the simulation's evaluations within the
    update range both real runs cover. For independent curves of equal noise it is √(3/4) ≈ 0.87; a systematic
    difference makes it larger. Also the mean and RMS differences (simulation − real mean) in score points: the ratio
    alone misleads when the two real curves happen to agree at a few points."""
    pts = compared_points(sim, reals) if len(reals) == 2 else []
    if not pts:
        return None
    x = [p["updates"] for p in pts]
    a, b = (np.interp(x, [q["updates"] for q in r], [q["greedy_mean"] for q in r]) for r in reals)
    diff = np.array([p["greedy_mean"] for p in pts]) - (a + b) / 2
    spread = float(np.sqrt(np.mean((a - b) ** 2)))
    rms = float(np.sqrt(np.mean(diff ** 2)))
    return {"rms_ratio": rms / spread if spread else float("inf"), "mean_diff": float(diff.mean()), "rms_diff": rms,
            "real_rms_diff": spread, "points": len(pts)}


def validate(args: argparse.Namespace, root: Path) -> dict:
    """Real and simulated W = 1, 2 runs per seed, compared with the fixed tolerances."""
    out: dict = {"tolerance": TOLERANCE, "real_minutes": args.real_minutes, "seeds": args.seeds, "workers": {}}
    configs = {s: seeded_config(args.config, s, root) for s in args.seeds}
    for w in (1, 2):  # real runs alone on the machine, then the simulations two at a time
        for s in args.seeds:
            real_run(configs[s], w, args.real_minutes, root / f"real-w{w}-s{s}")
    in_parallel([lambda w=w, s=s: simulate(configs[s], w, root / f"sim-w{w}-s{s}", args.real_minutes, None,
                                           args.sim_set) for w in (1, 2) for s in args.seeds], args.parallel)
    out["grid"] = same_grid([root / f"{kind}-w{w}-s{s}" for kind in ("real", "sim") for w in (1, 2)
                             for s in args.seeds])
    for w in (1, 2):
        real = {s: run_numbers(root / f"real-w{w}-s{s}") for s in args.seeds}
        sim = {s: run_numbers(root / f"sim-w{w}-s{s}") for s in args.seeds}
        real_curves = [eval_curve(root / f"real-w{w}-s{s}") for s in args.seeds]
        rows = {}
        for s in args.seeds:
            r, m = real[s], sim[s]
            rel = m["steady_updates_per_s"] / r["steady_updates_per_s"] - 1 if r["steady_updates_per_s"] else None
            sim_curve = eval_curve(root / f"sim-w{w}-s{s}")
            share = spread_share(sim_curve, real_curves)
            rows[s] = {"real": r, "sim": m, "updates_per_s_rel_diff": rel, "noise": noise_ratio(sim_curve, real_curves),
                       "staleness_p50_diff": m["staleness_p50"] - r["staleness_p50"],
                       "staleness_p95_diff": m["staleness_p95"] - r["staleness_p95"], "inside_spread": share,
                       "pass": {"updates_per_s": rel is not None and abs(rel) <= TOLERANCE["updates_per_s_rel"],
                                "staleness": abs(m["staleness_p50"] - r["staleness_p50"]) <= TOLERANCE["staleness_abs"]
                                and abs(m["staleness_p95"] - r["staleness_p95"]) <= TOLERANCE["staleness_abs"],
                                "score_vs_updates": share is not None and share >= TOLERANCE["inside_spread"]}}
        out["workers"][str(w)] = rows
    return out


# -- projection ----------------------------------------------------------------------------------------------

def levels_for(args: argparse.Namespace, w1_curve: list[dict]) -> list[float]:
    """The score levels: given, else 50/75/90 % of W = 1's best trailing mean (0.5 steps) and, on the paper config,
    those of the paper's levels (3, 5, 10) that W = 1 reaches: a speedup over W = 1 needs a level that W = 1
    reaches (``stats.reach``)."""
    if args.levels:
        return list(args.levels)
    best = best_trailing_mean(w1_curve)
    paper = [lv for lv in PAPER_LEVELS if lv <= best] if Path(args.config).stem == "paper" else []
    return sorted({*paper, *(max(0.5, round(2 * f * best) / 2) for f in (0.5, 0.75, 0.9))})


def reach_rows(curves: dict[int, list[dict]], levels: list[float]) -> dict[int, dict]:
    """Per W: simulated minutes to reach each level (``reach``: ``stats.reach``) and the speedup over W = 1
    (``speedup``; None when either did not reach it)."""
    base = reach_levels(curves.get(1, []), levels)
    rows = {}
    for w, curve in curves.items():
        reach = reach_levels(curve, levels)
        rows[w] = {"reach": reach, "speedup": {k: speedup(base[k], r) for k, r in reach.items()}}
    return rows


def project(args: argparse.Namespace, root: Path) -> dict:
    """Simulations for each W; minutes to the levels, speedups over W = 1, staleness, utilisation."""
    config = seeded_config(args.config, args.seeds[0], root)
    runs = in_parallel([lambda w=w: simulate(config, w, root / f"proj-w{w}", args.minutes, args.updates,
                                             args.sim_set) for w in args.workers], args.parallel)
    grid = same_grid(runs)
    curves = {w: eval_curve(r) for w, r in zip(args.workers, runs)}
    levels = levels_for(args, curves.get(1, curves[args.workers[0]]))
    reached = reach_rows(curves, levels)
    rows = {str(w): {**run_numbers(run), **reached[w]} for w, run in zip(args.workers, runs)}
    return {"levels": levels, "reach_rule": RULE, "grid": grid, "minutes_budget": args.minutes,
            "updates_budget": args.updates, "rows": rows, "sim_set": list(args.sim_set),
            "curves": {str(w): c for w, c in curves.items()}}


def controls(args: argparse.Namespace, root: Path, levels: list[float]) -> dict:
    """Staleness controls at W = 16 and 64: off, max_staleness K = W/2, staleness_lr."""
    config = seeded_config(args.config, args.seeds[0], root)
    variants = {"off": [], "max_staleness": None, "staleness_lr": ["staleness_lr=true"]}
    jobs, keys = [], []
    for w in args.control_workers:
        for name, extra in variants.items():
            extra = [f"max_staleness={max(1, w // 2)}"] if extra is None else extra
            out = root / (f"proj-w{w}" if name == "off" else f"ctl-w{w}-{name}")
            jobs.append(lambda w=w, out=out, extra=extra: simulate(config, w, out, args.minutes, args.updates,
                                                                   [*args.sim_set, *extra]))
            keys.append((w, name))
    rows: dict = {}
    runs = in_parallel(jobs, args.parallel)
    grid = same_grid(runs)
    for (w, name), run in zip(keys, runs):
        rows.setdefault(str(w), {})[name] = {**run_numbers(run), "reach": reach_levels(eval_curve(run), levels),
                                             "max_staleness": max(1, w // 2) if name == "max_staleness" else 0}
    return {"workers": args.control_workers, "reach_rule": RULE, "grid": grid, "rows": rows}


def saturation_points(results: Path) -> tuple[list[dict], dict | None]:
    """The saturation W per net from ``ps_speed.json`` (``make bench-ps``) and the machine that measured it, or
    none."""
    path = results / "ps_speed.json"
    ps = json.loads(path.read_text()) if path.exists() else {}
    return ps.get("saturation", []), ps.get("machine")


# -- figure and main -----------------------------------------------------------------------------------------

def plot(data: dict, path: Path) -> Path:
    """Greedy score vs simulated minutes per W; speedup vs W against linear; validation score vs updates."""
    with figure(path, ncols=3, figsize=(16, 4.5)) as (fig, axes):
        proj = data.get("projection")
        if proj:
            for w, c in proj["curves"].items():
                axes[0].plot([r["minutes"] for r in c], [r["greedy_mean"] for r in c], marker=".", label=f"W={w}")
            ws = sorted(int(w) for w in proj["rows"])
            for lv in map(str, proj["levels"]):
                pts = [(w, proj["rows"][str(w)]["speedup"][lv]) for w in ws if proj["rows"][str(w)]["speedup"][lv]]
                if pts:
                    axes[1].plot(*zip(*pts), marker="o", label=f"score {lv}")
            axes[1].plot(ws, ws, "k--", lw=1, label="linear")
            axes[1].set_xscale("log", base=2)
            axes[1].set_yscale("log", base=2)
        val = data.get("validation")
        if val:
            for w, rows in val["workers"].items():
                for s in rows:
                    for kind, style in (("real", "-"), ("sim", ":")):
                        c = eval_curve(Path(data["runs"]) / f"{kind}-w{w}-s{s}")
                        axes[2].plot([r["updates"] for r in c], [r["greedy_mean"] for r in c], style,
                                     label=f"{kind} W={w} seed {s}")
        elif proj:  # no validation on this config: what each W learned per update instead
            for w, c in proj["curves"].items():
                axes[2].plot([r["updates"] for r in c], [r["greedy_mean"] for r in c], marker=".", label=f"W={w}")
        third = "validation: real vs simulated" if val else "projection: score vs updates"
        for ax, (x, y, t) in zip(axes, [("simulated minutes", "greedy mean score", "projection"),
                                        ("workers W", "speedup over W = 1", "speedup (time to score)"),
                                        ("server updates", "greedy mean score", third)]):
            ax.set_xlabel(x)
            ax.set_ylabel(y)
            ax.set_title(t)
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
        fig.suptitle(f"Scale-out ({data['config']} config): {STATEMENT}")
    return path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--validate", action="store_true", help="real vs simulated W = 1, 2")
    ap.add_argument("--project", action="store_true", help="simulate each W")
    ap.add_argument("--controls", action="store_true", help="staleness controls at --control-workers")
    ap.add_argument("--config", default="small")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    ap.add_argument("--control-workers", type=int, nargs="+", default=[16, 64])
    ap.add_argument("--minutes", type=float, default=30.0, help="simulated minutes budget per projection run")
    ap.add_argument("--updates", type=int, help="server-updates budget per projection run (whichever comes first)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--real-minutes", type=float, default=20.0, help="wall-clock minutes of each real run")
    ap.add_argument("--levels", type=float, nargs="+", help="score levels (default: see levels_for)")
    ap.add_argument("--parallel", type=int, default=min(2, os.cpu_count() or 1), help="simulations at once")
    ap.add_argument("--sim-set", action="append", default=[], metavar="KEY=VALUE",
                    help="config override for the simulations only (e.g. eval_episodes=10 for a smoke run)")
    ap.add_argument("--out", default="results")
    add_restart(ap, "other config values or on another CPU model (the config's part)")
    args = ap.parse_args(argv)
    if not (args.validate or args.project or args.controls):
        args.validate = args.project = args.controls = True
    results = Path(args.out)
    root = results / "runs" / f"scale-out-{Path(args.config).stem}"
    path = results / "scale_out.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    for key in ("name", "machine"):  # write_result adds them afresh
        data.pop(key, None)
    name = Path(args.config).stem
    part = data.setdefault("configs", {}).setdefault(name, {})  # parts not rerun now are kept from the file
    # each config's part names the machine that measured it (the file's top-level machine is the latest run's)
    here, values = machine(), config_values(args.config)
    done = [k for k in ("validation", "projection", "controls") if k in part]
    if done and not kept_or_restart(path, f"config {name}'s {', '.join(done)}",
                                    made_elsewhere(part.get("config_values"), part.get("machine"), values),
                                    args.restart):  # a comparison does not mix CPUs or configs
        part.clear()
    part.update({"config": name, "runs": str(root), "cores": os.cpu_count(), "machine": here,
                 "config_values": values})
    if args.validate:
        part["validation"] = validate(args, root)
    if args.project:
        part["projection"] = project(args, root)
    if args.controls:
        levels = part.get("projection", {}).get("levels") or list(args.levels or PAPER_LEVELS)
        part["controls"] = controls(args, root, levels)
    part["png"] = plot(part, results / f"scale_out_{name}.png").name
    saturation, saturation_machine = saturation_points(results)
    data.update({"statement": STATEMENT, "saturation": saturation, "saturation_machine": saturation_machine})
    write_result("scale_out", data, results)

if __name__ == "__main__":
    main()
