"""One simulated distributed run: W workers and one parameter server in simulated time, written like a real run.

The "driver" part mirrors :class:`ddqn.distributed.driver.Driver`: every 0.5 simulated seconds it reads the counters
and writes a ``train.csv`` row every ``log_every`` env steps (summed over workers, as the workers' STATS report them;
the same columns, plus ``server/utilisation``). A greedy evaluation goes to ``eval.csv`` each time the env steps
really played, summed over workers, pass a multiple of ``eval_every``. This instrument reads the exact count, not the
STATS reports (every 2 s per worker), so every W is evaluated on the same grid; with the reports, W = 64 at ≈ 7,000
env steps/s saw the count in jumps of ≈ 14,000. Evaluations use :func:`ddqn.dqn.evaluation.evaluate` on the server's
θ of that moment and take no simulated time. At the end: a final evaluation, a snapshot in Caffe's formats and
``summary.json`` with the real run's keys (``minutes`` are simulated) plus a ``simulated`` block: staleness
histogram, server utilisation, the service times used, and what the simulation cost in real seconds.
"""
from __future__ import annotations

import json
import sys
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ddqn.bench.stats import reach
from ddqn.config import Config, save_config
from ddqn.distributed.checkpointer import STATE_FILE
from ddqn.distributed.client import Params
from ddqn.distributed.shards.slices import shard_solver
from ddqn.distributed.stats import ServerStats, StatsView, train_row
from ddqn.distributed.store import ParameterStore
from ddqn.dqn.evaluation import eval_row, evaluate, random_score, score_summary
from ddqn.game import game_actions
from ddqn.metrics import Every, MetricsLogger
from ddqn.net.netspec import load_netspec
from ddqn.net.qnet import QNetwork
from ddqn.net.snapshot import save_checkpoint
from ddqn.sim.events import EventQueue
from ddqn.sim.messages import STATS, Message
from ddqn.sim.network import SERVER, Network
from ddqn.sim.server import SimServer
from ddqn.sim.service import ServiceTimes
from ddqn.sim.shards import PLACEMENTS, ShardedStore, ShardRouter, ShardService, SimShard, shard_host, shard_timings
from ddqn.sim.timing import FixedCycle, Timing
from ddqn.sim.worker import SharedNets, SimWorker
from ddqn.solvers.flat import load_solver_spec, make_solver

POLL_S = 0.5  # the driver's watch period (simulated seconds)
RATE_WINDOW_S = 30.0  # rates in train.csv are over this window, as the driver's
PROGRESS_EVERY_S = 30.0  # real seconds between progress lines


@dataclass(frozen=True)
class SimOptions:
    """What to simulate besides the config.

    Args:
        workers: W.
        minutes: simulated minutes budget (None: no time limit).
        updates: stop after this many server updates (None: no limit).
        fixed: compute times from this table instead of measured (deterministic; tests).
        max_staleness, staleness_lr, dc_lambda: the server's staleness controls (``ParameterStore``).
        latency_s: extra one-way latency per message (``Timing``).
        gbps: every host's full-duplex card, Gbit/s each way, shared by its messages (``Network``; 0: none).
        link_efficiency: the share of a card's rate that carries message bytes (``Network.efficiency``).
        link_burst_bytes: each card direction's token bucket (``Network.burst_bytes``; 0: a plain rate).
        progress: print a line to stderr every 30 real seconds.
        shards: S, the sharded parameter server's shards (``ddqn.sim.shards``; 1: one server thread, this
            simulator as it always was).
        placement: ``driver`` (every shard on the driver's host and card) or ``executors`` (a host and card each).
        timing_only: no Caffe and no learning, fixed cycles only (``ddqn.sim.timing_only.TimingSimulation``).
        shard_service: each shard's service times, a + b/S per kind (``ShardService``; None: one server's ÷ S).
        stop_score: stop once the greedy score's trailing mean (``ddqn.bench.stats.reach``: the rule every bench reads
            a level off a curve with) reaches this level (None: run the budget out).
    """

    workers: int
    minutes: float | None = None
    updates: int | None = None
    fixed: FixedCycle | None = None
    max_staleness: int = 0
    staleness_lr: bool = False
    latency_s: float = 0.0
    gbps: float = 0.0
    link_efficiency: float = Network.efficiency
    link_burst_bytes: int = 0
    progress: bool = False
    dc_lambda: float = 0.0
    shards: int = 1
    placement: str = "driver"
    timing_only: bool = False
    shard_service: ShardService | None = None
    stop_score: float | None = None


