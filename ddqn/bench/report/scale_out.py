"""REPORT section of ``make bench-scale-out``: the simulator's first study (superseded by the projection
with seeds, :mod:`ddqn.bench.report.projection`)."""
from __future__ import annotations

from ddqn.bench.report.phrases import config_today, fmt, measured_on, reach_rule


def section(data: dict) -> list[str]:
    """bench-scale-out: marked superseded; per config its validation, projection and staleness controls."""
    out = ["**Superseded** by [the projection with seeds](#learning-at-64-workers-the-projection-with-seeds-simulated) "
           "(`tuned`, three seeds per W, trailing-mean crossings, a validation fixed beforehand) and kept as the "
           "simulator's first study, which [docs/simulator.md](../docs/simulator.md) cites: one seed per W, crossings "
           "at a single evaluation, and config values not recorded.", "",
           f"**Every table: {data['statement']}.** A simulated worker's compute costs what it really took in the "
           "simulator (one core per worker); the server is one FIFO thread with measured service times per message "
           "(`make bench-ps`). The line above names the latest run; each config below names the machine that "
           "measured it.", ""]
    for r in data.get("configs", {}).values():
        out += [f"### Config `{r['config']}`", "", *measured_on(r.get("machine")),
                config_today(r["config"], r.get("config_values"), r.get("projection", {}).get("sim_set", [])), "",
                *_scale_out_config(r, data["statement"])]
    sat = data.get("saturation")
    if sat:
        out += [*measured_on(data.get("saturation_machine")),
                "Saturation of one server (timing, not learning: W = a worker's cycle ÷ the server's PUSH + FETCH "
                "service time; from `make bench-ps`):", "",
                "| net | parameters | auth | cycle (ms) | server per cycle (µs) | saturation W |",
                "|---|---|---|---|---|---|",
                *[f"| {x['member']} | {x['params']:,} | {x['auth']} | {x['cycle_ms']:.1f} | "
                  f"{x['service_per_cycle_us']:.0f} | {x['saturation_workers']:.0f} |" for x in sat], ""]
    return out


