"""REPORT sections of the learning benches: serial against distributed (every budget, goal, seed and the
curves' shape), the variants of tuned, Atari and the example game play."""
from __future__ import annotations

import math
from collections.abc import Iterable

from ddqn.bench.common import cpu_label, cpu_tag
from ddqn.bench.report.phrases import config_today, fmt, fresh, reach_rule, versus_goal
from ddqn.bench.runs import grid_overrides, other_games, run_parts
from ddqn.bench.stats import TRAILING_K, SeedInterval, format_goal, format_interval, seed_interval, trailing_at


def _endings(runs: dict[str, dict | None]) -> list[str]:
    """How each run's best snapshot's fresh games ended (``confirmed["endings"]``): per ending, its share of the
    games and their mean score; runs confirmed before endings were recorded are left out, and said to be."""
    known = {n: k for n, k in runs.items() if k and "endings" in k}
    if not known:
        return []
    names = list(dict.fromkeys(e for k in known.values() for e in k["endings"]))  # ENDINGS order, as recorded

    def share(k: dict, e: str) -> str:
        pct = 100 * k["endings"][e]["games"] / k["episodes"]
        return f"{pct:.0f} %" if pct >= 1 else f"{k['endings'][e]['games']} of {k['episodes']}"

    rows = [f"| {n} | {k['episodes']} | {'/'.join(f'{x:g}' for x in k['percentiles'])} | " + " | ".join(
        f"{share(k, e)} ({k['endings'][e]['mean_score']:.1f})" if e in k["endings"] else "–" for e in names) + " |"
        for n, k in known.items()]
    missing = [n for n, k in runs.items() if k and "endings" not in k]
    return ["How the best snapshot's fresh games end: the scores' 10th, 50th and 90th percentiles, and per ending its "
            "share of the games (their mean score). *wall*, *body*: the head ran into a wall or into the snake's own "
            "body; *starved*: no apple for `starve_steps` steps.", "",
            "| run | games | score p10/p50/p90 | " + " | ".join(names) + " |", "|---" * (3 + len(names)) + "|",
            *rows, "",
            *([f"- not recorded (confirmed before endings were): {'; '.join(missing)}", ""] if missing else [])]


def scaling(r: dict) -> list[str]:
    """bench-scaling (and -60, -120): each run's best, fresh games, speed and minutes to each score; speedups over
    serial, seeds, budgets, goals, the curves' shape and how games end."""
    levels = list(next(iter(r["reach"].values())))
    head = ["| mode | best greedy mean | best, fresh games (± se) | updates/s | staleness p50/p95 | "
            + " | ".join(f"min to {s}" for s in levels) + " |", "|---" * (5 + len(levels)) + "|"]
    for m, reach in r["reach"].items():
        best = max((x["greedy_mean"] for x in r["curves"][m]), default=0.0)
        st, k = r.get("runs", {}).get(m, {}), (r.get("confirmed") or {}).get(m)
        rate = f"{st['updates_per_s']:.1f}" if "updates_per_s" in st else "?"
        stale = f"{st['staleness_p50']:g}/{st['staleness_p95']:g}" if "staleness_p50" in st else "–"
        head.append(f"| {m} | {best:.2f} | {fresh(k)} | {rate} | {stale} | "
                    + " | ".join(f"{v['minutes']:.1f}" if v else "–" for v in reach.values()) + " |")
    origins = [f"- {m}: {st['origin']}" for m, st in r.get("runs", {}).items() if st.get("origin")]
    dates = ", ".join(f"{m} {st['trained']}" for m, st in r.get("runs", {}).items() if st.get("trained"))
    serial = any(k.split()[0] == "serial" for k in r.get("runs", {}))
    speed = [f"- to score {s}: " + ", ".join(f"{m} **{x:.2f}×**" for m, x in ratios.items() if x and m != "serial")
             for s, ratios in r["speedup_vs_serial"].items() if any(x for m, x in ratios.items() if m != "serial")]
    return ["Slides: \"performance scales linearly with number of workers\".", "",
            config_today(r["config"], r.get("config_values"), grid_overrides(r["every"]) if r.get("every") else ()),
            "",
            f"Config `{r['config']}`, {r['budget_minutes']:g} wall-clock minutes per run, one run after another on "
            f"{r['cores']} cores: serial and async-1 have a core to spare, async-2 and sync-2 share both cores between "
            f"two Caffe workers and the driver (server, Spark). *Min to* a score: {reach_rule(r.get('reach_rule'))}; "
            "\"–\": not reached within the budget. Updates/s: "
            "gradient steps per second (serial: its own; distributed: the server's; sync-2: rounds, each the average "
            "of two gradients). Each run's evaluations play seed 10,000 + its seed. *Best, fresh games*: a run's best "
            "snapshot played again on games never used to pick it (seed 20,000 + the run's seed; the maximum of a "
            f"noisy curve is biased upward).{_other_games(r)}", "", *head, "",
            *([*origins, ""] if origins else []), *([f"Training ended: {dates}.", ""] if dates else []),
            "Speedup over serial (serial minutes ÷ mode minutes to reach the score):", "",
            *(speed or [("- serial reached none of the levels in the budget: no ratio" if serial
                         else "- no serial run yet: no ratio")]), "", *_over_seeds(r, levels),
            *_budgets(r, levels), *_goals(r), *_shape(r), *_endings(r.get("confirmed") or {}),
            f"![scaling]({r.get('png', 'scaling.png')})"]


