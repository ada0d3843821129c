"""One simulated worker: :class:`ddqn.distributed.worker.Worker`'s loop as events in simulated time.

Each worker has its own game, replay memory D, ε schedule and seeds exactly as a real worker of the same
partition (seed ``cfg.seed + 1000 (partition + 1)``, task attempt 0), and plays the same
:class:`~ddqn.dqn.loop.ExperienceLoop`; all workers share one Q/Q̂ pair of real Caffe nets, loaded with the θ and θ⁻
the worker last fetched before its turn. Its loop, as the real one (``fetch_every``, ``push_every``, a STATS
report every 2 s):

    fetch θ (every fetch_every steps) → θ copy-in → act, store → gradient (when due) → push (every push_every)
    → report (every 2 s of simulated time)

and, as the real one, a push asks for θ when the step after it fetches, and that step takes θ from the push's reply
instead of sending a FETCH (a sharded server's reply carries it; one server's never does).

A turn's compute costs the seconds it really took here (``time.perf_counter`` around the θ copy-in the real
worker would do, the env step and the gradient), as if every worker had a core of this machine — or the
:class:`~ddqn.sim.timing.FixedCycle` table's seconds.
"""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from ddqn.config import Config
from ddqn.distributed.client import Params
from ddqn.distributed.protocol import NO_VERSION
from ddqn.distributed.worker import STATS_EVERY_S
from ddqn.dqn.exploration import exploration
from ddqn.dqn.loop import ExperienceLoop
from ddqn.net.qnet import QNetwork
from ddqn.replay import make_replay
from ddqn.sim.messages import FETCH, PUSH, STATS, Message
from ddqn.sim.timing import FixedCycle


class SharedNets:
    """The one Q/Q̂ pair every simulated worker computes with, and which θ and θ⁻ versions they hold now."""

    def __init__(self, q: QNetwork, q_hat: QNetwork) -> None:
        self.q, self.q_hat = q, q_hat
        self.theta: np.ndarray | None = None  # the buffers last loaded (published, immutable per version)
        self.target: np.ndarray | None = None

    def load(self, theta: np.ndarray, target: np.ndarray, fresh_theta: bool, fresh_target: bool) -> float:
        """Load θ and θ⁻ unless already loaded; returns the seconds of the copy-ins a real worker does (fresh ones)."""
        charged = 0.0
        for net, want, fresh, attr in ((self.q, theta, fresh_theta, "theta"), (self.q_hat, target, fresh_target,
                                                                               "target")):
            if fresh or getattr(self, attr) is not want:
                t = time.perf_counter()
                net.set_params(want)
                if fresh:
                    charged += time.perf_counter() - t
                setattr(self, attr, want)
        return charged


