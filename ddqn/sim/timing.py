"""What simulated time each thing costs: messages (transport legs and server service) and fixed compute times.

A message's round trip on loopback was measured as service + the rest (:class:`~ddqn.sim.service.ServiceTimes`):
the rest of a STATS round trip (no payload either way) is two header legs of ``h`` each; a PUSH carries its
payload up and a FETCH its payload down, so their payload leg takes ``rtt − 2h`` more (sealing, copying and the
loopback transfer of n float32). A cluster adds ``latency_s`` to every leg; a link's rate is charged by the hosts'
shared cards (:class:`~ddqn.sim.network.Network`), for the bytes :meth:`Timing.wire_bytes` names.
"""
from __future__ import annotations

from dataclasses import dataclass

from ddqn.sim.service import ServiceTimes

KINDS = ("fetch", "fetch_both", "fetch_none", "push", "stats")  # fetch_none: a PARAMS reply without parameters


@dataclass(frozen=True)
class Timing:
    """Transport legs and server service per message kind, in seconds.

    Args:
        service: the measured (or fixed) times of this net, solver and auth mode.
        payload_bytes: one θ or gradient (num_params × 4).
        latency_s: extra one-way network latency per message (0 on one machine).
    """

    service: ServiceTimes
    payload_bytes: int
    latency_s: float = 0.0

    def wire_bytes(self, kind: str) -> tuple[int, int]:
        """(request, reply) payload bytes of a message of ``kind`` on a network (headers are the network's)."""
        n = self.payload_bytes
        return {"push": (n, 0), "fetch": (0, n), "fetch_both": (0, 2 * n)}.get(kind, (0, 0))

    def service_s(self, kind: str) -> float:
        """Server-thread seconds for a message of ``kind``."""
        s = self.service
        return {"fetch": s.fetch_s, "fetch_both": s.fetch_both_s, "fetch_none": s.stats_s, "push": s.push_s,
                "stats": s.stats_s}[kind]

    def legs(self, kind: str) -> tuple[float, float]:
        """(worker → server, server → worker) seconds for a message of ``kind`` and its reply, besides the time its
        bytes spend on a network's cards."""
        s = self.service
        h = s.stats_rtt_s / 2
        up = down = h + self.latency_s
        if kind == "push":
            up += max(s.push_rtt_s - 2 * h, 0.0)
        elif kind == "fetch":
            down += max(s.fetch_rtt_s - 2 * h, 0.0)
        elif kind == "fetch_both":
            down += max(s.fetch_both_rtt_s - 2 * h, 0.0)
        return up, down


@dataclass(frozen=True)
class FixedCycle:
    """``--fixed-cycle``: a worker's compute costs these simulated seconds instead of the measured ones.

    Worker ``i`` of ``W`` finishes its warm-up ``i / W`` of a nominal cycle after worker 0 (workers spread
    evenly, as measured warm-ups of slightly different lengths spread real workers). Deterministic for a seed.
    """

    step_s: float = 0.002  # act + env step + store, one env step
    gradient_s: float = 0.020  # sample + targets + forward and backward, one minibatch
    warmup_s: float = 1.0  # the random-policy fill of replay

    def warmup(self, partition: int, workers: int, timing: Timing, train_every: int) -> float:
        """Simulated seconds of worker ``partition``'s warm-up (staggered over one nominal cycle)."""
        fetch_up, fetch_down = timing.legs("fetch")
        push_up, push_down = timing.legs("push")
        cycle = (train_every * self.step_s + self.gradient_s + fetch_up + fetch_down + push_up + push_down
                 + timing.service_s("fetch") + timing.service_s("push"))
        return self.warmup_s + cycle * partition / workers


FIXED_SERVICE = ServiceTimes(push_s=2e-4, fetch_s=1e-4, fetch_both_s=2e-4, stats_s=3e-5, push_rtt_s=3e-4,
                             fetch_rtt_s=3e-4, fetch_both_rtt_s=5e-4, stats_rtt_s=1e-4)  # tests, when none is given
