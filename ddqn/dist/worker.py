"""A distributed worker (one per Spark partition): the slides' "Software" box, worker side.

    spawn Caffe with the broadcast architecture
    populate a local replay memory with a random policy (data never leaves the worker)
    repeat until the server says stop:
        fetch the latest θ (every ``fetch_every`` steps; θ⁻ when its version changed)
        act ε-greedily in its own game, store the experience
        sample a minibatch, compute the gradient, push it (every step, or summed over ``push_every``)
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ddqn.dqn.qlearning import LinearSchedule, dqn_gradient, epsilon_greedy
from ddqn.dist.client import Params, ServerClient, ServerGone
from ddqn.config import Config, make_config
from ddqn.net.netspec import parse_netspec
from ddqn.net.qnet import QNetwork
from ddqn.replay.memory import ReplayMemory
from ddqn.game import make_env
from ddqn.replay.fill import fill_random
from ddqn.game.frames import FrameStack

STATS_EVERY_S = 2.0


@dataclass(frozen=True)
class JobSpec:
    """What the driver broadcasts to every worker (as JSON text)."""

    net_text: str
    net_source: str
    config: dict
    address: str
    secret_hex: str

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @staticmethod
    def from_json(text: str) -> "JobSpec":
        return JobSpec(**json.loads(text))


class Worker:
    """One worker's nets, replay memory, game and connection; :meth:`run` until the server says stop."""

    def __init__(self, job: JobSpec, partition: int, attempt: int) -> None:
        self.cfg: Config = make_config(job.config, "broadcast config")
        self.spec = parse_netspec(job.net_text, job.net_source)
        self.partition, self.attempt = partition, attempt
        self.q, self.q_hat = QNetwork(self.spec), QNetwork(self.spec)
        self.client = ServerClient(job.address, bytes.fromhex(job.secret_hex), partition, attempt,
                                   self.spec.num_params, self.cfg.server_timeout, self.cfg.auth)
        self.version = self.target_version = -1
        self.seed = self.cfg.seed + 1_000 * (partition + 1) + 97 * attempt
        self.counts = {"env_steps": 0, "pushes": 0, "episodes": 0}
        self.compute_s = self.comm_s = 0.0

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
                "executor_pid": executor_pid(), **self.counts, "compute_s": self.compute_s, "comm_s": self.comm_s}

    def _loop(self) -> None:
        cfg, spec = self.cfg, self.spec
        history, h, w = spec.state_shape
        replay = ReplayMemory(cfg.replay_capacity, (h, w), history, self.seed)
        fill_random(replay, cfg.replay_warmup, cfg, h, self.seed)
        env, frames = make_env(cfg, h), FrameStack(history)
        rng = np.random.default_rng(self.seed)
        epsilon = LinearSchedule(cfg.eps_start, cfg.eps_end, cfg.eps_decay_steps)
        t0 = self.client.prior_env_steps  # a rejoining or resumed worker continues its ε schedule
        frame, _ = env.reset(seed=self.seed)
        replay.start_episode(frame)
        phi = frames.reset(frame)
        grad_sum = np.zeros(spec.num_params, np.float32)
        pending, base = 0, self.version
        scores: list[int] = []
        reported = {"env_steps": 0, "compute_s": 0.0, "comm_s": 0.0}
        last_stats = time.monotonic()
        t = 0
        while True:
            t += 1
            if t % cfg.fetch_every == 0:
                tick = time.perf_counter()
                params = self.client.fetch(self.version, self.target_version)
                self.comm_s += time.perf_counter() - tick
                if not self._take(params):
                    break
            tick = time.perf_counter()
            a = epsilon_greedy(self.q, phi, epsilon(t0 + t), rng)
            frame, r, terminated, truncated, info = env.step(a)
            phi = frames.push(frame)
            replay.add(a, r, frame, terminated)
            self.counts["env_steps"] += 1
            if terminated or truncated:
                scores.append(int(info["score"]))
                self.counts["episodes"] += 1
                frame, _ = env.reset()
                replay.start_episode(frame)
                phi = frames.reset(frame)
            stop = False
            if t % cfg.train_every == 0:
                _, grad = dqn_gradient(self.q, self.q_hat, replay.sample(spec.batch_size), cfg.gamma,
                                       double_dqn=cfg.double_dqn, error_clip=cfg.error_clip)
                if pending == 0:
                    base = self.version
                grad_sum = grad if cfg.push_every == 1 else np.add(grad_sum, grad, out=grad_sum)
                pending += 1
                self.compute_s += time.perf_counter() - tick
                if pending == cfg.push_every:
                    tick = time.perf_counter()
                    _, stop = self.client.push(grad_sum, base, pending)
                    self.comm_s += time.perf_counter() - tick
                    self.counts["pushes"] += 1
                    pending = 0
                    if cfg.push_every > 1:
                        grad_sum[:] = 0
            else:
                self.compute_s += time.perf_counter() - tick
            if stop or time.monotonic() - last_stats > STATS_EVERY_S:
                stop = self._report(scores, reported) or stop
                scores, last_stats = [], time.monotonic()
            if stop:
                break

    def _report(self, scores: list[int], reported: dict) -> bool:
        """Send episode scores and the compute/communicate split since the last report."""
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
