"""Runs that benches start and read: one simulation (``python -m ddqn.sim``) or one real Spark job per run directory,
reused when it finished with today's config values on this CPU (``runs.finished_run``), and the curve and figures
read back from it. Shared by the scale-out benches (``scale_out``, ``scale_projection``)."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ddqn.bench.runs import finished_run, record_run, train_or_reuse
from ddqn.config import config_values, load_config, save_config

RUN_TIMEOUT_S = 12 * 3600  # bound on one run


def seeded_config(config: str, seed: int, root: Path) -> Path:
    """A YAML file of ``config`` with ``seed`` (what both the real run and the simulation load)."""
    path = root / "configs" / f"{Path(config).stem}-seed{seed}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_config(load_config(config, [f"seed={seed}"]), path)
    return path


def simulate(config: Path | str, workers: int, out: Path, minutes: float | None, updates: int | None,
             sets: Sequence[str] = (), flags: Sequence[str] = ()) -> Path:
    """One ``python -m ddqn.sim`` run with the ``key=value`` overrides ``sets`` and the simulator's own ``flags``
    (e.g. ``--shards 8``) into ``out`` (reused when it finished with today's values, flags included, on this CPU:
    ``runs.finished_run``); returns ``out``."""
    values = {**config_values(str(config), sets), **({"sim_flags": list(flags)} if flags else {})}
    if finished_run(out, str(config), values):
        print(f"reusing {out}", flush=True)
        return out
    cmd = [sys.executable, "-m", "ddqn.sim", "--config", str(config), "--workers", str(workers), "--out", str(out),
           "--no-progress", *(["--minutes", str(minutes)] if minutes else []),
           *(["--updates", str(updates)] if updates else []), *(x for kv in sets for x in ("--set", kv)), *flags]
    print("running:", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, timeout=RUN_TIMEOUT_S)
    record_run(out, values)
    return out


def real_run(config: Path, workers: int, minutes: float, out: Path) -> Path:
    """One real asynchronous run (the Spark job, as ``make bench-scaling`` runs it, on the config's own grid) into
    ``out`` (reused when it finished with today's values on this CPU: ``runs.finished_run``)."""
    values = config_values(str(config))
    if train_or_reuse(str(config), minutes, out, ["--workers", str(workers)], values):
        raise RuntimeError(f"the real run {out} failed")
    return out


def in_parallel(jobs: list, parallel: int) -> list:
    """Run the zero-argument callables ``jobs``, ``parallel`` at a time; their results in order."""
    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        return [f.result() for f in [pool.submit(job) for job in jobs]]


def eval_curve(run: Path) -> list[dict[str, float]]:
    """A run's eval.csv: env steps, minutes, server updates, greedy and random mean."""
    with open(run / "eval.csv", newline="") as f:
        return [{"env_steps": int(r["step"]), "minutes": float(r["wall_s"]) / 60, "updates": int(r["eval/updates"]),
                 "greedy_mean": float(r["eval/greedy_score_mean"]), "random_mean": float(r["eval/random_score_mean"])}
                for r in csv.DictReader(f)]


def run_numbers(run: Path) -> dict[str, float]:
    """Steady updates/s (median of train.csv's 30 s windows once updates flow), staleness, utilisation, best score."""
    s = json.loads((run / "summary.json").read_text())
    rows = []
    if (run / "train.csv").exists():  # none when the run ended before log_every env steps
        with open(run / "train.csv", newline="") as f:
            rows = [r for r in csv.DictReader(f) if float(r["server/updates"]) > 0]
    steady = [float(r["server/updates_per_s"]) for r in rows[len(rows) // 4:]]  # past the first quarter
    curve = eval_curve(run)
    sim = s.get("simulated", {})
    workers = s.get("workers", {}).values()
    pushes = max(sum(w["pushes"] for w in workers), 1)
    return {"compute_ms_per_gradient": 1e3 * sum(w["compute_s"] for w in workers) / pushes,
            "comm_ms_per_gradient": 1e3 * sum(w["comm_s"] for w in workers) / pushes,
            "updates": s["updates"], "minutes": s["minutes"], "updates_per_s": s["updates_per_s"],
            "steady_updates_per_s": float(np.median(steady)) if steady else s["updates_per_s"],
            "staleness_p50": s["staleness_p50"], "staleness_p95": s["staleness_p95"],
            "server_utilisation": sim.get("server_utilisation"), "dropped": sum(s.get("dropped", {}).values()),
            "best_greedy_mean": max((r["greedy_mean"] for r in curve), default=0.0),
            "final_greedy_mean": s["greedy_score_mean"]}
