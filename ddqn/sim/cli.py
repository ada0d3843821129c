"""``python -m ddqn.sim``: simulate W asynchronous workers and one parameter server (see :mod:`ddqn.sim`).

    python -m ddqn.sim --config small --workers 16 --minutes 30 --out runs/sim-16 [--updates N] [--seed S]
        [--set k=v ...] [--fixed-cycle] [--service results/ps_speed.json] [--latency-us U] [--gbps G]
        [--set max_staleness=K] [--set staleness_lr=true]
        [--shards S] [--placement driver|executors] [--shard-costs results/shard_cost.json] [--stop-score L]
        [--timing-only [--gradient-ms MS]]

Service times: the row of ``--service`` (``make bench-ps`` writes it) for this net, solver and auth mode, else
a quick measurement of the real server thread on this net (≈ 10 s; printed). ``--fixed-cycle`` (tests): compute
times from :class:`~ddqn.sim.timing.FixedCycle` and, unless ``--service`` is given, fixed service times too, so
a seed gives the same run bit for bit.

``--timing-only`` (:mod:`ddqn.sim.timing_only`): no Caffe and no learning; each worker's cycle is ``--gradient-ms``
per gradient (default: ``make bench-worker``'s ms per gradient for this config in results/worker_speed.json, measured
on the CPU that ran it, refused when that run measured other values of the config than today's; ``--set`` does not
change it). ``--shards S`` simulates a sharded server (:mod:`ddqn.sim.shards`;
each shard's service a + b/S from ``--shard-costs``, ``make bench-shard-cost-alone``'s results, when that file exists,
else one server's ÷ S; the summary says which), learning or timing-only, its shards on the driver's host or on
executors.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ddqn.config import Config, config_values, load_config, value_differences
from ddqn.errors import ConfigError
from ddqn.game import game_actions
from ddqn.net.netspec import load_netspec
from ddqn.rundir import set_aside_earlier_run
from ddqn.sim.run import SimOptions
from ddqn.sim.service import ServiceTimes, find_service, measure_service
from ddqn.sim.shard_costs import DEFAULT_SHARD_COSTS, shard_costs
from ddqn.sim.shards import PLACEMENTS
from ddqn.sim.timing import FIXED_SERVICE, FixedCycle
from ddqn.sim.timing_only import simulation
from ddqn.solvers.flat import load_solver_spec

DEFAULT_SERVICE = Path("results/ps_speed.json")
WORKER_SPEED = Path("results/worker_speed.json")


def worker_speed_row(config: str, path: Path = WORKER_SPEED) -> tuple[dict | None, dict, str]:
    """``make bench-worker``'s "as built" row for ``config`` in ``path``, the machine that measured it, and (when
    there is none) why. A row that measured other values of ``config`` than today's (``config_values``, without any
    ``--set``) is none: its cycle is not today's config's."""
    if not path.is_file():
        return None, {}, f"{path}: no such file (make bench-worker)"
    data = json.loads(path.read_text())
    name, m = Path(config).stem, data.get("machine") or {}
    row = next((r for r in data.get("breakdowns", []) if r.get("config") == name and r.get("build") == "as built"),
               None)
    if row is None:
        return None, m, f"{path} has no 'as built' row for {name} (make bench-worker)"
    recorded = data.get("config_values", {}).get(name)
    diff = ["its values not recorded"] if recorded is None else value_differences(recorded, config_values(config))
    if diff:
        return None, m, f"{path} measured {name} as it is no longer ({', '.join(diff)}): run make bench-worker first"
    return row, m, ""


def measured_cycle(config: str, path: Path = WORKER_SPEED) -> tuple[FixedCycle | None, str]:
    """``make bench-worker``'s ms per gradient for ``config`` as a fixed cycle (all of a gradient's env steps
    included), and the CPU that measured it; (None, why) when there is none."""
    row, m, why = worker_speed_row(config, path)
    if row is None:
        return None, why
    cpu = f"{m.get('model_name', '?')} (family {m.get('family', '?')} model {m.get('model', '?')})"
    return FixedCycle(step_s=0.0, gradient_s=row["ms_per_gradient"] / 1e3, warmup_s=1.0), \
        f"{row['ms_per_gradient']:.1f} ms per gradient, make bench-worker on {cpu}, {m.get('date', '?')}"


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
    ap.add_argument("--timing-only", action="store_true",
                    help="no Caffe, no learning: fixed cycles, byte counts and service times only")
    ap.add_argument("--gradient-ms", type=float,
                    help=f"--timing-only: a worker's ms per gradient (default: {WORKER_SPEED}'s for this config as it "
                         "is today, without --set)")
    ap.add_argument("--shards", type=int, default=1, help="S shards of the parameter server (1: one server thread)")
    ap.add_argument("--placement", choices=PLACEMENTS, default="driver",
                    help="shards on the driver's host (one card) or each on an executor host of its own")
    ap.add_argument("--shard-costs", type=Path, default=DEFAULT_SHARD_COSTS,
                    help="each shard's measured costs (make bench-shard-cost-alone), used when the file exists")
    ap.add_argument("--stop-score", type=float,
                    help="stop once the greedy score's trailing mean (ddqn.bench.stats.reach) reaches this level")
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
    if args.shards < 1:
        ap.error("--shards: 1 or more")
    if args.gradient_ms is not None and (args.gradient_ms <= 0 or not args.timing_only):
        ap.error("--gradient-ms: more than 0, with --timing-only")
    overrides = list(args.set) + ([f"seed={args.seed}"] if args.seed is not None else [])
    cfg = load_config(args.config, overrides)
    fixed, cycle = (FixedCycle(), "FixedCycle") if args.fixed_cycle else (None, None)
    if args.timing_only and args.gradient_ms is not None:
        fixed, cycle = FixedCycle(0.0, args.gradient_ms / 1e3, 1.0), f"{args.gradient_ms:g} ms per gradient (given)"
    elif args.timing_only and not args.fixed_cycle:
        fixed, cycle = measured_cycle(args.config)
        if fixed is None:
            raise ConfigError(f"--timing-only: {cycle}, or give --gradient-ms")
    service, source = service_times(cfg, args.service, args.fixed_cycle)
    shard_service, shard_source = None, "one server's service times ÷ S"
    if args.shards > 1 and args.shard_costs.is_file():
        shard_service, shard_source, _ = shard_costs(args.shard_costs, load_solver_spec(cfg.path("solver")).type,
                                                     service)
    opts = SimOptions(args.workers, args.minutes, args.updates, fixed, cfg.max_staleness, cfg.staleness_lr,
                      args.latency_us / 1e6, args.gbps, progress=not args.no_progress, dc_lambda=cfg.dc_lambda,
                      shards=args.shards, placement=args.placement, timing_only=args.timing_only,
                      stop_score=args.stop_score, shard_service=shard_service)
    set_aside_earlier_run(Path(args.out))
    summary = simulation(cfg, args.out, service, opts).run()
    if args.timing_only:
        summary.update(service_source=source, cycle=cycle, shard_service_source=shard_source)
        (Path(args.out) / "summary.json").write_text(json.dumps(summary, indent=2))
        st = summary["steady"]
        card = "" if summary["busiest_card"] is None else f", busiest card {st['busiest_card']:.1%} (steady)"
        print(f"timing-only: {summary['minutes']:.2f} simulated min with {args.workers} workers, S = {args.shards} "
              f"({args.placement}): {summary['updates']} updates ({summary['updates_per_s']:.1f}/s; steady "
              f"{st['updates_per_s'] or 0:.1f}/s), staleness p50/p95 {summary['staleness_p50']:.0f}/"
              f"{summary['staleness_p95']:.0f}, busiest server thread {st['busiest_server']:.1%} (steady){card}; "
              f"cycle: {cycle}; service times: {source}; real {summary['real_s']['total_s']:.1f} s")
        return summary
    summary["simulated"]["service_source"] = source
    if args.shards > 1:
        summary["simulated"]["shard_service_source"] = shard_source
    (Path(args.out) / "summary.json").write_text(json.dumps(summary, indent=2))
    s = summary["simulated"]
    print(f"simulated {summary['minutes']:.2f} min with {args.workers} workers: {summary['updates']} updates "
          f"({summary['updates_per_s']:.1f}/s), staleness p50/p95 {summary['staleness_p50']:.0f}/"
          f"{summary['staleness_p95']:.0f}, server busy {s['server_utilisation']:.1%}, greedy mean "
          f"{summary['greedy_score_mean']:.2f}; real {s['real_s']['total_s']:.0f} s "
          f"(overhead {s['real_s']['overhead_s']:.1f} s); service times: {source}")
    return summary
