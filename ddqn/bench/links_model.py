"""The simulator held to links with a rate: each rate of ``make bench-links`` predicted, against what it measured.

``python -m ddqn.bench.links_model [--links results/links.json] [--calibrate none 0.25] [--updates 1500]``
(issue 31, item 2). For every rate of the real runs, one simulation of the same config and W (fixed-cycle mode:
a worker's compute per gradient is a constant, every other cost is the simulator's: the server thread's
measured service times from ``results/ps_speed.json``, loopback transport, and a full-duplex card per host at
the rate, shared by every message through it, with the token bucket the shaped hosts give the link,
``ddqn.sim.network``). Its steady updates/s (``train.csv`` after
the first quarter, as the real runs') is the prediction.

Two numbers are calibrated, each on one measured rate, and nothing else:

- a worker's compute seconds per gradient, from the first ``--calibrate`` rate's real workers (their compute
  seconds ÷ their pushes; the paper config trains, fetches and pushes every env step);
- the links' efficiency (the share of the rate that carries message bytes), from the second: bisection until
  the simulated steady updates/s is the measured one.

Every other rate is a prediction, and its error (predicted ÷ measured − 1) is held to ±15 %. Writes
results/links_model.json; the simulations' directories go to ``--runs``.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

from ddqn.bench.common import write_result
from ddqn.bench.stats import steady_updates_per_s
from ddqn.config import Config, load_config
from ddqn.distributed.hosts import BURST_S, MIN_BURST_BYTES
from ddqn.sim.cli import service_times
from ddqn.sim.network import CUT_THROUGH_BYTES
from ddqn.sim.run import SimOptions, Simulation
from ddqn.sim.service import ServiceTimes
from ddqn.sim.timing import FixedCycle

TOLERANCE = 0.15  # a predicted point's allowed relative error (issue 31)
EFFICIENCY = (0.2, 1.0)  # the bisection's bracket
BISECTIONS = 7  # halvings of the bracket: ±0.3 % of it
QUIET = ["log_every=50", "eval_every=1000000000", "eval_episodes=1"]  # rows for the steady rate; no evaluations


def _key(rate: float | None) -> str:
    return "none" if rate is None else f"{rate:g}"


def compute_per_gradient(row: dict[str, Any]) -> float:
    """A real run's compute seconds per gradient, over its workers (compute seconds ÷ pushes)."""
    pushes = sum(w["pushes"] for w in row["workers"].values())
    if not pushes:
        raise SystemExit(f"links_model: the run at {_key(row['link_gbit'])} Gbit/s pushed nothing")
    return sum(w["compute_s"] for w in row["workers"].values()) / pushes


def burst_bytes(rate: float | None) -> int:
    """The token bucket the shaped hosts give a link of ``rate`` Gbit/s (``hosts.shape``); 0 unshaped."""
    return max(MIN_BURST_BYTES, int(rate * 1e9 / 8 * BURST_S)) if rate else 0


def simulate(cfg: Config, service: ServiceTimes, workers: int, rate: float | None, gradient_s: float,
             efficiency: float, updates: int, out: Path) -> dict[str, Any]:
    """One fixed-cycle simulation at ``rate`` (None: no card, loopback only); its steady updates/s and more."""
    shutil.rmtree(out, ignore_errors=True)
    opts = SimOptions(workers, updates=updates, fixed=FixedCycle(step_s=0.0, gradient_s=gradient_s, warmup_s=1.0),
                      gbps=rate or 0.0, link_efficiency=efficiency, link_burst_bytes=burst_bytes(rate))
    summary = Simulation(cfg, out, service, opts).run()
    steady = steady_updates_per_s(out / "train.csv")
    if steady is None:
        raise SystemExit(f"links_model: the simulation in {out} logged too few rows for a steady rate")
    return {"steady_updates_per_s": steady, "updates_per_s": summary["updates_per_s"],
            "server_nic_use": summary["simulated"]["server_nic_use"],
            "comm_ms_per_gradient": summary["simulated"]["comm_ms_per_gradient"]}


