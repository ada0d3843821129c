"""One shard of a sharded parameter server (``ps_shards: S > 1``): a :class:`ParameterServer` over one slice of θ.

Shard k serves ``θ[lo_k:hi_k]`` (and θ⁻, and its slice of the solver history, ``shards.slices``) with the
same protocol, sessions and checks as one server. FETCH is unchanged (its θ is the slice). A gradient is applied all
or nothing across the S shards, in two steps:

* **PUSH** of slice k (header: the shard's θ version the gradient was computed on, ``summed``; payload: the slice's
  float32 values, then the worker's 8-byte push id, little-endian). The shard checks the slice whole (size, finite,
  its own squared norm, version, staleness), keeps a valid one *pending* (one per worker attempt: a newer push
  replaces it) and answers ACK with its 32-byte vote (``ddqn.distributed.shards.votes``). Nothing is applied.
* **COMMIT** (header: version = ``summed``, aux = the push id; payload: the S votes in shard order). The shard applies
  its pending slice only if every vote verifies under the shard key, all are valid, and Σ squared norms ≤
  ``max_grad_norm``² × ``summed``². The ACK carries ``F_APPLIED`` if it did (``F_REPEAT`` too for a commit it had
  applied before: a commit is applied at most once per push id). A COMMIT with a forged vote is dropped
  ("unauthenticated") and changes nothing.
* **COMMIT, then θ** (flagged ``F_THETA``; the S votes are followed by :data:`HAVE`: the θ and θ⁻ versions of the
  slice the worker holds): the same commit, answered with PARAMS instead of ACK, carrying what a FETCH sent right
  after it would (the slice's θ if the worker's version is not current, θ⁻ if its target version is not), with
  ``F_APPLIED`` and ``F_REPEAT`` as above. A worker whose next step fetches θ asks for it so (``ShardedClient``): one
  message per update fewer for every shard, the same θ.

A pending slice expires after ``pending_s`` seconds ("expired"). While a snapshot's cut holds PUSHes
(:attr:`ShardServer.holding`), they wait in a bounded queue (at most :data:`MAX_HELD`, beyond it "busy") and are
answered once it ends; COMMITs go on, so every commit started before the cut completes on every shard.
"""
from __future__ import annotations

import math
import struct
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from ddqn.distributed import protocol as P
from ddqn.distributed.server import ParameterServer, ServerOptions
from ddqn.distributed.sessions import Session
from ddqn.distributed.shards import votes
from ddqn.distributed.stats import ServerStats
from ddqn.distributed.store import ParameterStore
from ddqn.solvers import kernels

PUSH_ID = 8  # bytes of the push id after a PUSH's slice
MAX_HELD = 1024  # PUSHes held during a cut (an honest worker has one in flight)
COMMITTED = 4096  # push ids remembered as applied (a retried COMMIT is recognised)
PENDING_S = 10.0  # a pending slice waits this long for its COMMIT (an honest worker sends it one round trip later)
# A reply payload smaller than this is copied into ZeroMQ's message, a larger one is sent without a copy (pyzmq's
# default threshold is 64 KB). pyzmq's zero-copy send wakes its garbage-collector thread for every message, which
# contends with the shard's server thread; copying a slice of a few 100 KB costs the shard less. Quiet A/B, tuned at
# S = 8 (114 KB slices), 2 pairs of 3,000 updates: server CPU 240 and 235 µs per update against 253 and 254, client
# 848 and 830 µs per update against 926 and 942; S = 1's 912 KB costs more copied, so one server keeps pyzmq's.
COPY_BELOW = 256 * 1024
HAVE = struct.Struct("<QQ")  # after a COMMIT's votes when it asks for θ: the slice's θ and θ⁻ versions the worker holds


@dataclass
class Pending:
    """A valid slice waiting for its COMMIT: the gradient (float32, the shard's slice: a read-only view of the PUSH's
    received frame, which it keeps alive, so nothing is copied), its squared norm (float64)."""

    push_id: int
    base: int  # the shard's θ version it was computed on
    summed: int
    grad: np.ndarray
    sumsq: float
    at: float  # time.monotonic() when it arrived