def _other_games(r: dict) -> str:
    """The runs of a result that played the config's seed's games instead of their own (recorded before each run
    played its own seed's: ``runs.other_games``), named; "" when none did."""
    names = other_games(r["config"], r.get("confirmed") or {})
    return (f" **Not so for {', '.join(names)}**: recorded before each run played its own seed's games, their fresh "
            "games (and a distributed run's evaluations) played the config's seed's." if names else "")


def _budgets(r: dict, levels: list[str]) -> list[str]:
    """Shorter budgets read from the same runs (``bench.scaling --budgets``): each curve cut at B minutes."""
    out = []
    for b, part in (r.get("budgets") or {}).items():
        rows = [f"| {m} | {fresh(part['confirmed'].get(m))} | "
                + " | ".join(f"{v['minutes']:.1f}" if v else "–" for v in reach.values()) + " |"
                for m, reach in part["reach"].items()]
        out += [f"Within {b} minutes (the same runs, each curve cut at {b} min; best snapshot up to then on fresh "
                "games):", "", "| run | best, fresh games (± se) | " + " | ".join(f"min to {s}" for s in levels)
                + " |", "|---" * (2 + len(levels)) + "|", *rows, "",
                *_over_seeds({"reach": part["reach"], "confirmed": part["confirmed"]}, levels)]
    return out


def _goals(r: dict) -> list[str]:
    """``--goal B=S`` per mode: every seed's best snapshot up to B minutes at ≥ S on fresh games: met, missed, or
    open while seeds of the comparison's plan are still to run."""
    return [*(f"- Goal: `{mode}` ≥ {g['score']:g} within {b} minutes on fresh games, every seed: "
              + format_goal(g, "**")
              for b, by_mode in (r.get("goals") or {}).items() for mode, g in by_mode.items()),
            *([""] if r.get("goals") else [])]


def _modes(names: Iterable[str]) -> dict[str, list[str]]:
    """Run names grouped by mode: "async-2", "async-2 s1", "async-2 s3" → {"async-2": [all three]}."""
    modes: dict[str, list[str]] = {}
    for name in names:
        modes.setdefault(run_parts(name)[0], []).append(name)
    return modes


def _shape(r: dict) -> list[str]:
    """Each run's trailing mean at each quarter of the budget, and its gain over the second half (is the curve still
    rising at the end, so that more minutes would buy score?); over seeds for modes with more than one."""
    marks = [r["budget_minutes"] * q / 4 for q in (1, 2, 3, 4)]
    at = {n: [trailing_at(c, m) for m in marks] for n, c in r["curves"].items()}
    gain = {n: v[3] - v[1] if v[3] is not None and v[1] is not None else None for n, v in at.items()}
    rows = [f"| {n} | " + " | ".join(fmt(x, ".2f") for x in v) + f" | {fmt(gain[n], '+.2f')} |"
            for n, v in at.items()]

    def over(values: list[float | None], spec: str) -> str:
        iv = seed_interval(values)
        return "–" if iv.mean is None else format_interval(iv, spec)

    seeds = [f"| {mode} ({len(names)} seeds) | " + " | ".join(over([at[n][i] for n in names], ".2f") for i in range(4))
             + f" | {over([gain[n] for n in names], '+.2f')} |" for mode, names in _modes(at).items() if len(names) > 1]
    return [f"The curves' shape: each run's trailing mean of {TRAILING_K} evaluations (the training-time games) at "
            "each quarter of the budget, and its gain over the second half; over seeds: mean [95 % t interval].", "",
            "| run | " + " | ".join(f"at {m:g} min" for m in marks) + " | gain, second half |", "|---" * 6 + "|",
            *rows, *seeds, ""]


