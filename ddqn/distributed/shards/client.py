"""A worker's connections to a sharded parameter server (``ps_shards: S > 1``): the driver and S shards.

The worker says HELLO to the driver (its coordinator), whose WELCOME names the S shard addresses; it then opens one
:class:`~ddqn.distributed.client.ServerClient` per shard (each its own session, socket and thread) and talks to all of
them at once. STATS go to the driver.

* FETCH: each shard sends its slice if it changed since the version this client holds of it; the slices are put
  together into one θ (and θ⁻). A fetched θ is S slices, each at its shard's version: the version vector. The worker
  is told the smallest of them (what its ε schedule counts); the vector itself is kept here, and a PUSH names each
  shard's own version.
* PUSH: slice k with a push id to shard k (each answers with its vote), then COMMIT with all S votes to every shard
  (``ddqn.distributed.shards.server``). A COMMIT lost to a reset is sent again (the shard applies it once).
* PUSH then FETCH (:meth:`ShardedClient.push_and_fetch`, what the worker does when its next step fetches θ): the
  COMMIT asks each shard for its slice too, and the slices are put together as a FETCH's: one message per shard and
  update fewer (the worker's FETCH after its push is the one saved), and θ is the one that FETCH would get.
* A shard that moved (placement ``executors``: Spark reran its task, perhaps on another host): a shard's client whose
  HELLO stays unanswered asks :meth:`ShardedClient.locate`, which asks the driver again (a new session with the
  coordinator, whose WELCOME names the shards' addresses now and their version) and reconnects there.

:meth:`ShardedClient.fetch`, :meth:`push`, :meth:`stats` and :meth:`close` are those of a ServerClient, so the worker
uses either.
"""
from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ddqn.distributed import protocol as P
from ddqn.distributed.client import LOCATE_S, Params, ServerClient, ServerGone
from ddqn.distributed.shards import votes
from ddqn.distributed.shards.server import HAVE, PUSH_ID
from ddqn.distributed.shards.slices import bounds

BASES = 8  # version vectors remembered by the smallest version the worker was told (push_every > 1 sums across them)


