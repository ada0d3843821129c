"""results/REPORT.md's section for ``make bench-scale-projection`` (``ddqn.bench.scale_projection``): the projection
with seeds, DC-ASGD's λ, the staleness options and the validation at W = 2."""
from __future__ import annotations

from typing import Any

from ddqn.bench.common import cpu_label
from ddqn.bench.report.phrases import config_today, share
from ddqn.bench.stats import SeedInterval, format_interval


def _speedup(s: dict[str, Any] | None) -> str:
    """"mean (worst–best seed)" when every seed reached the level, "k of n reached: best seed x" when some did,
    "not reached (0 of n)"; a figure above W marked as noise (two decimals, so that 2.05× at W = 2 does not read as
    2.0×)."""
    if not s:
        return "no baseline"
    if s["best"] is None:
        return f"not reached (0 of {s['n']})"
    noise = " **noise: above W**" if s["noise"] else ""
    if s["speedup"] is None or s["worst"] is None:
        return f"{s['reached']} of {s['n']} reached: best seed {s['best']:.2f}×{noise}"
    return f"{s['speedup']:.2f}× ({s['worst']:.2f}–{s['best']:.2f}){noise}"


def _mean(xs: list[float | None], spec: str = ".2f") -> str:
    got = [x for x in xs if x is not None]
    return "–" if not got else f"{sum(got) / len(got):{spec}}" + (f" ({len(got)} of {len(xs)})" if len(got) < len(xs)
                                                                 else "")


def _table(t: dict[str, dict], levels: list[str], at_updates: int, first: str, one_seed: list[int]) -> list[str]:
    out = [f"| {first} | seeds | " + " | ".join(f"minutes to {lv}" for lv in levels) + " | "
           + " | ".join(f"speedup to {lv} (worst–best seed)" for lv in levels)
           + f" | best trailing mean | score at {at_updates:,} updates | updates/s | staleness p50/p95 | server | "
           "card |", "|---" * (8 + 2 * len(levels)) + "|"]
    for key, c in t.items():
        n = len(c["seeds"])
        seeds = f"{n}" + (" (1 seed)" if key.isdigit() and int(key) in one_seed else "")
        cells = " | ".join(format_interval(SeedInterval(**c["interval"][lv]), ".2f") for lv in levels)
        speedups = " | ".join(_speedup(c["speedup"].get(lv)) for lv in levels)
        out.append(f"| {key} | {seeds} | {cells} | {speedups} | {_mean(c['best'])} | "
                   f"{_mean(c['at_updates'])} | {_mean([c['updates_per_s']], ',.0f')} | "
                   f"{_mean([c['staleness_p50']], '.0f')}/{_mean([c['staleness_p95']], '.0f')} | "
                   f"{share(c['server'])} | {share(c['card'])} |")
    return out


def _screen(sc: dict[str, Any] | None) -> list[str]:
    """The screen's runs (schedule × W × seed) and its ranking."""
    if not sc:
        return []
    top = str(float(sc["level"]))

    def minutes(m: float | None) -> str:
        return "not reached" if m is None else f"{m:.2f}"

    rows = [f"| `{sch}` | {w} | {seed} | {minutes(r['reach'][top])} | {r['best']:.2f} | {r['updates']:,} | "
            f"{r['staleness_p50']:.0f} |"
            for sch in sc["ranked"] for w, per_seed in sc["table"][sch].items() for seed, r in per_seed.items()]
    return ["", f"**Screen** (seeds {', '.join(map(str, sc['seeds']))}, which no other table reports; W = "
            f"{', '.join(map(str, sc['workers']))}; ranked by the rule fixed in docs/simulator.md before the runs): "
            f"{', '.join(f'`{x}`' for x in sc['ranked'])}. The projection runs "
            f"{' and '.join(f'`{x}`' for x in sc['projected'])}.", "",
            f"| schedule | W | seed | minutes to {sc['level']:g} | best trailing mean | updates | staleness p50 |",
            "|---" * 7 + "|", *rows]


