"""``make report``: regenerate results/REPORT.md from the benchmarks' JSON files (figures embedded).

Every section puts the measured numbers beside the slides' claim, and a measured value beside its goal says
whether the goal was met or missed (:func:`versus_goal`); a benchmark that has not been run is listed as missing
with the target that produces it. Each section names the CPU it was measured on (``common.cpu_label``; results
recorded before the CPU's family and model were, as recorded). Minutes to a score come from the trailing mean of
evaluations (``ddqn.bench.stats``); results recorded before that rule say they are first single evaluations.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ddqn.bench import report_projection
from ddqn.bench.common import config_values, cpu_label, grid_overrides, machine, value_differences
from ddqn.bench.report_projection import share
from ddqn.bench.stats import TRAILING_K, format_interval, seed_interval, trailing_at
from ddqn.distributed.stats import PART_NAMES


def versus_goal(value: float, goal: float, at_most: bool, spec: str = ",.2f", unit: str = "", mark: str = "") -> str:
    """A measured ``value`` against its ``goal`` (``at_most``: the goal is ≤, else ≥), e.g. "3.55× (goal ≤ 3×:
    missed)"; ``mark`` (e.g. ``**``) wraps the value."""
    met = value <= goal if at_most else value >= goal
    return (f"{mark}{value:{spec}}{unit}{mark} (goal {'≤' if at_most else '≥'} {goal:,g}{unit}: "
            f"{'met' if met else 'missed'})")


def _reach_rule(rule: dict | None) -> str:
    """How a result's minutes to a score were found (its ``reach_rule``, absent in results recorded before it)."""
    if rule:
        return f"the first evaluation at which the trailing mean of {rule['k']} evaluations is at or above the score"
    return ("the first single evaluation at or above the score (recorded before the trailing-mean rule: one "
            "evaluation is noisy, so such a time can be early)")


def _load(results: Path, name: str) -> dict[str, Any] | None:
    path = results / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _caffe(r: dict) -> list[str]:
    paper = "The 2015 system: 81.7 ms per gradient for the paper net on a dual-core i7."
    if "nets" not in r:  # recorded before the PyTorch twin: Caffe alone
        lines = ["| member | parameters | input | forward+backward (ms, batch 32) | forward (ms) |",
                 "|---|---|---|---|---|"]
        lines += [f"| {m} | {x['params']:,} | {x['input']}×{x['input']} | {x['forward_backward_ms']:.1f} | "
                  f"{x['forward_ms']:.1f} |" for m, x in r["members"].items()]
        return [paper, "", *lines]
    impls = list(next(iter(r["nets"].values()))["ms"])
    ratios = [i for i in impls if i != "torch"] if "torch" in impls else []
    head = ["net", "parameters", "input", "GFLOP (f+b)", "floor f+b (ms)"]
    for what in ("forward+backward", "forward"):
        head += [f"{i} {what} (ms)" for i in impls] + [f"{what}: {i} ÷ torch" for i in ratios]
    lines = ["| " + " | ".join([*head, *(f"{i}: share of floor" for i in impls)]) + " |",
             "|---" * (len(head) + len(impls)) + "|"]
    for name, x in r["nets"].items():
        cells = [name, f"{x['params']:,}", f"{x['frames']}×{x['input']}×{x['input']}",
                 f"{x['gflop']['forward_backward']:.2f}", f"{x['floor_ms']['forward_backward']:.1f}"]
        for k in ("forward_backward", "forward"):
            cells += [f"{x['ms'][i][k]:.1f}" for i in impls]
            cells += [f"**{x['over_torch'][i][k]:.2f}×**" for i in ratios]
        cells += [f"{100 * x['floor_share'][i]['forward_backward']:.0f} %" for i in impls]
        lines.append("| " + " | ".join(cells) + " |")
    return [paper, "", *lines, "", *_caffe_notes(r)]


def _caffe_notes(r: dict) -> list[str]:
    """How bench-caffe's table was made: the implementations, the twin's check against Caffe, the FLOP floor."""
    t, tol = r["twin"], r["tolerance"]
    worst = {k: max(x["checks"]["torch"][k] for x in r["nets"].values()) if "absent" not in t else None
             for k in ("q_rel_err", "loss_rel_err", "grad_rel_err")}
    twin = (f"No PyTorch twin in this run: {t['absent']}." if "absent" in t else
            f"torch {t['torch']} ({t['threads']} thread, oneDNN {'on' if t['mkldnn'] else 'off'}; its build in the "
            "JSON's `twin.config`) runs a twin of each prototxt built from its layers, with Caffe's θ; on a fixed "
            f"input its Q-values, loss and gradient are Caffe's within {worst['q_rel_err']:.0e}, "
            f"{worst['loss_rel_err']:.0e} and {worst['grad_rel_err']:.0e} (relative; tolerances {tol['q_rtol']:g}, "
            f"{tol['loss_rtol']:g}, {tol['grad_rtol']:g}). Forward-only runs under `torch.inference_mode`.")
    caffes = "; ".join(f"`{k}` {'as built' if k == 'caffe' else 'from ' + r['candidates'][k]} ({v['blas']}"
                       f"{', OpenBLAS core ' + v['openblas_core'] if v.get('openblas_core') else ''})"
                       for k, v in r["implementations"].items())
    rates = ", ".join(f"{k} {v:.1f}" for k, v in r["peak"]["sgemm_gflops"].items())
    n = r["peak"]["sgemm_n"]
    return [f"Batch 32, one thread each, every implementation in a process of its own: medians of {r['rounds']} "
            f"rounds that interleave them. Caffe: {caffes}. {twin}",
            "", f"Floor: the convolutions' and inner products' FLOPs (from the layer shapes; the backward's weight and "
            f"input gradients) ÷ one core's peak, {r['peak']['gflops']:.1f} GFLOP/s: the best single-thread "
            f"{n}×{n}×{n} sgemm measured in this run (GFLOP/s: {rates}). The share is floor ÷ measured."]


