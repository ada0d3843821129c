"""Timing-only simulation (``SimOptions.timing_only``, ``--timing-only``): the simulator's clock without any learning.

No Caffe and no learning at all: no replay memory, no gradient, no evaluation, no snapshot. Each worker's cycle is
a :class:`~ddqn.sim.timing.FixedCycle` (``make bench-worker``'s measured seconds per gradient on the CPU that ran
it); a message carries only its byte count (:meth:`~ddqn.sim.timing.Timing.wire_bytes`); the server (or each shard,
:mod:`ddqn.sim.shards`) counts versions, θ⁻ resets and staleness in a :class:`CountingStore` and is charged its
service time only. Everything else is the learning simulator's: the same worker loop as events (``fetch_every``,
``train_every``, ``push_every``, a STATS every 2 s), the same FIFO server threads, transport legs and cards. So a
W = 64 projection costs seconds, not hours, and with S = 1 it gives the same clock as a fixed-cycle learning
simulation (``tests/test_sim.py``).

Outputs: ``config.yaml`` and ``summary.json`` (updates/s overall and steady — after the first quarter of simulated
time —, staleness, each server thread's and each card's use, overall and steady).
"""
from __future__ import annotations

import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from ddqn.config import Config, save_config
from ddqn.distributed.protocol import NO_VERSION
from ddqn.distributed.stats import ServerStats
from ddqn.game import game_actions
from ddqn.net.netspec import load_netspec
from ddqn.sim.events import EventQueue
from ddqn.sim.messages import PUSH, STATS, Message
from ddqn.sim.network import SERVER, Network
from ddqn.sim.run import POLL_S, PROGRESS_EVERY_S, SimOptions, Simulation
from ddqn.sim.server import SimServer
from ddqn.sim.service import ServiceTimes
from ddqn.sim.shards import PLACEMENTS, ShardRouter, ShardService, SimShard, shard_host, shard_timings
from ddqn.sim.timing import FixedCycle, Timing
from ddqn.sim.worker import SimWorker

EMPTY = np.zeros(0, np.float32)  # what a timing-only FETCH carries: its bytes are counted, not made


class CountingStore:
    """A parameter store without parameters: the version, θ⁻'s resets every ``target_update`` updates and
    ``max_staleness`` as :class:`~ddqn.distributed.store.ParameterStore` counts them; applying costs nothing."""

    dc_lambda = 0.0

    def __init__(self, num_params: int, target_update: int, max_staleness: int = 0) -> None:
        self.num_params, self.target_update, self.max_staleness = num_params, target_update, max_staleness
        self.staleness_lr = False
        self.version = self.target_version = 0

    def admits(self, staleness: int) -> bool:
        return not 0 < self.max_staleness < staleness

    def apply(self, grad: np.ndarray | None, staleness: int = 0, fetched: np.ndarray | None = None) -> int:
        self.version += 1
        if self.version % self.target_update == 0:
            self.target_version += 1
        return self.version

    def published(self) -> tuple[int, np.ndarray]:
        return self.version, EMPTY

    def published_target(self) -> tuple[int, np.ndarray]:
        return self.target_version, EMPTY

    def published_both(self) -> tuple[int, int, np.ndarray]:
        return self.version, self.target_version, EMPTY


class TimingWorker(SimWorker):
    """:class:`SimWorker`'s loop with fixed compute times and nothing computed: a gradient is due every
    ``train_every`` env steps (as ``ExperienceLoop.step``), and a PUSH carries no array."""

    def __init__(self, cfg: Config, partition: int, workers: int, fixed: FixedCycle) -> None:
        self.cfg, self.partition, self.workers, self.fixed = cfg, partition, workers, fixed
        self.version = self.target_version = NO_VERSION
        self.theta = self.target = None
        self.fresh_theta = self.fresh_target = False
        self.pushed = None
        self.t = self.pending = self.base = 0
        self.counts = {"env_steps": 0, "pushes": 0, "episodes": 0, "gradients": 0}
        self.compute_s = self.comm_s = self.real_compute_s = self.warmup_s = self.last_stats = 0.0
        self._reported = {"env_steps": 0, "compute_s": 0.0, "comm_s": 0.0}

    def warm_up(self) -> float:
        return 0.0

    def _run_steps(self, updates: int) -> None:
        """No ε schedule to feed."""

    def compute(self, sim) -> None:
        cfg = self.cfg
        self.counts["env_steps"] += 1
        due = self.counts["env_steps"] % cfg.train_every == 0
        if due:
            if self.pending == 0:
                self.base = self.version
            self.pending += 1
            self.counts["gradients"] += 1
        spent = self.fixed.step_s + (self.fixed.gradient_s if due else 0.0)
        self.compute_s += spent
        done_at = sim.events.now + spent
        if self.pending == cfg.push_every:
            sim.send(Message(PUSH, self.partition, done_at, self.base, summed=self.pending,
                             fetch=(self.t + 1) % cfg.fetch_every == 0))
            self.pending = 0
        else:
            sim.events.at(done_at, self.after, sim)

    def report(self) -> dict:
        cur = {"env_steps": self.counts["env_steps"], "compute_s": self.compute_s, "comm_s": self.comm_s}
        delta = {k: cur[k] - self._reported[k] for k in cur}
        self._reported = cur
        return {"scores": [], **delta}


