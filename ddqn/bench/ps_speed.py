"""The parameter server's cost: one solver apply vs a memcpy of the same vector, and updates/s over loopback.

``python -m ddqn.bench.ps_speed [--seconds S] [--clients C]`` times, for the small/paper/large nets and
synthetic 1M and 10M floats, one AdaGrad and one RMSProp apply and — in the same loop — a memcpy of the
same vector, and prints the ratio (goal ≤ 3). Then it starts the real parameter server (paper net, AdaGrad)
on 127.0.0.1 and C synthetic clients (real protocol, no Caffe) that push gradients as fast as they can:
receive + verify + apply + reply, in server updates/s (goal ≥ 3,000), with every payload MAC'd
(``auth: message``) and with the connection authenticated instead (``auth: connection``), beside the server
thread's own time per update. Then (``service``) the server thread's service time per message — PUSH, FETCH of
θ, FETCH of θ and θ⁻, STATS — for the small, paper, large and x64 nets, both solvers and both auth modes, with one
client in its own process (``ddqn.sim.service``; what the scale-out simulator reads), and the saturation point
of one server per net: W = a worker's cycle (its gradient compute, measured here, + PUSH and FETCH round trips) ÷
the server's service time per cycle (PUSH + FETCH). Writes results/ps_speed.json (``--parts`` keeps the other
parts of an existing file).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from ddqn.bench.common import (
    add_restart,
    kept_or_restart,
    made_on_another_cpu,
    net_spec,
    server_rate,
    solver_spec,
    worker_update_ms,
    write_result,
)
from ddqn.net.netspec import ParamBlob
from ddqn.sim.service import measure_service_parts
from ddqn.solvers.flat import SolverSpec, make_solver

SOLVERS = ("adagrad", "rmsprop")  # the shipped prototxt/solver_<name>.prototxt, the paper's two solvers


def synthetic_layout(n: int) -> tuple[ParamBlob, ...]:
    """One blob of ``n`` floats."""
    return (ParamBlob("synthetic", 0, (n,), 0, n, 1.0, 1.0),)


def time_apply(params: tuple[ParamBlob, ...], solver: SolverSpec, repeats: int, threads: int) -> dict[str, float]:
    """Median seconds of one apply on 1 and on ``threads`` cores, each interleaved with a memcpy of the same vector."""
    n = params[-1].offset + params[-1].size
    rng = np.random.default_rng(0)
    theta, grad = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)
    dst = np.empty_like(theta)
    solvers = {t: make_solver(solver, params, t) for t in sorted({1, threads})}
    times: dict[object, list[float]] = {t: [] for t in solvers}
    times["memcpy"] = []
    for s in solvers.values():
        s.apply(theta, grad)  # compile / warm up
    for t, s in solvers.items():
        for _ in range(repeats):
            start = time.perf_counter()
            s.apply(theta, grad)
            times[t].append(time.perf_counter() - start)
            start = time.perf_counter()
            np.copyto(dst, theta)
            times["memcpy"].append(time.perf_counter() - start)
    med = {k: float(np.median(v)) for k, v in times.items()}
    c = med["memcpy"]
    return {"floats": n, "memcpy_us": 1e6 * c, "apply_us": 1e6 * med[1], "ratio": med[1] / c,
            "threads": threads, "apply_threads_us": 1e6 * med[threads], "ratio_threads": med[threads] / c}


def service_rows(nets: list[str], solvers: list[str], auths: list[str], messages: int) -> list[dict]:
    """Service times (µs) per message kind for each net × solver × auth mode (``ddqn.sim.service``)."""
    rows = []
    for member in nets:
        spec = net_spec(member)
        for solver in map(solver_spec, solvers):
            for auth in auths:
                times, parts = measure_service_parts(spec, solver, auth, messages)
                r = {"member": member, "params": spec.num_params, "solver": solver.type, "auth": auth,
                     "messages": messages, **times.row(), "parts_us": parts}
                rows.append(r)
                print(f"service, {member:>5s} ({spec.num_params:>9,d} floats), {solver.type:7s}, auth {auth:10s}: "
                      f"PUSH {r['push_us']:8.0f} us, FETCH θ {r['fetch_us']:8.0f} us, θ+θ⁻ {r['fetch_both_us']:8.0f} "
                      f"us, STATS {r['stats_us']:5.0f} us; round trip beyond service: PUSH {r['push_rtt_us']:6.0f} us, "
                      f"FETCH {r['fetch_rtt_us']:6.0f} us", flush=True)
    return rows


def saturation(rows: list[dict], repeats: int) -> list[dict]:
    """Per net and auth mode (first solver measured): W at which one server is busy all the time, from timing."""
    out, compute = [], {}
    for r in rows:
        if any(x["member"] == r["member"] and x["auth"] == r["auth"] for x in out):
            continue
        if r["member"] not in compute:
            compute[r["member"]] = worker_update_ms(r["member"], repeats)["compute_ms"] / 1e3
        service = (r["push_us"] + r["fetch_us"]) / 1e6
        cycle = compute[r["member"]] + service + (r["push_rtt_us"] + r["fetch_rtt_us"]) / 1e6
        out.append({"member": r["member"], "params": r["params"], "solver": r["solver"], "auth": r["auth"],
                    "compute_ms": 1e3 * compute[r["member"]], "cycle_ms": 1e3 * cycle,
                    "service_per_cycle_us": 1e6 * service, "saturation_workers": cycle / service})
        print(f"saturation, {r['member']:>5s}, auth {r['auth']:10s}: cycle {1e3 * cycle:7.1f} ms / server "
              f"{1e6 * service:6.0f} us per cycle = W {cycle / service:6.1f}", flush=True)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="results", help="results directory")
    ap.add_argument("--repeats", type=int, default=200, help="applies timed per size and solver")
    ap.add_argument("--seconds", type=float, default=5.0, help="loopback measurement length")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 2], help="synthetic client counts")
    ap.add_argument("--vectors", nargs="+", default=["small", "paper", "large", "1M", "10M"])
    ap.add_argument("--auth", nargs="+", default=["message", "connection"], choices=["message", "connection"],
                    help="protocol modes for the loopback measurement (ddqn.protocol)")
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1),
                    help="cores for the sharded apply (server_threads), timed beside the one-core apply")
    ap.add_argument("--parts", nargs="+", default=["applies", "loopback", "service"],
                    choices=["applies", "loopback", "service"],
                    help="what to measure (the rest is kept from the file, when it was measured on this CPU model)")
    add_restart(ap, "another CPU model (its parts not measured now)")
    ap.add_argument("--service-nets", nargs="+", default=["small", "paper", "large", "x64"])
    ap.add_argument("--service-solvers", nargs="+", default=["rmsprop", "adagrad", "adam"])
    ap.add_argument("--service-messages", type=int, default=40, help="messages per timed phase (3 rounds each)")
    ap.add_argument("--cycle-repeats", type=int, default=5, help="gradients timed per net for the saturation point")
    args = ap.parse_args(argv)
    path = Path(args.out) / "ps_speed.json"
    result = json.loads(path.read_text()) if path.exists() else {}
    kept = [p for p in ("applies", "loopback", "service") if p in result and p not in args.parts]
    if kept and not kept_or_restart(path, f"its {', '.join(kept)}", made_on_another_cpu(result.get("machine")),
                                    args.restart):  # one file, one CPU model: write_result stamps this machine
        result = {}
    for key in ("name", "machine"):  # write_result adds them afresh
        result.pop(key, None)
    if "applies" in args.parts:
        result.update(measure_applies(args))
    if "loopback" in args.parts:
        result["loopback"] = measure_loopback(args)
    if "service" in args.parts:
        result["service"] = service_rows(args.service_nets, args.service_solvers, args.auth, args.service_messages)
        result["saturation"] = saturation(result["service"], args.cycle_repeats)
    write_result("ps_speed", result, args.out)


def measure_applies(args: argparse.Namespace) -> dict:
    """Apply vs memcpy for each vector and solver."""
    synthetic = {"1M": 1_000_000, "10M": 10_000_000}
    layouts = {v: synthetic_layout(synthetic[v]) if v in synthetic else net_spec(v).params for v in args.vectors}
    solvers = {s.type: s for s in map(solver_spec, SOLVERS)}
    applies = []
    for name, params in layouts.items():
        for kind, solver in solvers.items():
            r = {"vector": name, "solver": kind, **time_apply(params, solver, max(20, args.repeats // (
                10 if name == "10M" else 1)), args.threads)}
            applies.append(r)
            print(f"{name:>6s} {kind:8s} {r['floats']:>10,d} floats: memcpy {r['memcpy_us']:8.1f} us; apply "
                  f"1 core {r['apply_us']:8.1f} us = {r['ratio']:.2f}x, {args.threads} cores "
                  f"{r['apply_threads_us']:8.1f} us = {r['ratio_threads']:.2f}x", flush=True)
    return {"applies": applies, "threads": args.threads, "max_ratio": max(r["ratio"] for r in applies),
            "max_ratio_threads": max(r["ratio_threads"] for r in applies)}


def measure_loopback(args: argparse.Namespace) -> list[dict]:
    """Server updates/s with synthetic clients over loopback, paper net."""
    paper = net_spec("paper")
    loopback = []
    for auth, c in ((a, c) for a in args.auth for c in args.clients):
        r = server_rate(paper, c, args.seconds, auth)
        loopback.append(r)
        print(f"loopback, paper net ({paper.num_params:,} floats), auth {auth}, {c} client(s): "
              f"{r['updates_per_s']:,.0f} server updates/s; server thread {r['server_thread_us_per_update']:.0f} us "
              f"per update (= {r['server_bound_updates_per_s']:,.0f}/s if it had a core to itself); "
              f"{r['dropped']} dropped", flush=True)
    return loopback


if __name__ == "__main__":
    main()