def _ps(r: dict) -> list[str]:
    k = r.get("threads", 1)
    best, worst = max((min(x["ratio"], x.get("ratio_threads", x["ratio"])), x["vector"]) for x in r["applies"])
    lines = [f"| vector | solver | floats | memcpy (µs) | apply, 1 core (µs) | ÷ memcpy | apply, {k} cores (µs) "
             "| ÷ memcpy |", "|---|---|---|---|---|---|---|---|"]
    for x in r["applies"]:
        lines.append(f"| {x['vector']} | {x['solver']} | {x['floats']:,} | {x['memcpy_us']:.1f} | "
                     f"{x['apply_us']:.1f} | {x['ratio']:.2f} | {x.get('apply_threads_us', x['apply_us']):.1f} | "
                     f"{x.get('ratio_threads', x['ratio']):.2f} |")
    loop = "; ".join(f"auth {x.get('auth', 'message')}, {x['clients']} client(s): {x['updates_per_s']:,.0f}/s" + (
        f" (server thread {x['server_thread_us_per_update']:.0f} µs per update)"
        if "server_thread_us_per_update" in x else "") for x in r["loopback"])
    return ["Slides: \"bottleneck is parameter update time on parameter server\" (a 10 ms update caps a server at "
            "100 updates/s). Goals: apply ≤ 3× memcpy; ≥ 3,000 server updates/s end to end.", "", *lines, "",
            "Largest ratio: " + versus_goal(r["max_ratio"], 3, True, unit="×", mark="**") + " on one core"
            + (f"; with the faster of 1 and {k} cores at each size (`server_threads`), "
               + versus_goal(best, 3, True, unit="×", mark="**") + f", at {worst}" if "max_ratio_threads" in r else "")
            + ". One core is bound by the float32 square root and division every element needs "
            "(Caffe's exact arithmetic), not by memory. End to end over loopback (receive + verify + apply + reply), "
            f"paper net: {loop}. Best end to end: "
            + versus_goal(max(x["updates_per_s"] for x in r["loopback"]), 3000, False, ",.0f", "/s", "**")
            + ". The synthetic clients run on the same cores as the server.", *_server_parts(r.get("service", []))]


def _server_parts(rows: list[dict]) -> list[str]:
    """The server thread's µs per message by kind and part (bench-ps ``service`` rows that recorded parts)."""
    rows = [x for x in rows if x.get("parts_us")]
    if not rows:
        return []
    parts = ("receive", "verify", "check", "apply", "publish", "seal", "send")
    out = ["", "Where the server thread's time goes, per message (µs; the same runs as the service times the "
           "simulator reads): *receive* dequeues it from ZeroMQ, *verify* checks its tag, *check* validates a "
           "gradient (size, finite, norm, staleness), *apply* is the solver's, *publish* copies θ (and θ⁻) once per "
           "version for the FETCHes that follow, *seal* tags the reply, *send* hands it to ZeroMQ; *total* is the "
           "thread's whole time, so the parts fall short of it by the loop's own work. A PUSH + FETCH cycle costs "
           "their two totals.", "",
           "| net | solver | auth | message | " + " | ".join(parts) + " | total |", "|---" * (len(parts) + 5) + "|"]
    for x in rows:
        for kind in ("push", "fetch", "fetch_both", "stats"):
            p = x["parts_us"].get(kind)
            if p:
                cells = " | ".join("–" if q not in p else f"{p[q]:.0f}" for q in parts)
                out.append(f"| {x['member']} | {x['solver']} | {x['auth']} | {kind.replace('_', ' ')} | {cells} | "
                           f"{p['total']:.0f} |")
    return out


def _worker(r: dict) -> list[str]:
    lines = ["| member | parameters | compute (ms) | communicate (ms) |", "|---|---|---|---|"]
    for x in r["rows"]:
        lines.append(f"| {x['member']} | {x['params']:,} | {x['compute_ms']:.1f} | {x['communicate_ms']:.2f} |")
    fits = "; ".join(f"{k}: {f['slope_ms_per_mparam']:.1f} ms per million parameters, R² {f['r2']:.4f}"
                     for k, f in r["fits"].items())
    out = ["Slides: \"compute/communicate time scales linearly with model size\".", "", *lines, "",
           f"Linear fits: {fits}.", "", "![compute/communicate vs model size](worker_speed.png)"]
    splits = r.get("breakdowns", [])
    for config in dict.fromkeys(b["config"] for b in splits):
        mine = [b for b in splits if b["config"] == config]
        names = [_build_name(b) for b in mine]
        rates = ", ".join(f"{n}: **{b['ms_per_gradient']:.1f} ms = {b['gradients_per_s']:.1f} gradients/s**"
                          for n, b in zip(names, mine))
        ratios = "".join(f"; {names[0]} ÷ {n}: **{mine[0]['gradients_per_s'] / b['gradients_per_s']:.2f}×**"
                         for n, b in zip(names[1:], mine[1:]))
        how = (f"each build in a process of its own, {mine[0]['rounds']} interleaved rounds, one run"
               if "rounds" in mine[0] else "one process per build")
        out += ["", f"A real worker's time per gradient, all in ({config} config; {how}): {rates}{ratios}. By phase:",
                "", "| phase | " + " | ".join(f"ms per gradient ({n}) | share" for n in names) + " |",
                "|---" * (1 + 2 * len(mine)) + "|",
                *[f"| {k} | " + " | ".join(_phase_cells(b, k) for b in mine) + " |" for k in mine[0]["phases_ms"]]]
    return out


def _build_name(b: dict) -> str:
    """A breakdown's build as the REPORT names it: its label, BLAS library and core (older results: the library)."""
    if "build" not in b:
        return b.get("blas_loaded", "linked BLAS")
    return f"{b['build']} ({b['blas_loaded']}, core {b.get('blas_core') or '?'})"


def _phase_cells(b: dict, phase: str) -> str:
    ms = b["phases_ms"][phase]
    return f"{ms:.2f} | {100 * ms / b['ms_per_gradient']:.1f} %"


def _capacity(r: dict) -> list[str]:
    modes = r.get("modes", {r.get("auth", "message"): r["rows"]})
    summary = r.get("summary", {r.get("auth", "message"): r})
    out = [f"One real worker computes {r['worker_gradients_per_s']:.1f} gradients/s (paper net). Goal: ≥ 100 workers' "
           "worth. The synthetic clients share the machine's cores with the server, so the measured plateau is a "
           "lower bound; the server thread's own time per update (receive, verify, apply, reply) bounds what it "
           "could serve with the clients on other machines.", ""]
    for auth, rows in modes.items():
        s = summary[auth]
        got = ", ".join(f"{x['clients']}: {x['updates_per_s']:,.0f}" for x in rows)
        bound = (f"; server-thread bound {s['server_bound_updates_per_s']:,.0f}/s = "
                 + versus_goal(s["server_bound_workers_worth"], 100, False, ",.0f", " workers' worth", "**")
                 if "server_bound_updates_per_s" in s else "")
        out.append(f"- `auth: {auth}` — updates/s by client count ({got}); plateau {s['plateau_updates_per_s']:,.0f}/s "
                   "= " + versus_goal(s["workers_worth"], 100, False, ",.0f", " workers' worth", "**") + f"{bound}.")
    return [*out, "", "![capacity](capacity.png)"]


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.0f} %"


