"""The parameter server's service time per message, measured on the real server thread, and the transport model.

:func:`measure_service` starts the real :class:`~ddqn.distributed.server.ParameterServer` (real store, solver, protocol
and ZeroMQ on 127.0.0.1) with one in-process :class:`~ddqn.distributed.client.ServerClient`, and reads the server
thread's own busy seconds (``ServerStats.busy``: receive + verify + handle + reply) per message kind:

* PUSH (receive, verify, norm check, solver apply, ACK);
* FETCH answered with a new θ (the published copy of θ is made once per version, as a FETCH after an update does);
* FETCH answered with θ and θ⁻ (the first FETCH after a target reset);
* STATS (a small JSON report).

The same runs give the server thread's time by part (:func:`measure_service_parts`: receive, verify, check, apply,
seal, send; ``ServerStats`` parts), so the totals above can be reconciled with what each part costs.

The client runs in its own process. Phases of one kind are timed as a whole (busy-time delta ÷ messages, median of
three interleaved rounds), so the client's own time never counts; FETCH is a PUSH + FETCH pair minus a PUSH.
The client's round-trip time minus the service time is the transport on loopback (both directions, with the
client's sealing and verifying). ``ddqn.bench.ps_speed`` writes these for the shipped nets to
``results/ps_speed.json`` (``service``); the simulator reads them from there (:func:`find_service`) or measures
its own net when they are missing.

Units: seconds in :class:`ServiceTimes`; µs in the JSON rows.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import time
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np

from ddqn.distributed import protocol
from ddqn.distributed.client import ServerClient
from ddqn.distributed.server import ParameterServer, ServerOptions
from ddqn.distributed.store import ParameterStore
from ddqn.net.netspec import NetSpec
from ddqn.solvers.flat import SolverSpec, make_solver

SETTLE_S = 0.05  # after a phase, the server thread's last busy() call lands within this
ROUNDS = 3  # each phase is timed this many times, interleaved; the median counts
CLIENT_START_S = 120.0  # bound on the client process starting and connecting


@dataclass(frozen=True)
class ServiceTimes:
    """Server-thread seconds per message and loopback round-trip transport seconds (round trip − service).

    ``*_s``: server service time; ``*_rtt_s``: the rest of the client's round trip (both directions).
    """

    push_s: float
    fetch_s: float
    fetch_both_s: float
    stats_s: float
    push_rtt_s: float
    fetch_rtt_s: float
    fetch_both_rtt_s: float
    stats_rtt_s: float

    def row(self) -> dict[str, float]:
        """The JSON row: every field in µs (``push_us``, ``push_rtt_us``, …)."""
        return {k[:-2] + "_us": 1e6 * v for k, v in asdict(self).items()}

    @classmethod
    def from_row(cls, row: dict) -> ServiceTimes:
        """Inverse of :meth:`row`."""
        return cls(**{name: row[name[:-2] + "_us"] / 1e6 for name in cls.__dataclass_fields__})


def _client(address: str, secret: bytes, num_params: int, auth: str, conn: Connection) -> None:
    """The client process: runs the phases the parent asks for and answers with its round-trip seconds."""
    rng = np.random.default_rng(1)
    grad = (1e-4 * rng.standard_normal(num_params)).astype(np.float32)
    client = ServerClient(address, secret, 0, 0, num_params, timeout=60, auth=auth)
    p = client.fetch()
    version, target_version = p.version, p.target_version
    conn.send("ready")
    while (task := conn.recv()) is not None:
        kind, n = task
        t = time.perf_counter()
        for _ in range(n):
            if kind == "stats":
                client.stats([1], 1, 0.0, 0.0)
                continue
            version, _ = client.push(grad, version)
            if kind == "push_fetch":
                p = client.fetch(version - 1, target_version)  # the ACK's version is current: θ (and θ⁻) are new
                version, target_version = p.version, p.target_version
        conn.send((time.perf_counter() - t) / n)
    client.close()


def _wait(conn: Connection, proc: mp.Process, seconds: float, what: str) -> None:
    """Until the client answers: at most ``seconds``, and not once the client process has died."""
    end = time.monotonic() + seconds
    while not conn.poll(0.1):
        if not proc.is_alive() or time.monotonic() > end:
            raise RuntimeError(f"the measuring client did not finish {what}")


def _phase(server: ParameterServer, conn: Connection, proc: mp.Process, kind: str, n: int) -> tuple[float, float]:
    """(server seconds, client round-trip seconds) per message (pair, for push_fetch) over ``n``."""
    time.sleep(SETTLE_S)
    before = server.stats.view().busy_s
    conn.send((kind, n))
    _wait(conn, proc, 60 + n, f"its {kind} phase")
    rtt = conn.recv()
    time.sleep(SETTLE_S)
    return (server.stats.view().busy_s - before) / n, rtt


def _measure_one(spec: NetSpec, solver: SolverSpec, auth: str, messages: int, target_update: int
                 ) -> tuple[dict[str, tuple[float, float]], dict[str, dict[str, float]]]:
    """Per-kind (service, round trip) seconds on one fresh server whose θ⁻ resets every ``target_update``, with
    the client in its own process (the server thread keeps this process's interpreter to itself); and the server
    thread's µs per message by kind and part (``ServerStats`` parts, over every message of the run)."""
    theta = (0.01 * np.random.default_rng(0).standard_normal(spec.num_params)).astype(np.float32)
    store = ParameterStore(make_solver(solver, spec.params), theta, theta.copy(), target_update)
    secret = protocol.new_secret()
    server = ParameterServer(store, secret, ServerOptions(auth=auth, partitions=1)).start()
    ctx = mp.get_context("spawn")
    conn, child_conn = ctx.Pipe()
    proc = ctx.Process(target=_client, args=(server.address, secret, spec.num_params, auth, child_conn), daemon=True)
    try:
        proc.start()
        _wait(conn, proc, CLIENT_START_S, "connecting")
        conn.recv()
        kinds = ("push", "push_fetch", "stats")
        for kind in kinds:  # warm up: caches, the kernels' first call
            _phase(server, conn, proc, kind, max(2, messages // 10))
        warm = server.stats.view().parts  # the warm-up's messages (the kernels' first calls compile) not counted
        runs: dict[str, list[tuple[float, float]]] = {k: [] for k in kinds}
        for _ in range(ROUNDS):
            for kind in kinds:
                runs[kind].append(_phase(server, conn, proc, kind, messages))
        med = {k: (float(np.median([r[0] for r in v])), float(np.median([r[1] for r in v]))) for k, v in runs.items()}
        conn.send(None)
        proc.join(timeout=10)
        push, pair = med["push"], med["push_fetch"]
        parts = {}
        for kind, c in server.stats.view().parts.items():
            d = {part: sec - warm.get(kind, {}).get(part, 0.0) for part, sec in c.items()}
            if d.get("n"):
                parts[kind] = {part: 1e6 * sec / d["n"] for part, sec in d.items() if part != "n"}
        return {"push": push, "stats": med["stats"], "fetch": (pair[0] - push[0], pair[1] - push[1])}, parts
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=10)
        server.close()


def measure_service(spec: NetSpec, solver: SolverSpec, auth: str, messages: int = 40) -> ServiceTimes:
    """Measure :class:`ServiceTimes` for ``spec`` with ``solver`` in ``auth`` mode (≈ 6 × ``messages`` messages)."""
    return measure_service_parts(spec, solver, auth, messages)[0]


def measure_service_parts(spec: NetSpec, solver: SolverSpec, auth: str, messages: int = 40
                          ) -> tuple[ServiceTimes, dict[str, dict[str, float]]]:
    """:func:`measure_service`, and the server thread's µs per message by kind (push, fetch, fetch_both, stats)
    and part (``ddqn.distributed.stats.PART_NAMES``, and ``total``) from the same runs."""
    plain, parts = _measure_one(spec, solver, auth, messages, target_update=10**9)
    both, parts_both = _measure_one(spec, solver, auth, messages, target_update=1)  # each FETCH gets θ and θ⁻
    svc = {k: max(v[0], 0.0) for k, v in plain.items()}
    rtt = {k: max(v[1] - v[0], 0.0) for k, v in plain.items()}
    times = ServiceTimes(push_s=svc["push"], fetch_s=svc["fetch"], fetch_both_s=max(both["fetch"][0], 0.0),
                         stats_s=svc["stats"], push_rtt_s=rtt["push"], fetch_rtt_s=rtt["fetch"],
                         fetch_both_rtt_s=max(both["fetch"][1] - both["fetch"][0], 0.0), stats_rtt_s=rtt["stats"])
    by_kind = {k: parts[k] for k in ("push", "fetch", "stats") if k in parts}
    if "fetch_both" in parts_both:
        by_kind["fetch_both"] = parts_both["fetch_both"]
    return times, by_kind


def find_service(path: str | Path, num_params: int, solver_type: str, auth: str) -> ServiceTimes | None:
    """The row of ``path`` (results/ps_speed.json's ``service``) for this net size, solver type and auth mode."""
    p = Path(path)
    if not p.is_file():
        return None
    for row in json.loads(p.read_text()).get("service", []):
        if (row.get("params"), row.get("solver"), row.get("auth")) == (num_params, solver_type, auth):
            return ServiceTimes.from_row(row)
    return None