def _scale_out_config(r: dict, statement: str) -> list[str]:
    out = []
    v = r.get("validation")
    if v:
        out += [f"Validation ({statement}; real runs: {v['real_minutes']:g} min each on this machine's "
                f"{r.get('cores', '?')} cores; tolerances fixed before running: updates/s ±15 %, staleness p50/p95 "
                "±1, greedy score vs updates inside the real seeds' spread at ≥ 90 % of the compared points):", "",
                "| W | seed | updates/s real | sim | diff | ms per gradient: compute + comm, real | sim | "
                "staleness p50/p95 real | sim | inside spread | fixed tolerances | score (post hoc): RMS ratio; "
                "sim − real mean, RMS and mean; real A − real B, RMS |", "|---" * 12 + "|"]
        for w, rows in v["workers"].items():
            for seed, x in rows.items():
                re_, si, rel, nz = x["real"], x["sim"], x["updates_per_s_rel_diff"], x.get("noise")
                ms = [f"{y.get('compute_ms_per_gradient', 0):.2f} + {y.get('comm_ms_per_gradient', 0):.2f}"
                      for y in (re_, si)]
                out.append(f"| {w} | {seed} | {re_['steady_updates_per_s']:.1f} | {si['steady_updates_per_s']:.1f} | "
                           f"{fmt(None if rel is None else 100 * rel, '+.0f')} % | {ms[0]} | {ms[1]} | "
                           f"{re_['staleness_p50']:.0f}/{re_['staleness_p95']:.0f} | {si['staleness_p50']:.0f}/"
                           f"{si['staleness_p95']:.0f} | {fmt(x['inside_spread'], '.0%')} | "
                           + (", ".join(f"{k} fails" for k, ok in x["pass"].items() if not ok) or "all pass")
                           + f" | {_noise(nz)} |")
        out += ["", "How to read it: *inside spread* is the fixed criterion (≥ 90 % of the simulation's evaluations "
                "inside the two real seeds' range). With two real seeds, a curve that is just a third seed lies in "
                "their range at a point only 1/3 of the time, so that criterion fails even a perfect simulator; the "
                "post-hoc *RMS ratio* (RMS of simulation − real mean over RMS of real A − real B, ≈ 0.87 for a "
                "curve that is one more seed, larger for a systematic difference) and the differences in score "
                "points judge score against updates instead; the ratio misleads when the two real curves happen to "
                "agree closely at a few points, so read it with the RMS differences beside it. *ms per gradient* is "
                "a worker's own time per gradient (compute: act, env, sample, forward/backward; comm: fetch and push "
                "round trips) as the workers reported it: the simulator gives each worker a core and the server "
                "another, which a real run with W + 1 busy threads on this machine's cores does not have.", ""]
    p = r.get("projection")
    if p:
        lv = [str(x) for x in p["levels"]]
        out += [f"Projection ({statement}; budget: {fmt(p['minutes_budget'], 'g')} simulated minutes"
                + (f" or {p['updates_budget']:,} updates" if p.get("updates_budget") else "")
                + "".join(f"; `{kv}`" for kv in p.get("sim_set", []))
                + f"; score levels {', '.join(lv)}, reached at {reach_rule(p.get('reach_rule'))}):", "",
                "| W | updates/s | " + " | ".join(f"min to {x}" for x in lv) + " | "
                + " | ".join(f"speedup to {x}" for x in lv) + " | staleness p50/p95 | server busy | best score |",
                "|---" * (5 + 2 * len(lv)) + "|"]
        for w, x in sorted(p["rows"].items(), key=lambda kv: int(kv[0])):
            mins = " | ".join(fmt(x["reach"][k]["minutes"] if x["reach"][k] else None, ".2f") for k in lv)
            sp = " | ".join(fmt(x["speedup"][k], ".2f") + "×" if x["speedup"][k] else "–" for k in lv)
            out.append(f"| {w} | {x['steady_updates_per_s']:.0f} | {mins} | {sp} | {x['staleness_p50']:.0f}/"
                       f"{x['staleness_p95']:.0f} | {fmt(x['server_utilisation'], '.0%')} | "
                       f"{x['best_greedy_mean']:.2f} |")
        out += ["", f"![scale-out projection]({r['png']})", ""]
    c = r.get("controls")
    if c:
        out += [f"Staleness controls ({statement}; `max_staleness` K = W/2; `staleness_lr`: rate ÷ (τ + 1)):", "",
                "| W | control | updates/s | dropped | staleness p50/p95 | best score | simulated min to levels |",
                "|---|---|---|---|---|---|---|"]
        for w, rows in c["rows"].items():
            for name, x in rows.items():
                reach = ", ".join(f"{k}: {fmt(v['minutes'] if v else None, '.2f')}" for k, v in x["reach"].items())
                k = f" (K={x['max_staleness']})" if x["max_staleness"] else ""
                out.append(f"| {w} | {name}{k} | "
                           f"{x['steady_updates_per_s']:.0f} | {x['dropped']} | {x['staleness_p50']:.0f}/"
                           f"{x['staleness_p95']:.0f} | {x['best_greedy_mean']:.2f} | {reach} |")
        out.append("")
    return out


def _noise(nz: dict | None) -> str:
    """The post-hoc score measures of one validation row (``scale_out.noise_ratio``)."""
    if not nz:
        return "–"
    extra = (f"; {nz['rms_diff']:.2f}, {nz['mean_diff']:+.2f}; {nz['real_rms_diff']:.2f}" if "rms_diff" in nz
             else f", {nz['mean_diff']:+.2f}")
    return f"{fmt(nz['rms_ratio'], '.2f')}{extra} ({nz['points']} points)"