def _flood_row(p: dict) -> str:
    """One phase of bench-hostile as a table row."""
    if "error" in p:
        return f"| {p['phase']} | {p['connections']:,} | {p['error']} |" + " |" * 6
    h, s, a = p["honest"], p["server"], p.get("attackers")
    cells = [p["phase"], f"{p['connections']:,}", f"{a['messages_per_s']:,.0f}" if a else "–", _pct(s["busy_pct"]),
             _pct(s["process_cpu_pct"]), _pct(s["zmq_io_cpu_pct"]), f"{h['requests_per_s']:,.1f}",
             share(p["share_of_unloaded"]),
             f"{h['p50_ms']:.1f} / {h['p99_ms']:.1f}" if h["requests"] else "–"]
    return "| " + " | ".join(cells) + " |"


def _idle_line(p: dict) -> str:
    """bench-hostile's idle phase: connections achieved, the snapshot and the join."""
    held, snap, join = p["held"], p["snapshot"], p["join"]
    errors = ", ".join(f"{k} × {v:,}" for k, v in held["errors"].items()) or "none"
    wrote = f"written in {snap['seconds']:.2f} s" if snap["written"] else f"**not written** ({snap['error']})"
    took = "" if join["seconds"] is None else f", after {join['seconds']:.1f} s"
    joined = f"and FETCH in {join['seconds']:.2f} s" if join["fetched"] else f"**failed** ({join['error']}{took})"
    return (f"Idle connections: {held['open_at_snapshot']:,} of {p['connections']:,} open at the snapshot "
            f"({held['ramped_open']:,} after the ramp; the server process held {held['server_fds_at_snapshot']} "
            f"descriptors, {held['server_fds_before']} before); failed connects: {errors}; closed by the server: "
            f"{held['closed_by_server']:,}. Snapshot {wrote} (`{snap['method']}`); join {joined}.")


def _hostile(r: dict) -> list[str]:
    c, g = r["config"], r["goal"]
    head, payload, tag = c["flood_message_bytes"]
    out = [f"Issue 28's floods, in one run per `auth` mode, each against one parameter server (`{c['net']}` net) in a "
           f"process of its own: token holders without the secret, from N connections, loop [a {head}-byte "
           f"HELLO-shaped header, {payload:,} bytes, a {tag}-byte tag] (each dropped); then {c['idle']:,} idle "
           "connections are held while the server's process writes a snapshot and a second worker joins (HELLO, "
           f"WELCOME, one FETCH). In every phase an honest worker does PUSH/FETCH round trips for {c['seconds']:g} s "
           f"(after {c['warmup_s']:g} s not counted; a request is one round trip). Attackers: {c['procs']} "
           "processes; their messages/s is what ZeroMQ took from them in the window. *Server busy*: the server "
           "thread's CPU time ÷ wall time; beside it the server process's CPU (all threads) and its ZeroMQ I/O "
           "threads'.", ""]
    for auth, m in r["modes"].items():
        lim = m.get("server_nofile", {})
        died = "" if m.get("server_alive", True) else "; **the server process died**"
        out += [f"`auth: {auth}` — server process RLIMIT_NOFILE soft {lim.get('soft', '?')} (was "
                f"{lim.get('soft_before', '?')}), hard {lim.get('hard', '?')}{died}:", "",
                "| phase | connections | attackers' messages/s | server busy | server process CPU | ZeroMQ I/O CPU | "
                "honest requests/s | of unloaded | p50 / p99 (ms) |", "|---" * 9 + "|",
                *map(_flood_row, m["phases"]), ""]
        out += [x for p in m["phases"] if p["phase"] == "idle" and "held" in p for x in (_idle_line(p), "")]
    errors = g.get("errors", {})

    def kept(auth: str, share: float | None) -> str:
        if auth in errors:
            return f"**missed** (the phase failed: {errors[auth]})"
        return "not measured" if share is None else versus_goal(100 * share, g["percent"], False, ".0f", " %", "**")

    got = "; ".join(f"auth {k}: {kept(k, v)}" for k, v in g["share_by_auth"].items())
    return [*out, f"Goal: the honest worker keeps ≥ {g['percent']} % of its unloaded requests/s under the "
            f"{g['connections']}-connection token flood, in one run — {got}."]


def _fresh(k: dict | None) -> str:
    """A best snapshot re-played on fresh games (``common.confirm_best``): mean ± se (games)."""
    return f"{k['greedy_mean']:.2f} ± {k['greedy_se']:.2f} ({k['episodes']})" if k else "–"


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


def _scaling(r: dict) -> list[str]:
    levels = list(next(iter(r["reach"].values())))
    head = ["| mode | best greedy mean | best, fresh games (± se) | updates/s | staleness p50/p95 | "
            + " | ".join(f"min to {s}" for s in levels) + " |", "|---" * (5 + len(levels)) + "|"]
    for m, reach in r["reach"].items():
        best = max((x["greedy_mean"] for x in r["curves"][m]), default=0.0)
        st, k = r.get("runs", {}).get(m, {}), (r.get("confirmed") or {}).get(m)
        rate = f"{st['updates_per_s']:.1f}" if "updates_per_s" in st else "?"
        stale = f"{st['staleness_p50']:g}/{st['staleness_p95']:g}" if "staleness_p50" in st else "–"
        head.append(f"| {m} | {best:.2f} | {_fresh(k)} | {rate} | {stale} | "
                    + " | ".join(f"{v['minutes']:.1f}" if v else "–" for v in reach.values()) + " |")
    origins = [f"- {m}: {st['origin']}" for m, st in r.get("runs", {}).items() if st.get("origin")]
    dates = ", ".join(f"{m} {st['trained']}" for m, st in r.get("runs", {}).items() if st.get("trained"))
    serial = any(k.split()[0] == "serial" for k in r.get("runs", {}))
    speed = [f"- to score {s}: " + ", ".join(f"{m} **{x:.2f}×**" for m, x in ratios.items() if x and m != "serial")
             for s, ratios in r["speedup_vs_serial"].items() if any(x for m, x in ratios.items() if m != "serial")]
    return ["Slides: \"performance scales linearly with number of workers\".", "",
            _config_today(r["config"], r.get("config_values"), grid_overrides(r["every"]) if r.get("every") else ()),
            "",
            f"Config `{r['config']}`, {r['budget_minutes']:g} wall-clock minutes per run, one run after another on "
            f"{r['cores']} cores: serial and async-1 have a core to spare, async-2 and sync-2 share both cores between "
            f"two Caffe workers and the driver (server, Spark). *Min to* a score: {_reach_rule(r.get('reach_rule'))}; "
            "\"–\": not reached within the budget. Updates/s: "
            "gradient steps per second (serial: its own; distributed: the server's; sync-2: rounds, each the average "
            "of two gradients). *Best, fresh games*: a run's best snapshot played again on games never "
            "used to pick it (seed 20,000; the maximum of a noisy curve is biased upward).", "", *head, "",
            *([*origins, ""] if origins else []), *([f"Training ended: {dates}.", ""] if dates else []),
            "Speedup over serial (serial minutes ÷ mode minutes to reach the score):", "",
            *(speed or [("- serial reached none of the levels in the budget: no ratio" if serial
                         else "- no serial run yet: no ratio")]), "", *_over_seeds(r, levels),
            *_budgets(r, levels), *_goals(r), *_shape(r), *_endings(r.get("confirmed") or {}),
            f"![scaling]({r.get('png', 'scaling.png')})"]


