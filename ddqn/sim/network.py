"""Hosts' network cards in simulated time: a full-duplex NIC per host, shared by every message through it.

Each host (the server's, and one per worker) has a NIC of ``gbps`` Gbit/s in each direction, like the shaped
cables of the network-namespace hosts (``HostsCluster(link_gbit=)``). A message's bytes leave through its
sender's egress and arrive through its receiver's ingress, first come first served on each: a message waits for
the bytes ahead of it on either card. The two cards carry it as a pipeline: it has arrived when its last byte has
left the egress and its ingress, which starts no earlier than its egress did, has carried it too. So all workers'
gradients queue on the server's ingress and all their θ on its egress. Each message carries
``overhead_bytes`` more than its payload (framing, TCP/IP headers, the 48-byte ZeroMQ header and its tag), and the
wire carries ``efficiency`` of the rate as message bytes (TCP's acknowledgements and segment headers take the rest).
"""
from __future__ import annotations

from dataclasses import dataclass, field

SERVER = -1  # the server's host; workers' hosts are their partitions 0 … W−1


@dataclass
class Nic:
    """One host's card: when its egress and its ingress are next free (simulated seconds)."""

    egress_free: float = 0.0
    ingress_free: float = 0.0
    egress_bytes: int = 0
    ingress_bytes: int = 0


@dataclass
class Network:
    """Full-duplex NICs of ``gbps`` Gbit/s (each direction) for the server's host and each worker's.

    Args:
        gbps: every card's rate in each direction (> 0).
        efficiency: the share of the rate that carries message bytes (0 < efficiency ≤ 1).
        overhead_bytes: bytes a message carries besides its payload.
    """

    gbps: float
    efficiency: float = 0.95
    overhead_bytes: int = 256
    nics: dict[int, Nic] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.gbps <= 0 or not 0 < self.efficiency <= 1 or self.overhead_bytes < 0:
            raise ValueError(f"network: gbps > 0, 0 < efficiency <= 1, overhead_bytes >= 0 (got {self})")

    def seconds(self, payload_bytes: int) -> float:
        """Seconds one card takes to carry a message of ``payload_bytes`` at full rate."""
        return (payload_bytes + self.overhead_bytes) * 8 / (self.gbps * 1e9 * self.efficiency)

    def _nic(self, host: int) -> Nic:
        return self.nics.setdefault(host, Nic())

    def transfer(self, src: int, dst: int, now: float, payload_bytes: int) -> float:
        """A message of ``payload_bytes`` handed to ``src``'s card at ``now``: when it has reached ``dst``.
        Reserves both cards (call it in simulated-time order, at ``now``)."""
        out, into, dur = self._nic(src), self._nic(dst), self.seconds(payload_bytes)
        leave = max(now, out.egress_free)
        out.egress_free = leave + dur
        enter = max(leave, into.ingress_free)
        arrive = max(out.egress_free, enter + dur)
        into.ingress_free = arrive
        out.egress_bytes += payload_bytes + self.overhead_bytes
        into.ingress_bytes += payload_bytes + self.overhead_bytes
        return arrive

    def use(self, host: int, seconds: float) -> dict[str, float]:
        """Share of ``host``'s card's rate used in each direction over ``seconds`` of simulated time."""
        nic, cap = self._nic(host), self.gbps * 1e9 / 8 * seconds
        return {"egress": nic.egress_bytes / cap if cap else 0.0, "ingress": nic.ingress_bytes / cap if cap else 0.0}
