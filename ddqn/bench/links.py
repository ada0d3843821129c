"""Links with a rate, measured for real: the job on network-namespace hosts whose cables have a rate.

``sudo python -m ddqn.bench.links [--rates none 1 0.5 0.25] [--minutes M] [--config paper] [--workers 2]
[--shards 1 2] [--placement executors] [--result links]``
(issue 31, item 1). For each link rate (Gbit/s in each direction, every host's cable: ``HostsCluster(link_gbit=)``;
``none`` is an unshaped veth), one cluster (master, driver, ``--workers`` worker hosts) runs the Spark job for
``--minutes`` and is torn down. Measured per rate:

- the server's updates/s over the run (``summary.json``) and steady, after the first quarter of the run
  (``train.csv``);
- bytes per update through the driver host's interface, from its own counters (received and sent, Spark's own
  traffic included), and that link's use: bits/s in its busier direction, in the busiest 10 s of the run (counters
  read every second), ÷ the rate;
- each worker's split of its time between computing (acting, sampling, gradients) and communicating (FETCH and
  PUSH round trips), from ``workers.json``.

With ``--shards 1 2`` each rate is run with one parameter server and with S shards (``ps_shards``, placed by
``--placement``: on ``executors`` each shard is a Spark task on a worker host of its own, so the cluster has W + S
worker hosts, each host's cable at the rate): the real S against S = 1 under a rated link. Every host's interface
counters are read, and the busiest server-side link (the driver's, or a shard host's) is reported.

The slowdown of each rate is its steady updates/s ÷ the unshaped one's, measured in this run. Runs live in
``--runs`` (one directory per rate) and are not reused: a run's rate is part of what it measures. Needs root
(network namespaces). Writes results/links.json.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from ddqn.bench.common import machine, write_result
from ddqn.bench.stats import steady_updates_per_s
from ddqn.config import config_values
from ddqn.distributed.cluster import stop_groups
from ddqn.distributed.hosts import SERVER_PORT, HostsCluster, unavailable

ROOT = Path(__file__).resolve().parents[2]
JOB = str(ROOT / "spark_jobs" / "train.py")
GRACE_S = 240.0  # beyond the budget: start-up (executors, Caffe, warm-up), final evaluation and snapshot
SAMPLE_S = 1.0  # how often the driver's interface counters are read
WINDOW_S = 10.0  # the driver link's rate is its busiest window of this length


def _rate(text: str) -> float | None:
    return None if text == "none" else float(text)


def busiest_window(samples: list[tuple[float, int, int]], window: float = WINDOW_S) -> float:
    """Gbit/s of the busier direction in the busiest ``window`` seconds of ``samples`` ((seconds, rx, tx) counter
    readings), or over all of them when the run was shorter."""
    best = 0.0
    for i, (t0, rx0, tx0) in enumerate(samples):
        j = next((j for j in range(i + 1, len(samples)) if samples[j][0] - t0 >= window), len(samples) - 1)
        t1, rx1, tx1 = samples[j]
        if t1 > t0:
            best = max(best, max(rx1 - rx0, tx1 - tx0) * 8 / (t1 - t0) / 1e9)
    return best


def run_rate(rate: float | None, args: argparse.Namespace, out: Path, shards: int = 1) -> dict[str, Any]:
    """One cluster at ``rate``, the job for ``args.minutes`` with ``shards`` parameter-server shards; the row of
    measurements."""
    on_executors = shards > 1 and args.placement == "executors"
    with HostsCluster(args.workers + (shards if on_executors else 0), link_gbit=rate) as cluster:
        job = [JOB, "--config", args.config, "--workers", str(args.workers), "--minutes", str(args.minutes),
               "--out", str(out), "--quiet", "--set", "log_every=100"]
        if shards > 1:
            job += ["--set", f"ps_shards={shards}", "--set", f"ps_placement={args.placement}"]
        before = cluster.link_bytes(cluster.driver)
        hosts_before = {h.role: cluster.link_bytes(h) for h in cluster.hosts}
        start = time.monotonic()
        shutil.rmtree(out, ignore_errors=True)  # never a previous run's files
        out.mkdir(parents=True)
        log = out / "submit.log"  # spark-submit's output (a pipe left unread would block it)
        with open(log, "wb") as f:
            proc = cluster.submit(job, stdout=f, stderr=subprocess.STDOUT)
        samples = []  # (seconds, rx, tx) of the driver's interface, every SAMPLE_S
        deadline = start + args.minutes * 60 + GRACE_S
        while proc.poll() is None:
            if time.monotonic() > deadline:
                stop_groups([proc])
                raise SystemExit(f"links: the run at {rate or 'unlimited'} Gbit/s outlived its budget")
            now = cluster.link_bytes(cluster.driver)
            samples.append((time.monotonic() - start, now["rx"], now["tx"]))
            time.sleep(SAMPLE_S)
        wall = time.monotonic() - start
        after = cluster.link_bytes(cluster.driver)
        hosts = {h.role: {k: v - hosts_before[h.role][k] for k, v in cluster.link_bytes(h).items()}
                 for h in cluster.hosts}
    if proc.returncode != 0:
        raise SystemExit(f"links: the run at {rate or 'unlimited'} Gbit/s failed (exit code {proc.returncode}; "
                         f"its output: {log})")
    summary = json.loads((out / "summary.json").read_text())
    record = json.loads((out / "workers.json").read_text())
    rx, tx = after["rx"] - before["rx"], after["tx"] - before["tx"]
    updates = summary["updates"]
    workers = {}
    for r in record["results"]:
        w = workers.setdefault(r["partition"], {"compute_s": 0.0, "comm_s": 0.0, "pushes": 0})
        w["compute_s"] += r["compute_s"]
        w["comm_s"] += r["comm_s"]
        w["pushes"] += r["pushes"]
    for w in workers.values():
        busy = w["compute_s"] + w["comm_s"]
        w["comm_share"] = w["comm_s"] / busy if busy else None
    busier = busiest_window(samples)
    return {"link_gbit": rate, "shards": shards, "placement": args.placement if shards > 1 else None,
            "host_bytes": hosts, "updates": updates, "updates_per_s": summary["updates_per_s"],
            "steady_updates_per_s": steady_updates_per_s(out / "train.csv"), "wall_s": wall,
            "driver_rx_bytes": rx, "driver_tx_bytes": tx,
            "bytes_per_update": (rx + tx) / updates if updates else None,
            "driver_gbit_s": busier, "link_use": busier / rate if rate else None,
            "workers": {str(p): w for p, w in sorted(workers.items())}}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="results", help="results directory")
    ap.add_argument("--runs", default="results/runs/links", help="run directories, one per rate")
    ap.add_argument("--rates", nargs="+", default=["none", "1", "0.5", "0.25"],
                    help="link rates in Gbit/s, each direction ('none': unshaped)")
    ap.add_argument("--minutes", type=float, default=2.0, help="each run's budget")
    ap.add_argument("--config", default="paper")
    ap.add_argument("--workers", type=int, default=2, help="worker hosts")
    ap.add_argument("--shards", type=int, nargs="+", default=[1], help="parameter-server shards (ps_shards) per rate")
    ap.add_argument("--placement", default="executors", choices=["executors", "driver"], help="where shards run")
    ap.add_argument("--result", default="links", help="name of the result (results/<result>.json)")
    args = ap.parse_args(argv)
    if any(s < 1 for s in args.shards):
        ap.error("--shards: 1 or more")
    if (why := unavailable()) is not None:
        raise SystemExit(f"links: {why}")
    rates = [_rate(r) for r in args.rates]
    rows = []
    for rate, shards in ((r, s) for r in rates for s in args.shards):
        tag = "" if shards == 1 else f"-s{shards}-{args.placement}"
        out = Path(args.runs) / f"{args.config}-w{args.workers}-{'unlimited' if rate is None else f'{rate:g}gbit'}{tag}"
        print(f"links: {args.config}, {args.workers} worker hosts, link {rate or 'unlimited'} Gbit/s, "
              f"{'one server' if shards == 1 else f'{shards} shards on {args.placement}'}, {args.minutes:g} min → "
              f"{out}", flush=True)
        rows.append(row := run_rate(rate, args, out, shards))
        split = ", ".join(f"worker {p} communicates {w['comm_share']:.0%}" for p, w in row["workers"].items()
                          if w["comm_share"] is not None)
        print(f"  {row['updates_per_s']:.1f} updates/s ({row['steady_updates_per_s'] or 0:.1f} steady); "
              f"{row['bytes_per_update'] / 1e6:.2f} MB per update through the driver's link; "
              f"driver link {row['driver_gbit_s']:.3f} Gbit/s (busiest {WINDOW_S:g} s); {split}", flush=True)
    base = next((r for r in rows if r["link_gbit"] is None and r["shards"] == 1), None)
    for r in rows:
        r["of_unlimited"] = (r["steady_updates_per_s"] / base["steady_updates_per_s"]
                             if base and base["steady_updates_per_s"] and r["steady_updates_per_s"] else None)
    for r in rows:
        if r["shards"] > 1:
            one = next((x for x in rows if x["link_gbit"] == r["link_gbit"] and x["shards"] == 1), None)
            r["of_one_server"] = (r["steady_updates_per_s"] / one["steady_updates_per_s"]
                                  if one and one["steady_updates_per_s"] and r["steady_updates_per_s"] else None)
            print(f"  {r['shards']} shards at {r['link_gbit'] or 'unlimited'} Gbit/s: "
                  + (f"{r['of_one_server']:.2f}x one server's steady updates/s" if r.get("of_one_server")
                     else "no one-server run at this rate to compare with"), flush=True)
    write_result(args.result, {"machine": machine(), "config": {
        "config": args.config, "workers": args.workers, "minutes": args.minutes, "server_port": SERVER_PORT,
        "shards": args.shards, "placement": args.placement, "values": config_values(args.config)}, "rows": rows},
        args.out)


if __name__ == "__main__":
    main()
