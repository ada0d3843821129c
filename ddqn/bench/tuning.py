"""What buys score per wall-clock minute: variants of the `tuned` config, each trained the same way, one at a time.

    python -m ddqn.bench.tuning [--minutes 30] [--variants base gamma-0.99 …] [--workers 2] [--seed 0] [--every 5000]

Each variant (:data:`VARIANTS`) is the search's starting point (:data:`SEARCH`: `tuned` as it was when the search
began) with a few config keys and/or solver fields changed, and is measured against `base` (that starting point
itself) or the variant it names; the board and the evaluation protocol stay the paper's, and so does the net but in
`dueling`. Every run is the real Spark job
(``train_or_reuse``: `--workers` async workers on this machine's cores) for the same wall-clock budget, one after
another, never at the same time; its snapshots are evaluated afterwards on the training-time evaluation episodes
(seed 10,000 + the run's seed, greedy), against the time each snapshot was taken (bench-scaling's clock); minutes to
a level come from the trailing mean of ``stats.TRAILING_K`` evaluations (``ddqn.bench.stats.reach``). Every run
evaluates and snapshots every ``--every`` env steps (summed over workers): one grid for the whole table. A run
directory (one per variant, seed and budget) that already holds a summary.json is reused if the variant's config has
the same values today, grid included, and it ran on this CPU (else a one-line error); variants not rerun are kept in
results/tuning.json with the values their variant has today (a stale row is dropped with a line saying why), so
the table grows across sessions; a file run another way (workers, ``--set``, grid) is refused in one line before
anything trains (``--restart`` begins it anew). A row is one
variant at one budget and seed on one CPU (:func:`row_key`, e.g. ``base 60 min s0 on AuthenticAMD-25-1-Zen``): a
60-minute run sits beside the same variant's 30-minute run, and a run on another CPU beside this one's, instead of
replacing it; a variant is only ever compared with a row of the same CPU (the report's tables are per CPU).
Short runs rank candidates; the plateau shows after ≈ 25 minutes, so confirm winners on full-length runs.
Writes results/tuning.json and one figure of curves per CPU, results/tuning-<CPU>.png (``common.cpu_tag``).
"""
from __future__ import annotations

import argparse
import json
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ddqn.bench.common import add_restart, cpu_tag, kept_or_restart, machine, write_result
from ddqn.bench.runs import confirm_best, grid_overrides, plot_curves, run_record, snapshot_scores, train_or_reuse
from ddqn.bench.stats import RULE, reach_levels, standard_error
from ddqn.config import config_values, load_config, save_config, value_differences
from ddqn.rundir import set_aside_earlier_run
from ddqn.solvers.flat import load_solver_spec

BASE = "tuned"
# The search's starting point: the values `tuned` had when the search began and has changed since (train_every 2
# until 2026-12-07, when `train-every-4` beat it on 60-minute runs of two seeds and became `tuned`'s value, and 4
# until `train-every-8` beat that the same way and became `tuned`'s value in turn). Every
# variant is `tuned` with these and then its own changes, so a row keeps describing the run it was after `tuned`
# moves on; `base` is the starting point itself.
SEARCH: dict[str, object] = {"train_every": 2}
LEVELS = (3.0, 5.0, 10.0)


@dataclass(frozen=True)
class Variant:
    """`tuned` with :data:`SEARCH` and then ``config`` keys changed; ``solver`` (a shipped solver prototxt) and
    ``solver_fields`` (fields set in it, e.g. ``base_lr``) give a solver prototxt of its own in the run directory."""

    what: str
    config: dict[str, object] = field(default_factory=dict)
    solver: str | None = None
    solver_fields: dict[str, object] = field(default_factory=dict)
    batch_size: int | None = None  # the net's minibatch N (its Input shapes' first dim), in a prototxt of its own
    against: str = "base"  # the variant whose row at the same budget, seed and CPU this one is measured against


