"""A sharded parameter server in simulated time (``SimOptions.shards`` = S > 1): S FIFO shard threads, one per slice.

It mirrors :mod:`ddqn.distributed.shards` message for message (see that package's docstrings):

* shard k owns the k-th of S contiguous slices of θ (``shards.slices.bounds``) and counts its own version;
* a worker's FETCH becomes S slice FETCHes sent at once, each naming the version the worker holds of that slice
  (each shard sends its slice only if it changed); the worker goes on when all S are back, at the smallest version
  of the vector (what its ε schedule counts), and keeps the vector for its next PUSH (as ``ShardedClient``);
* a worker's PUSH becomes S slice PUSHes (1/S of the bytes each, plus the 8-byte push id), each naming that shard's
  own version; shard k checks staleness on its own counts and answers with its 32-byte vote; once all S votes are
  back, a COMMIT carrying the S votes goes to every shard, which applies its pending slice only if every vote is
  valid; the worker goes on when all S COMMITs are acknowledged. Every commit reaches every shard, so the shards'
  counts agree once the commits in flight land (θ⁻ resets every ``target_update`` of a shard's own updates).

Time: each shard is one FIFO thread with its own service time per message kind for its slice, :class:`ShardService`'s
a + b/S (a fixed cost per message and a cost per byte of the whole vector, from ``make bench-shard-cost --alone``'s
fit or a :class:`~ddqn.sim.service.ServiceTimes` scaled by 1/S), and transport legs whose payload part scales with
the slice. Placement ``executors`` puts shard k on a host of its own (its own full-duplex card,
:func:`shard_host`); ``driver`` puts every shard on the driver's host, so all bytes share its one card. STATS go to
the driver (the coordinator), as in the real server.

A sharded simulation is timing-only for now (:mod:`ddqn.sim.timing_only`): the shards count versions and staleness
but hold no θ.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ddqn.distributed.shards.slices import bounds
from ddqn.distributed.shards.votes import VOTE
from ddqn.sim.messages import FETCH, PUSH, Message
from ddqn.sim.network import SERVER
from ddqn.sim.server import SimServer
from ddqn.sim.service import ServiceTimes
from ddqn.sim.timing import Timing

COMMIT = "commit"
PLACEMENTS = ("driver", "executors")
PUSH_ID_BYTES = 8  # after a PUSH's slice (ddqn.distributed.shards.server.PUSH_ID)
SHARD_KINDS = ("push", "commit", "fetch", "fetch_both")


def shard_host(shard: int, placement: str) -> int:
    """The network host of shard ``shard``: the driver's (``SERVER``) or one of its own (−2, −3, …)."""
    return SERVER if placement == "driver" else -2 - shard


@dataclass(frozen=True)
class ShardService:
    """A shard's server-thread seconds per message at S shards: ``a`` (per message) + ``b`` / S (its slice's bytes).

    ``a``/``b`` per kind: PUSH (the slice's checks and vote), COMMIT (the votes verified, the slice applied), FETCH
    (θ's slice) and FETCH of θ and θ⁻; ``small_s``: a FETCH answered with versions only. ``source`` says where the
    numbers come from.
    """

    a: dict[str, float]
    b: dict[str, float]
    small_s: float
    source: str = ""

    def at(self, shards: int) -> dict[str, float]:
        """Seconds per message kind of one shard of ``shards``."""
        return {**{k: self.a[k] + self.b[k] / shards for k in SHARD_KINDS}, "fetch_none": self.small_s}

    @classmethod
    def scaled(cls, service: ServiceTimes) -> ShardService:
        """From one server's times: every cost scales with the slice (a = 0), and a COMMIT costs what a STATS does
        (a small message). The default when nothing was measured for shards."""
        return cls({"push": 0.0, "commit": service.stats_s, "fetch": 0.0, "fetch_both": 0.0},
                   {"push": service.push_s, "commit": 0.0, "fetch": service.fetch_s,
                    "fetch_both": service.fetch_both_s}, service.stats_s, "one server's service times ÷ S")

    def row(self) -> dict:
        """The JSON row (µs)."""
        return {"a_us": {k: 1e6 * v for k, v in self.a.items()}, "b_us": {k: 1e6 * v for k, v in self.b.items()},
                "small_us": 1e6 * self.small_s, "source": self.source}