def fit_efficiency(measured: float, run) -> tuple[float, float]:
    """The efficiency in :data:`EFFICIENCY` whose simulated steady updates/s (``run(efficiency)``, increasing in
    it) is ``measured``, by bisection; (efficiency, its simulated updates/s)."""
    lo, hi = EFFICIENCY
    best = (hi, run(hi))
    if best[1] <= measured:  # even a perfect wire is slower than measured: the bracket's top
        return best
    for _ in range(BISECTIONS):
        mid = (lo + hi) / 2
        got = run(mid)
        if abs(got - measured) < abs(best[1] - measured):
            best = (mid, got)
        lo, hi = (mid, hi) if got < measured else (lo, mid)
    return best


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--links", default="results/links.json", help="make bench-links' result")
    ap.add_argument("--out", default="results", help="results directory")
    ap.add_argument("--runs", default="results/runs/links_model", help="the simulations' directories")
    ap.add_argument("--calibrate", nargs=2, default=["none", "0.25"], metavar=("COMPUTE_RATE", "LINK_RATE"),
                    help="the measured rate that gives the compute per gradient, and the one that gives the links' "
                         "efficiency ('none': unshaped)")
    ap.add_argument("--updates", type=int, default=1500, help="each simulation's server updates")
    args = ap.parse_args(argv)
    path = Path(args.links)
    if not path.is_file():
        raise SystemExit(f"links_model: {path}: no such file (run make bench-links first)")
    links = json.loads(path.read_text())
    rows = {_key(r["link_gbit"]): r for r in links["rows"]}
    for rate in args.calibrate:
        if rate not in rows:
            raise SystemExit(f"links_model: --calibrate {rate}: {path} has no run at that rate "
                             f"(it has {', '.join(rows)})")
    compute_key, link_key = args.calibrate
    if link_key == "none":
        raise SystemExit("links_model: --calibrate: the efficiency needs a shaped rate, not 'none'")
    config, workers = links["config"]["config"], links["config"]["workers"]
    gradient_s = compute_per_gradient(rows[compute_key])
    cfg = load_config(config, QUIET)
    service, service_source = service_times(cfg, None, fixed=False)  # once: measured now when ps_speed has none
    runs, done = Path(args.runs), {}

    def run(rate: float | None, efficiency: float, tag: str) -> dict[str, Any]:
        """The simulation at (rate, efficiency); one the fit already ran is not run again."""
        if (_key(rate), efficiency) in done:
            return done[_key(rate), efficiency]
        got = simulate(cfg, service, workers, rate, gradient_s, efficiency, args.updates,
                       runs / f"{_key(rate)}-{tag}")
        done[_key(rate), efficiency] = got
        print(f"  simulated {_key(rate)} Gbit/s, efficiency {efficiency:.3f}: {got['steady_updates_per_s']:.2f} "
              f"updates/s (steady)", flush=True)
        return got

    print(f"links_model: {config}, {workers} workers; compute {1e3 * gradient_s:.1f} ms per gradient (from "
          f"{compute_key}); fitting the links' efficiency on {link_key} Gbit/s", flush=True)
    link_rate = rows[link_key]["link_gbit"]
    efficiency, _ = fit_efficiency(rows[link_key]["steady_updates_per_s"],
                                   lambda e: run(link_rate, e, f"fit-{e:.4f}")["steady_updates_per_s"])
    out_rows = []
    for key, real in rows.items():
        sim = run(real["link_gbit"], efficiency, "final")
        measured = real["steady_updates_per_s"]
        error = sim["steady_updates_per_s"] / measured - 1 if measured else None
        role = ("calibrated (compute)" if key == compute_key else "calibrated (efficiency)" if key == link_key
                else "predicted")
        out_rows.append({"link_gbit": real["link_gbit"], "role": role, "measured_steady_updates_per_s": measured,
                         "predicted_steady_updates_per_s": sim["steady_updates_per_s"], "error": error,
                         "within": None if error is None else abs(error) <= TOLERANCE,
                         "measured_link_use": real.get("link_use"), "simulated_server_nic_use": sim["server_nic_use"],
                         "simulated_comm_ms_per_gradient": sim["comm_ms_per_gradient"]})
        print(f"{key:>5} Gbit/s ({role}): measured {measured or 0:.2f}, simulated {sim['steady_updates_per_s']:.2f} "
              f"updates/s ({'–' if error is None else f'{error:+.1%}'})", flush=True)
    predicted = [r for r in out_rows if r["role"] == "predicted"]
    worst = max((abs(r["error"]) for r in predicted if r["error"] is not None), default=None)
    if worst is not None:
        print(f"worst predicted error: {worst:.1%} (goal within ±{TOLERANCE:.0%}: "
              f"{'met' if worst <= TOLERANCE else 'missed'})")
    write_result("links_model", {
        "links_machine": links.get("machine"), "links_date": links.get("machine", {}).get("date"),
        "config": {**links["config"], "updates": args.updates, "calibrate": args.calibrate, "overrides": QUIET,
                   "service": service_source},
        "network_model": {"cut_through_bytes": CUT_THROUGH_BYTES,
                          "burst_bytes": {_key(r["link_gbit"]): burst_bytes(r["link_gbit"]) for r in links["rows"]}},
        "compute_ms_per_gradient": 1e3 * gradient_s, "efficiency": efficiency, "tolerance": TOLERANCE,
        "worst_predicted_error": worst, "rows": out_rows}, args.out)


if __name__ == "__main__":
    main()