class ShardServer(ParameterServer):
    """Shard ``shard`` of ``shards``: a ParameterServer over a slice store that votes on PUSHes and applies COMMITs.

    Args:
        store: the slice's θ, θ⁻ and solver (``shards.shard_solver``).
        secret: the run secret (workers' sessions, as with one server).
        options: as for one server (``max_grad_norm`` bounds the whole gradient, checked over all S votes).
        shard, shards: this shard's index k and S.
        vote_key: the shard key (shared by the driver and its shards only).
    """

    ONCE = ()  # PUSH and COMMIT are made idempotent by their push id, not by the session's sequence numbers

    def __init__(self, store: ParameterStore, secret: bytes, options: ServerOptions, *, shard: int, shards: int,
                 vote_key: bytes, stats: ServerStats | None = None, pending_s: float = PENDING_S) -> None:
        super().__init__(store, secret, options, stats=stats)
        self.shard, self.shards, self._vote_key, self.pending_s = shard, shards, votes.VoteKey(vote_key), pending_s
        self._session_sock.copy_threshold = COPY_BELOW
        self.holding = threading.Event()  # set during a snapshot's cut: PUSHes wait in self._queue
        self.floor = store.version  # a gradient computed on an older version is voted invalid (a rollback's θ)
        self.bounds = (0, store.num_params)  # [lo, hi) of the whole θ this slice is (set by ``shards.host.build``)
        self.lock = threading.Lock()  # the tables below, read by the control thread (status)
        self._pending: dict[tuple[int, int], Pending] = {}  # (partition, attempt) → its pending slice
        self._committed: OrderedDict[tuple[int, int, int], None] = OrderedDict()  # (partition, attempt, push id)
        self._queue: list[tuple[bytes, Session, P.Header, bytes]] = []  # PUSHes held during a cut

    # -- PUSH: check the slice, keep it pending, vote --------------------------------------------------------
    def _push(self, ident: bytes, session: Session, header: P.Header, payload: memoryview) -> None:
        if header.nbytes != self.nbytes + PUSH_ID:
            raise P.ProtocolError("wrong size")
        if self.holding.is_set():
            if len(self._queue) >= MAX_HELD:
                raise P.ProtocolError("busy")
            self._queue.append((ident, session, header, bytes(payload)))
            return
        t = time.perf_counter()
        push_id = int.from_bytes(payload[-PUSH_ID:], "little")
        summed = max(header.summed, 1)
        key = (session.partition, session.attempt)
        with self.lock:
            pending = self._pending.get(key)
            if pending is not None and pending.push_id != push_id:
                del self._pending[key]  # replaced by its worker's next push: never committed
                self.stats.dropped("expired")
                pending = None
        staleness = self.store.version - header.version
        if pending is not None or (*key, push_id) in self._committed:  # the same push again (a retry): same vote
            sumsq, valid = (pending.sumsq, True) if pending else (0.0, False)
        else:
            grad = np.frombuffer(payload[:-PUSH_ID], np.float32)
            sumsq = kernels.norm_squared(grad)  # float64: NaN or ±inf anywhere makes it non-finite
            reason = ("not finite" if not math.isfinite(sumsq) else
                      "too large" if sumsq > self._max_norm_sq * summed ** 2 else
                      "future version" if staleness < 0 else
                      "too stale" if header.version < self.floor or not self.store.admits(staleness) else None)
            valid = reason is None
            if valid:
                with self.lock:
                    self._pending[key] = Pending(push_id, header.version, summed, grad, sumsq, time.monotonic())
            else:
                self.stats.dropped(reason)
                sumsq = sumsq if math.isfinite(sumsq) else 0.0
        vote = votes.seal(self._vote_key, session.partition, session.attempt, push_id, summed,
                          votes.Vote(self.shard, valid, sumsq))
        self._part("check", t)
        self._send(ident, session, P.ACK, session.partition, session.attempt, self.store.version,
                   max(staleness, 0), payload=vote, flags=self._flags())

    # -- COMMIT: every vote verified, then apply the pending slice --------------------------------------------
    def _other(self, ident: bytes, session: Session, header: P.Header, payload: memoryview) -> None:
        if header.type != P.COMMIT:
            super()._other(ident, session, header, payload)
        t = time.perf_counter()
        push_id, summed, fetch = header.aux, header.version, bool(header.flags & P.F_THETA)
        if not 1 <= summed < 2**31:
            raise P.ProtocolError("malformed", "summed out of range")
        cast_bytes = self.shards * votes.VOTE.size
        if header.nbytes != cast_bytes + (HAVE.size if fetch else 0):
            raise P.ProtocolError("wrong size")
        cast = votes.open_all(self._vote_key, self.shards, session.partition, session.attempt, push_id, summed,
                              bytes(payload[:cast_bytes]))
        if cast is None:
            raise P.ProtocolError("unauthenticated", "a vote does not verify")
        t = self._part("verify", t)
        key, done = (session.partition, session.attempt), (session.partition, session.attempt, push_id)
        flags = self._flags()
        if done in self._committed:
            self.stats.dropped("resent")
            flags |= P.F_REPEAT | P.F_APPLIED
        else:
            with self.lock:
                pending = self._pending.get(key)
                ours = pending is not None and pending.push_id == push_id and pending.summed == summed \
                    and cast[self.shard].valid and cast[self.shard].sumsq == pending.sumsq
                if ours:
                    del self._pending[key]
            if not votes.admitted(cast, self._max_norm_sq, summed):
                self.stats.dropped("vetoed")
            elif not ours:
                self.stats.dropped("unknown push")
            else:
                self._apply(session, pending)
                self._part("apply", t)
                flags |= P.F_APPLIED
        if fetch:  # the PARAMS a FETCH right after would get, with this commit's flags
            self._kind = "commit_fetch"
            self._send_params(ident, session, *HAVE.unpack_from(payload, cast_bytes), flags)
        else:
            self._send(ident, session, P.ACK, session.partition, session.attempt, self.store.version, 0, flags=flags)

    def _apply(self, session: Session, pending: Pending) -> None:
        staleness = self.store.version - pending.base
        self._apply_gradient(session, self._mean(pending.grad, pending.summed), pending.base, staleness)
        with self.lock:
            self._committed[(session.partition, session.attempt, pending.push_id)] = None
            while len(self._committed) > COMMITTED:
                self._committed.popitem(last=False)
        self.stats.pushed(session.partition, staleness)

    # -- between turns: expiry, and the PUSHes a cut held ----------------------------------------------------
    def _turn(self) -> None:
        now = time.monotonic()
        with self.lock:
            old = [k for k, p in self._pending.items() if now - p.at > self.pending_s]
            for k in old:
                del self._pending[k]
        for _ in old:
            self.stats.dropped("expired")
        if self._queue and not self.holding.is_set():
            queue, self._queue = self._queue, []
            for ident, session, header, payload in queue:
                try:
                    if session.sid not in self.sessions:
                        raise P.ProtocolError("unauthenticated", "its session ended while held")
                    self._push(ident, session, header, memoryview(payload))
                except P.ProtocolError as exc:
                    self.stats.dropped(exc.reason)

    # -- what the control thread reads ------------------------------------------------------------------------
    def status(self) -> dict:
        """Versions, drops, busy seconds (and by kind and part), pushes applied per partition, the recent staleness
        (at most ``STALENESS_WINDOW``) and the push ids a cut must wait for: ``pending`` (voted, not committed) and
        ``held`` (PUSHes held, not voted), each as [partition, attempt, push id]."""
        with self.lock:
            pending = [[*k, p.push_id] for k, p in self._pending.items()]
        held = [[s.partition, s.attempt, int.from_bytes(b[-PUSH_ID:], "little")] for _, s, _, b in list(self._queue)]
        view = self.stats.view()
        return {"version": self.store.version, "target_version": self.store.target_version, "pending": pending,
                "held": held, "dropped": view.dropped, "busy_s": view.busy_s, "cpu_s": view.cpu_s,
                "pushes": {str(p): w.pushes for p, w in view.workers.items()}, "staleness": list(view.staleness),
                "parts": view.parts}

    def rolling_back(self, version: int) -> None:
        """The store is about to be rolled back to a cut and continue at ``version``: from now on every gradient
        computed on an older version is voted invalid (its θ is no longer the store's past), and every pending slice is
        forgotten. Called before the store's :meth:`~ParameterStore.load`, so none of them reaches the restored θ."""
        self.floor = version
        with self.lock:
            self._pending.clear()