LIBRARY = {"double_dqn": False, "train_every": 1}  # the library's targets; it trains on every env step
LIBRARY_ADAM = {"solver": "prototxt/solver_adam.prototxt", "solver_fields": {"base_lr": 2.5e-4, "delta": 1e-8}}
# Prioritized replay as Schaul et al. ran the proportional variant (α 0.6, β 0.4 annealed to 1). β reaches 1 after
# 150,000 env steps of a worker, chosen when a worker of `base` played ≈ 124,000 an hour (β ≈ 0.9 at 60 min). How
# soon it gets there depends on the CPU: `base`'s 60-minute runs recorded 420,832 env steps in all on a Zen 3 and
# 715,532 on a Zen 4 (results/tuning.json; 2 workers), so β is 1 after ≈ 43 and ≈ 25 min there. One schedule for
# every budget, since the 60-minute figures are read from the first hour of the 120-minute runs (issue 30). Schaul
# also divides the step size by 4 with priorities; `per` leaves it (one change at a time), `per-lr-4` tries it.
PER = {"replay_alpha": 0.6, "replay_beta": 0.4, "replay_beta_steps": 150_000}
VARIANTS: dict[str, Variant] = {
    "base": Variant("the search's starting point, `tuned` before 4 and 8 env steps per gradient (Adam 2.5e-4, γ 0.95, "
                    "replay 30k, ε → 0.1 over 25k per worker, 2 env steps per gradient, C 1,000, plain DQN targets, "
                    "error clip 1)"),
    "rmsprop": Variant("the tuned config before Adam: RMSProp 1e-3, ε → 0.1 over 10,000 steps, Double-DQN targets",
                       {"eps_decay_steps": 10_000, "double_dqn": True, "train_every": 1},
                       solver="prototxt/solver_rmsprop_tuned.prototxt"),
    "library": Variant("the single-process library's setting in this system: Adam 2.5e-4 (PyTorch's ε 1e-8), ε → 0.1 "
                       "over 50,000 steps, plain (not Double) DQN targets, Huber loss (error clip 1)",
                       {"eps_decay_steps": 50_000, **LIBRARY}, **LIBRARY_ADAM),
    "library-eps-25k": Variant("`library` with ε annealed over 25,000 steps per worker: 50,000 env steps in all over "
                               "2 workers, as the single process annealed over its 50,000 (= tuned before "
                               "train_every 2)", {"eps_decay_steps": 25_000, **LIBRARY}, **LIBRARY_ADAM),
    "library-cells": Variant("`library` with frames of 1 pixel per cell inside a visible wall",
                             {"eps_decay_steps": 50_000, "frame_layout": "cells", **LIBRARY}, **LIBRARY_ADAM),
    "gamma-0.99": Variant("γ 0.99: a horizon of ≈ 100 steps instead of ≈ 20", {"gamma": 0.99}),
    "double-dqn": Variant("Double-DQN targets (one more forward of the online net per gradient)", {"double_dqn": True}),
    "n-step-3": Variant("3-step returns (γ³ on the bootstrap; Rainbow's choice), one env step per gradient",
                        {"n_step": 3, "train_every": 1}),
    "cells": Variant("frames of 1 pixel per cell inside a visible wall, not the board stretched to 16 pixels "
                     "(cells 1 or 2 pixels wide)", {"frame_layout": "cells"}),
    "replay-100k": Variant("replay memory 100,000 frames per worker", {"replay_capacity": 100_000}),
    "eps-0.02": Variant("ε floor 0.02 instead of 0.1", {"eps_end": 0.02}),
    "train-every-4": Variant("4 env steps per gradient (the DQN papers' Atari setting): `tuned` as shipped from "
                             "2026-12-07 until `train-every-8`", {"train_every": 4}),
    "train-every-8": Variant("8 env steps per gradient: each transition sampled ≈ 4 times on average (32 per "
                             "gradient), half of `train-every-4`'s ≈ 8: `tuned` as shipped since 2026-12-07",
                             {"train_every": 8}, against="train-every-4"),
    "train-every-16": Variant("16 env steps per gradient: each transition sampled ≈ 2 times on average, half of "
                              "`train-every-8`'s ≈ 4", {"train_every": 16}, against="train-every-8"),
    "train-every-4-fetch-4": Variant("`train-every-4` with θ fetched once per gradient (every 4 env steps), not on "
                                     "every env step (4 FETCHes a gradient)", {"train_every": 4, "fetch_every": 4},
                                     against="train-every-4"),
    "C-4000": Variant("target network reset every 4,000 gradients", {"target_update": 4000}),
    "lr-step": Variant("Adam 2.5e-4 halved every 50,000 updates (Caffe lr_policy step)",
                       solver_fields={"lr_policy": '"step"', "gamma": 0.5, "stepsize": 50_000}),
    "dueling": Variant("a dueling Q-head (Wang et al. 2016) on the paper net's trunk: value and advantage streams of "
                       "256 units, Q = V + A − mean A (about the paper net's parameter count)",
                       {"net": "prototxt/snake_paper_dueling.prototxt"}),
    "per": Variant("proportional prioritized replay (Schaul et al. 2016): α 0.6, importance weights with β 0.4 → 1 "
                   "over 150,000 env steps per worker; learning rate unchanged", PER),
    "per-lr-4": Variant("`per` with Schaul's learning rate ÷ 4 (Adam 6.25e-5)", PER,
                        solver_fields={"base_lr": 6.25e-5}),
    "n-step-3-eps-0.01": Variant("3-step returns with ε → 0.01 (not 0.1): fewer exploratory actions inside the "
                                 "3 steps a target sums (n-step-3 at ε 0.1 scored 2.8; off-policy returns are the "
                                 "likely cause)", {"n_step": 3, "eps_end": 0.01}),
    "fetch-every-2": Variant("θ fetched every 2 env steps (= train_every), not every step: one θ down per gradient "
                             "instead of two, acting on a θ at most one gradient older", {"fetch_every": 2}),
    "batch-64": Variant("minibatch of 64 transitions (the paper net's 32 doubled; learning rate unchanged)",
                        batch_size=64),
}