def _budgets(r: dict, levels: list[str]) -> list[str]:
    """Shorter budgets read from the same runs (``bench.scaling --budgets``): each curve cut at B minutes."""
    out = []
    for b, part in (r.get("budgets") or {}).items():
        rows = [f"| {m} | {_fresh(part['confirmed'].get(m))} | "
                + " | ".join(f"{v['minutes']:.1f}" if v else "–" for v in reach.values()) + " |"
                for m, reach in part["reach"].items()]
        out += [f"Within {b} minutes (the same runs, each curve cut at {b} min; best snapshot up to then on fresh "
                "games):", "", "| run | best, fresh games (± se) | " + " | ".join(f"min to {s}" for s in levels)
                + " |", "|---" * (2 + len(levels)) + "|", *rows, "",
                *_over_seeds({"reach": part["reach"], "confirmed": part["confirmed"]}, levels)]
    return out


def _goals(r: dict) -> list[str]:
    """``--goal B=S`` per mode: every seed's best snapshot up to B minutes at ≥ S on fresh games, met or missed."""
    return [*(f"- Goal: `{mode}` ≥ {g['score']:g} within {b} minutes on fresh games, every seed: "
              f"**{'met' if g['met'] else 'missed'}** (worst seed {g['worst']:.2f}, mean {g['mean']:.2f} over "
              f"{g['seeds']} seed{'s' * (g['seeds'] != 1)})"
              for b, by_mode in (r.get("goals") or {}).items() for mode, g in by_mode.items()),
            *([""] if r.get("goals") else [])]


def _modes(names: Iterable[str]) -> dict[str, list[str]]:
    """Run names grouped by mode: "async-2", "async-2 s1", "async-2 s3" → {"async-2": [all three]}."""
    modes: dict[str, list[str]] = {}
    for name in names:
        head, _, seed = name.rpartition(" s")
        modes.setdefault(head if head and seed.isdigit() else name, []).append(name)
    return modes


