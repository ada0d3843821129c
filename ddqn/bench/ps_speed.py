"""The parameter server's cost: one solver apply vs a memcpy of the same vector, and updates/s over loopback.

``python -m ddqn.bench.ps_speed [--seconds S] [--clients C]`` times, for the small/paper/large nets and
synthetic 1M and 10M floats, one AdaGrad and one RMSProp apply and — in the same loop — a memcpy of the
same vector, and prints the ratio (goal ≤ 3). Then it starts the real parameter server (paper net, AdaGrad)
on 127.0.0.1 and C synthetic clients (real protocol, no Caffe) that push gradients as fast as they can:
receive + verify + apply + reply, in server updates/s (goal ≥ 3,000), with every payload MAC'd
(``auth: message``) and with the connection authenticated instead (``auth: connection``), beside the server
thread's own time per update. Writes results/ps_speed.json.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

from ddqn.bench.common import net_spec, server_rate, solver_spec, write_result
from ddqn.net.netspec import ParamBlob
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
    args = ap.parse_args(argv)
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
    paper = net_spec("paper")
    loopback = []
    for auth, c in ((a, c) for a in args.auth for c in args.clients):
        r = server_rate(paper, c, args.seconds, auth)
        loopback.append(r)
        print(f"loopback, paper net ({paper.num_params:,} floats), auth {auth}, {c} client(s): "
              f"{r['updates_per_s']:,.0f} server updates/s; server thread {r['server_thread_us_per_update']:.0f} us "
              f"per update (= {r['server_bound_updates_per_s']:,.0f}/s if it had a core to itself); "
              f"{r['dropped']} dropped", flush=True)
    write_result("ps_speed", {"applies": applies, "loopback": loopback, "threads": args.threads,
                              "max_ratio": max(r["ratio"] for r in applies),
                              "max_ratio_threads": max(r["ratio_threads"] for r in applies)}, args.out)


if __name__ == "__main__":
    main()
