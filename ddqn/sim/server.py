"""The parameter server in simulated time: one FIFO thread over the real store, solver and counters.

What a message does is what :class:`ddqn.distributed.server.ParameterServer` does with it once it is verified, on the
same objects — :class:`~ddqn.distributed.store.ParameterStore` (θ, θ⁻ ← θ every C updates, the Caffe-exact solver,
``max_staleness`` and ``staleness_lr``) and :class:`~ddqn.distributed.stats.ServerStats` — without sockets:

* FETCH: θ if the worker's version is not current, θ⁻ if its target version is not (the store's published,
  immutable buffers);
* PUSH: staleness = server version − the version the gradient was computed on; too stale → dropped and counted
  (``"too stale"``); else the mean of a summed gradient is applied with that staleness;
* STATS: the worker's scores, env steps and compute/communicate seconds.

Messages are served one at a time in arrival order; each is handled when its service starts and its reply leaves
when its service time (:class:`~ddqn.sim.timing.Timing`, per kind) has passed, so queueing and saturation follow.
"""
from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable

import numpy as np

from ddqn.distributed.client import Params
from ddqn.distributed.stats import ServerStats
from ddqn.distributed.store import ParameterStore
from ddqn.sim.events import EventQueue
from ddqn.sim.messages import FETCH, PUSH, Message
from ddqn.sim.timing import Timing

Reply = Callable[[Message, Params | None, str], None]


class SimServer:
    """One FIFO server thread in simulated time (see the module docstring).

    Args:
        store, stats: the real parameter store and counters (their options decide drops and learning rates).
        timing: service and transport seconds per message kind.
        events: the simulation's clock and event heap.
        reply: called with (request, reply, its kind for timing) when a reply leaves the server thread (reply:
            FETCH's Params, else None); it carries the reply to its worker.
    """

    def __init__(self, store: ParameterStore, stats: ServerStats, timing: Timing, events: EventQueue,
                 reply: Reply) -> None:
        self.store, self.stats, self.timing, self.events, self.reply = store, stats, timing, events, reply
        self.queue: deque[Message] = deque()
        self.busy = False
        self.busy_s = 0.0  # simulated seconds the thread spent serving
        self.staleness: Counter[int] = Counter()  # applied gradients by staleness
        self.too_stale: Counter[int] = Counter()  # dropped gradients by staleness
        self.max_queue = 0
        self._joined: set[int] = set()
        self._held: dict[int, tuple[int, np.ndarray]] = {}  # partition → (version, θ) last sent (DC-ASGD)
        self._mean = np.empty(store.num_params, np.float32)

    def arrive(self, msg: Message) -> None:
        """A request reaches the server (an event): served now if the thread is idle, else queued."""
        self.queue.append(msg)
        self.max_queue = max(self.max_queue, len(self.queue))
        if not self.busy:
            self._start()

    def _start(self) -> None:
        msg = self.queue.popleft()
        self.busy = True
        reply, kind = self._handle(msg)
        service = self.timing.service_s(kind)
        self.busy_s += service
        self.stats.busy(service)
        self.events.at(self.events.now + service, self._done, msg, reply, kind)

    def _done(self, msg: Message, reply: Params | None, kind: str) -> None:
        self.busy = False
        self.reply(msg, reply, kind)
        if self.queue:
            self._start()

    def _handle(self, msg: Message) -> tuple[Params | None, str]:
        """Apply ``msg`` to the store and counters; returns (reply, its kind for timing)."""
        if msg.partition not in self._joined:  # the first message of a session (after HELLO) admits it
            self._joined.add(msg.partition)
            self.stats.joined(msg.partition, 0, 0, "sim")
        if msg.kind == FETCH:
            return self._fetch(msg)
        if msg.kind == PUSH:
            self._push(msg)
            return None, "push"
        r = msg.report
        self.stats.reported(msg.partition, r["scores"], r["env_steps"], r["compute_s"], r["comm_s"])
        return None, "stats"

    def _fetch(self, msg: Message) -> tuple[Params, str]:
        store = self.store
        version, target_version = store.version, store.target_version
        theta = target = None
        need_theta, need_target = msg.version != version, msg.target_version != target_version
        if need_theta and need_target:
            version, target_version, both = store.published_both()
            theta, target = both[:store.num_params], both[store.num_params:]
        elif need_theta:
            version, theta = store.published()
        elif need_target:
            target_version, target = store.published_target()
        if need_theta and store.dc_lambda:
            self._held[msg.partition] = (version, theta)
        kind = "fetch_both" if need_theta and need_target else "fetch" if need_theta or need_target else "fetch_none"
        return Params(version, target_version, theta, target, False), kind

    def _push(self, msg: Message) -> None:
        staleness = self.store.version - msg.version
        if not self.store.admits(staleness):
            self.stats.dropped("too stale")
            self.too_stale[staleness] += 1
            return
        self._apply(msg.partition, msg.grad, msg.summed, msg.version, staleness)

    def _apply(self, partition: int, grad: np.ndarray | None, summed: int, base: int, staleness: int) -> None:
        """Count and apply a gradient computed on version ``base``: the mean of a summed one, compensated (DC-ASGD)
        against the θ this worker last fetched when that was ``base``, as the real server."""
        self.stats.pushed(partition, staleness)
        self.staleness[staleness] += 1
        if summed > 1 and grad is not None:  # a sum over push_every minibatches → their mean, as the real server
            grad = np.multiply(grad, np.float32(1 / summed), out=self._mean)
        held = self._held.get(partition)
        self.store.apply(grad, staleness, held[1] if held and held[0] == base else None)
