"""``python -m ddqn.sim``: simulate W asynchronous workers and one parameter server (see :mod:`ddqn.sim`).

    python -m ddqn.sim --config small --workers 16 --minutes 30 --out runs/sim-16 [--updates N] [--seed S]
        [--set k=v ...] [--fixed-cycle] [--service results/ps_speed.json] [--latency-us U] [--gbps G]
        [--set max_staleness=K] [--set staleness_lr=true]

Service times: the row of ``--service`` (``make bench-ps`` writes it) for this net, solver and auth mode, else
a quick measurement of the real server thread on this net (≈ 10 s; printed). ``--fixed-cycle`` (tests): compute
times from :class:`~ddqn.sim.timing.FixedCycle` and, unless ``--service`` is given, fixed service times too, so
a seed gives the same run bit for bit.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ddqn.config import Config, load_config
from ddqn.game import game_actions
from ddqn.net.netspec import load_netspec
from ddqn.sim.run import SimOptions, Simulation
from ddqn.sim.service import ServiceTimes, find_service, measure_service
from ddqn.sim.timing import FIXED_SERVICE, FixedCycle
from ddqn.solvers.flat import load_solver_spec

DEFAULT_SERVICE = Path("results/ps_speed.json")


def service_times(cfg: Config, path: Path | None, fixed: bool) -> tuple[ServiceTimes, str]:
    """The service times to simulate ``cfg``'s net with, and where they came from."""
    if fixed and path is None:
        return FIXED_SERVICE, "fixed"
    spec = load_netspec(cfg.path("net"), game_actions(cfg))
    solver = load_solver_spec(cfg.path("solver"))
    path = path or DEFAULT_SERVICE
    found = find_service(path, spec.num_params, solver.type, cfg.auth)
    if found is not None:
        return found, str(path)
    print(f"no service times for {spec.num_params:,} parameters, {solver.type}, auth {cfg.auth} in {path}: "
          "measuring the server thread now", file=sys.stderr, flush=True)
    return measure_service(spec, solver, cfg.auth), "measured now"


def parser(prog: str = "python -m ddqn.sim") -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="small", help="named config or YAML file")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    ap.add_argument("--workers", type=int, default=2, help="W simulated workers")
    ap.add_argument("--minutes", type=float, help="simulated minutes budget")
    ap.add_argument("--updates", type=int, help="stop after this many server updates")
    ap.add_argument("--seed", type=int, help="the config's seed")
    ap.add_argument("--out", required=True, help="run directory (train.csv, eval.csv, summary.json, snapshots)")
    ap.add_argument("--fixed-cycle", action="store_true", help="fixed compute times (deterministic; tests only)")
    ap.add_argument("--service", type=Path, help=f"service times JSON (default {DEFAULT_SERVICE})")
    ap.add_argument("--latency-us", type=float, default=0.0, help="extra one-way network latency per message")
    ap.add_argument("--gbps", type=float, default=0.0,
                    help="every host's full-duplex card, Gbit/s each way, shared by its messages (0: loopback as "
                         "measured)")
    ap.add_argument("--no-progress", action="store_true")
    return ap


def main(argv: list[str] | None = None, prog: str = "python -m ddqn.sim") -> dict:
    """Run one simulation; prints and returns its summary."""
    ap = parser(prog)
    args = ap.parse_args(argv)
    if args.minutes is None and args.updates is None:
        ap.error("give --minutes (simulated) and/or --updates")
    if args.gbps < 0 or args.latency_us < 0:
        ap.error("--gbps and --latency-us: 0 or more")
    overrides = list(args.set) + ([f"seed={args.seed}"] if args.seed is not None else [])
    cfg = load_config(args.config, overrides)
    fixed = FixedCycle() if args.fixed_cycle else None
    service, source = service_times(cfg, args.service, args.fixed_cycle)
    opts = SimOptions(args.workers, args.minutes, args.updates, fixed, cfg.max_staleness, cfg.staleness_lr,
                      args.latency_us / 1e6, args.gbps, progress=not args.no_progress, dc_lambda=cfg.dc_lambda)
    summary = Simulation(cfg, args.out, service, opts).run()
    summary["simulated"]["service_source"] = source
    (Path(args.out) / "summary.json").write_text(json.dumps(summary, indent=2))
    s = summary["simulated"]
    print(f"simulated {summary['minutes']:.2f} min with {args.workers} workers: {summary['updates']} updates "
          f"({summary['updates_per_s']:.1f}/s), staleness p50/p95 {summary['staleness_p50']:.0f}/"
          f"{summary['staleness_p95']:.0f}, server busy {s['server_utilisation']:.1%}, greedy mean "
          f"{summary['greedy_score_mean']:.2f}; real {s['real_s']['total_s']:.0f} s "
          f"(overhead {s['real_s']['overhead_s']:.1f} s); service times: {source}")
    return summary
