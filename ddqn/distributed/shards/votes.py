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
from typing import NamedTuple

VOTE = struct.Struct("<HB5sd16s")  # shard, valid, pad (zeros, not signed), squared norm, MAC
PAD = bytes(5)
SIGNED = struct.Struct("<8sIHQQHBd")  # domain, worker, attempt, push id, summed, shard, valid, squared norm
DOMAIN = b"ddqn-vt"  # padded to 8 bytes: separates votes from every other MAC under the shard key
MAC_BYTES = 16


class Vote(NamedTuple):
    """One shard's verdict on its slice of push ``push_id`` (``sumsq``: the slice's squared L2 norm, float64)."""

    shard: int
    valid: bool
    sumsq: float


class VoteKey:
    """The shard key, ready to MAC votes: one HMAC-SHA256 keyed once and copied per vote (a COMMIT carries S votes,
    each verified), so no vote pays for hashing the key's pads again."""

    def __init__(self, key: bytes) -> None:
        self._keyed = hmac.new(key, digestmod=hashlib.sha256)

    def mac(self, message: bytes) -> bytes:
        """The first MAC_BYTES of HMAC-SHA256(key, ``message``)."""
        h = self._keyed.copy()
        h.update(message)
        return h.digest()[:MAC_BYTES]


def _keyed(key: bytes | VoteKey) -> VoteKey:
    return key if isinstance(key, VoteKey) else VoteKey(key)


def seal(key: bytes | VoteKey, worker: int, attempt: int, push_id: int, summed: int, vote: Vote) -> bytes:
    """The 32 wire bytes of ``vote`` (what the shard puts in its ACK of the PUSH)."""
    valid = int(vote.valid)
    mac = _keyed(key).mac(SIGNED.pack(DOMAIN, worker, attempt, push_id, summed, vote.shard, valid, vote.sumsq))
    return VOTE.pack(vote.shard, valid, PAD, vote.sumsq, mac)


def open_all(key: bytes | VoteKey, shards: int, worker: int, attempt: int, push_id: int, summed: int,
             payload: bytes) -> list[Vote] | None:
    """The S votes of a COMMIT's payload, in shard order; None if any is missing, out of order, has a pad byte that
    is not zero (they are not signed: one vote, one encoding) or does not verify."""
    if len(payload) != shards * VOTE.size:
        return None
    key, votes = _keyed(key), []
    for k, (shard, valid, pad, sumsq, mac) in enumerate(VOTE.iter_unpack(payload)):
        if shard != k or valid > 1 or pad != PAD or not hmac.compare_digest(
                mac, key.mac(SIGNED.pack(DOMAIN, worker, attempt, push_id, summed, shard, valid, sumsq))):
            return None
        votes.append(Vote(shard, valid == 1, sumsq))
    return votes


def admitted(votes: list[Vote], max_norm_sq: float, summed: int) -> bool:
    """Whether a COMMIT's votes allow applying: all valid, and the whole gradient's squared norm (the sum of the
    slices', float64) finite and within ``max_norm_sq`` × ``summed``² (a sum of ``summed`` honest gradients)."""
    total = math.fsum(v.sumsq for v in votes)
    return all(v.valid for v in votes) and math.isfinite(total) and total <= max_norm_sq * max(summed, 1) ** 2