def solver_text(base: str, fields: dict[str, object]) -> str:
    """``base``'s text with each of ``fields`` set (its line replaced, or appended when absent)."""
    for key, value in fields.items():
        line = f"{key}: {value}"
        base, n = re.subn(rf"(?m)^{key}:.*$", line, base)
        base = base if n else f"{base.rstrip()}\n{line}\n"
    return base


def batch_text(base: str, batch: int) -> str:
    """A net prototxt's ``base`` text with its Input layer's shapes' first dim (the minibatch N) set to ``batch``."""
    text, n = re.subn(r"shape \{ dim: \d+ ", f"shape {{ dim: {batch} ", base)
    if not n:
        raise SystemExit("bench-tuning: the net prototxt has no Input shape to set the minibatch in")
    return text


def variant_config(name: str, out: Path, seed: int, common: list[str] = ()) -> Path:
    """The YAML (and solver prototxt) of variant ``name`` in ``out``, with the ``common`` ``key=value`` overrides
    of every variant; validated as a run would load it."""
    v = VARIANTS[name]
    out.mkdir(parents=True, exist_ok=True)
    keys = [f"{k}={val}" for k, val in {**SEARCH, **v.config}.items()] + [*common, f"seed={seed}"]
    if v.batch_size:
        net = out / "net.prototxt"
        net.write_text(batch_text(load_config(BASE, keys).path("net").read_text(), v.batch_size))
        keys.append(f"net={net.resolve()}")
    cfg = load_config(BASE, keys)
    if v.solver or v.solver_fields:
        path = out / "solver.prototxt"
        path.write_text(solver_text(load_config(BASE, [f"solver={v.solver}"] if v.solver else []).path("solver")
                                    .read_text(), v.solver_fields))
        load_solver_spec(path)  # a clear error here, before any run
        cfg = load_config(BASE, [*keys, f"solver={path.resolve()}"])
    save_config(cfg, out / "variant.yaml")
    return out / "variant.yaml"