class SimWorker:
    """Partition ``partition`` of ``workers``: its experience loop and where it is in its cycle.

    ``send(msg, at)`` hands a request to the transport at simulated time ``at``; ``at(t, fn)`` schedules a step.
    """

    def __init__(self, cfg: Config, nets: SharedNets, partition: int, workers: int, fixed: FixedCycle | None) -> None:
        self.cfg, self.nets, self.partition, self.workers, self.fixed = cfg, nets, partition, workers, fixed
        self.seed = cfg.seed + 1_000 * (partition + 1)  # as ddqn.distributed.worker.Worker, task attempt 0
        history, h, w = nets.q.spec.state_shape
        # always in RAM: an LMDB memory samples the same batches, and simulated workers have no directory of their own
        self.replay = make_replay(replace(cfg, replay_backend="ram"), (h, w), history, self.seed, Path())
        self.loop = ExperienceLoop(cfg, nets.q, nets.q_hat, self.replay, np.random.default_rng(self.seed), self.seed,
                                   explore=exploration(cfg, partition, workers))
        self.version = self.target_version = NO_VERSION
        self.theta: np.ndarray | None = None
        self.target: np.ndarray | None = None
        self.fresh_theta = self.fresh_target = False
        self.pushed: Params | None = None  # θ a push's reply carried, for the fetch of the step right after it
        self.t = self.pending = 0
        self.base = 0
        self.grad_sum = np.zeros(nets.q.num_params, np.float32)
        self.outgoing: np.ndarray | None = None
        self.counts = {"env_steps": 0, "pushes": 0, "episodes": 0, "gradients": 0}
        self.compute_s = self.comm_s = 0.0  # simulated seconds, as a real worker's split
        self.real_compute_s = 0.0  # seconds this process really spent computing for this worker
        self.warmup_s = 0.0
        self.last_stats = 0.0
        self._reported = {"env_steps": 0, "compute_s": 0.0, "comm_s": 0.0}

    def warm_up(self) -> float:
        """Fill D with the random policy now (real time); returns the simulated seconds it costs."""
        t = time.perf_counter()
        self.loop.warm_up(self.cfg.replay_warmup)
        self.warmup_s = time.perf_counter() - t
        return self.warmup_s

    # -- the cycle, one event at a time (sim: the simulation, with .events, .send) ------------------------------
    def start(self, sim) -> None:
        """Worker.run: the first FETCH (θ and θ⁻), then the warm-up, then the loop."""
        sim.send(Message(FETCH, self.partition, sim.events.now, NO_VERSION, NO_VERSION))

    def on_reply(self, sim, msg: Message, reply: Params | None) -> None:
        now = sim.events.now
        self.comm_s += now - msg.sent_at
        if msg.kind == FETCH:
            self._take(reply)
            if msg.version == NO_VERSION:  # the first FETCH: warm-up, then the loop
                warm = self.fixed.warmup(self.partition, self.workers, sim.timing, self.cfg.train_every) \
                    if self.fixed else self.warmup_s
                self.last_stats = now + warm
                sim.events.at(now + warm, self.top, sim)
            else:
                self.compute(sim)
        elif msg.kind == PUSH:
            self.counts["pushes"] += 1
            self.pushed = reply
            self._run_steps(sim.store.version)  # the ACK's update count (the server's, when it arrives)
            self.after(sim)
        else:
            self.last_stats = now
            self.top(sim)

    def _take(self, p: Params) -> None:
        if p.theta is not None:
            self.theta, self.fresh_theta = p.theta, True
        if p.target is not None:
            self.target, self.fresh_target = p.target, True
        self.version, self.target_version = p.version, p.target_version
        self._run_steps(p.version)

    def _run_steps(self, updates: int) -> None:
        """The run's env steps for ``global`` ε schedules, from the server's update count (as Worker._run_steps)."""
        self.loop.run_steps = max(updates, 0) * self.cfg.train_every * self.cfg.push_every

    def top(self, sim) -> None:
        """The loop's head: t += 1; FETCH every ``fetch_every`` steps."""
        self.t += 1
        pushed, self.pushed = self.pushed, None
        if self.t % self.cfg.fetch_every != 0:
            self.compute(sim)
        elif pushed is not None:  # θ came with the push just before
            self._take(pushed)
            self.compute(sim)
        else:
            sim.send(Message(FETCH, self.partition, sim.events.now, self.version, self.target_version))

    def compute(self, sim) -> None:
        """θ copy-in (if fetched), one env step and, when due, a gradient: real work, timed."""
        cfg, nets = self.cfg, self.nets
        copy_s = nets.load(self.theta, self.target, self.fresh_theta, self.fresh_target)
        self.fresh_theta = self.fresh_target = False
        tick = time.perf_counter()
        due = self.loop.step()
        if due:
            _, grad = self.loop.gradient()
            if self.pending == 0:
                self.base = self.version
            if cfg.push_every == 1:
                self.outgoing = grad
            else:
                np.add(self.grad_sum, grad, out=self.grad_sum)
            self.pending += 1
            self.counts["gradients"] += 1
        real = time.perf_counter() - tick
        self.real_compute_s += real + copy_s
        spent = (self.fixed.step_s + (self.fixed.gradient_s if due else 0.0)) if self.fixed else real
        self.compute_s += spent
        self.counts["env_steps"] += 1
        sim.stepped()
        done_at = sim.events.now + (0.0 if self.fixed else copy_s) + spent
        if self.pending == cfg.push_every:
            grad = self.outgoing.copy() if cfg.push_every == 1 else self.grad_sum.copy()  # q's buffer is shared
            if cfg.push_every > 1:
                self.grad_sum[:] = 0
            sim.send(Message(PUSH, self.partition, done_at, self.base, grad=grad, summed=self.pending,
                             fetch=(self.t + 1) % cfg.fetch_every == 0))
            self.pending = 0
        else:
            sim.events.at(done_at, self.after, sim)

    def after(self, sim) -> None:
        """Report every 2 s of simulated time (scores, env steps, time split), then the next step."""
        now = sim.events.now
        if now - self.last_stats > STATS_EVERY_S:
            sim.send(Message(STATS, self.partition, now, report=self.report()))
        else:
            self.top(sim)

    def report(self) -> dict:
        """A STATS report: finished episodes' scores, and env steps and seconds since the last report."""
        scores = self.loop.take_scores()
        self.counts["episodes"] += len(scores)
        cur = {"env_steps": self.counts["env_steps"], "compute_s": self.compute_s, "comm_s": self.comm_s}
        delta = {k: cur[k] - self._reported[k] for k in cur}
        self._reported = cur
        return {"scores": scores, **delta}