def _over_seeds(r: dict, levels: list[str]) -> list[str]:
    """Modes run with more than one seed: minutes to each score and the best snapshot's fresh-game mean over the
    seeds (mean [95 % t interval] (seeds reached of seeds); a seed that did not reach counts as not reached)."""
    rows = []
    for mode, names in _modes(r["reach"]).items():
        if len(names) < 2:
            continue
        mins = [format_interval(seed_interval([(r["reach"][n].get(s) or {}).get("minutes") for n in names]))
                for s in levels]
        fresh = seed_interval([((r.get("confirmed") or {}).get(n) or {}).get("greedy_mean") for n in names])
        rows.append(f"| {mode} | {len(names)} | {format_interval(fresh, '.2f')} | " + " | ".join(mins) + " |")
    if not rows:
        return []
    return ["Over seeds: mean [two-sided 95 % Student-t interval] (seeds that reached of seeds); the numbers describe "
            "the seeds that reached.", "",
            "| mode | seeds | best, fresh games | " + " | ".join(f"min to {s}" for s in levels) + " |",
            "|---" * (3 + len(levels)) + "|", *rows, ""]


def tuning(r: dict) -> list[str]:
    """bench-tuning: each variant per CPU, budget and seed beside the row it is measured against (`base`, the
    search's starting point, or the variant it names) on that CPU, and how their games end."""
    lv = [str(x) for x in r["levels"]]
    search = ", ".join(f"{k} {v}" for k, v in r.get("search", {}).items())
    start = f" (`base`, its starting point: `{r['base']}` with {search}, the values it had then)" if search else ""
    out = [f"Variants of `{r['base']}`'s search{start}, each the Spark job with {r['workers']} asynchronous workers, "
           "one after another on one machine's cores; snapshots evaluated afterwards on the training-time episodes "
           "(greedy, 50 games: mean ± standard error). The best of a curve of noisy evaluations is biased upward, so "
           "that snapshot is played again on fresh games (seed 20,000 + the run's seed; their count in brackets)"
           + (f"; every variant with {', '.join(r['common'])}" if r.get("common") else "")
           + (f"; evaluations and snapshots every {r['every']:,} env steps" if r.get("every") else "")
           + f". *Min to* a score: {reach_rule(r.get('reach_rule'))}. *Vs*: the fresh-games mean minus that of the "
           "row it is measured against (`base` unless named) at the same budget and seed on the same CPU, ± the "
           "standard error of the difference, and the verdict by the rule fixed before the runs: better or worse "
           "beyond twice that standard error, else a tie. One table per CPU and budget: runs on two CPUs are never "
           "compared. †: the row's config values were not recorded, so they cannot be checked against the variant's "
           "today."]
    # one per variant, budget, seed and CPU (tuning.row_key); a row written before rows had a machine: the file's
    rows = [{**x, "machine": x.get("machine") or r.get("machine")} for x in r["variants"].values()]
    rows = [{**x, "cpu": cpu_label(x["machine"])} for x in rows]
    several = len({x["cpu"] for x in rows}) > 1
    for label, budget in sorted({(x["cpu"], x["minutes_budget"]) for x in rows}):
        out += ["", f"**{budget:g}-minute runs on {label}**" if several else f"**{budget:g}-minute runs**", "",
                "| variant | seed | change | updates/s | best (± se) | at min | best, fresh games (± se) | vs | "
                "final | " + " | ".join(f"min to {x}" for x in lv) + " |", "|---" * (9 + len(lv)) + "|"]
        same = [x for x in rows if x["minutes_budget"] == budget and x["cpu"] == label]
        refs = {(x["variant"], x["seed"]): x.get("confirmed") for x in same}
        dates = sorted(x["machine"]["date"] for x in same if (x["machine"] or {}).get("date"))
        for x in sorted(same, key=lambda x: (x["variant"] != "base", x["seed"], x["variant"])):
            b, f, k = x["best"], x["final"], x.get("confirmed")
            stale = "" if "config_values" in x else " †"
            ref = x.get("against", "base")
            t = refs.get((ref, x["seed"]))
            vs = ("–" if x["variant"] == ref or not (k and t)
                  else versus_base(k, t) + ("" if ref == "base" else f" against `{ref}`"))
            out.append(f"| {x['variant']}{stale} | {x['seed']} | {x['what']} | {x['updates_per_s']:.1f} | "
                       + (f"{b['greedy_mean']:.2f} ± {b['greedy_se']:.2f} | {b['minutes']:.1f} | {fresh(k)} | {vs} | "
                          f"{f['greedy_mean']:.2f} | " if b else "– | – | – | – | – | ")
                       + " | ".join(fmt(x["reach"][v]["minutes"] if x["reach"][v] else None) for v in lv) + " |")
        if several and dates:
            out += ["", f"Runs recorded {dates[0]} to {dates[-1]}." if dates[0] != dates[-1]
                    else f"Run recorded {dates[0]}."]
    ends = _endings({f"{x['variant']}, {x['minutes_budget']:g} min, seed {x['seed']}"
                     + (f", {cpu_tag(x['machine'])}" if several else ""): x.get("confirmed")
                     for x in sorted(rows, key=lambda x: (x["cpu"], x["minutes_budget"], x["variant"] != "base",
                                                          x["seed"], x["variant"]))})
    pngs = r["png"] if isinstance(r["png"], dict) else {cpu_tag(r.get("machine")): r["png"]}  # per CPU, or one
    return [*out, "", *ends, *(f"![tuning on {tag}]({png})" for tag, png in pngs.items())]