def curve(run: Path, config: Path) -> list[dict[str, float]]:
    """Each snapshot's greedy mean and standard error against the minutes it was taken at."""
    cfg = load_config(str(config))
    return [{"model": r["model"], "minutes": r["minutes"], "env_steps": r["env_steps"], "updates": r["updates"],
             "greedy_mean": float(s.mean()), "greedy_se": standard_error(s)}
            for r, s in snapshot_scores(run, cfg)]


def summarize(name: str, c: list[dict[str, float]], run: Path, config: Path, episodes: int) -> dict:
    """Best point (mean ± se), that snapshot re-played on ``episodes`` fresh games, final point, minutes to the
    levels (``stats.reach``: trailing mean), and the run's rates."""
    best = max(c, key=lambda r: r["greedy_mean"], default=None)
    s = json.loads((run / "summary.json").read_text())
    confirmed = confirm_best(run, load_config(str(config)), c, episodes)
    v = VARIANTS[name]
    return {"what": v.what, "config": v.config, "solver_fields": v.solver_fields, "against": v.against,
            "best": best, "confirmed": confirmed, "final": c[-1] if c else None,
            "reach": reach_levels(c, LEVELS),
            "updates_per_s": s["updates_per_s"], "env_steps": s["env_steps"], "curve": c}


RESERVED_SEEDS = (3,)  # issue 30 named seed 3 for its table before any run; choosing a variant must not see it


def row_key(name: str, minutes: float, seed: int, m: dict | None) -> str:
    """The key of a variant's row in tuning.json: one per variant, budget, seed and CPU (``m``, a machine record:
    ``common.cpu_tag``)."""
    return f"{name} {minutes:g} min s{seed} on {cpu_tag(m)}"


def keyed(rows: dict[str, dict], m: dict | None) -> dict[str, dict]:
    """tuning.json's rows under :func:`row_key`, each with its ``variant`` and ``machine``; rows written before keys
    named the budget, seed and CPU are re-keyed from their ``minutes_budget``, ``seed`` and machine (``m``, the
    file's, for a row written before rows recorded their own), and rows of the starting point written before it was
    named `base` (as `tuned`) are renamed (:func:`kept_rows` still checks their values against `base`'s)."""
    out = {}
    for key, row in rows.items():
        name, row_m = row.get("variant", key.split(" ")[0]), row.get("machine", m)
        name = "base" if name == "tuned" else name  # the starting point's name before it was `base`
        out[row_key(name, row["minutes_budget"], row["seed"], row_m)] = {**row, "variant": name, "machine": row_m}
    return out


