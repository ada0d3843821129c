"""What the parameter server counts, written by the server thread and read by the driver as one copy.

Every write and the copy happen under one lock: :meth:`ServerStats.view` returns a :class:`StatsView`
whose numbers belong together (no dict that changes size while someone iterates over it).
"""
from __future__ import annotations

import copy
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field

import numpy as np

from ddqn.distributed.protocol import DROP_REASONS


@dataclass
class WorkerInfo:
    """What the server knows of one worker (partition), across its attempts."""

    partition: int
    attempt: int = 0
    pid: int = 0
    host: str = ""
    pushes: int = 0
    env_steps: int = 0  # reported in this run (all attempts)
    prior_env_steps: int = 0  # played before this run (restored by --resume)
    episodes: int = 0
    compute_s: float = 0.0
    comm_s: float = 0.0
    last_seen: float = field(default_factory=time.monotonic)
    rejoins: int = 0


@dataclass(frozen=True)
class StatsView:
    """A consistent copy of the server's counters at one moment."""

    workers: dict[int, WorkerInfo]
    staleness: tuple[int, ...]  # of the last gradients applied (at most STALENESS_WINDOW)
    scores: tuple[float, ...]  # of the last finished episodes over all workers (at most SCORE_WINDOW)
    episodes: int  # finished episodes reported in this run
    dropped: dict[str, int]  # dropped messages by reason
    busy_s: float  # the server thread's seconds spent handling messages
    parts: dict[str, dict[str, float]] = field(default_factory=dict)  # kind → part → seconds (PART_NAMES; "n": count)
    cpu_s: float = 0.0  # the server thread's CPU seconds in those messages (busy_s less the waits for a core)

    @property
    def env_steps(self) -> int:
        """Env steps reported in this run, summed over all workers."""
        return sum(w.env_steps for w in self.workers.values())

    def staleness_percentiles(self) -> tuple[float, float]:
        """(p50, p95) of the recent staleness (0, 0 before any gradient)."""
        stal = np.array(self.staleness or (0,))
        return float(np.percentile(stal, 50)), float(np.percentile(stal, 95))


# Where the server thread's time per message goes: dequeuing it from ZeroMQ, verifying its tag, the checks of a
# gradient or report, the solver's apply, the copy of θ a FETCH publishes (once per version), sealing the reply and
# handing it to ZeroMQ. Message kinds: push, stats,
# fetch (θ), fetch_both (θ and θ⁻), fetch_none (versions only), hello, other (dropped before its kind was known).
PART_NAMES = ("receive", "verify", "check", "apply", "publish", "seal", "send")


