"""The control channel between the driver and its shard tasks (placement ``executors``): ZeroMQ, authenticated.

The driver binds a control port (a ROUTER on its own address); each shard task connects to it (a DEALER) and logs in
with ZeroMQ PLAIN and a token derived from the *shard key* (the per-run key the driver shares with its shards only;
workers never hold it), so a peer without it gets no message read at all. Then:

1. **register** (task → driver): ``{kind, shard, attempt, pid, host, nonce}``, tagged under the shard key. The driver
   refuses a nonce it has seen (``replayed``) and an attempt not above the last one it linked for that shard
   (``stale attempt``).
2. **accept** (driver → task): the driver's nonce, the version counters and the shard's starting slice (θ, θ⁻, the
   solver history, as raw float32 frames), tagged under the *link key*
   ``HMAC-SHA256(shard key, "ddqn-link" ‖ shard ‖ attempt ‖ task nonce ‖ driver nonce)``: fresh for each
   registration, and known to both ends only.
3. **ready** (task → driver, under the link key): its server's join and session ports and address.
4. **cmd** / **reply**: the commands of ``shards.host`` (``status``, ``hold``, ``release``, ``dump``, ``load``,
   ``publish``, ``stop``, ``exit``), each numbered (``seq``, strictly increasing; a reply carries its command's
   number), slices inside the messages: ``load`` carries the cut to roll back to, ``dump``'s reply the shard's slice.

A message is ZeroMQ frames ``[header, array…, tag]``: the header a small JSON object (``sizes`` lists the arrays'
byte counts), the arrays raw little-endian float32, the tag HMAC-SHA256 over the direction and every frame, each
prefixed by its length. Frame count and sizes are checked before the tag is computed (:func:`check_sizes`), the tag
before the JSON is read (except an accept's, whose header names the driver nonce the key is derived from: at most
:data:`MAX_HEADER` bytes of JSON), nothing is unpickled, and a message that fails is dropped and counted under one of
:data:`CONTROL_DROPS`.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import struct
from typing import Any

import numpy as np

from ddqn.distributed.shards.files import SliceState

TO_DRIVER, TO_SHARD = b"ddqn-ctl-up", b"ddqn-ctl-down"  # the tag's domain: a message cannot be reflected
TAG = 32  # bytes of HMAC-SHA256
MAX_HEADER = 256 * 1024  # bytes of a header's JSON (a status reply lists up to 2,000 staleness values and the held
# push ids of a cut, at most 1,024)
MAX_HISTORIES = 4  # solver history vectors a slice may carry (Adam has 2)
NONCE = 16  # bytes of each side's nonce
# Why a control message was dropped: counted under these keys and no others
CONTROL_DROPS = (
    "malformed",  # frame count, a header that is not a JSON object of the right fields, array sizes
    "oversized",  # more bytes than the largest message of the kind
    "unauthenticated",  # the tag does not verify (a wrong key, a tampered frame)
    "replayed",  # a registration's nonce seen before, or a sequence number not above the last one
    "stale attempt",  # a registration for an attempt not above the one linked for its shard
    "unexpected",  # a message no one waits for (a reply to no command, a registration for no shard)
)


class Dropped(ValueError):
    """A control message refused; ``reason`` is one of :data:`CONTROL_DROPS`."""

    def __init__(self, reason: str, detail: str = "") -> None:
        if reason not in CONTROL_DROPS:
            raise ValueError(f"unknown drop reason {reason!r}")
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def link_key(shard_key: bytes, shard: int, attempt: int, shard_nonce: bytes, driver_nonce: bytes) -> bytes:
    """The key of one registration's link: both sides' nonces, the shard and its attempt under the shard key."""
    return hmac.new(shard_key, b"ddqn-link" + struct.pack("<II", shard, attempt) + shard_nonce + driver_nonce,
                    hashlib.sha256).digest()


def control_token(shard_key: bytes) -> bytes:
    """The PLAIN password of a connection to the control port (derived from the shard key, which it does not reveal;
    not the workers' connection token)."""
    return hmac.new(shard_key, b"ddqn-control-token", hashlib.sha256).hexdigest()[:32].encode()


def tag(key: bytes, direction: bytes, frames: list) -> bytes:
    """HMAC-SHA256 under ``key`` of ``direction`` and every frame, each after its length (8 bytes)."""
    h = hmac.new(key, direction, hashlib.sha256)
    for f in frames:
        view = memoryview(f)
        h.update(len(view.cast("B")).to_bytes(8, "little"))
        h.update(view)
    return h.digest()


def seal(key: bytes, direction: bytes, header: dict[str, Any], arrays: list[np.ndarray] = ()) -> list:
    """The frames of one message: ``header`` (with ``sizes``), the arrays as little-endian float32, the tag."""
    bufs = [np.ascontiguousarray(a, "<f4") for a in arrays]
    head = json.dumps({**header, "sizes": [b.nbytes for b in bufs]}, separators=(",", ":")).encode()
    if len(head) > MAX_HEADER:
        raise ValueError(f"control header of {len(head)} bytes")
    frames = [head, *(memoryview(b).cast("B") for b in bufs)]
    return [*frames, tag(key, direction, frames)]


def check_sizes(frames: list, max_arrays: int, max_bytes: int) -> None:
    """Frame count and sizes, before any tag is computed: at most ``max_arrays`` arrays of ``max_bytes`` in all."""
    if not 2 <= len(frames) <= max_arrays + 2:
        raise Dropped("malformed", f"{len(frames)} frames")
    if len(frames[-1]) != TAG:
        raise Dropped("malformed", "tag size")
    if len(frames[0]) > MAX_HEADER or sum(len(f) for f in frames[1:-1]) > max_bytes:
        raise Dropped("oversized")
    if any(len(f) % 4 for f in frames[1:-1]):
        raise Dropped("malformed", "an array is not float32")


def header_of(frame) -> dict[str, Any]:
    """A header frame's JSON object (at most MAX_HEADER bytes, checked by :func:`check_sizes`)."""
    try:
        obj = json.loads(bytes(frame))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise Dropped("malformed", "header is not JSON") from exc
    if not isinstance(obj, dict):
        raise Dropped("malformed", "header is not a JSON object")
    return obj


def open_frames(key: bytes, direction: bytes, frames: list, max_arrays: int, max_bytes: int,
                header: dict | None = None) -> tuple[dict[str, Any], list[np.ndarray]]:
    """Check and open one message: sizes, then the tag, then the header (unless already read: ``header``) and its
    ``sizes`` against the arrays. Returns the header and the arrays (read-only float32 views of the frames)."""
    check_sizes(frames, max_arrays, max_bytes)
    if not hmac.compare_digest(bytes(frames[-1]), tag(key, direction, frames[:-1])):
        raise Dropped("unauthenticated")
    header = header_of(frames[0]) if header is None else header
    sizes = header.get("sizes")
    if sizes != [len(f) for f in frames[1:-1]]:
        raise Dropped("malformed", "sizes")
    return header, [np.frombuffer(f, "<f4") for f in frames[1:-1]]


def integer(header: dict, name: str, lo: int = 0, hi: int = 2**63) -> int:
    """``header[name]`` as an integer in ``[lo, hi)``; Dropped("malformed") otherwise (a bool is not one)."""
    v = header.get(name)
    if type(v) is not int or not lo <= v < hi:
        raise Dropped("malformed", f"{name} must be an integer in [{lo}, {hi})")
    return v


def nonce_of(header: dict, name: str) -> bytes:
    v = header.get(name)
    try:
        raw = bytes.fromhex(v) if isinstance(v, str) else b""
    except ValueError:
        raw = b""
    if len(raw) != NONCE:
        raise Dropped("malformed", f"{name} must be {NONCE} bytes of hex")
    return raw


def slice_arrays(state: SliceState) -> list[np.ndarray]:
    """A slice's arrays in wire order: θ, θ⁻, then the solver history."""
    return [state.theta, state.target, *state.history]


def slice_of(arrays: list[np.ndarray], lo: int, hi: int, counts: dict, histories: int) -> SliceState:
    """The SliceState of ``arrays`` (θ, θ⁻, ``histories`` history vectors of ``hi - lo`` floats each) and the counts
    ``version``, ``target_version``, ``iter``; Dropped("malformed") if any length differs."""
    if len(arrays) != 2 + histories or any(a.size != hi - lo for a in arrays):
        raise Dropped("malformed", "a slice of the wrong shape")
    return SliceState(lo, hi, arrays[0], arrays[1], list(arrays[2:]), integer(counts, "version"),
                      integer(counts, "target_version"), integer(counts, "iter"))
