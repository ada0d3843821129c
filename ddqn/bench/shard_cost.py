"""Each shard's cost against S: its server thread's busy time per update at 1/S of θ (issue 31, item 4).

``python -m ddqn.bench.shard_cost [--config paper] [--shards 1 2 4] [--updates 200] [--rounds 3]``. For each S, the
real server as ``ps_shards: S`` starts it (S = 1: the one server thread; S > 1: S shard processes on this host and
the driver's coordinator, placement ``driver``) and one client in a process of its own that pushes a gradient and
fetches θ, ``--updates`` times per round, rounds interleaved over S. Measured per S:

- each shard's CPU seconds per update (its server thread's time on a core in messages: ``time.thread_time``; for
  S > 1 the PUSH that votes, the COMMIT that applies and the FETCH), the stable figure on shared cores, beside its
  busy (wall) seconds, which include waiting for a core, by part (receive, verify, check, apply, publish, seal,
  send; wall), median of the rounds; the busiest shard's CPU time bounds the sharded server at 1 ÷ it (shards on
  hosts of their own run in parallel);
- the client's wall seconds per update (PUSH, COMMIT and FETCH to all S at once): a figure of this 2-core machine,
  where S shards, the client and its threads share the cores, not of S hosts.

Two cores cannot host many shards beside their clients, so the CPU time per update is what this holds to; the
projection (:func:`projection`) is an analytic bound from it, labelled as one: at W workers of ``gradients_per_s``
each (``results/worker_speed.json``, the config's ``as built`` row), load = W × rate ÷ capacity, where capacity is
the smaller of the busiest shard's bound and its card's (each shard's host moves 4n/S bytes of gradient in and of
θ out per update, full duplex, at the links' ``efficiency``). Writes results/shard_cost.json.

``--alone`` (:func:`measure_alone`): ONE shard server (shard 0 of S, a :class:`ShardServer` over 1/S of θ, in this
process) with nothing else busy but one client in a process of its own, which sends it its PUSH slice, then the
COMMIT carrying all S votes (the other S − 1 forged by the client with the per-run shard key, which the bench holds as
the driver does), then the FETCH of its slice; every other update the COMMIT asks for θ's slice instead, as a worker's
does when its next step fetches, and no FETCH follows. Per S (default 1, 2, 4, 8, 16): the shard's CPU and busy µs per
message by kind (PUSH, COMMIT, FETCH, COMMIT answered with θ; ``ServerStats`` parts per kind), per update (PUSH +
COMMIT + FETCH, and PUSH + COMMIT answered with θ), and the fit cost(S) = a + b/S (least squares over the S measured,
per kind and per update): a is the fixed cost per message, b the cost of the whole vector's bytes. Written under
``alone`` in results/shard_cost.json (the other keys are kept).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from ddqn.bench.common import machine, write_result
from ddqn.bench.stats import fit_a_b
from ddqn.config import config_values, load_config
from ddqn.distributed import protocol as P
from ddqn.distributed.client import ServerClient
from ddqn.distributed.server import ParameterServer, ServerOptions
from ddqn.distributed.shards import votes
from ddqn.distributed.shards.client import ShardedClient
from ddqn.distributed.shards.group import ShardGroup
from ddqn.distributed.shards.server import HAVE, ShardServer
from ddqn.distributed.shards.slices import bounds, shard_solver
from ddqn.distributed.stats import PART_NAMES, ServerStats
from ddqn.distributed.store import ParameterStore
from ddqn.game import game_actions
from ddqn.net.netspec import load_netspec
from ddqn.solvers.flat import load_solver_spec, make_solver

CLIENT_S = 120.0  # bound on the client's start and on each of its rounds
SETTLE_S = 0.2  # after a round, the shards' last busy() calls land within this
EFFICIENCY = 0.95  # the share of a card's rate that carries message bytes (ddqn.sim.network's default)


def _client(address: str, secret: bytes, num_params: int, conn: Connection) -> None:
    """The client process: PUSH then FETCH, ``n`` times per request; answers each with its wall seconds per update."""
    grad = (1e-4 * np.random.default_rng(1).standard_normal(num_params)).astype(np.float32)
    coordinator = ServerClient(address, secret, 0, 0, num_params, timeout=60)
    client = ShardedClient(coordinator, secret, num_params, timeout=60) if coordinator.welcome.get("shards") \
        else coordinator
    p = client.fetch()
    version, target = p.version, p.target_version
    conn.send("ready")
    while (n := conn.recv()) is not None:
        t = time.perf_counter()
        for _ in range(n):
            version, _ = client.push(grad, version)
            p = client.fetch(version - 1, target)
            version, target = p.version, p.target_version
        conn.send((time.perf_counter() - t) / n)
    client.close()


class Served:
    """The server ``ps_shards: shards`` starts for ``config`` (on 127.0.0.1), and its shards' counters."""

    def __init__(self, config: str, shards: int, out: Path) -> None:
        cfg = load_config(config)
        spec = load_netspec(cfg.path("net"), game_actions(cfg))
        solver_spec = load_solver_spec(cfg.path("solver"))
        theta = (0.01 * np.random.default_rng(0).standard_normal(spec.num_params)).astype(np.float32)
        store = ParameterStore(make_solver(solver_spec, spec.params), theta, theta.copy(), cfg.target_update)
        self.num_params, self.secret, self.group = spec.num_params, P.new_secret(), None
        options = ServerOptions(partitions=1, max_grad_norm=cfg.max_grad_norm, session_timeout=60)
        if shards > 1:
            self.group = ShardGroup(store, spec, solver_spec, game_actions(cfg), shards, out,
                                    target_update=cfg.target_update, max_staleness=0, staleness_lr=False,
                                    dc_lambda=0.0)
            options = replace(options, shards=self.group.start(self.secret, options))
        try:
            self.server = ParameterServer(self.group or store, self.secret, options).start()
        except BaseException:
            self.close()
            raise

    def counters(self) -> list[tuple[int, float, float, dict[str, float]]]:
        """Per shard (the one server for S = 1): (updates, busy seconds, CPU seconds of them, seconds by part over
        every kind)."""
        if self.group is None:
            view = self.server.stats.view()
            return [(self.server.store.version, view.busy_s, view.cpu_s, _by_part(view.parts))]
        self.group.supervise()
        return [(s["version"], s["busy_s"], s["cpu_s"], _by_part(s["parts"])) for s in self.group.statuses()]

    def close(self) -> None:
        if getattr(self, "server", None) is not None:
            self.server.close()
        if self.group is not None:
            self.group.close()


