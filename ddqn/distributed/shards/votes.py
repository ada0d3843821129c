"""A shard's vote on one slice of a pushed gradient (sharded parameter server, ``ps_shards > 1``).

Shard k answers a worker's PUSH of slice k with a vote: whether the slice is valid (right size, finite, on a version
the shard had and not too stale, its own norm within the bound) and its squared L2 norm, authenticated with a MAC
under the *shard key*, a secret the driver shares with its shards only (workers never see it). The worker sends all S
votes to every shard in a COMMIT; a shard applies its pending slice only if every vote verifies, every one is valid
and the sum of their squared norms is within ``max_grad_norm``² (× ``summed``², as for one server). A worker cannot
forge or alter a vote, nor move one to another push, worker, attempt or shard: the MAC covers all of them.

One vote on the wire is :data:`VOTE` (32 bytes, little-endian): shard index (u16), valid (u8), 5 bytes of zeros, the
slice's squared norm (float64), and the first 16 bytes of HMAC-SHA256(shard key, :data:`SIGNED` of worker, attempt,
push id, summed, shard, valid, squared norm). A COMMIT's payload is the S votes in shard order.
"""
from __future__ import annotations

import hashlib
import hmac
import math
import struct
from dataclasses import dataclass

VOTE = struct.Struct("<HB5xd16s")
SIGNED = struct.Struct("<8sIHQQHBd")  # domain, worker, attempt, push id, summed, shard, valid, squared norm
DOMAIN = b"ddqn-vt"  # padded to 8 bytes: separates votes from every other MAC under the shard key


@dataclass(frozen=True)
class Vote:
    """One shard's verdict on its slice of push ``push_id`` (``sumsq``: the slice's squared L2 norm, float64)."""

    shard: int
    valid: bool
    sumsq: float


def _mac(key: bytes, worker: int, attempt: int, push_id: int, summed: int, v: Vote) -> bytes:
    signed = SIGNED.pack(DOMAIN, worker, attempt, push_id, summed, v.shard, int(v.valid), v.sumsq)
    return hmac.new(key, signed, hashlib.sha256).digest()[:16]


def seal(key: bytes, worker: int, attempt: int, push_id: int, summed: int, vote: Vote) -> bytes:
    """The 32 wire bytes of ``vote`` (what the shard puts in its ACK of the PUSH)."""
    return VOTE.pack(vote.shard, int(vote.valid), vote.sumsq, _mac(key, worker, attempt, push_id, summed, vote))


def open_all(key: bytes, shards: int, worker: int, attempt: int, push_id: int, summed: int,
             payload: bytes) -> list[Vote] | None:
    """The S votes of a COMMIT's payload, in shard order; None if any is missing, out of order or does not verify."""
    if len(payload) != shards * VOTE.size:
        return None
    votes = []
    for k in range(shards):
        shard, valid, sumsq, mac = VOTE.unpack_from(payload, k * VOTE.size)
        vote = Vote(shard, bool(valid), sumsq)
        if shard != k or valid > 1 or not hmac.compare_digest(mac, _mac(key, worker, attempt, push_id, summed, vote)):
            return None
        votes.append(vote)
    return votes


def admitted(votes: list[Vote], max_norm_sq: float, summed: int) -> bool:
    """Whether a COMMIT's votes allow applying: all valid, and the whole gradient's squared norm (the sum of the
    slices', float64) finite and within ``max_norm_sq`` × ``summed``² (a sum of ``summed`` honest gradients)."""
    total = math.fsum(v.sumsq for v in votes)
    return all(v.valid for v in votes) and math.isfinite(total) and total <= max_norm_sq * max(summed, 1) ** 2