class TimingSimulation(Simulation):
    """W timing-only workers and one server (S = 1) or S shards and the driver's coordinator (see the module
    docstring and :mod:`ddqn.sim.shards`).

    Args:
        cfg: the config (its net's size, ``fetch_every``, ``train_every``, ``push_every``, ``target_update``).
        out: where ``config.yaml`` and ``summary.json`` go.
        service: one server's measured (or fixed) service and loopback times.
        opts: ``opts.fixed`` is required; ``opts.shards``, ``opts.placement``, ``opts.shard_service`` (default
            :meth:`ShardService.scaled`) for S > 1.
    """

    def __init__(self, cfg: Config, out: str | Path, service: ServiceTimes, opts: SimOptions) -> None:
        if opts.fixed is None:
            raise ValueError("a timing-only simulation needs a fixed cycle (SimOptions.fixed)")
        if opts.minutes is None and opts.updates is None:
            raise ValueError("give a simulated minutes budget or an updates budget")
        if opts.shards < 1 or opts.placement not in PLACEMENTS:
            raise ValueError(f"shards >= 1 and placement one of {PLACEMENTS} (got {opts.shards}, {opts.placement!r})")
        self.cfg, self.out, self.opts = cfg, Path(out), opts
        self.spec = load_netspec(cfg.path("net"), game_actions(cfg))
        n = self.spec.num_params
        self.store = CountingStore(n, cfg.target_update, opts.max_staleness)  # S = 1: the server's; else unused
        self.stats = ServerStats()
        self.events = EventQueue()
        self.timing = Timing(service, 4 * n, opts.latency_s)
        self.network = (Network(opts.gbps, opts.link_efficiency, burst_bytes=opts.link_burst_bytes) if opts.gbps > 0
                        else None)
        self.server = SimServer(self.store, self.stats, self.timing, self.events, self._reply)  # S > 1: STATS only
        self.shard_service = opts.shard_service or ShardService.scaled(service)
        self.shards: list[SimShard] = []
        self.router: ShardRouter | None = None
        self.workers = [TimingWorker(cfg, p, opts.workers, opts.fixed) for p in range(opts.workers)]
        if opts.shards > 1:
            self.router = ShardRouter(self, opts.placement, n, opts.shards, learning=False)
            timings = shard_timings(service, self.shard_service, n, opts.shards, opts.latency_s)
            self.shards = [SimShard(k, CountingStore(n, cfg.target_update, opts.max_staleness), ServerStats(), t,
                                    self.events, self.router.reply) for k, t in enumerate(timings)]
            self.router.shards = self.shards
        self._ticks: list[tuple[float, int, list[float], dict[int, tuple[int, int]]]] = []
        self.real = {"total_s": 0.0}
        self._last_progress = 0.0

    # -- versions --------------------------------------------------------------------------------------------
    @property
    def version(self) -> int:
        """Updates every shard has applied (the one server's version with S = 1)."""
        return min(s.store.version for s in self.shards) if self.shards else self.store.version

    def _budget_spent(self) -> bool:
        return self.opts.updates is not None and self.version >= self.opts.updates

    def _servers(self) -> list[SimServer]:
        """The threads that serve θ: the one server, or the S shards."""
        return self.shards or [self.server]

    def _hosts(self) -> list[int]:
        """The server side's hosts: the driver's and, on executors, each shard's."""
        return sorted({SERVER, *(shard_host(k, self.opts.placement) for k in range(len(self.shards)))})

    # -- transport: to the one server, or to the shards (S > 1) ---------------------------------------------------
    def send(self, msg: Message) -> None:
        """S = 1 or a STATS: to the one server (the coordinator); FETCH and PUSH: a slice message to each shard."""
        if self.router is None or msg.kind == STATS:
            super().send(msg)
        else:
            self.router.send(msg)

    # -- the run ---------------------------------------------------------------------------------------------
    def run(self) -> dict:
        start = time.perf_counter()
        self.out.mkdir(parents=True, exist_ok=True)
        save_config(self.cfg, self.out / "config.yaml")
        for w in self.workers:
            self.events.at(0.0, w.start, self)
        self.events.at(0.0, self._tick)
        deadline = 60 * self.opts.minutes if self.opts.minutes is not None else float("inf")
        self._last_progress = time.perf_counter()
        self.events.run(deadline, self._budget_spent)
        self._tick_record()
        self.real["total_s"] = time.perf_counter() - start
        summary = self._summary()
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2))
        return summary

    def _tick_record(self) -> None:
        cards = {}
        if self.network is not None:
            for h in self._hosts():
                nic = self.network._nic(h)
                cards[h] = (nic.egress.bytes, nic.ingress.bytes)
        self._ticks.append((self.events.now, self.version, [s.busy_s for s in self._servers()], cards))

    def _tick(self) -> None:
        self._tick_record()
        if self.opts.progress and time.perf_counter() - self._last_progress > PROGRESS_EVERY_S:
            self._last_progress = time.perf_counter()
            print(f"[sim {self.events.now / 60:6.2f} min] updates {self.version}", file=sys.stderr, flush=True)
        self.events.at(self.events.now + POLL_S, self._tick)

    def _steady(self) -> dict:
        """Rates and shares between the tick at a quarter of the simulated time and the last one."""
        end = self._ticks[-1]
        first = next((t for t in self._ticks if t[0] >= end[0] / 4), self._ticks[0])
        dt = end[0] - first[0]
        if dt <= 0:
            return {"updates_per_s": None, "server_utilisation": None, "card_use": None}
        busy = [(b1 - b0) / dt for b0, b1 in zip(first[2], end[2])]
        cap = self.opts.gbps * 1e9 / 8 * dt if self.network else 0.0
        cards = {str(h): {"egress": (e1 - first[3][h][0]) / cap, "ingress": (i1 - first[3][h][1]) / cap}
                 for h, (e1, i1) in end[3].items()} if cap else None
        return {"updates_per_s": (end[1] - first[1]) / dt, "server_utilisation": busy, "card_use": cards,
                "from_s": first[0]}

    def _summary(self) -> dict:
        now = self.events.now
        hist: Counter[int] = Counter()
        dropped: Counter[int] = Counter()
        for s in self._servers()[:1]:  # shard 0 (every shard applies every commit): one count per update
            hist.update(s.staleness)
        for s in self._servers():
            dropped.update(s.too_stale)
        taus = np.repeat(np.array(list(hist), dtype=np.int64), list(hist.values())) if hist else np.zeros(1)
        gradients = sum(w.counts["gradients"] for w in self.workers)
        steady = self._steady()
        busy = [s.busy_s / max(now, 1e-9) for s in self._servers()]
        cards = {str(h): self.network.use(h, now) for h in self._hosts()} if self.network else None
        o = self.opts
        return {"timing_only": True, "workers": len(self.workers), "shards": o.shards, "placement": o.placement,
                "updates": self.version, "minutes": now / 60, "updates_per_s": self.version / max(now, 1e-9),
                "steady": {**steady, "busiest_server": max(steady["server_utilisation"] or [0.0]),
                           "busiest_card": _busiest(steady["card_use"])},
                "staleness_p50": float(np.percentile(taus, 50)), "staleness_p95": float(np.percentile(taus, 95)),
                "staleness_histogram": {str(k): hist[k] for k in sorted(hist)},
                "too_stale_histogram": {str(k): dropped[k] for k in sorted(dropped)},
                "server_utilisation": busy, "busiest_server": max(busy), "coordinator_utilisation":
                    self.server.busy_s / max(now, 1e-9) if self.shards else None,
                "card_use": cards, "busiest_card": _busiest(cards), "gbps": o.gbps,
                "link_efficiency": o.link_efficiency if self.network else None,
                "fixed_cycle": {"step_s": o.fixed.step_s, "gradient_s": o.fixed.gradient_s,
                                "warmup_s": o.fixed.warmup_s},
                "service_us": self.timing.service.row(),
                "shard_service": self.shard_service.row() if self.shards else None,
                "shard_service_us": {k: 1e6 * v for k, v in self.shards[0].timing.per_kind.items()}
                if self.shards else None,
                "compute_ms_per_gradient": 1e3 * sum(w.compute_s for w in self.workers) / max(gradients, 1),
                "comm_ms_per_gradient": 1e3 * sum(w.comm_s for w in self.workers) / max(gradients, 1),
                "real_s": dict(self.real)}


def _busiest(cards: dict | None) -> float | None:
    """The largest share of any card direction's rate (None without cards)."""
    return max(max(c.values()) for c in cards.values()) if cards else None


def simulation(cfg: Config, out: str | Path, service: ServiceTimes, opts: SimOptions) -> Simulation:
    """The simulation ``opts`` asks for: timing-only or learning (any S)."""
    return (TimingSimulation if opts.timing_only else Simulation)(cfg, out, service, opts)