def _shape(r: dict) -> list[str]:
    """Each run's trailing mean at each quarter of the budget, and its gain over the second half (is the curve still
    rising at the end, so that more minutes would buy score?); over seeds for modes with more than one."""
    marks = [r["budget_minutes"] * q / 4 for q in (1, 2, 3, 4)]
    at = {n: [trailing_at(c, m) for m in marks] for n, c in r["curves"].items()}
    gain = {n: v[3] - v[1] if v[3] is not None and v[1] is not None else None for n, v in at.items()}
    rows = [f"| {n} | " + " | ".join(_fmt(x, ".2f") for x in v) + f" | {_fmt(gain[n], '+.2f')} |"
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


def _env(r: dict) -> list[str]:
    sps = r["steps_per_s"]
    rows = [f"| {k.replace('_', ' ')} | {v:,.0f} |" for k, v in sps.items()]
    k1, kn = sps.get("SnakeBatch_K1"), sps.get("SnakeBatch_K256")
    return [f"{r['size']}×{r['size']} board, {r['frame_size']}×{r['frame_size']} frames, random actions, "
            f"{r['seconds']:g} s per variant.", "", "| variant | env steps/s |", "|---|---|", *rows, "",
            *([f"The vectorised batch of 256 games steps {kn / k1:.0f}× as many games per second as one."] if k1 and kn
              else [])]


def _replay(r: dict) -> list[str]:
    c = r["config"]
    rows = [f"| {name} | {x['add_frames_per_s']:,} | {x['sample_batches_per_s']:,} | "
            f"{x['sample_transitions_per_s']:,} | {x['dqn_steps_per_s']:,} | {x['ram_bytes'] / 2**20:.1f} |"
            for name, x in (("RAM", r["ram"]), ("LMDB", r["lmdb"]))]
    return [f"{c['frames']:,} frames of {c['frame_shape'][0]}×{c['frame_shape'][1]}, history {c['history']}, minibatch "
            f"{c['batch']}. The paper's worker needs one minibatch per env step (≈ 30/s per worker here).", "",
            "| backend | frames added/s | minibatches/s | transitions/s | add+sample steps/s | RAM (MiB) |",
            "|---|---|---|---|---|---|", *rows, "",
            f"RAM and LMDB return identical minibatches for the same seed: {r['identical_batches']}."]


def _blas(r: dict) -> list[str]:
    out = []
    for cpu, c in r["cpus"].items():
        base = c["table_ms"]["OpenBLAS 0.3.21 (Debian, linked)"]
        rows = [f"| {name} | {t['paper']:.2f} ({base['paper'] / t['paper']:.2f}×) | {t['large']:.2f} "
                f"({base['large'] / t['large']:.2f}×) |" for name, t in c["table_ms"].items()]
        out += [f"**{cpu}** (measured {c['machine']['date']}): forward+backward ms at batch 32 on one thread, the same "
                f"Caffe binary with each BLAS swapped in (median of {c['rounds']} interleaved rounds; speedup over "
                "Caffe's own OpenBLAS).", "",
                "| BLAS | paper net | large net |", "|---|---|---|", *rows, "",
                f"Fastest on the paper net: {c['winner']}, {100 * c['winner_share_of_limit']:.0f} % of the "
                f"≈ {r['limit_ms']:g} ms physical limit.", ""]
    return out[:-1]


def _grad_norms(r: dict) -> list[str]:
    rows = [f"| {name} | {c['updates']:,} | {c['max']:.3g} | {c['p99_9']:.3g} | {c['p99']:.3g} | {c['p50']:.3g} |"
            for name, c in r["configs"].items()]
    return ["L2 norms of the gradients honest serial learners push, per shipped config (what the parameter "
            "server's `max_grad_norm` must never drop).", "",
            "| config | updates | max | p99.9 | p99 | p50 |", "|---|---|---|---|---|---|", *rows]


def _atari(r: dict) -> list[str]:
    ale = r["ale"]
    nets = [f"| {name} | {x['params']:,} | {x['input']}×{x['input']} | {x['forward_backward_ms']:.1f} | "
            f"{x['forward_ms']:.1f} |" for name, x in r["nets"].items()]
    out = [f"ALE `{r['game']}`: {ale['steps_per_s']:,.0f} agent steps/s ({ale['frames_per_s']:,.0f} frames/s) on one "
           "core, random actions, DQN preprocessing.", "",
           "| net | parameters | input | forward+backward (ms, batch 32) | forward (ms) |", "|---|---|---|---|---|",
           *nets]
    learn = r.get("learning")
    if learn:
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


def _atari_reach(learn: dict) -> str:
    """When the evaluations' trailing mean reached the target (results recorded before it have no such line)."""
    if "reach_target" not in learn:
        return ""
    t = learn["reach_target"]
    return (f" The trailing mean of {learn['reach_rule']['k']} evaluations reached {learn['target_ratio']:g}× random "
            + (f"at {t['minutes']:.1f} min ({t['env_steps']:,} env steps)." if t else "not at all in the budget."))


def _gifs(r: dict) -> list[str]:
    return [f"Dumb snake (initial weights) scored {r['dumb_score']}; smart snake (`{r['weights']}`) scored "
            f"{r['smart_score']}.", "", "![dumb and smart snake](snakes.gif)"]


def _fmt(x: float | None, spec: str = ".1f") -> str:
    return "–" if x is None else format(x, spec)


def _tuning(r: dict) -> list[str]:
    lv = [str(x) for x in r["levels"]]
    out = [f"Variants of `{r['base']}`, each the Spark job with {r['workers']} asynchronous workers on this machine, "
           "one after another; snapshots evaluated afterwards on the training-time episodes (greedy, 50 games: "
           "mean ± standard error). The best of a curve of noisy evaluations is biased upward, so that snapshot is "
           "played again on fresh games (seed 20,000; their count in brackets)"
           + (f"; every variant with {', '.join(r['common'])}" if r.get("common") else "")
           + (f"; evaluations and snapshots every {r['every']:,} env steps" if r.get("every") else "")
           + f". *Min to* a score: {_reach_rule(r.get('reach_rule'))}. *Vs tuned*: the fresh-games mean minus "
           f"`{r['base']}`'s at the same budget and seed, ± the standard error of the difference. †: the row's config "
           "values were not recorded, so they cannot be checked against the variant's today."]
    rows = list(r["variants"].values())  # one per variant, budget and seed (tuning.row_key), with its variant
    for budget in sorted({x["minutes_budget"] for x in rows}):
        out += ["", f"**{budget:g}-minute runs**", "",
                "| variant | seed | change | updates/s | best (± se) | at min | best, fresh games (± se) | vs tuned | "
                "final | " + " | ".join(f"min to {x}" for x in lv) + " |", "|---" * (9 + len(lv)) + "|"]
        same = [x for x in rows if x["minutes_budget"] == budget]
        base = {x["seed"]: x.get("confirmed") for x in same if x["variant"] == r["base"]}
        for x in sorted(same, key=lambda x: (x["variant"] != r["base"], x["seed"], x["variant"])):
            b, f, k = x["best"], x["final"], x.get("confirmed")
            stale = "" if "config_values" in x else " †"
            t = base.get(x["seed"])
            vs = "–" if x["variant"] == r["base"] or not (k and t) else (
                f"{k['greedy_mean'] - t['greedy_mean']:+.2f} ± {math.hypot(k['greedy_se'], t['greedy_se']):.2f}")
            out.append(f"| {x['variant']}{stale} | {x['seed']} | {x['what']} | {x['updates_per_s']:.1f} | "
                       + (f"{b['greedy_mean']:.2f} ± {b['greedy_se']:.2f} | {b['minutes']:.1f} | {_fresh(k)} | {vs} | "
                          f"{f['greedy_mean']:.2f} | " if b else "– | – | – | – | – | ")
                       + " | ".join(_fmt(x["reach"][v]["minutes"] if x["reach"][v] else None) for v in lv) + " |")
    ends = _endings({f"{x['variant']}, {x['minutes_budget']:g} min, seed {x['seed']}": x.get("confirmed")
                     for x in sorted(rows, key=lambda x: (x["minutes_budget"], x["variant"] != r["base"], x["seed"],
                                                          x["variant"]))})
    return [*out, "", *ends, f"![tuning]({r['png']})"]


def _scale_out(data: dict) -> list[str]:
    out = ["**Superseded** by [the projection with seeds](#learning-at-64-workers-the-projection-with-seeds-simulated) "
           "(`tuned`, three seeds per W, trailing-mean crossings, a validation fixed beforehand) and kept as the "
           "simulator's first study, which [docs/simulator.md](../docs/simulator.md) cites: one seed per W, crossings "
           "at a single evaluation, and config values not recorded.", "",
           f"**Every table: {data['statement']}.** A simulated worker's compute costs what it really took in the "
           "simulator (one core per worker); the server is one FIFO thread with measured service times per message "
           "(`make bench-ps`). The line above names the latest run; each config below names the machine that "
           "measured it.", ""]
    for r in data.get("configs", {}).values():
        out += [f"### Config `{r['config']}`", "", *_measured_on(r.get("machine")),
                _config_today(r["config"], r.get("config_values"), r.get("projection", {}).get("sim_set", [])), "",
                *_scale_out_config(r, data["statement"])]
    sat = data.get("saturation")
    if sat:
        out += [*_measured_on(data.get("saturation_machine")),
                "Saturation of one server (timing, not learning: W = a worker's cycle ÷ the server's PUSH + FETCH "
                "service time; from `make bench-ps`):", "",
                "| net | parameters | auth | cycle (ms) | server per cycle (µs) | saturation W |",
                "|---|---|---|---|---|---|",
                *[f"| {x['member']} | {x['params']:,} | {x['auth']} | {x['cycle_ms']:.1f} | "
                  f"{x['service_per_cycle_us']:.0f} | {x['saturation_workers']:.0f} |" for x in sat], ""]
    return out


def _config_today(config: str, recorded: dict | None, overrides: list[str] | tuple[str, ...] = ()) -> str:
    """Whether a result's config (``config``, with ``overrides``) is today's: its ``recorded`` values against the
    config's values now (``common.value_differences``). A report must not describe an earlier config as today's."""
    if not recorded:
        return (f"**Config values not recorded**: these rows cannot be checked against today's `{config}`, which may "
                "have changed since they were measured.")
    try:
        diff = value_differences(recorded, config_values(config, list(overrides)))
    except Exception as e:  # a config that no longer loads (renamed, removed): say so rather than fail the report
        return f"**`{config}` cannot be loaded today** ({str(e).splitlines()[0][:120]}): these rows are not today's."
    return (f"**Stale**: `{config}` has changed since ({', '.join(diff)}): these rows are not today's `{config}`."
            if diff else f"Config values as recorded are today's `{config}`.")


def _measured_on(m: dict | None) -> list[str]:
    """A line naming the machine of a part measured apart from the rest of its section, or none."""
    if not m:
        return []
    return [f"Measured {m.get('date', '?')} on {m.get('cores', '?')} cores ({cpu_label(m)}).", ""]


def _noise(nz: dict | None) -> str:
    """The post-hoc score measures of one validation row (``scale_out.noise_ratio``)."""
    if not nz:
        return "–"
    extra = (f"; {nz['rms_diff']:.2f}, {nz['mean_diff']:+.2f}; {nz['real_rms_diff']:.2f}" if "rms_diff" in nz
             else f", {nz['mean_diff']:+.2f}")
    return f"{_fmt(nz['rms_ratio'], '.2f')}{extra} ({nz['points']} points)"


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
                           f"{_fmt(None if rel is None else 100 * rel, '+.0f')} % | {ms[0]} | {ms[1]} | "
                           f"{re_['staleness_p50']:.0f}/{re_['staleness_p95']:.0f} | {si['staleness_p50']:.0f}/"
                           f"{si['staleness_p95']:.0f} | {_fmt(x['inside_spread'], '.0%')} | "
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
        out += [f"Projection ({statement}; budget: {_fmt(p['minutes_budget'], 'g')} simulated minutes"
                + (f" or {p['updates_budget']:,} updates" if p.get("updates_budget") else "")
                + "".join(f"; `{kv}`" for kv in p.get("sim_set", []))
                + f"; score levels {', '.join(lv)}, reached at {_reach_rule(p.get('reach_rule'))}):", "",
                "| W | updates/s | " + " | ".join(f"min to {x}" for x in lv) + " | "
                + " | ".join(f"speedup to {x}" for x in lv) + " | staleness p50/p95 | server busy | best score |",
                "|---" * (5 + 2 * len(lv)) + "|"]
        for w, x in sorted(p["rows"].items(), key=lambda kv: int(kv[0])):
            mins = " | ".join(_fmt(x["reach"][k]["minutes"] if x["reach"][k] else None, ".2f") for k in lv)
            sp = " | ".join(_fmt(x["speedup"][k], ".2f") + "×" if x["speedup"][k] else "–" for k in lv)
            out.append(f"| {w} | {x['steady_updates_per_s']:.0f} | {mins} | {sp} | {x['staleness_p50']:.0f}/"
                       f"{x['staleness_p95']:.0f} | {_fmt(x['server_utilisation'], '.0%')} | "
                       f"{x['best_greedy_mean']:.2f} |")
        out += ["", f"![scale-out projection]({r['png']})", ""]
    c = r.get("controls")
    if c:
        out += [f"Staleness controls ({statement}; `max_staleness` K = W/2; `staleness_lr`: rate ÷ (τ + 1)):", "",
                "| W | control | updates/s | dropped | staleness p50/p95 | best score | simulated min to levels |",
                "|---|---|---|---|---|---|---|"]
        for w, rows in c["rows"].items():
            for name, x in rows.items():
                reach = ", ".join(f"{k}: {_fmt(v['minutes'] if v else None, '.2f')}" for k, v in x["reach"].items())
                k = f" (K={x['max_staleness']})" if x["max_staleness"] else ""
                out.append(f"| {w} | {name}{k} | "
                           f"{x['steady_updates_per_s']:.0f} | {x['dropped']} | {x['staleness_p50']:.0f}/"
                           f"{x['staleness_p95']:.0f} | {x['best_greedy_mean']:.2f} | {reach} |")
        out.append("")
    return out


def _link_cells(x: dict) -> tuple[str, str]:
    """A bench-links row's link rate and its workers' communicate shares, as table cells."""
    rate = "unlimited" if x["link_gbit"] is None else f"{x['link_gbit']:g}"
    comm = ", ".join(share(w["comm_share"]) for w in x["workers"].values())
    return rate, comm


def _links(r: dict) -> list[str]:
    c = r["config"]
    out = [f"The `{c['config']}` job on network-namespace hosts (master, driver, {c['workers']} worker hosts), "
           f"{c['minutes']:g} minutes per link rate, every host's cable shaped to that rate in each direction "
           "(`tc … tbf` at both ends of its veth). Bytes per update come from the driver host's interface counters "
           "(received + sent, Spark's traffic included); its link's use is its busier direction's bits/s in the "
           "run's busiest 10 s ÷ the rate. *Communicates*: a worker's share of its time in FETCH and PUSH round "
           "trips.", "",
           "| link (Gbit/s) | updates/s (run) | updates/s (steady) | of unlimited | MB per update | driver link "
           "(Gbit/s) | its use | workers communicate |", "|---" * 8 + "|"]
    for x in r["rows"]:
        rate, comm = _link_cells(x)
        steady = "–" if x["steady_updates_per_s"] is None else f"{x['steady_updates_per_s']:.1f}"
        per = "–" if x["bytes_per_update"] is None else f"{x['bytes_per_update'] / 1e6:.2f}"
        out.append(f"| {rate} | {x['updates_per_s']:.1f} | {steady} | "
                   f"{share(x['of_unlimited'])} | {per} | "
                   f"{x['driver_gbit_s']:.3f} | {share(x['link_use'])} | "
                   f"{comm} |")
    return out


def _links_shards(r: dict) -> list[str]:
    """The real S shards against one server under a rated link (``bench.links --shards``)."""
    c = r["config"]
    out = [f"The `{c['config']}` job on network-namespace hosts ({c['workers']} worker hosts, and with shards on "
           f"`{c['placement']}` one more host per shard), {c['minutes']:g} minutes per run, every host's cable at the "
           "rate in each direction. *Busiest host*: the host whose interface carried the most bytes per update "
           "(received + sent; with shards on executors a shard's host, else the driver's).", "",
           "| link (Gbit/s) | S | updates/s (steady) | of one server | busiest host | its MB per update | "
           "workers communicate |", "|---" * 7 + "|"]
    for x in r["rows"]:
        rate, comm = _link_cells(x)
        role, b = max(x["host_bytes"].items(), key=lambda kv: kv[1]["rx"] + kv[1]["tx"])
        per = (b["rx"] + b["tx"]) / x["updates"] / 1e6 if x["updates"] else None
        of = x.get("of_one_server")
        out.append(f"| {rate} | {x['shards']} | {_fmt(x['steady_updates_per_s'])} | "
                   f"{'–' if of is None else f'{of:.2f}×'} | {role} | {_fmt(per, '.2f')} | {comm} |")
    return out


def _links_model(r: dict) -> list[str]:
    c = r["config"]
    out = [f"The simulator (`ddqn.sim`, fixed-cycle mode, a full-duplex card per host at the link's rate) against "
           f"the `{c['config']}` runs of `make bench-links` ({c['workers']} worker hosts; measured "
           f"{r.get('links_date', '?')}). Calibrated on two measured rates only: a worker's compute per gradient "
           f"from `{c['calibrate'][0]}` ({r['compute_ms_per_gradient']:.1f} ms), the links' efficiency from "
           f"`{c['calibrate'][1]}` Gbit/s ({r['efficiency']:.3f} of the rate carries message bytes). Server service "
           f"times: {c['service']}. Steady updates/s: after the first quarter of each run, real and simulated.", "",
           "| link (Gbit/s) | role | measured updates/s | simulated | error | driver link use (measured) | "
           "server card use (simulated, in/out) |", "|---" * 7 + "|"]
    for x in r["rows"]:
        rate = "unlimited" if x["link_gbit"] is None else f"{x['link_gbit']:g}"
        err = "–" if x["error"] is None else f"{100 * x['error']:+.1f} %"
        use = x["simulated_server_nic_use"]
        sim_use = "–" if use is None else f"{share(use['ingress'])} / {share(use['egress'])}"
        measured_use = share(x["measured_link_use"])
        out.append(f"| {rate} | {x['role']} | {_fmt(x['measured_steady_updates_per_s'], '.2f')} | "
                   f"{x['predicted_steady_updates_per_s']:.2f} | {err} | {measured_use} | {sim_use} |")
    worst = r["worst_predicted_error"]
    if worst is not None:
        out += ["", "Worst predicted point: " + versus_goal(100 * worst, 100 * r["tolerance"], True, ".1f", " %",
                                                            "**") + "."]
    off = [x for x in r["rows"] if x["role"] != "predicted" and x["error"] is not None
           and abs(x["error"]) > r["tolerance"]]
    if off:  # a calibration that did not reproduce its own run: the model, not just its predictions, is off
        out += ["", "**The calibration did not reproduce its own runs**: " + "; ".join(
            f"{'unlimited' if x['link_gbit'] is None else format(x['link_gbit'], 'g') + ' Gbit/s'} "
            f"({x['role']}) {100 * x['error']:+.1f} %" for x in off)
            + (f" (the efficiency fit stopped at its bracket's top, {r['efficiency']:.3f}: even a perfect wire is "
               "slower in the model than the measured run)" if r["efficiency"] >= 1.0 else "")
            + ". So this model is not yet held to the links, whatever its predicted points say."]
    return out


def _shard_cost(r: dict) -> list[str]:
    out = _shard_cost_shared(r) if "rows" in r else []
    return out + (_shard_cost_alone(r["alone"]) if r.get("alone") else [])


def _shard_cost_alone(a: dict) -> list[str]:
    c, kinds = a["config"], ("push", "commit", "fetch")
    theta = all("cpu_us_theta" in x for x in a["rows"].values())  # measured since a COMMIT can ask for θ
    out = ["", f"**Measured alone** (`make bench-shard-cost-alone`, {a['machine'].get('date', '?')} on "
           f"{cpu_label(a['machine'])}): one shard (shard 0 of S, over 1/S of the `{c['config']}` net's "
           f"{c['num_params']:,} floats) and one client in a process of its own, nothing else busy; per update the "
           "client PUSHes the slice, COMMITs all S votes (S − 1 forged with the shard key) and FETCHes the slice"
           + ("; every other update its COMMIT asks for θ's slice instead and no FETCH follows (what a worker does "
              "when its next step fetches: `commit + θ`)" if theta else "") + ". "
           f"{c['rounds']} rounds of {c['updates']} updates interleaved over S, medians; CPU: the shard's server "
           "thread's time on a core" + (" per message of each kind" if theta else "") + "; busy and parts: wall "
           "(PUSH + COMMIT + FETCH).", "",
           "| S | floats | CPU per update (µs) | " + " | ".join(f"{k} CPU" for k in kinds)
           + (" | commit + θ CPU | CPU per update with θ in the COMMIT's reply" if theta else "") + " | busy | "
           + " | ".join(PART_NAMES) + " | client (µs per update) |",
           "|---" * (5 + len(kinds) + 2 * theta + len(PART_NAMES)) + "|"]
    for s, x in a["rows"].items():
        parts = " | ".join(f"{sum(x['kinds'][k]['parts_us'][p] for k in kinds):.0f}" for p in PART_NAMES)
        out.append(f"| {s} | {x['floats']:,} | {x['cpu_us']:.0f} | "
                   + " | ".join(f"{x['kinds'][k]['cpu_us']:.0f}" for k in kinds)
                   + (f" | {x['kinds']['commit_fetch']['cpu_us']:.0f} | {x['cpu_us_theta']:.0f}" if theta else "")
                   + f" | {x['busy_us']:.0f} | {parts} | {x['client_us']:.0f} |")
    fits = [(k, f) for k, f in a["fit"].items() if f]
    if fits:
        out += ["", "Fit of the CPU per message and per update, cost(S) = a + b/S (least squares; a: per message, b: "
                "the whole vector's bytes; `total`: PUSH + COMMIT + FETCH, `total_theta`: PUSH + COMMIT answered with "
                "θ): " + "; ".join(f"{k} a = {f['a_us']:.0f} µs, b = {f['b_us']:.0f} µs (rms "
                                   f"{f['rms_us']:.0f})" for k, f in fits) + "."]
    return out


def _shard_cost_shared(r: dict) -> list[str]:
    c = r["config"]
    out = [f"The real sharded server (placement `driver`: S shard processes and the coordinator on this host) for the "
           f"`{c['config']}` net ({c['num_params']:,} floats) and solver, one client pushing and fetching, "
           f"{c['rounds']} rounds of {c['updates']} updates interleaved over S, medians. *CPU*: a shard's server "
           "thread's time on a core in messages per update (for S > 1 the PUSH that votes, the COMMIT that applies, "
           "the FETCH); the busiest shard's bounds the server. *Busy* and its parts are wall time: on 2 shared cores "
           "the shards and the client share the cores, so they include waiting for a core.", "",
           "| S | busiest shard, CPU (µs per update) | busy | " + " | ".join(PART_NAMES)
           + " | each shard's CPU (µs) | bound (updates/s) | client (µs per update) |",
           "|---" * (6 + len(PART_NAMES)) + "|"]
    for s, x in r["rows"].items():
        parts = " | ".join(f"{x['busiest_parts_us'].get(p, 0.0):.0f}" for p in PART_NAMES)
        each = ", ".join(f"{y['cpu_us']:.0f}" for y in x["shards"])
        out.append(f"| {s} | {x['busiest_cpu_us']:.0f} | {x['busiest_us']:.0f} | {parts} | {each} | "
                   f"{x['server_bound_updates_per_s']:,.0f} | "
                   f"{x['client_us']:.0f} |")
    if r["projection"]:
        ws = list(r["projection"][0]["load"])
        out += ["", f"**Projection** (analytic, not measured): capacity = the smaller of the busiest shard's bound and "
                f"its host's card (4n/S bytes in and out per update at {c['efficiency']:.2f} of the rate); load = W × "
                f"{r['worker_gradients_per_s']:.1f} gradients/s (a `{c['config']}` worker, `make bench-worker`) ÷ "
                "capacity.", "", "| S | link (Gbit/s) | capacity (updates/s) | bound by | "
                + " | ".join(f"load at W = {w}" for w in ws) + " |", "|---" * (4 + len(ws)) + "|"]
        for p in r["projection"]:
            loads = " | ".join(share(p["load"][w]) for w in ws)
            out.append(f"| {p['shards']} | {p['gbit']:g} | {p['capacity_updates_per_s']:,.0f} | {p['bound_by']} | "
                       f"{loads} |")
        at = [p for p in r["projection"] if p["gbit"] == 10 and "64" in p["load"]]
        if at:
            best = min(at, key=lambda p: p["load"]["64"])
            out += ["", f"Goal (issue 31): shards on hosts of their own, W = 64 on 10 Gbit/s links, server and card "
                    f"load under 70 %. Best S here, {best['shards']}: "
                    + versus_goal(100 * best["load"]["64"], 70, True, ".0f", " %", "**") + "."]
    return out


def _shard_projection(r: dict) -> list[str]:
    c, cyc = r["config"], r["cycle"]
    m = cyc.get("machine") or {}
    out = [f"**A projection, not a measurement**: the timing-only simulator (`ddqn.sim`, `--timing-only`: no Caffe, "
           f"no learning) of the `{c['config']}` worker loop, W workers each with a fixed cycle of "
           f"{cyc['ms_per_gradient']:.1f} ms per gradient (`make bench-worker` on {cpu_label(m)}, "
           f"{m.get('date', '?')}). Shards' service per message, a + b/S: {r['shard_source']}. Loopback legs: "
           f"{r['transport']}. A full-duplex card per host at the rate, links' efficiency {r['efficiency_source']}, "
           "no token bucket. S = 1: one server thread; S > 1 on `executors` (a host and card each) or all on the "
           "`driver`'s host and card"
           + (", a worker's COMMIT asking for θ when its next step fetches"
              if "commit_fetch" in r["shard_service"]["a_us"] else "")
           + (f"; config overrides {', '.join(c['set'])}" if c.get("set") else "")
           + ". Each cell: steady updates/s · the busiest server thread's utilisation · the busiest server-side "
           "card direction's share of the rate.", ""]
    ws = [str(w) for w in c["workers"]]
    out += ["| link (Gbit/s) | S | placement | " + " | ".join(f"W = {w}" for w in ws) + " |",
            "|---" * (3 + len(ws)) + "|"]
    cells: dict[tuple, dict[str, str]] = {}
    for x in r["rows"]:
        cells.setdefault((x["gbit"], x["shards"], x["placement"]), {})[str(x["workers"])] = (
            f"{x['updates_per_s']:,.0f} · {share(x['busiest_server'])} · {share(x['busiest_card'])}")
    for (gbit, shards, placement), row in cells.items():
        out.append(f"| {gbit:g} | {shards} | {placement} | " + " | ".join(row.get(w, "–") for w in ws) + " |")
    g = r.get("goal")
    if g:
        out += ["", f"Goal (issue 31): W = {g['workers']} on {g['gbit']:g} Gbit/s links, shards on executors, server "
                f"and card load under {100 * g['goal']:.0f} %: **{'met' if g['met'] else 'missed'}**. Best S (the most "
                f"updates/s carried, then the lowest load), {g['shards']}: server {share(g['server'])}, card "
                f"{share(g['card'])}."]
    return out


SECTIONS: list[tuple[str, str, str, Callable[[dict], list[str]]]] = [
    ("caffe_speed", "Q-network speed: real Caffe beside a PyTorch twin", "make bench-caffe", _caffe),
    ("ps_speed", "Parameter-server cost", "make bench-ps", _ps),
    ("worker_speed", "Compute/communicate times vs model size", "make bench-worker", _worker),
    ("capacity", "Workers one server can serve", "make bench-capacity", _capacity),
    ("hostile", "Floods against the server: what an honest worker keeps", "make bench-hostile", _hostile),
    ("links", "Links with a rate: the job on hosts whose cables are shaped", "make bench-links", _links),
    ("links_shards", "Shards under a rated link: S = 2 against one server", "make bench-links-shards",
     _links_shards),
    ("links_model", "The simulator against links with a rate", "make bench-links-model", _links_model),
    ("shard_cost", "Each shard's cost against S", "make bench-shard-cost", _shard_cost),
    ("shard_projection", "The sharded server projected to W = 64 (timing-only simulator)",
     "make bench-shard-projection", _shard_projection),
    ("blas", "Caffe on each BLAS", "make bench-blas", _blas),
    ("grad_norms", "Honest gradient norms", "make bench-grad-norms", _grad_norms),
    ("scaling", "Serial vs distributed", "make bench-scaling", _scaling),
    ("scaling_60", "Serial vs distributed in 60 minutes (`tuned`)", "make bench-scaling-60", _scaling),
    ("scaling_120", "Serial vs distributed in 60 and 120 minutes (`tuned`, issue 30's table)", "make bench-scaling-120",
     _scaling),
    ("tuning", "What buys score per minute (variants of tuned)", "make bench-tuning", _tuning),
    ("scale_out", "Scale-out beyond this machine (simulated)", "make bench-scale-out", _scale_out),
    ("scale_projection", "Learning at 64 workers: the projection with seeds (simulated)",
     "make bench-scale-projection", report_projection.section),
    ("env_speed", "Snake environment speed", "make bench-env", _env),
    ("replay_speed", "Replay memory throughput", "make bench-replay", _replay),
    ("atari", "Atari (ALE) through the same system", "make bench-atari", _atari),
    ("gifs", "Example game play", "make gifs", _gifs),
]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default="results")
    args = ap.parse_args(argv)
    results = Path(args.results)
    m = machine()
    lines = ["# ddqn: reproduction report", "",
             f"Generated {time.strftime('%Y-%m-%d %H:%M %Z')} on {m['cores']} cores ({cpu_label(m)}), "
             f"Python {m['python']}. Each section names the target that regenerates it; speeds are ratios measured "
             "within one run where possible (this machine is shared and noisy).", ""]
    missing = []
    for name, title, target, render in SECTIONS:
        r = _load(results, name)
        if r is None:
            missing.append(f"`{target}` ({title})")
            continue
        ran = r.get("machine", {})
        runs = r.get("runs_machine")  # a comparison summarised later names the machine its runs were trained on
        trained = f"; its runs trained on {cpu_label(runs)}" if runs and cpu_label(runs) != cpu_label(ran) else ""
        lines += [f"## {title}", "", f"`{target}` — measured {ran.get('date', '?')} on {ran.get('cores', '?')} cores "
                  f"({cpu_label(ran)}){trained}.", "", *render(r), ""]
    if missing:
        lines += ["## Not yet measured", "", *[f"- {x}" for x in missing], ""]
    path = results / "REPORT.md"
    results.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
    print(f"wrote {path} ({len(SECTIONS) - len(missing)} of {len(SECTIONS)} sections)")


if __name__ == "__main__":
    main()