def versus_base(k: dict, base: dict) -> str:
    """A variant's fresh-games mean against the base's: difference ± its standard error, and the verdict (better or
    worse beyond twice that standard error, else a tie)."""
    d, se = k["greedy_mean"] - base["greedy_mean"], math.hypot(k["greedy_se"], base["greedy_se"])
    return f"{d:+.2f} ± {se:.2f} ({'better' if d > 2 * se else 'worse' if d < -2 * se else 'a tie'})"


def atari(r: dict) -> list[str]:
    """bench-atari: ALE's speed, the nets' times and the Breakout run against the random policy."""
    ale = r["ale"]
    nets = [f"| {name} | {x['params']:,} | {x['input']}×{x['input']} | {x['forward_backward_ms']:.1f} | "
            f"{x['forward_ms']:.1f} |" for name, x in r["nets"].items()]
    out = [f"ALE `{r['game']}`: {ale['steps_per_s']:,.0f} agent steps/s ({ale['frames_per_s']:,.0f} frames/s) on one "
           "core, random actions, DQN preprocessing.", "",
           "| net | parameters | input | forward+backward (ms, batch 32) | forward (ms) |", "|---|---|---|---|---|",
           *nets]
    learn = r.get("learning")
    if learn and "seeds" in learn:
        out += ["", *_atari_seeds(r, learn)]
    elif learn:  # recorded before seeds: one run
        b, f = learn["best"], learn["best_reevaluated"]
        out += ["", f"Learning: `{r['config']}` with 2 asynchronous workers for {learn['minutes']:g} wall-clock "
                f"minutes on {r['cores']} cores (the workers and the driver share them). Evaluation as the papers: ε = "
                f"{learn['eval_epsilon']:g}, whole games, raw scores, at most {learn['max_episode_steps']:,} agent "
                f"steps. Best snapshot ({b['minutes']:.1f} min, {b['env_steps']:,} env steps): "
                f"**{f['mean']:.2f} ± {f['se']:.2f}** over {f['episodes']} games; random policy "
                f"{learn['random_mean']:.2f}: "
                + versus_goal(learn["ratio_to_random"], learn["target_ratio"], False, ".1f", "× random", "**")
                + "." + _atari_reach(learn), "", "![atari](atari.png)"]
    return out


