"""REPORT sections of the network benches: floods against the server, links with a rate, the shards' cost
and the sharded server's projection."""
from __future__ import annotations

from ddqn.bench.common import cpu_label
from ddqn.bench.report.phrases import config_today, fmt, pct, share, versus_goal
from ddqn.distributed.stats import PART_NAMES


def _flood_row(p: dict) -> str:
    """One phase of bench-hostile as a table row."""
    if "error" in p:
        return f"| {p['phase']} | {p['connections']:,} | {p['error']} |" + " |" * 6
    h, s, a = p["honest"], p["server"], p.get("attackers")
    cells = [p["phase"], f"{p['connections']:,}", f"{a['messages_per_s']:,.0f}" if a else "–", pct(s["busy_pct"]),
             pct(s["process_cpu_pct"]), pct(s["zmq_io_cpu_pct"]), f"{h['requests_per_s']:,.1f}",
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


def hostile(r: dict) -> list[str]:
    """bench-hostile: per auth mode and flood phase, what the attackers sent and the honest worker kept."""
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


def _link_cells(x: dict) -> tuple[str, str]:
    """A bench-links row's link rate and its workers' communicate shares, as table cells."""
    rate = "unlimited" if x["link_gbit"] is None else f"{x['link_gbit']:g}"
    comm = ", ".join(share(w["comm_share"]) for w in x["workers"].values())
    return rate, comm


def links(r: dict) -> list[str]:
    """bench-links: the job's updates/s and the workers' communicate share at each link rate."""
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


def links_shards(r: dict) -> list[str]:
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
        out.append(f"| {rate} | {x['shards']} | {fmt(x['steady_updates_per_s'])} | "
                   f"{'–' if of is None else f'{of:.2f}×'} | {role} | {fmt(per, '.2f')} | {comm} |")
    return out


def links_model(r: dict) -> list[str]:
    """bench-links-model: the simulator's updates/s against the measured ones at each link rate."""
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
        out.append(f"| {rate} | {x['role']} | {fmt(x['measured_steady_updates_per_s'], '.2f')} | "
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


def shard_cost(r: dict) -> list[str]:
    """bench-shard-cost: each shard's cost against S, alone and shared, and the projection."""
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
           "(PUSH + COMMIT + FETCH). " + config_today(c["config"], c.get("values")), "",
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


def shard_projection(r: dict) -> list[str]:
    """bench-shard-projection: the timing-only simulator's updates/s and loads per link, S and W."""
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
           "card direction's share of the rate.", "", config_today(c["config"], c.get("values"), c.get("set", [])), ""]
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