class Simulation:
    """W simulated workers and the simulated server for ``cfg``, writing into ``out`` (see the module docstring)."""

    def __init__(self, cfg: Config, out: str | Path, service: ServiceTimes, opts: SimOptions) -> None:
        if opts.minutes is None and opts.updates is None:
            raise ValueError("give a simulated minutes budget or an updates budget")
        if opts.timing_only:
            raise ValueError("a timing-only simulation is ddqn.sim.timing_only.TimingSimulation")
        if opts.shards < 1 or opts.placement not in PLACEMENTS:
            raise ValueError(f"shards >= 1 and placement one of {PLACEMENTS} (got {opts.shards}, {opts.placement!r})")
        self.cfg, self.out, self.opts = cfg, Path(out), opts
        self.spec = load_netspec(cfg.path("net"), game_actions(cfg))
        q = QNetwork(self.spec, seed=cfg.seed)  # the driver's initial θ
        theta = q.get_params()
        solver = make_solver(load_solver_spec(cfg.path("solver")), self.spec.params)
        self.stats = ServerStats()
        self.events = EventQueue()
        self.timing = Timing(service, 4 * self.spec.num_params, opts.latency_s)
        self.network = (Network(opts.gbps, opts.link_efficiency, burst_bytes=opts.link_burst_bytes) if opts.gbps > 0
                        else None)
        self.router: ShardRouter | None = None
        self.shards: list[SimShard] = []
        if opts.shards == 1:
            self.store = ParameterStore(solver, theta, theta.copy(), cfg.target_update, opts.max_staleness,
                                        opts.staleness_lr, opts.dc_lambda)
        else:
            self.store = self._shard(theta, service)
        self.server = SimServer(self.store, self.stats, self.timing, self.events, self._reply)  # S > 1: STATS only
        nets = SharedNets(q, QNetwork(self.spec))
        self.eval_q = QNetwork(self.spec)
        self.workers = [SimWorker(cfg, nets, p, opts.workers, opts.fixed) for p in range(opts.workers)]
        self.real = {"warmup_s": 0.0, "eval_s": 0.0, "total_s": 0.0}
        self._window: deque[tuple[float, int, int, float]] = deque()
        self._log_due, self._eval_due = Every(cfg.log_every), Every(cfg.eval_every)
        self._played = 0  # env steps really played, summed over workers (the evaluation grid)
        self._metrics: MetricsLogger | None = None
        self._baseline = 0.0
        self._last_progress = 0.0
        self._curve: list[dict[str, float]] = []  # greedy mean per evaluation (stop_score)
        self._reached = False

    def _shard(self, theta, service: ServiceTimes) -> ShardedStore:
        """S shards, each a ParameterStore over its slice of θ (θ⁻ = θ at the start, a fresh solver history), and
        the store that reads them as one (``ddqn.sim.shards``). Shard 0 counts into the run's ServerStats (pushes per
        worker, staleness), as one server does."""
        cfg, opts, spec = self.cfg, self.opts, self.spec
        solver_spec = load_solver_spec(cfg.path("solver"))
        self.router = ShardRouter(self, opts.placement, spec.num_params, opts.shards, learning=True)
        timings = shard_timings(service, opts.shard_service or ShardService.scaled(service), spec.num_params,
                                opts.shards, opts.latency_s)
        for k, ((lo, hi), timing) in enumerate(zip(self.router.bounds, timings)):
            store = ParameterStore(shard_solver(solver_spec, spec.params, lo, hi), theta[lo:hi].copy(),
                                   theta[lo:hi].copy(), cfg.target_update, opts.max_staleness, opts.staleness_lr,
                                   opts.dc_lambda)
            self.shards.append(SimShard(k, store, self.stats if k == 0 else ServerStats(), timing, self.events,
                                        self.router.reply))
        self.router.shards = self.shards
        return ShardedStore(self.shards, solver_spec, spec.params, spec.num_params, opts.max_staleness,
                            opts.staleness_lr, opts.dc_lambda)

    def _threads(self) -> list[SimServer]:
        """The threads that serve θ: the one server, or the S shards."""
        return self.shards or [self.server]

    # -- transport -------------------------------------------------------------------------------------------
    def send(self, msg: Message) -> None:
        """A worker's request leaves at ``msg.sent_at`` and reaches the server one up-leg later, after its bytes
        have passed the worker's card and the server's (on a network). With shards: FETCH and PUSH go to every
        shard (``ShardRouter``), STATS to the driver."""
        if self.router is not None and msg.kind != STATS:
            self.router.send(msg)
            return
        at = msg.sent_at + self.timing.legs(msg.kind)[0]
        if self.network is None:
            self.events.at(at, self.server.arrive, msg)
        else:
            self.events.at(at, self._wire, msg.partition, SERVER, self.timing.wire_bytes(msg.kind)[0],
                           self.server.arrive, msg)

    def _reply(self, msg: Message, reply: Params | None, kind: str) -> None:
        """The server's reply to ``msg`` leaves now: one down-leg (and, on a network, the cards) to its worker."""
        at = self.events.now + self.timing.legs(kind)[1]
        if self.network is None:
            self.events.at(at, self._deliver, msg, reply)
        else:
            self.events.at(at, self._wire, SERVER, msg.partition, self.timing.wire_bytes(kind)[1], self._deliver,
                           msg, reply)

    def _wire(self, src: int, dst: int, nbytes: int, then: Callable[..., None], *args: object) -> None:
        """A message handed to ``src``'s card now: ``then(*args)`` once it has reached ``dst``."""
        self.events.at(self.network.transfer(src, dst, self.events.now, nbytes), then, *args)

    def _deliver(self, msg: Message, reply: Params | None) -> None:
        self.workers[msg.partition].on_reply(self, msg, reply)

    # -- the run ---------------------------------------------------------------------------------------------
    def run(self) -> dict:
        """Warm up every worker, simulate until the budget is spent, finish; returns the summary."""
        cfg, start = self.cfg, time.perf_counter()
        self.out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, self.out / "config.yaml")
        self._baseline = random_score(cfg, self.spec.state_shape[1], cfg.eval_episodes, cfg.seed)
        t = time.perf_counter()
        for w in self.workers:
            w.warm_up()
            self.events.at(0.0, w.start, self)
        self.real["warmup_s"] = time.perf_counter() - t
        self.events.at(0.0, self._tick)
        deadline = 60 * self.opts.minutes if self.opts.minutes is not None else float("inf")
        self._last_progress = time.perf_counter()
        with MetricsLogger(self.out) as self._metrics:
            self.events.run(deadline, self._budget_spent)
            summary = self._finish(start)
        return summary

    def _budget_spent(self) -> bool:
        return self._reached or (self.opts.updates is not None and self.store.version >= self.opts.updates)

    def _tick(self) -> None:
        """The driver's watch loop, every POLL_S simulated seconds: rates, train.csv rows, progress."""
        now, view, version = self.events.now, self.stats.view(), self.store.version
        env_steps = view.env_steps
        self._window.append((now, version, env_steps, max(t.busy_s for t in self._threads())))
        while now - self._window[0][0] > RATE_WINDOW_S and len(self._window) > 2:
            self._window.popleft()
        if self._log_due.due(env_steps):
            self._metrics.log("train", env_steps, sim_train_row(view, version, self._window, len(self.workers)), now)
        if self.opts.progress and time.perf_counter() - self._last_progress > PROGRESS_EVERY_S:
            self._last_progress = time.perf_counter()
            p50, p95 = view.staleness_percentiles()
            print(f"[sim {now / 60:6.2f} min] updates {version}, env steps {env_steps}, staleness p50/p95 "
                  f"{p50:.0f}/{p95:.0f}, server busy {max(t.busy_s for t in self._threads()) / max(now, 1e-9):.0%}",
                  file=sys.stderr,
                  flush=True)
        self.events.at(now + POLL_S, self._tick)

    def stepped(self) -> None:
        """A worker has played one env step: a greedy evaluation when the run's exact count reaches the grid."""
        self._played += 1
        if self._eval_due.due(self._played):
            self._evaluate(self._played, self.events.now)

    def _evaluate(self, env_steps: int, now: float) -> np.ndarray:
        t = time.perf_counter()
        self.eval_q.set_params(self.store.theta)
        scores = evaluate(self.eval_q, self.cfg)
        self._metrics.log("eval", env_steps, eval_row(scores, self._baseline, self.store.version), now)
        self.real["eval_s"] += time.perf_counter() - t
        if self.opts.stop_score is not None:
            self._curve.append({"minutes": now / 60, "greedy_mean": float(np.mean(scores))})
            self._reached = reach(self._curve, self.opts.stop_score) is not None
        return scores

    def _finish(self, start: float) -> dict:
        for w in self.workers:  # told to stop, each worker reports what it has not reported yet
            self.stats.reported(w.partition, **w.report())
        now, view = self.events.now, self.stats.view()
        scores = self._evaluate(view.env_steps, now)
        model = save_checkpoint(self.out, "server", self.spec, self.store.theta, self.store.target, self.store.solver,
                                STATE_FILE, {"updates": self.store.version, "worker_env_steps": self.stats.played()})
        self.real["total_s"] = time.perf_counter() - start
        p50, p95 = view.staleness_percentiles()
        summary = {"model": str(model), "updates": self.store.version, "env_steps": view.env_steps,
                   "minutes": now / 60, "updates_per_s": self.store.version / max(now, 1e-9),
                   "stopped_at_score": self.opts.stop_score if self._reached else None,
                   "staleness_p50": p50, "staleness_p95": p95,
                   "workers": {w.partition: {"pushes": w.counts["pushes"], "attempt": 0, "rejoins": 0,
                                             "env_steps": w.counts["env_steps"], "compute_s": w.compute_s,
                                             "comm_s": w.comm_s} for w in self.workers},
                   "dropped": view.dropped, **score_summary(scores, self._baseline), "sync": False,
                   "simulated": self._sim_block(now)}
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2))
        return summary

    def _sim_block(self, now: float) -> dict:
        """What only a simulation knows: staleness histogram, utilisation, times used, its own cost."""
        threads = self._threads()
        hist, dropped = threads[0].staleness, sum((t.too_stale for t in threads), Counter())
        taus = np.repeat(np.array(list(hist), dtype=np.int64), list(hist.values())) if hist else np.zeros(1)
        gradients = sum(w.counts["gradients"] for w in self.workers)
        real_compute = sum(w.real_compute_s for w in self.workers)
        r = self.real
        return {"workers": len(self.workers), "fixed_cycle": asdict(self.opts.fixed) if self.opts.fixed else None,
                "server_utilisation": max(t.busy_s for t in threads) / max(now, 1e-9),
                "max_queue": max(t.max_queue for t in threads),
                "staleness_histogram": {str(k): hist[k] for k in sorted(hist)},
                "too_stale_histogram": {str(k): dropped[k] for k in sorted(dropped)},
                "staleness_p50_all": float(np.percentile(taus, 50)),
                "staleness_p95_all": float(np.percentile(taus, 95)),
                "max_staleness": self.store.max_staleness, "staleness_lr": self.store.staleness_lr,
                "service_us": self.timing.service.row(), "latency_us": 1e6 * self.opts.latency_s,
                "gbps": self.opts.gbps, "link_efficiency": self.opts.link_efficiency if self.network else None,
                "link_burst_bytes": self.opts.link_burst_bytes if self.network else None,
                "server_nic_use": self.network.use(SERVER, now) if self.network else None,
                "compute_ms_per_gradient": 1e3 * sum(w.compute_s for w in self.workers) / max(gradients, 1),
                "comm_ms_per_gradient": 1e3 * sum(w.comm_s for w in self.workers) / max(gradients, 1),
                "warmup_s_mean": float(np.mean([w.warmup_s for w in self.workers])),
                "real_s": {**r, "compute_s": real_compute,
                           "overhead_s": r["total_s"] - real_compute - r["warmup_s"] - r["eval_s"]},
                **({"shards": len(threads), "placement": self.opts.placement,
                    "shard_utilisation": [t.busy_s / max(now, 1e-9) for t in threads],
                    "card_use": {str(h): self.network.use(h, now) for h in
                                 sorted({SERVER, *(shard_host(k, self.opts.placement) for k in range(len(threads)))})}
                    if self.network else None} if self.shards else {})}


def sim_train_row(view: StatsView, version: int, window: deque, live: int) -> dict[str, float]:
    """The driver's ``train`` row (same keys and windows) plus the server's busy share over the window."""
    (t0, u0, s0, b0), (t1, u1, s1, b1) = window[0], window[-1]
    return {**train_row(view, version, (t0, u0, s0), (t1, u1, s1), live),
            "server/utilisation": (b1 - b0) / max(t1 - t0, 1e-9)}
