"""The sharded server projected to W = 64: the timing-only simulator over S shards, on 10 and 1 Gbit/s links.

``python -m ddqn.bench.shard_projection [--config tuned] [--workers 1 2 4 … 64] [--shards 1 2 4 8] [--gbit 10 1]``
(issue 31, item 4's projection). For every link rate, S and placement (S = 1: the one server thread on the driver;
S > 1: shards on ``executors``, a host and card each, or all on the ``driver``'s host and card) and W, one
timing-only simulation (``ddqn.sim.timing_only``: no Caffe, no learning) of the config's worker loop:

- **cycle**: a worker's compute per gradient is ``make bench-worker``'s ms per gradient for the config
  (results/worker_speed.json, its ``as built`` row), measured on the CPU that file names; refused when that file
  measured other values of the config than today's (e.g. another ``train_every``: other env steps per gradient);
- **shards**: each shard's service per message kind is a + b/S from ``make bench-shard-cost-alone``'s fit
  (results/shard_cost.json ``alone``: one shard alone, CPU per update); without it, the fit of the shared-cores rows
  of results/shard_cost.json (busiest shard's CPU per update at each S, split into PUSH and FETCH as one server's
  times are), and the output says so. S = 1 is today's one server (no votes, no COMMIT) with
  its own service times: results/ps_speed.json's for the net and solver, or measured now on this CPU when it has none
  (``ddqn.sim.cli.service_times``);
- **transport**: the loopback legs of results/ps_speed.json's row for the net (any solver: they are transport), and
  a full-duplex card per host at the rate with the links' efficiency from results/links_model.json (else 0.95) and
  no token bucket (a plain rate).

Measured per run, steady (after the first quarter of simulated time): updates/s, the busiest server thread's
utilisation (a shard's, or the one server's), the busiest server-side card direction's share of the rate (the
driver's and the shards' hosts), staleness p50/p95. The goal line (issue 31): W = 64 on 10 Gbit/s with shards on
executors, server and card load under 70 %, for the best S. Writes results/shard_projection.json. A projection,
not a measurement: it is only as good as the simulator (``make bench-links-model``) and the costs it is given.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from ddqn.bench.common import write_result
from ddqn.config import config_values, load_config
from ddqn.game import game_actions
from ddqn.net.netspec import load_netspec
from ddqn.sim.cli import service_times, worker_speed_row
from ddqn.sim.run import SimOptions
from ddqn.sim.service import ServiceTimes
from ddqn.sim.shard_costs import shard_costs
from ddqn.sim.shards import ShardService
from ddqn.sim.timing import FixedCycle
from ddqn.sim.timing_only import TimingSimulation
from ddqn.solvers.flat import load_solver_spec

GOAL = 0.70  # issue 31: projected server and card load at W = 64 on 10 Gbit/s, shards on executors
EFFICIENCY = 0.95  # the links' efficiency when results/links_model.json has none (ddqn.sim.network's default)
UPDATES_PER_WORKER = 100  # each run's update budget: this many per worker, at least MIN_UPDATES
MIN_UPDATES = 400


def cycle(config: str, results: Path) -> tuple[FixedCycle, dict[str, Any]]:
    """The config's ms per gradient from results/worker_speed.json (``as built``) and the machine that measured it;
    exits with a one-line error when that file has no row for the config or measured other values of it."""
    row, m, why = worker_speed_row(config, results / "worker_speed.json")
    if row is None:
        raise SystemExit(f"shard_projection: {why}")
    return (FixedCycle(step_s=0.0, gradient_s=row["ms_per_gradient"] / 1e3, warmup_s=0.0),
            {"ms_per_gradient": row["ms_per_gradient"], "machine": m})


def transport(num_params: int, results: Path) -> tuple[ServiceTimes, str]:
    """Loopback legs (and STATS) from results/ps_speed.json's rows for this net size (``auth: message``, RMSProp
    preferred: the legs are transport, not solver)."""
    path = results / "ps_speed.json"
    if not path.is_file():
        raise SystemExit(f"shard_projection: {path}: no such file (make bench-ps)")
    rows = [r for r in json.loads(path.read_text()).get("service", []) if r.get("params") == num_params
            and r.get("auth") == "message"]
    if not rows:
        raise SystemExit(f"shard_projection: {path} has no service row for {num_params:,} parameters (make bench-ps)")
    row = next((r for r in rows if r["solver"] == "RMSProp"), rows[0])
    return ServiceTimes.from_row(row), f"{path} ({row['member']}, {row['solver']}, auth message): loopback legs"


def run_one(cfg, service: ServiceTimes, shard_service: ShardService, fixed: FixedCycle, workers: int, shards: int,
            placement: str, gbit: float, efficiency: float, out: Path) -> dict[str, Any]:
    """One timing-only simulation; its steady numbers."""
    updates = max(MIN_UPDATES, UPDATES_PER_WORKER * workers)
    opts = SimOptions(workers, updates=updates, fixed=fixed, gbps=gbit, link_efficiency=efficiency,
                      timing_only=True, shards=shards, placement=placement, shard_service=shard_service,
                      max_staleness=cfg.max_staleness)
    s = TimingSimulation(cfg, out, service, opts).run()
    st = s["steady"]
    return {"gbit": gbit, "shards": shards, "placement": placement if shards > 1 else "one server",
            "workers": workers, "updates": s["updates"], "updates_per_s": st["updates_per_s"],
            "busiest_server": st["busiest_server"], "busiest_card": st["busiest_card"],
            "staleness_p50": s["staleness_p50"], "staleness_p95": s["staleness_p95"],
            "comm_ms_per_gradient": s["comm_ms_per_gradient"], "real_s": s["real_s"]["total_s"]}


def best_key(row: dict[str, Any], most: float) -> tuple[float, float, int]:
    """What ranks the S of one W and rate: the updates/s carried (a row within 1 % of the most counts as carrying
    them all), then the lower load (the larger of server and card), then the fewer shards."""
    load = max(row["busiest_server"], row["busiest_card"])
    return (min(row["updates_per_s"] / most, 0.99) if most > 0 else 0.0, -load, -row["shards"])


def goal(rows: list[dict[str, Any]], workers: int = 64, gbit: float = 10.0) -> dict[str, Any] | None:
    """The best S (:func:`best_key`) with shards on executors at ``workers`` on ``gbit``: its load (the larger of
    server and card) and whether it is under :data:`GOAL`."""
    at = [r for r in rows if r["workers"] == workers and r["gbit"] == gbit and r["placement"] == "executors"]
    if not at:
        return None
    best = max(at, key=lambda r: best_key(r, max(x["updates_per_s"] for x in at)))
    load = max(best["busiest_server"], best["busiest_card"])
    return {"workers": workers, "gbit": gbit, "shards": best["shards"], "server": best["busiest_server"],
            "card": best["busiest_card"], "load": load, "goal": GOAL, "met": load < GOAL}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="results", help="results directory (inputs are read from it too)")
    ap.add_argument("--config", default="tuned")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    ap.add_argument("--shards", type=int, nargs="+", default=[1, 2, 4, 8, 16], help="values of S (1: one server)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="config override (recorded; the worker cycle stays the config's measured one)")
    ap.add_argument("--placements", nargs="+", default=["executors", "driver"], choices=["executors", "driver"])
    ap.add_argument("--gbit", type=float, nargs="+", default=[10.0, 1.0], help="link rates")
    args = ap.parse_args(argv)
    if any(w < 1 for w in args.workers) or any(s < 1 for s in args.shards) or any(g <= 0 for g in args.gbit):
        ap.error("--workers and --shards: 1 or more; --gbit: more than 0")
    results = Path(args.out)
    cfg = load_config(args.config, args.set)
    num_params = load_netspec(cfg.path("net"), game_actions(cfg)).num_params
    solver = load_solver_spec(cfg.path("solver")).type
    fixed, cyc = cycle(args.config, results)
    legs, legs_source = transport(num_params, results)
    shard_service, source, fit = shard_costs(results / "shard_cost.json", solver, legs)
    # S = 1 is today's one server (no votes, no COMMIT): its own service times, from results/ps_speed.json or, when
    # it has none for this net and solver, measured now on this CPU (ddqn.sim.cli.service_times)
    service, one_source = service_times(cfg, results / "ps_speed.json", fixed=False)
    one = {"push": service.push_s, "fetch": service.fetch_s, "fetch_both": service.fetch_both_s}
    lm = results / "links_model.json"
    efficiency, eff_source = EFFICIENCY, f"{EFFICIENCY} (the simulator's default; no {lm})"
    if lm.is_file() and json.loads(lm.read_text()).get("efficiency"):
        efficiency = json.loads(lm.read_text())["efficiency"]
        eff_source = f"{efficiency:.3f} (make bench-links-model's fit, {lm})"
    m = cyc["machine"] or {}
    print(f"shard_projection: {' '.join([args.config, *args.set])}, {cyc['ms_per_gradient']:.1f} ms per gradient "
          f"(make bench-worker on "
          f"{m.get('model_name', '?')} family {m.get('family', '?')} model {m.get('model', '?')}); shards: {source}; "
          f"links' efficiency {eff_source}", flush=True)
    combos = [(s, p) for s in args.shards for p in (["driver"] if s == 1 else args.placements)]
    rows, start = [], time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ddqn-shard-projection-") as tmp:
        for gbit in args.gbit:
            for s, p in combos:
                for w in args.workers:
                    r = run_one(cfg, service, shard_service, fixed, w, s, p, gbit, efficiency,
                                Path(tmp) / f"{gbit:g}-{s}-{p}-{w}")
                    rows.append(r)
                    print(f"{gbit:g} Gbit/s, S = {s} ({r['placement']}), W = {w}: {r['updates_per_s']:.0f} updates/s, "
                          f"busiest server {r['busiest_server']:.0%}, busiest card {r['busiest_card']:.0%}, "
                          f"staleness p50 {r['staleness_p50']:.0f} ({r['real_s']:.1f} s)", flush=True)
    g = goal(rows, max(args.workers), 10.0)
    if g:
        print(f"W = {g['workers']} on 10 Gbit/s: server and card load < {GOAL:.0%}: "
              f"{'met' if g['met'] else 'missed'} (best S = {g['shards']} on executors: server {g['server']:.0%}, "
              f"card {g['card']:.0%})")
    print(f"({time.perf_counter() - start:.0f} s of simulation)")
    write_result("shard_projection", {
        "config": {"config": args.config, "set": args.set, "values": config_values(args.config, args.set),
                   "num_params": num_params,
                   "workers": args.workers, "shards": args.shards, "placements": args.placements, "gbit": args.gbit,
                   "updates_per_worker": UPDATES_PER_WORKER, "min_updates": MIN_UPDATES},
        "cycle": cyc, "shard_service": shard_service.row(), "shard_source": source, "fit": fit,
        "one_server_us": {k: 1e6 * v for k, v in one.items()}, "one_server_source": one_source,
        "transport": legs_source,
        "efficiency": efficiency, "efficiency_source": eff_source, "rows": rows, "goal": g}, args.out)


if __name__ == "__main__":
    main()
