"""Each shard's measured service times for the simulator: ``make bench-shard-cost``'s results/shard_cost.json as a
:class:`~ddqn.sim.shards.ShardService` (a + b/S per message kind), with where the numbers come from."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ddqn.bench.stats import fit_a_b
from ddqn.config import load_config
from ddqn.sim.service import ServiceTimes
from ddqn.sim.shards import ShardService
from ddqn.solvers.flat import load_solver_spec

DEFAULT_SHARD_COSTS = Path("results/shard_cost.json")


def shard_costs(path: Path, solver: str, legs: ServiceTimes) -> tuple[ShardService, str, dict[str, Any]]:
    """Each shard's a + b/S per kind, where they come from and the fit used. ``legs``: one server's measured times
    (the fallback splits a total into PUSH and FETCH as they do)."""
    if not path.is_file():
        raise SystemExit(f"{path}: no such file (make bench-shard-cost-alone)")
    data = json.loads(path.read_text())
    alone = data.get("alone")
    if alone and all(alone["fit"].get(k) for k in ("push", "commit", "fetch")):
        f = alone["fit"]
        a = {k: max(f[k]["a_us"], 0.0) / 1e6 for k in ("push", "commit", "fetch")}
        b = {k: max(f[k]["b_us"], 0.0) / 1e6 for k in ("push", "commit", "fetch")}
        a["fetch_both"], b["fetch_both"] = a["fetch"], 2 * b["fetch"]  # θ's and θ⁻'s bytes
        if f.get("commit_fetch"):
            a["commit_fetch"], b["commit_fetch"] = (max(f["commit_fetch"][x], 0.0) / 1e6 for x in ("a_us", "b_us"))
        else:  # measured before COMMITs could ask for θ: charged as a COMMIT and a FETCH (no saving assumed)
            a["commit_fetch"], b["commit_fetch"] = a["commit"] + a["fetch"], b["commit"] + b["fetch"]
        c = alone["config"]
        source = (f"measured alone (make bench-shard-cost-alone, {c['config']}'s net and solver"
                  f"{'' if solver == _solver_of(c['config']) else f', not {solver}'}; "
                  f"{alone['machine'].get('model_name', '?')} family {alone['machine'].get('family', '?')} model "
                  f"{alone['machine'].get('model', '?')}, {alone['machine'].get('date', '?')})"
                  + ("" if f.get("commit_fetch") else
                     "; a COMMIT answered with θ, not measured, charged as COMMIT + FETCH"))
        fit = {k: f[k] for k in ("push", "commit", "commit_fetch", "fetch", "total") if f.get(k)}
    else:
        rows = data.get("rows")
        if not rows:
            raise SystemExit(f"shard_projection: {path} has neither 'alone' nor rows")
        total = fit_a_b({int(s): r["busiest_cpu_us"] for s, r in rows.items()})
        if total is None or total["b_us"] < 0:  # the cost did not fall with S: all of it per message
            mean = sum(r["busiest_cpu_us"] for r in rows.values()) / len(rows)
            total = {"a_us": mean, "b_us": 0.0, "rms_us": None}
        push_share = legs.push_s / (legs.push_s + legs.fetch_s)  # as one server's PUSH and FETCH split it
        a = {"push": push_share * total["a_us"] / 1e6, "commit": 0.0, "fetch": (1 - push_share) * total["a_us"] / 1e6}
        b = {"push": push_share * total["b_us"] / 1e6, "commit": 0.0, "fetch": (1 - push_share) * total["b_us"] / 1e6}
        a["fetch_both"], b["fetch_both"] = a["fetch"], 2 * b["fetch"]
        a["commit_fetch"], b["commit_fetch"] = a["fetch"], b["fetch"]  # no COMMIT in the split: a FETCH's cost
        m = data.get("machine", {})
        source = (f"FALLBACK, not measured alone: the shared-cores rows of {path} (S, its shards, coordinator and "
                  f"client on 2 cores; {m.get('model_name', '?')} family {m.get('family', '?')} model "
                  f"{m.get('model', '?')}, {m.get('date', '?')}), their busiest shard's CPU per update fitted a + b/S"
                  f"{' (it did not fall with S: all of it per message, b = 0)' if total['b_us'] == 0 else ''}, "
                  f"split {push_share:.0%} PUSH / {1 - push_share:.0%} FETCH as one server's times are")
        fit = {"total": total}
    service = ShardService(a, b, legs.stats_s, source)  # a FETCH answered with versions only: a small message
    return service, source, fit


def _solver_of(config: str) -> str:
    cfg = load_config(config)
    return load_solver_spec(cfg.path("solver")).type