class ShardedClient:
    """The worker end for partition ``worker``: ``coordinator`` (the driver's session, already open) and one
    session per address in its WELCOME's ``shards``."""

    def __init__(self, coordinator: ServerClient, secret: bytes, num_params: int, timeout: float = 60.0,
                 auth: str = "message") -> None:
        addresses = coordinator.welcome.get("shards")
        if not (isinstance(addresses, list) and addresses and all(isinstance(a, str) for a in addresses)):
            raise ServerGone("the driver's WELCOME names no shards")
        self.coordinator, self.num_params = coordinator, num_params
        self.worker, self.attempt = coordinator.worker, coordinator.attempt
        self.prior_env_steps = coordinator.prior_env_steps
        self.bounds = bounds(num_params, len(addresses))
        self.addresses, self.shards_version = list(addresses), coordinator.welcome.get("shards_version", 0)
        self._lock = threading.Lock()  # the coordinator's session: one question at a time (the shards' threads ask)
        self._asked = time.monotonic()
        self._pool = ThreadPoolExecutor(len(addresses), thread_name_prefix="ddqn-shard")
        self.clients: list[ServerClient] = []
        try:
            self.clients = self._all(lambda k: ServerClient(
                addresses[k], secret, self.worker, self.attempt, self.bounds[k][1] - self.bounds[k][0], timeout,
                auth, locate=lambda: self.locate(k)))
        except BaseException:
            self.close()
            raise
        self.theta, self.target = np.zeros(num_params, np.float32), np.zeros(num_params, np.float32)
        self.versions = [P.NO_VERSION] * len(addresses)  # of the θ slices held
        self.target_versions = [P.NO_VERSION] * len(addresses)
        self._bases: dict[int, list[int]] = {}  # smallest version → the vector it stood for
        self._push_id = int.from_bytes(os.urandom(7), "little") << 8  # unique across this partition's processes
        self.partial = 0  # commits some shards applied and others did not (a shard restarted in between)

    def _all(self, fn) -> list:
        """``fn(k)`` for every shard at once; the first error is raised once all have ended."""
        futures = [self._pool.submit(fn, k) for k in range(len(self.bounds))]
        results, error = [], None
        for f in futures:
            try:
                results.append(f.result())
            except BaseException as exc:  # raised below, after every thread has ended
                error = error or exc
        if error is not None:
            raise error
        return results

    def locate(self, k: int) -> str:
        """Where shard ``k`` is now, as the driver says: one new WELCOME per LOCATE_S serves every shard's thread."""
        with self._lock:
            if time.monotonic() - self._asked >= LOCATE_S:
                welcome = self.coordinator.rejoin()
                self._asked = time.monotonic()
                addresses = welcome.get("shards")
                if not (isinstance(addresses, list) and len(addresses) == len(self.bounds)
                        and all(isinstance(a, str) for a in addresses)):
                    raise ServerGone("the driver's WELCOME names another number of shards")
                self.addresses, self.shards_version = list(addresses), welcome.get("shards_version", 0)
            return self.addresses[k]

    @property
    def reconnects(self) -> int:
        return self.coordinator.reconnects + sum(c.reconnects for c in self.clients)

    @property
    def repeated(self) -> int:
        return sum(c.repeated for c in self.clients)

    def fetch(self, have_version: int = P.NO_VERSION, have_target: int = P.NO_VERSION) -> Params:
        """θ and θ⁻ put together from every shard's slice, each sent only if it changed (``have_version`` =
        NO_VERSION: everything). ``version`` is the smallest shard version."""
        if have_version == P.NO_VERSION:
            self.versions = [P.NO_VERSION] * len(self.clients)
            self.target_versions = [P.NO_VERSION] * len(self.clients)
        return self._put_together(self._all(lambda k: self.clients[k].fetch(self.versions[k],
                                                                             self.target_versions[k])))

    def _put_together(self, replies: list[Params]) -> Params:
        """One θ (and θ⁻) from the S shards' replies, each slice copied in only if it came."""
        theta_new = target_new = False
        for k, (p, (lo, hi)) in enumerate(zip(replies, self.bounds)):
            if p.theta is not None:
                self.theta[lo:hi] = p.theta
                theta_new = True
            if p.target is not None:
                self.target[lo:hi] = p.target
                target_new = True
            self.versions[k], self.target_versions[k] = p.version, p.target_version
        version = min(self.versions)
        self._bases[version] = list(self.versions)
        while len(self._bases) > BASES:
            del self._bases[next(iter(self._bases))]
        return Params(version, min(self.target_versions), self.theta if theta_new else None,
                      self.target if target_new else None, any(p.stop for p in replies))

    def push(self, grad: np.ndarray, base_version: int, count: int = 1) -> tuple[int, bool]:
        """PUSH each slice, then COMMIT every shard's vote to every shard. Returns (smallest shard version, stop)."""
        acks = self._push(grad, base_version, count, fetch=False)
        return min(h.version for h, _ in acks), any(h.flags & P.F_STOP for h, _ in acks)

    def push_and_fetch(self, grad: np.ndarray, base_version: int, count: int = 1) -> tuple[int, bool, Params]:
        """:meth:`push` whose COMMITs ask for θ: (smallest shard version, stop, θ and θ⁻ as :meth:`fetch` would
        give them right after)."""
        replies = self._push(grad, base_version, count, fetch=True)
        for k, (h, _) in enumerate(replies):
            if h.type != P.PARAMS:
                raise ServerGone(f"shard {k}: a COMMIT asking for θ answered without it")
        p = self._put_together([self.clients[k].params(h, body) for k, (h, body) in enumerate(replies)])
        return p.version, p.stop, p

    def _push(self, grad: np.ndarray, base_version: int, count: int, fetch: bool) -> list[tuple[P.Header, memoryview]]:
        """PUSH each slice, COMMIT every vote to every shard (asking for θ if ``fetch``); the COMMITs' replies."""
        base = self._bases.get(base_version, self.versions)
        self._push_id += 1
        push_id = self._push_id
        tail = push_id.to_bytes(PUSH_ID, "little")

        def push_slice(k: int) -> bytes:
            lo, hi = self.bounds[k]
            body = grad[lo:hi].tobytes() + tail
            header, vote = self.clients[k].request(P.PUSH, base[k], count, body)
            if len(vote) != votes.VOTE.size:
                raise ServerGone(f"shard {k}: ACK of a PUSH without its vote")
            return bytes(vote)

        cast = b"".join(self._all(push_slice))
        flags = P.F_THETA if fetch else 0

        def commit(k: int) -> tuple[P.Header, memoryview]:
            have = HAVE.pack(self.versions[k], self.target_versions[k]) if fetch else b""
            return self.clients[k].request(P.COMMIT, count, push_id, cast + have, flags)

        replies = self._all(commit)
        applied = [bool(h.flags & P.F_APPLIED) for h, _ in replies]
        self.partial += any(applied) and not all(applied)
        return replies

    def stats(self, scores: list[int], env_steps: int, compute_s: float, comm_s: float) -> bool:
        """Report to the driver (see ServerClient.stats)."""
        with self._lock:
            return self.coordinator.stats(scores, env_steps, compute_s, comm_s)

    def close(self) -> None:
        """BYE to every shard and the driver; free sockets and threads."""
        for c in self.clients:
            c.close()
        self.coordinator.close()
        self._pool.shutdown(wait=True)