def section(r: dict[str, Any]) -> list[str]:
    """The section's lines."""
    said = r["statement"]
    out = [f"{said[:1].upper()}{said[1:]}; CPU {cpu_label(r.get('machine'))}; config `{r['config']}` as recorded in "
           "results/scale_projection.json.", "", config_today(r["config"], r.get("config_values"))]
    out += _screen(r.get("screen"))
    p = r.get("projection")
    if p:
        levels = [str(lv) for lv in p["levels"]]
        base = ", ".join(f"{lv}: {b['schedule'] or 'none reached'}" for lv, b in p["baseline"].items())
        out += ["", f"**Projection** (a simulation, not a measurement): W = {', '.join(map(str, p['workers']))}; "
                f"seeds {', '.join(map(str, p['seeds']))} (W = {', '.join(map(str, p['one_seed']))}: the first "
                f"only); S = {p['shards']} shards on `{p['placement']}`, {p['gbps']:g} Gbit/s links; a run stops once "
                f"its trailing mean of {p['reach_rule']['k']} evaluations reaches {levels[-1]}, else at "
                f"{p['updates_budget']:,} updates. Minutes to a level: mean [95 % t interval] (seeds that reached "
                "of all); a seed that did not reach counts as not reached, never as the budget. Speedup: the best "
                f"W = 1 over every schedule (per level: {base}) ÷ W's mean, with the worst and best seed against "
                "the baseline's mean."]
        for sch, t in p["table"].items():
            out += ["", f"*ε schedule `{sch}`*", ""] + _table(t, levels, p["at_updates"], "W", p["one_seed"])
        for w, g in (p["goal"] or {}).items():
            got = (f" (best schedule: `{g['schedule']}`): {g['worst']:.1f}×" if g["worst"] is not None
                   else ": no schedule reached it with every seed")
            out += ["", f"Goal (issue 32), W = {w}: the worst seed's speedup to {g['level']:g} ≥ {g['want']:g}×"
                    f"{got}, **{'met' if g['met'] else 'missed'}**."]
    d = r.get("tune_dc")
    if d:
        rows = "; ".join(f"λ {k}: {_mean([v['mean']], '.2f')} min" for k, v in d["rows"].items())
        out += ["", f"**DC-ASGD's λ**, tuned at W = {d['workers']} on seeds {', '.join(map(str, d['seeds']))} "
                f"(no table reports them), schedule `{d['schedule']}`, mean minutes to {d['level']:g}: {rows}; "
                f"chosen λ = {d['lambda']:g}."]
    s = r.get("staleness")
    if s and p:
        levels = [str(lv) for lv in p["levels"]]
        out += ["", f"**Staleness options** (schedule `{s['schedule']}`, seeds {', '.join(map(str, s['seeds']))}; "
                f"`max_staleness` W/2, `dc_lambda` {s['dc_lambda']:g}):"]
        for w, t in s["table"].items():
            out += ["", f"*W = {w}*", ""] + _table(t, levels, p["at_updates"], "option", [])
    v = r.get("validation")
    if v:
        t = v["test"]
        verdict = ("no grid: the curves share no update range" if t is None else
                   f"statistic {t['statistic']:.3g}, p = {t['p']:.2f} over {t['splits']} splits, "
                   f"{t['grid_points']} points: **{'passed' if t['pass'] else 'failed'}** (a perfect simulator "
                   f"passes with probability {t['pass_chance']:.2f})")
        rates = {k: [seed[k]["updates_per_s"] for seed in v["timing"].values()] for k in ("real", "sim")}
        out += ["", f"**Validation at W = 2** (seeds {', '.join(map(str, v['seeds']))}, real runs of "
                f"{v['real_minutes']:g} min on this machine against simulations to the same update count; "
                f"criterion: {v['criterion']}): {verdict}. Updates/s: real {min(rates['real']):.1f}–"
                f"{max(rates['real']):.1f}, simulated {min(rates['sim']):.1f}–{max(rates['sim']):.1f} (score "
                "against updates is what the test compares)."]
    return out