def _atari_seeds(r: dict, learn: dict) -> list[str]:
    """bench-atari's learning runs, one per seed: each seed's best snapshot on fresh games against the random
    policy, when its trailing mean reached the target, both over the seeds, and the goal."""
    want, m = learn["target_ratio"], learn.get("machine")  # a learning part kept by a speeds-only run has its own
    where = f" (measured {m.get('date', '?')} on {cpu_label(m)}, before the speeds above)" if m else ""
    rows = []
    for seed, x in learn["seeds"].items():
        b, f, t = x["best"], x["best_reevaluated"], x["reach_target"]
        rows.append(f"| {seed} | {b['minutes']:.1f} ({b['env_steps']:,}) | {b['mean']:.2f} ± {b['se']:.2f} | "
                    f"{f['mean']:.2f} ± {f['se']:.2f} ({f['episodes']}) | {x['random_mean']:.2f} | "
                    f"{x['ratio_to_random']:.1f}× | {fmt(t['minutes'] if t else None)} |")
    o = learn["over_seeds"]
    seeds = ([f"Over {o['seeds']} seeds, mean [95 % t interval] (seeds reached of seeds): fresh games "
              f"{format_interval(SeedInterval(**o['fresh_mean']), '.2f')}; × random "
              f"{format_interval(SeedInterval(**o['ratio']))}; minutes to {want:g}× random "
              f"{format_interval(SeedInterval(**o['reach_minutes']))}.", ""] if o["seeds"] > 1 else [])
    return [f"Learning{where}: `{r['config']}` with 2 asynchronous workers for {learn['minutes']:g} wall-clock "
            f"minutes per seed on {r['cores']} cores (the workers and the driver share them), one seed after "
            f"another. Evaluation as the papers: ε = {learn['eval_epsilon']:g}, whole games, raw scores, at most "
            f"{learn['max_episode_steps']:,} agent steps. Snapshots every {learn['every']:,} env steps, each played "
            f"for {learn['eval_episodes']} games (seed 10,000 + the run's seed); the best snapshot again on "
            f"{learn['final_episodes']} fresh games (seed 20,000 + the run's seed), the random policy on "
            f"{learn['random_episodes']} games. *Min to {want:g}× random*: {reach_rule(learn['reach_rule'])}.", "",
            config_today(r["config"], learn["config_values"], learn["overrides"]), "",
            f"| seed | best snapshot: min (env steps) | its evaluation (± se) | best, fresh games (± se, games) | "
            f"random policy | × random | min to {want:g}× random |", "|---" * 7 + "|", *rows, "", *seeds,
            f"Goal: every seed's best snapshot ≥ {want:g}× random on the fresh games: "
            f"**{'met' if o['met'] else 'missed'}** (worst seed {o['worst_ratio']:.1f}×).", "",
            f"![atari]({learn['png']})", *_atari_gif(learn.get("gif"))]


def _atari_gif(g: dict | None) -> list[str]:
    """The best seed's best snapshot playing one game, when bench-atari wrote it."""
    if not g:
        return []
    return ["", f"One greedy game of seed {g['seed']}'s best snapshot (`{g['model']}`) on its fresh games' seed: "
            f"score {g['score']:g}.", "", f"![{g['file']}]({g['file']})"]


def _atari_reach(learn: dict) -> str:
    """When the evaluations' trailing mean reached the target (results recorded before it have no such line)."""
    if "reach_target" not in learn:
        return ""
    t = learn["reach_target"]
    return (f" The trailing mean of {learn['reach_rule']['k']} evaluations reached {learn['target_ratio']:g}× random "
            + (f"at {t['minutes']:.1f} min ({t['env_steps']:,} env steps)." if t else "not at all in the budget."))


def gifs(r: dict) -> list[str]:
    """make gifs: the two snakes' scores and the GIF."""
    return [f"Dumb snake (initial weights) scored {r['dumb_score']}; smart snake (`{r['weights']}`) scored "
            f"{r['smart_score']}.", "", "![dumb and smart snake](snakes.gif)"]
