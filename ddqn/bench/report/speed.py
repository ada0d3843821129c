"""REPORT sections of the speed benches: Caffe, the parameter server, a worker, a server's capacity, the
environment, replay, each BLAS and the gradient norms."""
from __future__ import annotations

from ddqn.bench.report.phrases import config_today, versus_goal

CAFFE_GOAL = ("snake_paper", 0.9)  # issue 29: the paper net's forward+backward, Caffe ÷ torch, at most this


def caffe(r: dict) -> list[str]:
    """bench-caffe: each net's forward+backward and forward ms per implementation, ratios to torch, the floor."""
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
    return [paper, "", *lines, "", *_caffe_goal(r), *_caffe_notes(r)]


def _caffe_goal(r: dict) -> list[str]:
    """Issue 29's goal: the paper net's forward+backward, Caffe as built ÷ torch, against :data:`CAFFE_GOAL`."""
    net, goal = CAFFE_GOAL
    ratio = r["nets"].get(net, {}).get("over_torch", {}).get("caffe", {}).get("forward_backward")
    if ratio is None:
        return []
    return [f"Goal: the paper net's ({net}) forward+backward, Caffe as built ÷ torch: "
            + versus_goal(ratio, goal, True, ".2f", "×", "**") + ".", ""]


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


def ps(r: dict) -> list[str]:
    """bench-ps: the solver's apply against memcpy, updates/s over loopback, the server thread's parts."""
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


def worker(r: dict) -> list[str]:
    """bench-worker: compute and communicate ms against model size; a real worker's ms per gradient by phase."""
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
                *[f"| {k} | " + " | ".join(_phase_cells(b, k) for b in mine) + " |" for k in mine[0]["phases_ms"]],
                "", config_today(config, r.get("config_values", {}).get(config), r.get("set", []))]
    return out


def _build_name(b: dict) -> str:
    """A breakdown's build as the REPORT names it: its label, BLAS library and core (older results: the library)."""
    if "build" not in b:
        return b.get("blas_loaded", "linked BLAS")
    return f"{b['build']} ({b['blas_loaded']}, core {b.get('blas_core') or '?'})"


def _phase_cells(b: dict, phase: str) -> str:
    ms = b["phases_ms"][phase]
    return f"{ms:.2f} | {100 * ms / b['ms_per_gradient']:.1f} %"


def capacity(r: dict) -> list[str]:
    """bench-capacity: updates/s against client count per auth mode, in workers' worth."""
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


def env(r: dict) -> list[str]:
    """bench-env: Snake env steps/s per variant."""
    sps = r["steps_per_s"]
    rows = [f"| {k.replace('_', ' ')} | {v:,.0f} |" for k, v in sps.items()]
    k1, kn = sps.get("SnakeBatch_K1"), sps.get("SnakeBatch_K256")
    return [f"{r['size']}×{r['size']} board, {r['frame_size']}×{r['frame_size']} frames, random actions, "
            f"{r['seconds']:g} s per variant.", "", "| variant | env steps/s |", "|---|---|", *rows, "",
            *([f"The vectorised batch of 256 games steps {kn / k1:.0f}× as many games per second as one."] if k1 and kn
              else [])]


def replay(r: dict) -> list[str]:
    """bench-replay: adds and minibatches per second, RAM and LMDB."""
    c = r["config"]
    rows = [f"| {name} | {x['add_frames_per_s']:,} | {x['sample_batches_per_s']:,} | "
            f"{x['sample_transitions_per_s']:,} | {x['dqn_steps_per_s']:,} | {x['ram_bytes'] / 2**20:.1f} |"
            for name, x in (("RAM", r["ram"]), ("LMDB", r["lmdb"]))]
    return [f"{c['frames']:,} frames of {c['frame_shape'][0]}×{c['frame_shape'][1]}, history {c['history']}, minibatch "
            f"{c['batch']}. The paper's worker needs one minibatch per env step (≈ 30/s per worker here).", "",
            "| backend | frames added/s | minibatches/s | transitions/s | add+sample steps/s | RAM (MiB) |",
            "|---|---|---|---|---|---|", *rows, "",
            f"RAM and LMDB return identical minibatches for the same seed: {r['identical_batches']}."]


def blas(r: dict) -> list[str]:
    """bench-blas: Caffe's forward+backward ms with each BLAS, per CPU."""
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


def grad_norms(r: dict) -> list[str]:
    """bench-grad-norms: honest gradients' L2 norms per config."""
    rows = [f"| {name} | {c['updates']:,} | {c['max']:.3g} | {c['p99_9']:.3g} | {c['p99']:.3g} | {c['p50']:.3g} |"
            for name, c in r["configs"].items()]
    return ["L2 norms of the gradients honest serial learners push, per shipped config (what the parameter "
            "server's `max_grad_norm` must never drop).", "",
            "| config | updates | max | p99.9 | p99 | p50 |", "|---|---|---|---|---|---|", *rows]
