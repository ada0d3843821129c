"""A distributed worker (one per Spark partition): the slides' "Software" box, worker side.

    spawn Caffe with the broadcast architecture
    populate a local replay memory with a random policy (data never leaves the worker)
    repeat until the server says stop:
        fetch the latest θ (every ``fetch_every`` steps; θ⁻ when its version changed)
        act ε-greedily in its own game, store the experience
        sample a minibatch, compute the gradient, push it (every step, or summed over ``push_every``)

A sharded server's reply to a push can carry θ: when the step after a push fetches, the push asks for it
(``push_and_fetch``) and that step takes it instead of sending a FETCH (the same θ, one message fewer per shard).
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from ddqn.config import Config, make_config
from ddqn.distributed.client import Params, ServerClient, ServerGone
from ddqn.distributed.job import JobSpec
from ddqn.distributed.shards.client import ShardedClient
from ddqn.dqn.exploration import exploration
from ddqn.dqn.loop import ExperienceLoop
from ddqn.dqn.phases import NO_CLOCK, PhaseClock
from ddqn.game import game_actions
from ddqn.net.blas_core import blas_info
from ddqn.net.netspec import parse_netspec
from ddqn.net.qnet import QNetwork
from ddqn.replay import make_replay

STATS_EVERY_S = 2.0


def replay_dir(partition: int, attempt: int) -> Path:
    """Where a worker's LMDB replay lives: the executor's first Spark local directory (``SPARK_LOCAL_DIRS``,
    which Spark sets for executors on a cluster), else the system temp directory; one fresh directory per
    task attempt, removed when the worker ends (a retried task regenerates its replay, as the slides say)."""
    base = (os.environ.get("SPARK_LOCAL_DIRS") or "").split(",")[0] or tempfile.gettempdir()
    Path(base).mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"ddqn-replay-p{partition}-a{attempt}-", dir=base))


class Worker:
    """One worker's nets, replay memory, game and connection; :meth:`run` until the server says stop."""

    def __init__(self, job: JobSpec, partition: int, attempt: int, clock: PhaseClock = NO_CLOCK) -> None:
        self.cfg: Config = make_config(job.config, "broadcast config")
        self.spec = parse_netspec(job.net_text, job.net_source, game_actions(self.cfg))
        self.partition, self.attempt = partition, attempt
        self.q, self.q_hat = QNetwork(self.spec), QNetwork(self.spec)
        self.client: ServerClient | ShardedClient = ServerClient(
            job.address, bytes.fromhex(job.secret_hex), partition, attempt, self.spec.num_params,
            self.cfg.server_timeout, self.cfg.auth)
        if self.client.welcome.get("shards"):  # a sharded server: θ from its shards, STATS to the driver
            self.client = ShardedClient(self.client, bytes.fromhex(job.secret_hex), self.spec.num_params,
                                        self.cfg.server_timeout, self.cfg.auth)
        self.version = self.target_version = -1
        self.seed = self.cfg.seed + 1_000 * (partition + 1) + 97 * attempt
        self.counts = {"env_steps": 0, "pushes": 0, "episodes": 0}
        self.compute_s = self.comm_s = 0.0
        self.replay_dir = ""  # where an LMDB replay lived (removed at the end)
        self.clock = clock  # time per phase (the worker benchmark's breakdown); nothing by default

    def _take(self, p: Params) -> bool:
        """Load what a FETCH returned; False if the server says stop."""
        if p.theta is not None:
            self.q.set_params(p.theta)
        if p.target is not None:
            self.q_hat.set_params(p.target)
        self.version, self.target_version = p.version, p.target_version
        return not p.stop

    def run(self) -> dict:
        """Fill replay, then loop fetch → act → store → sample → gradient → push. Returns counters."""
        try:
            if self._take(self.client.fetch()):
                self._loop()
        except ServerGone as exc:
            print(f"worker {self.partition}: {exc}; exiting", flush=True)
        finally:
            self.client.close()
        return {"partition": self.partition, "attempt": self.attempt, "pid": os.getpid(),
                "executor_pid": executor_pid(), **self.counts, "reconnects": self.client.reconnects,
                "replay": self.cfg.replay_backend, "replay_dir": self.replay_dir, "compute_s": self.compute_s,
                "comm_s": self.comm_s, "blas": blas_info()}

    def _loop(self) -> None:
        cfg, spec = self.cfg, self.spec
        history, h, w = spec.state_shape
        lmdb_dir = replay_dir(self.partition, self.attempt) if cfg.replay_backend == "lmdb" else Path()
        self.replay_dir = str(lmdb_dir) if cfg.replay_backend == "lmdb" else ""
        replay = make_replay(cfg, (h, w), history, self.seed, lmdb_dir)
        try:
            loop = ExperienceLoop(cfg, self.q, self.q_hat, replay, np.random.default_rng(self.seed), self.seed,
                                  env_steps=self.client.prior_env_steps, clock=self.clock,  # ε continues
                                  explore=exploration(cfg, self.partition, cfg.workers))
            loop.run_steps = self._run_steps()
            loop.warm_up(cfg.replay_warmup)
            self.clock.restart()
            self._play(loop)
        finally:
            replay.close()
            if cfg.replay_backend == "lmdb":
                shutil.rmtree(lmdb_dir, ignore_errors=True)

    def _play(self, loop: ExperienceLoop) -> None:
        """fetch θ → the experience loop → push each gradient, until the server says stop."""
        cfg = self.cfg
        grad_sum = np.zeros(self.spec.num_params, np.float32)
        pending, base = 0, self.version
        fresh: Params | None = None  # θ that came with the last push, for the fetch of the step right after it
        reported = {"env_steps": 0, "compute_s": 0.0, "comm_s": 0.0}
        last_stats = time.monotonic()
        t = 0
        while True:
            t += 1
            if t % cfg.fetch_every == 0:
                tick = time.perf_counter()
                params = fresh or self.client.fetch(self.version, self.target_version)
                self.comm_s += time.perf_counter() - tick
                self.clock.lap("fetch")
                if not self._take(params):
                    break
                loop.run_steps = self._run_steps()
                self.clock.lap("θ copy-in")
            fresh = None
            tick = time.perf_counter()
            due = loop.step()
            self.counts["env_steps"] += 1
            stop = False
            if due:
                _, grad = loop.gradient()
                if pending == 0:
                    base = self.version
                grad_sum = grad if cfg.push_every == 1 else np.add(grad_sum, grad, out=grad_sum)
                pending += 1
                self.compute_s += time.perf_counter() - tick
                if pending == cfg.push_every:
                    tick = time.perf_counter()
                    if (t + 1) % cfg.fetch_every == 0:  # 7. the gradient goes to the server (θ back, if it can)
                        updates, stop, fresh = self.client.push_and_fetch(grad_sum, base, pending)
                    else:
                        updates, stop = self.client.push(grad_sum, base, pending)
                    loop.run_steps = self._run_steps(updates)
                    self.comm_s += time.perf_counter() - tick
                    self.clock.lap("push")
                    self.counts["pushes"] += 1
                    pending = 0
                    if cfg.push_every > 1:
                        grad_sum[:] = 0
            else:
                self.compute_s += time.perf_counter() - tick
            if stop or time.monotonic() - last_stats > STATS_EVERY_S:
                stop = self._report(loop.take_scores(), reported) or stop
                last_stats = time.monotonic()
                self.clock.lap("stats")
            if stop:
                break

    def _run_steps(self, updates: int | None = None) -> int:
        """The run's env steps as the server's update count gives them (``global`` ε schedules): each update one
        worker's ``train_every`` × ``push_every`` env steps; ``updates`` from a push's ACK, else the θ held."""
        updates = max(self.version if updates is None else updates, 0)
        return updates * self.cfg.train_every * self.cfg.push_every

    def _report(self, scores: list[int], reported: dict) -> bool:
        """Send episode scores and the compute/communicate split since the last report."""
        self.counts["episodes"] += len(scores)
        now = {"env_steps": self.counts["env_steps"], "compute_s": self.compute_s, "comm_s": self.comm_s}
        delta = {k: now[k] - reported[k] for k in now}
        reported.update(now)
        return self.client.stats(scores, **delta)


def executor_pid() -> int:
    """Process id of the Spark executor JVM this Python worker serves (its nearest ``java`` ancestor), or 0."""
    pid = os.getppid()
    while pid > 1:
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == "java":
                return pid
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return 0
    return 0


def run_partition(job_json: str, partition: int, attempt: int) -> dict:
    """Entry point of a Spark task: one worker for ``partition`` (task attempt ``attempt``)."""
    return Worker(JobSpec.from_json(job_json), partition, attempt).run()