def kept_rows(data: dict, args: argparse.Namespace, overrides: list[str], path: Path) -> dict[str, dict]:
    """The rows of an earlier tuning.json (``data``) that still describe today's variants: run the same way
    (workers, ``--set``, grid), each with the config values its variant has today (``overrides``: every variant's
    ``key=value``s), on whichever CPU. A row whose variant has changed since is dropped with a line saying why; a
    file run another way is refused in one line before anything trains (``--restart``: none is kept)."""
    how = [f"{k} {was} ≠ {now}" for k, was, now in (("workers", data.get("workers"), args.workers),
                                                    ("--set", data.get("common", []), args.set),
                                                    ("grid", data.get("every"), args.every)) if was != now]
    n = len(data.get("variants", {}))
    if data and not kept_or_restart(path, f"its {n} row{'s' * (n != 1)}", how, args.restart):
        return {}
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for key, row in keyed(data.get("variants", {}), data.get("machine")).items():
            name = row["variant"]
            if name not in VARIANTS:
                diff = ["no such variant today"]
            elif "config_values" not in row:
                diff = ["config values not recorded"]
            else:
                today = config_values(str(variant_config(name, Path(tmp) / name, row["seed"], overrides)))
                diff = value_differences(row["config_values"], today)
            if diff:
                print(f"{path}: dropping the stale row {key} ({', '.join(diff)})", flush=True)
            else:
                rows[key] = row
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--minutes", type=float, default=30.0, help="wall-clock budget per variant")
    ap.add_argument("--workers", type=int, default=2, help="asynchronous workers (the issue's async-2)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--every", type=int, default=5000,
                    help="env steps (summed over workers) between evaluations and snapshots: the evaluation grid")
    add_restart(ap, "other workers, --set or grid")
    ap.add_argument("--confirm-episodes", type=int, default=500,
                    help="fresh games the best snapshot is re-played on (an unbiased score for it)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a config override for every variant (e.g. replay_warmup=200 for a smoke run)")
    ap.add_argument("--out", default="results")
    args = ap.parse_args(argv)
    if args.seed in RESERVED_SEEDS:
        ap.error(f"--seed {args.seed} is reserved for bench-scaling-120's table (issue 30): no tuning may use it")
    results = Path(args.out)
    path = results / "tuning.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    overrides = [*args.set, *grid_overrides(args.every)]  # every variant's, beside its own changes
    rows = kept_rows(data, args, overrides, path)
    for name in args.variants:
        run = results / "runs" / f"tuning-{name}-s{args.seed}-{args.minutes:g}min"  # reused only at this budget
        if not (run / "summary.json").exists():  # an interrupted run, moved away before the config is written
            set_aside_earlier_run(run)
        config = variant_config(name, run / "config", args.seed, overrides)
        values = config_values(str(config))
        if train_or_reuse(str(config), args.minutes, run, ["--workers", str(args.workers)], values):
            raise SystemExit(f"the {name} run failed")
        here = (run_record(run) or {}).get("machine") or machine()  # the CPU it trained on (a table can hold
        # runs of several CPUs, never compared with each other)
        key = row_key(name, args.minutes, args.seed, here)
        rows[key] = row = {"variant": name, **summarize(name, curve(run, config), run, config, args.confirm_episodes),
                           "config_values": values, "minutes_budget": args.minutes, "seed": args.seed,
                           "machine": here}
        b = row["best"] or {"greedy_mean": 0.0, "greedy_se": 0.0, "minutes": 0.0}  # no snapshot yet
        k = row["confirmed"] or {"greedy_mean": 0.0, "greedy_se": 0.0, "episodes": 0}
        print(f"{key:>24s}: best {b['greedy_mean']:.2f} ± {b['greedy_se']:.2f} at {b['minutes']:.1f} min "
              f"({k['greedy_mean']:.2f} ± {k['greedy_se']:.2f} on {k['episodes']} fresh games); "
              + ", ".join(f"{lv}: {r['minutes']:.1f} min" if r else f"{lv}: -" for lv, r in row["reach"].items())
              + f"; {row['updates_per_s']:.1f} updates/s", flush=True)
        save(rows, args, results)  # after every variant: a stopped bench keeps the rows it finished


def save(rows: dict[str, dict], args: argparse.Namespace, results: Path) -> None:
    """Write results/tuning.json with ``rows``, and per CPU the figure of its rows' curves."""
    pngs = {}
    for tag in sorted({cpu_tag(r["machine"]) for r in rows.values()}):
        ours = {n.removesuffix(f" on {tag}"): r["curve"] for n, r in rows.items() if cpu_tag(r["machine"]) == tag}
        pngs[tag] = plot_curves(ours, results / f"tuning-{tag}.png",
                                f"Variants of `{BASE}`'s search ({args.workers} async workers) on {tag}").name
    write_result("tuning", {"base": BASE, "search": SEARCH, "workers": args.workers, "levels": list(LEVELS),
                            "common": args.set, "every": args.every, "reach_rule": RULE, "variants": rows,
                            "png": pngs}, results)


if __name__ == "__main__":
    main()