def _by_part(parts: dict[str, dict[str, float]]) -> dict[str, float]:
    """Seconds by part, summed over message kinds."""
    return {name: sum(kind.get(name, 0.0) for kind in parts.values()) for name in PART_NAMES}


def _round(served: Served, conn: Connection, proc: mp.Process, n: int) -> dict[str, Any]:
    """One round of ``n`` updates: per shard µs per update (total and by part); the client's µs per update."""
    before = served.counters()
    conn.send(n)
    if not conn.poll(CLIENT_S) or not proc.is_alive():
        raise SystemExit("shard_cost: the client did not finish its round")
    wall = conn.recv()
    time.sleep(SETTLE_S)
    after = served.counters()
    shards = []
    for (u0, b0, c0, p0), (u1, b1, c1, p1) in zip(before, after):
        updates = max(u1 - u0, 1)
        shards.append({"updates": u1 - u0, "busy_us": 1e6 * (b1 - b0) / updates, "cpu_us": 1e6 * (c1 - c0) / updates,
                       "parts_us": {k: 1e6 * (p1[k] - p0[k]) / updates for k in PART_NAMES}})
    return {"client_us": 1e6 * wall, "shards": shards}


def interleaved(shard_counts: list[int], updates: int, rounds: int, start: Callable[[int], tuple[Any, tuple]],
                client: Callable[..., None], round_: Callable[..., dict[str, Any]], label: str) -> dict[int, list]:
    """For each S: ``start(S)`` gives what is measured (it has ``close()``) and its client's arguments; the client
    runs in a process of its own (``client(*args, pipe)``) and warms up, then ``rounds`` rounds of ``updates``
    updates are measured by ``round_(measured, pipe, process, n)``, interleaved over S. Every client and server is
    ended whatever happens. Returns each S's rounds."""
    ctx, runs, live = mp.get_context("spawn"), {s: [] for s in shard_counts}, {}
    try:
        for s in shard_counts:
            served, args = start(s)
            conn, child = ctx.Pipe()
            proc = ctx.Process(target=client, args=(*args, child), daemon=True)
            live[s] = (served, conn, proc)
            proc.start()
            if not conn.poll(CLIENT_S) or conn.recv() != "ready":
                raise SystemExit(f"{label}: the client of S = {s} did not start")
            round_(served, conn, proc, max(5, updates // 10))  # warm-up: the kernels' first calls
        for r in range(rounds):
            for s in shard_counts:
                print(f"[{label}] round {r + 1}/{rounds}: S = {s}", flush=True)
                runs[s].append(round_(*live[s], updates))
    finally:
        for served, conn, proc in live.values():
            if proc.is_alive():
                conn.send(None)
                proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=10)
            served.close()
    return runs


def measure(config: str, shard_counts: list[int], updates: int, rounds: int) -> dict[int, dict[str, Any]]:
    """Every S's rounds, interleaved (the machine's drift hits each S alike); medians per S."""
    with tempfile.TemporaryDirectory(prefix="ddqn-shard-cost-") as tmp:
        def start(s: int) -> tuple[Served, tuple[Any, ...]]:
            served = Served(config, s, Path(tmp) / f"s{s}")
            return served, (served.server.address, served.secret, served.num_params)

        runs = interleaved(shard_counts, updates, rounds, start, _client, _round, "shard_cost")
    return {s: _median(rs) for s, rs in runs.items()}


def _median(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    med = lambda xs: float(np.median(xs))  # noqa: E731
    shards = []
    for k in range(len(rounds[0]["shards"])):
        per = [r["shards"][k] for r in rounds]
        shards.append({"busy_us": med([p["busy_us"] for p in per]), "cpu_us": med([p["cpu_us"] for p in per]),
                       "parts_us": {n: med([p["parts_us"][n] for p in per]) for n in PART_NAMES}})
    busiest = max(shards, key=lambda x: x["cpu_us"])
    return {"client_us": med([r["client_us"] for r in rounds]), "shards": shards, "busiest_us": busiest["busy_us"],
            "busiest_cpu_us": busiest["cpu_us"], "busiest_parts_us": busiest["parts_us"],
            "server_bound_updates_per_s": 1e6 / busiest["cpu_us"]}


def projection(row: dict[str, Any], shards: int, num_params: int, gbit: float, gradients_per_s: float,
               workers: list[int]) -> dict[str, Any]:
    """The analytic bound at S shards on ``gbit`` links (a projection): capacity and the load of W workers."""
    card = gbit * 1e9 / 8 * EFFICIENCY / (4 * num_params / shards)  # updates/s one shard host's card carries
    capacity = min(row["server_bound_updates_per_s"], card)
    return {"shards": shards, "gbit": gbit, "server_bound": row["server_bound_updates_per_s"], "card_bound": card,
            "capacity_updates_per_s": capacity, "bound_by": "server" if capacity < card else "card",
            "load": {str(w): w * gradients_per_s / capacity for w in workers}}


def worker_rate(config: str, path: Path) -> float | None:
    """The config's gradients/s per worker on Caffe as built (results/worker_speed.json), or None."""
    if not path.is_file():
        return None
    rows = json.loads(path.read_text()).get("breakdowns", [])
    return next((r["gradients_per_s"] for r in rows if r["config"] == config and r.get("build") == "as built"), None)


# -- one shard alone (--alone) -------------------------------------------------------------------------------
ALONE_KINDS = ("push", "commit", "fetch", "commit_fetch")  # fetch: θ's slice, or θ's and θ⁻'s (fetch_both);
# commit_fetch: a COMMIT answered with θ's slice (shards.server's COMMIT with F_THETA)


class KindStats(ServerStats):
    """ServerStats that also keep the server thread's CPU seconds per message kind."""

    def __init__(self) -> None:
        super().__init__()
        self.cpu_by_kind: dict[str, float] = {}
        self._kind_lock = threading.Lock()

    def busy(self, seconds: float, kind: str | None = None, parts: dict[str, float] | None = None,
             cpu_s: float = 0.0) -> None:
        super().busy(seconds, kind, parts, cpu_s)
        with self._kind_lock:
            self.cpu_by_kind[kind or "other"] = self.cpu_by_kind.get(kind or "other", 0.0) + cpu_s

    def cpu_view(self) -> dict[str, float]:
        with self._kind_lock:
            return dict(self.cpu_by_kind)


def _kind(kind: str) -> str:
    return "fetch" if kind.startswith("fetch") else kind


def _alone_client(address: str, secret: bytes, key: bytes, shards: int, num_params: int, conn: Connection) -> None:
    """The client of shard 0 of ``shards``: PUSH its slice (its vote back), then COMMIT all S votes (S − 1 forged
    with the shard key); every other update the COMMIT asks for θ's slice, the others are followed by a FETCH of it;
    ``n`` updates per request; answers with its wall seconds per update."""
    from ddqn.solvers import kernels  # noqa: PLC0415 - numba's import in the client process only

    grad = (1e-4 * np.random.default_rng(1).standard_normal(num_params)).astype(np.float32)
    cuts = bounds(num_params, shards)
    sumsq = [kernels.norm_squared(grad[lo:hi]) for lo, hi in cuts]
    lo, hi = cuts[0]
    body = grad[lo:hi].tobytes()
    client = ServerClient(address, secret, 0, 0, hi - lo, timeout=60)
    p = client.fetch()
    version, target = p.version, p.target_version
    push_id = 1 << 8
    conn.send("ready")
    while (n := conn.recv()) is not None:
        t = time.perf_counter()
        for _ in range(n):
            push_id += 1
            _, vote = client.request(P.PUSH, version, 1, body + push_id.to_bytes(8, "little"))
            cast = b"".join(bytes(vote) if k == 0 else
                            votes.seal(key, 0, 0, push_id, 1, votes.Vote(k, True, sumsq[k])) for k in range(shards))
            if push_id % 2:
                reply = client.request(P.COMMIT, 1, push_id, cast + HAVE.pack(version, target), P.F_THETA)
                p = client.params(*reply)
            else:
                header, _ = client.request(P.COMMIT, 1, push_id, cast)
                p = client.fetch(header.version - 1, target) if header.flags & P.F_APPLIED else None
            if p is None or p.theta is None:
                raise SystemExit("shard_cost --alone: the shard did not apply a COMMIT")
            version, target = p.version, p.target_version
        conn.send((time.perf_counter() - t) / n)
    client.close()


class AloneShard:
    """Shard 0 of ``shards`` for ``config``'s net and solver (its slice of a random θ), serving in this process."""

    def __init__(self, config: str, shards: int) -> None:
        cfg = load_config(config)
        spec = load_netspec(cfg.path("net"), game_actions(cfg))
        lo, hi = bounds(spec.num_params, shards)[0]
        theta = (0.01 * np.random.default_rng(0).standard_normal(spec.num_params)).astype(np.float32)[lo:hi].copy()
        solver = shard_solver(load_solver_spec(cfg.path("solver")), spec.params, lo, hi)
        store = ParameterStore(solver, theta, theta.copy(), cfg.target_update)
        self.num_params, self.floats, self.secret, self.key = spec.num_params, hi - lo, P.new_secret(), os.urandom(32)
        self.stats = KindStats()
        options = ServerOptions(partitions=1, max_grad_norm=cfg.max_grad_norm, session_timeout=60)
        self.server = ShardServer(store, self.secret, options, shard=0, shards=shards, vote_key=self.key,
                                  stats=self.stats).start()

    def counters(self) -> tuple[int, dict[str, float], dict[str, dict[str, float]]]:
        """(updates, CPU seconds by kind, {kind: {part, "total" or "n" (messages): seconds or count}})."""
        cpu: dict[str, float] = {}
        for k, v in self.stats.cpu_view().items():
            cpu[_kind(k)] = cpu.get(_kind(k), 0.0) + v
        parts: dict[str, dict[str, float]] = {}
        for k, c in self.stats.view().parts.items():
            mine = parts.setdefault(_kind(k), {})
            for name, sec in c.items():
                mine[name] = mine.get(name, 0.0) + sec
        return self.server.store.version, cpu, parts

    def close(self) -> None:
        self.server.close()


def _alone_round(shard: AloneShard, conn: Connection, proc: mp.Process, n: int) -> dict[str, Any]:
    """One round of ``n`` updates: per kind, the shard's CPU and busy µs per message and busy µs by part; per
    update, the CPU of a PUSH, COMMIT and FETCH (``cpu_us``) and of a PUSH and a COMMIT answered with θ
    (``cpu_us_theta``)."""
    time.sleep(SETTLE_S)
    u0, c0, p0 = shard.counters()
    conn.send(n)
    if not conn.poll(CLIENT_S) or not proc.is_alive():
        raise SystemExit("shard_cost --alone: the client did not finish its round")
    wall = conn.recv()
    time.sleep(SETTLE_S)
    u1, c1, p1 = shard.counters()
    kinds = {}
    for k in ALONE_KINDS:
        a, b = p0.get(k, {}), p1.get(k, {})
        per = max(b.get("n", 0) - a.get("n", 0), 1)  # messages of this kind in the round
        kinds[k] = {"cpu_us": 1e6 * (c1.get(k, 0.0) - c0.get(k, 0.0)) / per,
                    "busy_us": 1e6 * (b.get("total", 0.0) - a.get("total", 0.0)) / per,
                    "parts_us": {x: 1e6 * (b.get(x, 0.0) - a.get(x, 0.0)) / per for x in PART_NAMES}}
    plain, theta = ("push", "commit", "fetch"), ("push", "commit_fetch")
    return {"updates": u1 - u0, "client_us": 1e6 * wall, "kinds": kinds,
            "cpu_us": sum(kinds[k]["cpu_us"] for k in plain), "busy_us": sum(kinds[k]["busy_us"] for k in plain),
            "cpu_us_theta": sum(kinds[k]["cpu_us"] for k in theta)}


def measure_alone(config: str, shard_counts: list[int], updates: int, rounds: int) -> dict[int, dict[str, Any]]:
    """Per S: one shard alone with its client, rounds interleaved over S (the idle shards wait in poll); medians."""
    params: dict[int, int] = {}  # θ's size, per S

    def start(s: int) -> tuple[AloneShard, tuple[Any, ...]]:
        shard = AloneShard(config, s)
        params[s] = shard.num_params
        return shard, (shard.server.address, shard.secret, shard.key, s, shard.num_params)

    runs = interleaved(shard_counts, updates, rounds, start, _alone_client, _alone_round, "shard_cost --alone")
    med = lambda xs: float(np.median(xs))  # noqa: E731
    out = {}
    for s, rs in runs.items():
        kinds = {k: {"cpu_us": med([r["kinds"][k]["cpu_us"] for r in rs]),
                     "busy_us": med([r["kinds"][k]["busy_us"] for r in rs]),
                     "parts_us": {x: med([r["kinds"][k]["parts_us"][x] for r in rs]) for x in PART_NAMES}}
                 for k in ALONE_KINDS}
        out[s] = {"floats": bounds(params[s], s)[0][1], "kinds": kinds,
                  "cpu_us": med([r["cpu_us"] for r in rs]), "busy_us": med([r["busy_us"] for r in rs]),
                  "cpu_us_theta": med([r["cpu_us_theta"] for r in rs]),
                  "client_us": med([r["client_us"] for r in rs])}
    return out


def alone_fits(rows: dict[int, dict[str, Any]]) -> dict[str, dict[str, float] | None]:
    """The a + b/S fit of each kind's CPU µs per message, and of an update's: PUSH, COMMIT and FETCH (``total``), or
    PUSH and a COMMIT answered with θ (``total_theta``)."""
    fits = {k: fit_a_b({s: r["kinds"][k]["cpu_us"] for s, r in rows.items()}) for k in ALONE_KINDS}
    fits["total"] = fit_a_b({s: r["cpu_us"] for s, r in rows.items()})
    fits["total_theta"] = fit_a_b({s: r["cpu_us_theta"] for s, r in rows.items()})
    return fits


def write_alone(block: dict[str, Any], out_dir: str | Path) -> Path:
    """Put ``block`` under ``alone`` in ``out_dir``/shard_cost.json, keeping every other key (a new file if none)."""
    path = Path(out_dir) / "shard_cost.json"
    data = json.loads(path.read_text()) if path.is_file() else {"name": "shard_cost"}
    data["alone"] = block
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    print(f"wrote {path} (alone)")
    return path


def main_alone(args: argparse.Namespace) -> None:
    cfg = load_config(args.config)
    num_params = load_netspec(cfg.path("net"), game_actions(cfg)).num_params
    rows = measure_alone(args.config, args.shards, args.updates, args.rounds)
    for s, r in rows.items():
        k = r["kinds"]
        print(f"alone S = {s} ({r['floats']:,} floats): {r['cpu_us']:.0f} µs CPU per update (push "
              f"{k['push']['cpu_us']:.0f}, commit {k['commit']['cpu_us']:.0f}, fetch {k['fetch']['cpu_us']:.0f}); "
              f"{r['cpu_us_theta']:.0f} µs with θ in the COMMIT's reply (commit {k['commit_fetch']['cpu_us']:.0f}); "
              f"busy {r['busy_us']:.0f} µs; client {r['client_us']:.0f} µs per update", flush=True)
    fits = alone_fits(rows)
    for k, f in fits.items():
        if f is not None:
            print(f"fit {k}: a = {f['a_us']:.0f} µs + b = {f['b_us']:.0f} µs / S (rms {f['rms_us']:.0f} µs)")
    write_alone({"machine": machine(), "config": {"config": args.config, "shards": args.shards,
                                                  "updates": args.updates, "rounds": args.rounds,
                                                  "num_params": num_params, "values": config_values(args.config)},
                 "rows": {str(s): r for s, r in rows.items()}, "fit": fits}, args.out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="results", help="results directory")
    ap.add_argument("--config", default="paper", help="the net, solver and target_update of the servers")
    ap.add_argument("--shards", type=int, nargs="+", help="values of S (default 1 2 4; --alone: 1 2 4 8 16)")
    ap.add_argument("--alone", action="store_true",
                    help="one shard alone with one client (PUSH, COMMIT with S votes, FETCH; or PUSH and a COMMIT "
                         "answered with θ): µs per message by kind and part, and the a + b/S fit; written under "
                         "'alone', other keys kept")
    ap.add_argument("--updates", type=int, default=200, help="updates per round")
    ap.add_argument("--rounds", type=int, default=3, help="rounds, interleaved over S (medians)")
    ap.add_argument("--gbit", type=float, nargs="+", default=[10.0, 1.0], help="link rates of the projection")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64], help="W of the projection")
    args = ap.parse_args(argv)
    args.shards = args.shards or ([1, 2, 4, 8, 16] if args.alone else [1, 2, 4])
    if any(s < 1 for s in args.shards) or args.updates < 1 or args.rounds < 1:
        ap.error("--shards, --updates and --rounds: 1 or more")
    if args.alone:
        main_alone(args)
        return
    cfg = load_config(args.config)
    num_params = load_netspec(cfg.path("net"), game_actions(cfg)).num_params
    rows = measure(args.config, args.shards, args.updates, args.rounds)
    rate = worker_rate(args.config, Path(args.out) / "worker_speed.json")
    for s, row in rows.items():
        print(f"S = {s}: busiest shard {row['busiest_cpu_us']:.0f} µs CPU ({row['busiest_us']:.0f} µs busy) per update "
              f"(bound "
              f"{row['server_bound_updates_per_s']:,.0f} updates/s); client {row['client_us']:.0f} µs per update; "
              f"each shard's CPU {', '.join(format(x['cpu_us'], '.0f') for x in row['shards'])} µs", flush=True)
    projections = [] if rate is None else [projection(row, s, num_params, g, rate, args.workers)
                                           for g in args.gbit for s, row in rows.items()]
    for p in projections:
        print(f"projection, S = {p['shards']} on {p['gbit']:g} Gbit/s: {p['capacity_updates_per_s']:,.0f} updates/s "
              f"({p['bound_by']}-bound); load at W = {args.workers[-1]}: {p['load'][str(args.workers[-1])]:.0%}")
    path = Path(args.out) / "shard_cost.json"
    alone = json.loads(path.read_text()).get("alone") if path.is_file() else None  # --alone's block is kept
    write_result("shard_cost", {
        "config": {"config": args.config, "shards": args.shards, "updates": args.updates, "rounds": args.rounds,
                   "num_params": num_params, "values": config_values(args.config), "efficiency": EFFICIENCY},
        "rows": {str(s): r for s, r in rows.items()}, "worker_gradients_per_s": rate,
        "projection": projections, **({"alone": alone} if alone else {})}, args.out)


if __name__ == "__main__":
    main()
