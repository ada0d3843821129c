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
* a PUSH whose worker fetches at its next step (``Message.fetch``) sends COMMITs that ask for θ (naming the slice's
  θ and θ⁻ versions the worker holds, 16 bytes more): each shard answers as a FETCH would right after the commit,
  and the worker takes that θ instead of fetching (``shards.server``'s COMMIT with ``F_THETA``).

Time: each shard is one FIFO thread with its own service time per message kind for its slice, :class:`ShardService`'s
a + b/S (a fixed cost per message and a cost per byte of the whole vector, from ``make bench-shard-cost --alone``'s
fit or a :class:`~ddqn.sim.service.ServiceTimes` scaled by 1/S), and transport legs whose payload part scales with
the slice. Placement ``executors`` puts shard k on a host of its own (its own full-duplex card,
:func:`shard_host`); ``driver`` puts every shard on the driver's host, so all bytes share its one card. STATS go to
the driver (the coordinator), as in the real server.

In a learning simulation each shard holds its slice of θ, θ⁻ and the solver history (a real
:class:`~ddqn.distributed.store.ParameterStore` over ``shards.slices.shard_solver``) and applies its slice of every
committed gradient, so with one worker S shards reach the θ one server would, bit for bit; :class:`ShardedStore`
puts the slices together where the run reads one store (evaluations, the final snapshot, the version). In a
timing-only one (:mod:`ddqn.sim.timing_only`) the shards count versions and staleness and hold no θ.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ddqn.distributed.client import Params
from ddqn.distributed.protocol import NO_VERSION
from ddqn.distributed.shards.slices import bounds
from ddqn.distributed.shards.votes import VOTE
from ddqn.net.netspec import ParamBlob
from ddqn.sim.messages import FETCH, PUSH, Message
from ddqn.sim.network import SERVER
from ddqn.sim.server import SimServer
from ddqn.sim.service import ServiceTimes
from ddqn.sim.timing import Timing
from ddqn.solvers.flat import FlatSolver, SolverSpec, make_solver

COMMIT = "commit"
PLACEMENTS = ("driver", "executors")
PUSH_ID_BYTES = 8  # after a PUSH's slice (ddqn.distributed.shards.server.PUSH_ID)
SHARD_KINDS = ("push", "commit", "commit_fetch", "fetch", "fetch_both")
HAVE_BYTES = 16  # after a COMMIT's votes when it asks for θ (ddqn.distributed.shards.server.HAVE)


def shard_host(shard: int, placement: str) -> int:
    """The network host of shard ``shard``: the driver's (``SERVER``) or one of its own (−2, −3, …)."""
    return SERVER if placement == "driver" else -2 - shard


@dataclass(frozen=True)
class ShardService:
    """A shard's server-thread seconds per message at S shards: ``a`` (per message) + ``b`` / S (its slice's bytes).

    ``a``/``b`` per kind: PUSH (the slice's checks and vote), COMMIT (the votes verified, the slice applied),
    COMMIT answered with θ's slice (``commit_fetch``), FETCH (θ's slice) and FETCH of θ and θ⁻; ``small_s``: a FETCH
    answered with versions only. A COMMIT answered with θ and θ⁻ costs ``commit_fetch`` + (``fetch_both`` −
    ``fetch``); one answered with versions only, a COMMIT's. ``source`` says where the numbers come from.
    """

    a: dict[str, float]
    b: dict[str, float]
    small_s: float
    source: str = ""

    def at(self, shards: int) -> dict[str, float]:
        """Seconds per message kind of one shard of ``shards``."""
        per = {k: self.a[k] + self.b[k] / shards for k in SHARD_KINDS}
        return {**per, "fetch_none": self.small_s, "commit_fetch_none": per["commit"],
                "commit_fetch_both": per["commit_fetch"] + per["fetch_both"] - per["fetch"]}

    @classmethod
    def scaled(cls, service: ServiceTimes) -> ShardService:
        """From one server's times: every cost scales with the slice (a = 0), a COMMIT costs what a STATS does
        (a small message), and one answered with θ that plus a FETCH's. The default when nothing was measured for
        shards."""
        return cls({"push": 0.0, "commit": service.stats_s, "commit_fetch": service.stats_s, "fetch": 0.0,
                    "fetch_both": 0.0},
                   {"push": service.push_s, "commit": 0.0, "commit_fetch": service.fetch_s, "fetch": service.fetch_s,
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
        n, cast = self.payload_bytes, self.shards * VOTE.size
        return {"push": (n + PUSH_ID_BYTES, VOTE.size), COMMIT: (cast, 0), "fetch": (0, n), "fetch_both": (0, 2 * n),
                "commit_fetch": (cast + HAVE_BYTES, n), "commit_fetch_both": (cast + HAVE_BYTES, 2 * n),
                "commit_fetch_none": (cast + HAVE_BYTES, 0)}.get(kind, (0, 0))

    def service_s(self, kind: str) -> float:
        return self.service.stats_s if kind == "stats" else self.per_kind[kind]

    def legs(self, kind: str) -> tuple[float, float]:
        s = self.service
        h = s.stats_rtt_s / 2
        up = down = h + self.latency_s
        if kind == "push":
            up += max(s.push_rtt_s - 2 * h, 0.0) * self.fraction
        elif kind in ("fetch", "commit_fetch"):
            down += max(s.fetch_rtt_s - 2 * h, 0.0) * self.fraction
        elif kind in ("fetch_both", "commit_fetch_both"):
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
    ``push_id``; a COMMIT's ``votes`` (every shard's, valid or not, in shard order); a COMMIT that asks for θ has
    ``fetch`` and the slice's θ and θ⁻ versions the worker holds."""

    shard: int = 0
    parent: Message | None = None
    push_id: int = 0
    votes: tuple[bool, ...] = ()


class SimShard(SimServer):
    """Shard ``shard``: one FIFO thread over its slice (``store``: a slice's ParameterStore, or a
    ``timing_only.CountingStore``).

    FETCH as one server's (its slice; with ``dc_lambda`` it keeps the slice sent, as the real shard does). PUSH:
    staleness on this shard's version; a valid slice is kept pending (one per worker) and the reply is its vote
    (True/False); an invalid one is dropped (``too stale``). COMMIT: the pending slice is applied if every vote is
    valid (the mean of a summed gradient, as one server; DC-ASGD against the slice the worker fetched), else dropped
    (``vetoed``); the reply says whether it was, or, for a COMMIT that asks for θ, is a FETCH's reply.
    """

    def __init__(self, shard: int, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.shard = shard
        self._pending: dict[int, tuple[int, int, np.ndarray | None, int]] = {}  # partition → (push id, base, g, summed)

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
                self._pending[msg.partition] = (msg.push_id, msg.version, msg.grad, msg.summed)
            else:
                self.stats.dropped("too stale")
                self.too_stale[staleness] += 1
            return valid, "push"
        applied = self._commit(msg)
        if not msg.fetch:
            return applied, COMMIT
        params, kind = self._fetch(msg)
        return params, f"commit_{kind}"

    def _commit(self, msg: SliceMessage) -> bool:
        pending = self._pending.pop(msg.partition, None)
        if not (all(msg.votes) and pending is not None and pending[0] == msg.push_id):
            self.stats.dropped("vetoed")
            return False
        _, base, grad, summed = pending
        self._apply(msg.partition, grad, summed, base, self.store.version - base)
        return True


class ShardedStore:
    """The S shards' slices read as one store: the version every shard has reached, θ and θ⁻ put together, and one
    solver with the slices' histories (what a snapshot writes, as ``ShardGroup``'s cut)."""

    def __init__(self, shards: list[SimShard], solver_spec: SolverSpec | None, params: tuple[ParamBlob, ...],
                 num_params: int, max_staleness: int, staleness_lr: bool, dc_lambda: float = 0.0) -> None:
        self.shards, self.solver_spec, self.params, self.num_params = shards, solver_spec, params, num_params
        self.max_staleness, self.staleness_lr, self.dc_lambda = max_staleness, staleness_lr, dc_lambda

    @property
    def version(self) -> int:
        return min(s.store.version for s in self.shards)

    @property
    def target_version(self) -> int:
        return min(s.store.target_version for s in self.shards)

    @property
    def theta(self) -> np.ndarray:
        return np.concatenate([s.store.theta for s in self.shards])

    @property
    def target(self) -> np.ndarray:
        return np.concatenate([s.store.target for s in self.shards])

    @property
    def solver(self) -> FlatSolver:
        whole = make_solver(self.solver_spec, self.params)
        for i, h in enumerate(whole.history):
            h[...] = np.concatenate([s.store.solver.history[i] for s in self.shards])
        whole.iter = min(s.store.solver.iter for s in self.shards)
        return whole


class ShardRouter:
    """A simulation's transport to its S shards and back (see the module docstring): a worker's FETCH and PUSH become
    slice messages, their replies are gathered, and the worker is answered once all S are in.

    Args:
        sim: the simulation (its ``events``, ``network``, ``_wire`` and ``workers``).
        placement: ``driver`` or ``executors`` (:func:`shard_host`).
        num_params: θ's floats; the slices are ``bounds(num_params, S)``.
        learning: slices of θ and of gradients travel (else byte counts only).
    """

    def __init__(self, sim, placement: str, num_params: int, shards: int, learning: bool) -> None:
        self.sim, self.placement, self.learning = sim, placement, learning
        self.bounds = bounds(num_params, shards)
        self.num_params = num_params
        self.shards: list[SimShard] = []  # set by the simulation (each given :meth:`reply`)
        self._vectors: dict[int, tuple[list[int], list[int]]] = {}
        self._bases: dict[int, dict[int, list[int]]] = {}
        self._held: dict[int, tuple[np.ndarray | None, np.ndarray | None]] = {}  # partition → its θ, θ⁻ put together
        self._gathering: dict[int, list] = {}
        self._push_id = 0

    def send(self, msg: Message) -> None:
        """A worker's FETCH or PUSH: a slice message to each shard, all at once."""
        p, s = msg.partition, len(self.shards)
        self._gathering[p] = [None] * s
        if msg.kind == FETCH:
            if msg.version == NO_VERSION or p not in self._vectors:  # the first FETCH: everything
                self._vectors[p] = ([NO_VERSION] * s, [NO_VERSION] * s)
            versions, targets = self._vectors[p]
            for k in range(s):
                self._to_shard(k, SliceMessage(FETCH, p, msg.sent_at, versions[k], targets[k], shard=k, parent=msg))
            return
        base = self._bases.get(p, {}).get(msg.version, self._vectors[p][0])
        self._push_id += 1
        for k, (lo, hi) in enumerate(self.bounds):
            grad = None if msg.grad is None else msg.grad[lo:hi]
            self._to_shard(k, SliceMessage(PUSH, p, msg.sent_at, base[k], grad=grad, summed=msg.summed, shard=k,
                                           parent=msg, push_id=self._push_id, fetch=msg.fetch))

    def _to_shard(self, k: int, msg: SliceMessage) -> None:
        sim, shard = self.sim, self.shards[k]
        at = msg.sent_at + shard.timing.legs(msg.kind)[0]
        if sim.network is None:
            sim.events.at(at, shard.arrive, msg)
        else:
            sim.events.at(at, sim._wire, msg.partition, shard_host(k, self.placement),
                          shard.timing.wire_bytes(msg.kind)[0], shard.arrive, msg)

    def reply(self, msg: SliceMessage, reply, kind: str) -> None:
        """Shard ``msg.shard``'s reply leaves now: one down-leg and the cards to the worker's host."""
        sim, k = self.sim, msg.shard
        timing = self.shards[k].timing
        at = sim.events.now + timing.legs(kind)[1]
        if sim.network is None:
            sim.events.at(at, self._gather, msg, reply)
        else:
            sim.events.at(at, sim._wire, shard_host(k, self.placement), msg.partition, timing.wire_bytes(kind)[1],
                          self._gather, msg, reply)

    def _gather(self, msg: SliceMessage, reply) -> None:
        """A shard's reply reached its worker; once all S are in: the worker's FETCH is done (θ put together), its
        PUSH's votes go out in a COMMIT to every shard, or its COMMIT is done."""
        sim, p, got = self.sim, msg.partition, self._gathering[msg.partition]
        got[msg.shard] = reply
        if any(r is None for r in got):
            return
        if msg.kind == FETCH or (msg.kind == COMMIT and msg.fetch):
            sim.workers[p].on_reply(sim, msg.parent, self._fetched(p, got))
        elif msg.kind == PUSH:
            self._gathering[p] = [None] * len(self.shards)
            votes = tuple(bool(v) for v in got)
            versions, targets = self._vectors[p]
            for k in range(len(self.shards)):
                self._to_shard(k, SliceMessage(COMMIT, p, sim.events.now, versions[k], targets[k], shard=k,
                                               parent=msg.parent, push_id=msg.push_id, votes=votes, fetch=msg.fetch))
        else:
            sim.workers[p].on_reply(sim, msg.parent, None)

    def _fetched(self, p: int, got: list[Params]) -> Params:
        """The S slices' replies (to FETCHes, or COMMITs that asked for θ) as the worker's one Params; the version
        vector it now holds is kept for its next FETCH and PUSH."""
        versions, targets = [r.version for r in got], [r.target_version for r in got]
        self._vectors[p] = (versions, targets)
        bases = self._bases.setdefault(p, {})
        bases[min(versions)] = list(versions)
        while len(bases) > 8:  # as ShardedClient.BASES
            del bases[next(iter(bases))]
        theta, target = self._put_together(p, got) if self.learning else (None, None)
        return Params(min(versions), min(targets), theta, target, False)

    def _put_together(self, p: int, got: list[Params]) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The worker's θ and θ⁻ with the slices that changed: new arrays (what it holds stays as it was), or None
        for one no slice of which changed."""
        theta, target = self._held.get(p, (None, None))
        out = []
        for held, attr in ((theta, "theta"), (target, "target")):
            fresh = [(k, getattr(r, attr)) for k, r in enumerate(got) if getattr(r, attr) is not None]
            if not fresh:
                out.append(None)
                continue
            new = np.empty(self.num_params, np.float32) if held is None else held.copy()
            for k, part in fresh:
                lo, hi = self.bounds[k]
                new[lo:hi] = part
            out.append(new)
        self._held[p] = (out[0] if out[0] is not None else theta, out[1] if out[1] is not None else target)
        return out[0], out[1]
