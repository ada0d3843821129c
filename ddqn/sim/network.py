"""Hosts' network cards in simulated time: a full-duplex NIC per host, shared by every message through it.

Each host (the server's, and one per worker) has a NIC of ``gbps`` Gbit/s in each direction, like the shaped
cables of the network-namespace hosts (``HostsCluster(link_gbit=)``). A message's bytes leave through its
sender's egress and arrive through its receiver's ingress. The two cards carry it as a pipeline: it has arrived
when its last byte has left the egress and its ingress, which starts no earlier than its egress did, has carried
it too. Each message carries ``overhead_bytes`` more than its payload (framing, TCP/IP headers, the 48-byte ZeroMQ
header and its tag), and the wire carries ``efficiency`` of the rate as message bytes (TCP's acknowledgements and
segment headers take the rest).

**Who waits for whom.** Large messages (θ, gradients) take each card direction first come, first served: a
message waits for the large ones ahead of it, so all workers' gradients queue on the server's ingress and all
their θ on its egress. A message of at most ``cut_through_bytes`` on the wire (a FETCH request, a PUSH's
acknowledgement: one packet) does not wait for the large ones: on a real link its packet is interleaved with a
large transfer's (each TCP connection keeps only a few packets queued at a time), so it waits only for the small
messages ahead of it and pays its own bytes at the rate, and the large transfer in flight finishes that much
later. Every byte still takes its time on the card: the rate is never exceeded.

**Token bucket** (``burst_bytes`` > 0): each card direction is shaped like Linux's ``tbf``: tokens accrue at the
rate up to ``burst_bytes`` while the direction is idle, and a message's first bytes up to the tokens it finds go at
once; the rest at the rate. So after an idle gap the first ``burst_bytes`` of a message cost nothing, as on the
shaped hosts (``hosts.MIN_BURST_BYTES``). 0: a plain rate.
"""
from __future__ import annotations

from dataclasses import dataclass, field

SERVER = -1  # the server's host; workers' hosts are their partitions 0 … W−1
CUT_THROUGH_BYTES = 1500  # messages at most this large on the wire (one Ethernet packet) pass the large ones


@dataclass
class Direction:
    """One direction of a card: when it is next free of large messages and of small ones (simulated seconds), the
    tokens it had at ``free``, and the bytes it has carried."""

    free: float = 0.0
    small_free: float = 0.0
    tokens: float = 0.0
    bytes: int = 0


@dataclass
class Nic:
    """One host's card: its egress and its ingress."""

    egress: Direction = field(default_factory=Direction)
    ingress: Direction = field(default_factory=Direction)


@dataclass
class Network:
    """Full-duplex NICs of ``gbps`` Gbit/s (each direction) for the server's host and each worker's.

    Args:
        gbps: every card's rate in each direction (> 0).
        efficiency: the share of the rate that carries message bytes (0 < efficiency ≤ 1).
        overhead_bytes: bytes a message carries besides its payload.
        burst_bytes: each direction's token bucket (``tbf``'s burst); 0: none.
        cut_through_bytes: messages (with overhead) at most this large do not queue behind large ones.
    """

    gbps: float
    efficiency: float = 0.95
    overhead_bytes: int = 256
    burst_bytes: int = 0
    cut_through_bytes: int = CUT_THROUGH_BYTES
    nics: dict[int, Nic] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.gbps <= 0 or not 0 < self.efficiency <= 1 or self.overhead_bytes < 0 or self.burst_bytes < 0
                or self.cut_through_bytes < 0):
            raise ValueError("network: gbps > 0, 0 < efficiency <= 1, overhead_bytes, burst_bytes and "
                             f"cut_through_bytes >= 0 (got {self})")

    @property
    def bytes_per_s(self) -> float:
        """Message bytes a card direction carries per second at full rate."""
        return self.gbps * 1e9 / 8 * self.efficiency

    def seconds(self, payload_bytes: int) -> float:
        """Seconds one card takes to carry a message of ``payload_bytes`` at full rate (no tokens)."""
        return (payload_bytes + self.overhead_bytes) / self.bytes_per_s

    def _nic(self, host: int) -> Nic:
        """``host``'s card; a new one's buckets are full."""
        if host not in self.nics:
            self.nics[host] = Nic(Direction(tokens=self.burst_bytes), Direction(tokens=self.burst_bytes))
        return self.nics[host]

    def _carry(self, d: Direction, start: float, wire: int) -> float:
        """``wire`` bytes through direction ``d`` from ``start`` (≥ ``d.free``), first the tokens it has then; returns
        when its last byte has passed, and reserves ``d`` until then."""
        rate = self.bytes_per_s
        tokens = min(float(self.burst_bytes), d.tokens + (start - d.free) * rate)
        free = min(tokens, wire)
        d.free, d.tokens = start + (wire - free) / rate, tokens - free
        d.bytes += wire
        return d.free

    def _pass(self, d: Direction, start: float, wire: int) -> float:
        """A small message through ``d`` from ``start`` (≥ ``d.small_free``), past the large ones: a large transfer
        in flight or queued finishes its bytes' time later; on an idle direction it is carried as any message.
        Returns when it has passed."""
        if d.free <= start:
            d.small_free = self._carry(d, start, wire)
            return d.small_free
        dur = wire / self.bytes_per_s
        d.free += dur
        d.small_free = start + dur
        d.bytes += wire
        return d.small_free

    def transfer(self, src: int, dst: int, now: float, payload_bytes: int) -> float:
        """A message of ``payload_bytes`` handed to ``src``'s card at ``now``: when it has reached ``dst``.
        Reserves both cards (call it in simulated-time order, at ``now``)."""
        out, into, wire = self._nic(src).egress, self._nic(dst).ingress, payload_bytes + self.overhead_bytes
        if wire <= self.cut_through_bytes:
            start = max(now, out.small_free)
            left = self._pass(out, start, wire)
            return max(left, self._pass(into, max(start, into.small_free), wire))
        start = max(now, out.free)
        left = self._carry(out, start, wire)
        return max(left, self._carry(into, max(start, into.free), wire))

    def use(self, host: int, seconds: float) -> dict[str, float]:
        """Share of ``host``'s card's rate used in each direction over ``seconds`` of simulated time."""
        nic, cap = self._nic(host), self.gbps * 1e9 / 8 * seconds
        return {"egress": nic.egress.bytes / cap if cap else 0.0, "ingress": nic.ingress.bytes / cap if cap else 0.0}