@dataclass(frozen=True)
class ShardTiming(Timing):
    """One shard's :class:`Timing`: ``payload_bytes`` is its slice's; ``per_kind`` its service seconds per kind
    (:meth:`ShardService.at`); ``fraction`` its slice's share of θ (the loopback payload legs scale by it)."""

    per_kind: dict[str, float] = field(default_factory=dict)
    fraction: float = 1.0
    shards: int = 1

    def wire_bytes(self, kind: str) -> tuple[int, int]:
        n = self.payload_bytes
        return {"push": (n + PUSH_ID_BYTES, VOTE.size), COMMIT: (self.shards * VOTE.size, 0), "fetch": (0, n),
                "fetch_both": (0, 2 * n)}.get(kind, (0, 0))

    def service_s(self, kind: str) -> float:
        return self.service.stats_s if kind == "stats" else self.per_kind[kind]

    def legs(self, kind: str) -> tuple[float, float]:
        s = self.service
        h = s.stats_rtt_s / 2
        up = down = h + self.latency_s
        if kind == "push":
            up += max(s.push_rtt_s - 2 * h, 0.0) * self.fraction
        elif kind == "fetch":
            down += max(s.fetch_rtt_s - 2 * h, 0.0) * self.fraction
        elif kind == "fetch_both":
            down += max(s.fetch_both_rtt_s - 2 * h, 0.0) * self.fraction
        return up, down


def shard_timings(service: ServiceTimes, shard_service: ShardService, num_params: int, shards: int,
                  latency_s: float) -> list[ShardTiming]:
    """Each shard's timing: its slice's bytes, the a + b/S service times, payload legs scaled by its slice."""
    per_kind = shard_service.at(shards)
    return [ShardTiming(service, 4 * (hi - lo), latency_s, per_kind, (hi - lo) / num_params, shards)
            for lo, hi in bounds(num_params, shards)]


@dataclass
class SliceMessage(Message):
    """A message to one shard: ``parent`` the worker's FETCH or PUSH it is part of; a PUSH's and a COMMIT's
    ``push_id``; a COMMIT's ``votes`` (every shard's, valid or not, in shard order)."""

    shard: int = 0
    parent: Message | None = None
    push_id: int = 0
    votes: tuple[bool, ...] = ()


class SimShard(SimServer):
    """Shard ``shard``: one FIFO thread over its slice's counts (``store``, a ``timing_only.CountingStore``).

    FETCH as one server's (its slice). PUSH: staleness on this shard's counts; a valid slice is kept pending (one
    per worker) and the reply is its vote (True/False); an invalid one is dropped (``too stale``). COMMIT: the
    pending slice is applied if every vote is valid, else dropped (``vetoed``); the reply says whether it was.
    """

    def __init__(self, shard: int, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.shard = shard
        self._pending: dict[int, tuple[int, int]] = {}  # partition → (push id, version it was computed on)

    def _handle(self, msg: Message):
        if msg.partition not in self._joined:
            self._joined.add(msg.partition)
            self.stats.joined(msg.partition, 0, 0, "sim")
        if msg.kind == FETCH:
            return self._fetch(msg)
        if msg.kind == PUSH:
            staleness = self.store.version - msg.version
            valid = staleness >= 0 and self.store.admits(staleness)
            if valid:
                self._pending[msg.partition] = (msg.push_id, msg.version)
            else:
                self.stats.dropped("too stale")
                self.too_stale[staleness] += 1
            return valid, "push"
        pending = self._pending.pop(msg.partition, None)
        if not (all(msg.votes) and pending is not None and pending[0] == msg.push_id):
            self.stats.dropped("vetoed")
            return False, COMMIT
        staleness = self.store.version - pending[1]
        self.stats.pushed(msg.partition, staleness)
        self.staleness[staleness] += 1
        self.store.apply(None, staleness)
        return True, COMMIT