class ServerStats:
    """Counters of a running server; mutated only through its methods (each under the lock)."""

    STALENESS_WINDOW = 2000
    SCORE_WINDOW = 200

    def __init__(self, prior_env_steps: dict[int, int] | None = None) -> None:
        self._lock = threading.Lock()
        self._prior = dict(prior_env_steps or {})
        self._workers: dict[int, WorkerInfo] = {p: WorkerInfo(p, prior_env_steps=n) for p, n in self._prior.items()}
        self._joined: set[int] = set()
        self._staleness: deque[int] = deque(maxlen=self.STALENESS_WINDOW)
        self._scores: deque[float] = deque(maxlen=self.SCORE_WINDOW)
        self._episodes = 0
        self._dropped: Counter[str] = Counter()
        self._busy_s = self._cpu_s = 0.0
        self._parts: dict[str, Counter[str]] = {}

    def joined(self, partition: int, attempt: int, pid: int, host: str) -> tuple[bool, int]:
        """Record a worker whose session proved the key; returns (whether it is a rejoin, env steps played)."""
        with self._lock:
            info = self._workers.setdefault(partition, WorkerInfo(partition))
            rejoin = partition in self._joined and (attempt != info.attempt or pid != info.pid)
            self._joined.add(partition)
            info.rejoins += rejoin
            info.attempt, info.pid, info.host, info.last_seen = attempt, pid, host, time.monotonic()
            return rejoin, info.prior_env_steps + info.env_steps

    def played_of(self, partition: int) -> int:
        """Env steps ``partition`` played so far (earlier attempts and resumed runs): where its ε continues."""
        with self._lock:
            info = self._workers.get(partition)
            return 0 if info is None else info.prior_env_steps + info.env_steps

    def joined_count(self) -> int:
        """Partitions that have said HELLO in this run."""
        with self._lock:
            return len(self._joined)

    def seen(self, partition: int) -> None:
        with self._lock:
            self._workers[partition].last_seen = time.monotonic()

    def pushed(self, partition: int, staleness: int) -> None:
        with self._lock:
            self._workers[partition].pushes += 1
            self._staleness.append(staleness)

    def reported(self, partition: int, scores: list[float], env_steps: int, compute_s: float, comm_s: float) -> None:
        """Apply one validated STATS report."""
        with self._lock:
            info = self._workers[partition]
            self._scores.extend(scores)
            self._episodes += len(scores)
            info.episodes += len(scores)
            info.env_steps += env_steps
            info.compute_s += compute_s
            info.comm_s += comm_s

    def dropped(self, reason: str) -> None:
        """Count a dropped message under ``reason``, one of ``protocol.DROP_REASONS`` (a fixed set of keys)."""
        if reason not in DROP_REASONS:
            raise ValueError(f"unknown drop reason {reason!r}")
        with self._lock:
            self._dropped[reason] += 1

    def busy(self, seconds: float, kind: str | None = None, parts: dict[str, float] | None = None,
             cpu_s: float = 0.0) -> None:
        """The server thread spent ``seconds`` (``cpu_s`` of them on a core) on one message of ``kind``, ``parts``
        of it by part (PART_NAMES)."""
        with self._lock:
            self._busy_s += seconds
            self._cpu_s += cpu_s
            if kind is not None:
                c = self._parts.get(kind)
                if c is None:  # not setdefault: it would make a Counter per message
                    c = self._parts[kind] = Counter()
                for name, s in (parts or {}).items():  # Counter.update would check for a Mapping per message
                    c[name] += s
                c["n"] += 1
                c["total"] += seconds

    def view(self) -> StatsView:
        """A consistent copy of everything (the driver's only way to read the counters)."""
        with self._lock:
            return StatsView({p: copy.copy(w) for p, w in self._workers.items() if p in self._joined},
                             tuple(self._staleness), tuple(self._scores), self._episodes, dict(self._dropped),
                             self._busy_s, {k: dict(c) for k, c in self._parts.items()}, self._cpu_s)

    def played(self) -> dict[str, int]:
        """Env steps per partition, including partitions restored by --resume that have not joined yet."""
        with self._lock:
            return {str(p): w.prior_env_steps + w.env_steps for p, w in self._workers.items()}


def train_row(view: StatsView, version: int, first: tuple[float, int, int], last: tuple[float, int, int],
              live: int) -> dict[str, float]:
    """The ``train`` metrics row of a distributed run (the driver's and the simulator's): rates between the
    window's ``first`` and ``last`` (seconds, server updates, env steps), recent scores, staleness, workers."""
    (t0, u0, s0), (t1, u1, s1) = first, last
    dt = max(t1 - t0, 1e-9)
    p50, p95 = view.staleness_percentiles()
    return {"server/updates": version, "server/updates_per_s": (u1 - u0) / dt,
            "rollout/env_steps_per_s": (s1 - s0) / dt,
            "rollout/ep_score_mean": float(np.mean(view.scores)) if view.scores else 0.0,
            "rollout/episodes": view.episodes, "server/staleness_p50": p50, "server/staleness_p95": p95,
            "server/live_workers": live, "server/dropped": sum(view.dropped.values())}
