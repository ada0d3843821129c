"""How many workers one parameter server can serve.

``python -m ddqn.bench.capacity [--clients 1 2 4 … 64] [--seconds S]``: synthetic clients (real protocol,
no Caffe) push gradients of the paper net's size as fast as they can; the server's updates/s is measured
for each client count, and the plateau (the best rate) is divided by one real worker's gradient rate
(1 / its forward+backward+targets time for the paper net, measured here). Clients run on the same
machine as the server, so on a small machine they compete with it for cores: the figure is a lower bound.
Beside it: the server thread's own time per update (receive, verify, apply, reply; ``ParameterServer.busy_s``),
whose inverse is what the server could sustain with the clients on other machines.
Writes results/capacity.json and results/capacity.png.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ddqn.bench.common import (
    figure,
    net_spec,
    server_rate,
    worker_update_ms,
    write_result,
)


def plot(modes: dict[str, list[dict]], path: Path) -> Path:
    """Server updates/s vs synthetic clients, per protocol mode."""
    with figure(path, figsize=(6, 4)) as (_, ax):
        for auth, rows in modes.items():
            line, = ax.plot([r["clients"] for r in rows], [r["updates_per_s"] for r in rows], "o-",
                            label=f"auth {auth}: measured")
            ax.plot([r["clients"] for r in rows], [r["server_bound_updates_per_s"] for r in rows], "s--",
                    color=line.get_color(), alpha=0.6, label=f"auth {auth}: 1 / server-thread time")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("synthetic clients")
        ax.set_ylabel("server updates/s (paper net)")
        ax.set_title("Parameter-server capacity over loopback")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    return path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="results", help="results directory")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--auth", nargs="+", default=["message", "connection"], choices=["message", "connection"],
                    help="protocol modes (ddqn.protocol)")
    args = ap.parse_args(argv)
    worker = worker_update_ms("paper", repeats=5)
    worker_rate = 1000 / worker["compute_ms"]
    print(f"one real worker (paper net): {worker['compute_ms']:.1f} ms per gradient = {worker_rate:.1f} gradients/s")
    spec = net_spec("paper")
    modes: dict[str, list[dict]] = {}
    summary: dict[str, dict] = {}
    for auth in args.auth:
        rows = modes[auth] = []
        for c in args.clients:
            rows.append(r := server_rate(spec, c, args.seconds, auth))
            print(f"auth {auth}, {c:3d} clients: {r['updates_per_s']:8,.0f} server updates/s, server thread "
                  f"{r['server_thread_us_per_update']:.0f} us per update ({r['dropped']} dropped)", flush=True)
        best = max(rows, key=lambda r: r["updates_per_s"])
        plateau, bound = best["updates_per_s"], best["server_bound_updates_per_s"]
        summary[auth] = {"plateau_updates_per_s": plateau, "workers_worth": plateau / worker_rate,
                         "server_bound_updates_per_s": bound, "server_bound_workers_worth": bound / worker_rate}
        print(f"auth {auth}: plateau {plateau:,.0f} updates/s = {plateau / worker_rate:.0f} workers' worth of "
              f"gradients; the server thread's own time at the plateau ({best['server_thread_us_per_update']:.0f} us "
              f"per update) bounds it at {bound:,.0f}/s = {bound / worker_rate:.0f} workers' worth with clients on "
              "other machines")
    first = summary[args.auth[0]]
    write_result("capacity", {"rows": modes[args.auth[0]], "modes": modes, "summary": summary, "auth": args.auth[0],
                              "worker": worker, "worker_gradients_per_s": worker_rate, **first,
                              "png": str(plot(modes, Path(args.out) / "capacity.png"))}, args.out)


if __name__ == "__main__":
    main()
