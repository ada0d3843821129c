"""The wire protocol between workers and the parameter server: raw float32 buffers, no pickle.

A message is a ZeroMQ multipart ``[header, payload, tag]``:

* ``header`` — 48 bytes, ``struct`` format :data:`HEADER`: magic ``DDQN``, protocol version, message type,
  flags, worker (partition) and attempt, sequence number, a θ version, one 64-bit field whose meaning depends
  on the type (θ⁻ version, count, staleness: :class:`Header`), and the payload length.
* ``payload`` — raw float32 parameters/gradients (little-endian, the model layout's length), or a small
  JSON object for HELLO/WELCOME/STATS (at most :data:`MAX_JSON` bytes).
* ``tag`` — authenticates header and payload: 16 bytes (HMAC) for the handshake, then 64 bytes (the
  header sealed with AES-GCM, payload as associated data, and the GCM tag).

Authentication. The driver generates a per-run secret and ships it inside the Spark job. A worker opens a
session with HELLO (its random nonce), tagged with HMAC-SHA256 under the secret; the server answers WELCOME
with its own random nonce, also HMAC-tagged. Both derive a fresh session key
``HMAC(secret, "ddqn-session" ‖ client_nonce ‖ server_nonce)``; every later message in either direction is
tagged with AES-GMAC under that key (AES-GCM with the message as associated data), its nonce built from the
direction and the session's strictly increasing sequence number, so a message cannot be forged, altered,
replayed or reflected. A worker's sequence numbers go on across its sessions (each HELLO names its random client
id): after a reset it opens a new session and sends the request in flight again under the same number, so the
server can tell a PUSH or STATS it has already taken (answered with ``F_REPEAT``, not applied again). Before any
of this, a connection must present :func:`connection_token` (ZeroMQ PLAIN, checked by ``ddqn.distributed.zap``),
so a peer without it cannot get a message read at all; one that learned the token but lacks the secret can send
bytes, which the server drops and counts; it cannot open a session, push a gradient, read θ or stop anything.

Two ports. The token admits a connection to the server's *join* port only, where the server reads nothing but
HELLOs (at a bounded rate). A session's messages go to its *session* port (the WELCOME names it): a connection there
logs in with the session's id (the server's nonce, hex) and its :func:`session_ticket`, derived from the session key,
which the ZAP handler admits once. So a peer with the token alone (PLAIN sends it in clear) can reach only the join
port, and however many connections it floods it from, it cannot take the sessions' turns.
Payloads are not encrypted (θ and gradients are not secret here); use Spark's own network encryption for the
job's broadcast.

``auth: connection`` (config) authenticates the connection instead of each payload, as Spark's own
``spark.authenticate`` does: the handshake is the same and every header is still sealed (type, versions,
sizes and sequence numbers cannot be forged or replayed), but the payload bytes are not MAC'd. It saves
the two passes over 0.9 MB per update (≈ 0.12 ms each); what it gives up: a peer on the network path able
to rewrite bytes inside an established TCP connection could alter a gradient or θ. A peer without the
secret still cannot open a session or inject into someone else's.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import struct
from typing import Any, NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ddqn.config import AUTH_MODES

MAGIC = b"DDQN"
VERSION = 3  # 3: sessions on a port of their own, entered with a ticket (WELCOME's session_port);
# 2: a client's sequence numbers go on across its sessions (HELLO's client_id); F_REPEAT
# magic, protocol version, type, flags, worker, attempt, pad, seq, θ version, aux, payload bytes
HEADER = struct.Struct("<4sBBHIHHQQQI4x")
NONCE = struct.Struct("<BQ3x")  # a session message's AES-GCM nonce: direction, sequence number, 3 zero bytes
TAG_BYTES = 16
NONCE_BYTES = 16
MAX_JSON = 64 * 1024

# message types: worker → server
HELLO, FETCH, PUSH, STATS, BYE = 1, 2, 3, 4, 5
COMMIT = 6  # worker → shard of a sharded server (ps_shards > 1): apply the slice pushed, with every shard's vote
# (flagged F_THETA, it asks for the shard's θ slice in the reply, as a FETCH would: ``shards.server``)
# server → worker
WELCOME, PARAMS, ACK = 11, 12, 13
TYPE_NAMES = {HELLO: "HELLO", FETCH: "FETCH", PUSH: "PUSH", STATS: "STATS", BYE: "BYE", COMMIT: "COMMIT",
              WELCOME: "WELCOME", PARAMS: "PARAMS", ACK: "ACK"}
# flags
F_THETA, F_TARGET, F_STOP = 1, 2, 4
F_REPEAT = 8  # ACK of a PUSH/STATS re-sent after a reset that the server had taken before it: not applied again
F_APPLIED = 16  # ACK of a COMMIT (sharded server): the shard applied its slice (now or, with F_REPEAT, before)
NO_VERSION = 2**64 - 1  # FETCH from a worker that holds no parameters yet


# Why a message was dropped: the server counts drops under these keys and no others (summary.json "dropped").
DROP_REASONS = (
    "malformed",  # frame count or sizes, header (size, magic, protocol version, type), payload length
    "unauthenticated",  # HMAC/GMAC tag does not verify, or the header differs from its sealed copy
    "unauthenticated connection",  # refused by ZAP: no connection token or session ticket (never read)
    "replayed",  # sequence number not above the last one received
    "bad json",  # not JSON, over MAX_JSON, nested too deep, or not an object
    "bad hello",  # authentic HELLO with a wrong model size, auth mode, pid, host, client id, partition or attempt
    "stale attempt",  # a session for an older task attempt than the partition's latest proven one
    "wrong worker",  # message names another worker than its session
    "unexpected type",
    "wrong size",  # gradient of the wrong length
    "not finite",  # gradient with NaN or ±inf
    "too large",  # gradient L2 norm over the limit (max_grad_norm)
    "future version",  # gradient computed on a version the server never had
    "too stale",  # gradient older than the server's max_staleness versions (an honest worker: it gets its ACK)
    "stale round",  # sync mode: gradient for another round
    "resent",  # PUSH/STATS re-sent after a reset that the server had taken before it (it gets its ACK again)
    "bad stats",  # STATS fields of the wrong type or out of bounds
    "too fast",  # STATS claiming more env steps than the time since the partition's last report allows
    "busy",  # sharded server: a PUSH arriving while a snapshot's cut holds PUSHes, with MAX_HELD already held
    "expired",  # sharded server: a pushed slice never committed (past its time, or replaced by its worker's next push)
    "vetoed",  # sharded server: a COMMIT whose votes say some slice was invalid or the whole norm is too large
    "unknown push",  # sharded server: a COMMIT for no pending slice (expired, never pushed, or the shard restarted)
    "receive error",
    "server error",  # a bug; logged with its traceback
)


class ProtocolError(ValueError):
    """A message is malformed, oversized, of the wrong size, or fails authentication.

    ``reason`` is one of :data:`DROP_REASONS` (what the server counts); the message text may carry details.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        if reason not in DROP_REASONS:
            raise ValueError(f"unknown drop reason {reason!r}")
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class Header(NamedTuple):
    """Decoded header fields (a tuple: made for every message, so made cheaply).

    ``version`` is a θ version: the one the worker holds (FETCH) or computed its gradient on (PUSH), or the
    server's current one (PARAMS, ACK). ``aux`` depends on the type; read it through the named properties.
    """

    type: int
    flags: int
    worker: int
    attempt: int
    seq: int
    version: int
    aux: int
    nbytes: int

    @property
    def target_version(self) -> int:
        """FETCH: the θ⁻ version the worker holds; PARAMS: the server's θ⁻ version."""
        return self.aux

    @property
    def summed(self) -> int:
        """PUSH: how many minibatch gradients the payload sums (``push_every``)."""
        return self.aux

    @property
    def staleness(self) -> int:
        """ACK of a PUSH: server version − the version the gradient was computed on."""
        return self.aux

    def pack(self) -> bytes:
        return HEADER.pack(MAGIC, VERSION, self.type, self.flags, self.worker, self.attempt, 0, self.seq,
                           self.version, self.aux, self.nbytes)


def new_secret() -> bytes:
    """A fresh 32-byte per-run secret."""
    return os.urandom(32)


def connection_token(secret: bytes) -> bytes:
    """The ZeroMQ PLAIN password every connection must present (checked by the server's ZAP handler before a
    single message is read): derived from the secret, which it does not reveal."""
    return hmac.new(secret, b"ddqn-connection-token", hashlib.sha256).hexdigest()[:32].encode()


def parse_header(frame: bytes) -> Header:
    """Decode and sanity-check a header frame (size, magic, version, type)."""
    if len(frame) != HEADER.size:
        raise ProtocolError("malformed", f"header of {len(frame)} bytes, expected {HEADER.size}")
    magic, protocol, kind, flags, worker, attempt, _, seq, version, aux, nbytes = HEADER.unpack(frame)
    if magic != MAGIC or protocol != VERSION:
        raise ProtocolError("malformed", "bad magic or protocol version")
    if kind not in TYPE_NAMES:
        raise ProtocolError("malformed", f"unknown message type {kind}")
    return Header(kind, flags, worker, attempt, seq, version, aux, nbytes)


def _hmac_tag(secret: bytes, header: bytes, payload: bytes) -> bytes:
    return hmac.new(secret, header + payload, hashlib.sha256).digest()[:TAG_BYTES]


def session_key(secret: bytes, client_nonce: bytes, server_nonce: bytes) -> bytes:
    """The per-session AES-128 key both ends derive after HELLO/WELCOME."""
    return hmac.new(secret, b"ddqn-session" + client_nonce + server_nonce, hashlib.sha256).digest()[:16]


def session_ticket(key: bytes) -> bytes:
    """The PLAIN password of a session's one connection to the session port: derived from the session key, so only
    the two ends know it before the worker presents it (in clear), and the server admits it once."""
    return hmac.new(key, b"ddqn-ticket", hashlib.sha256).hexdigest()[:32].encode()


def encode_json(obj: dict[str, Any]) -> bytes:
    """A small JSON payload (HELLO/WELCOME/STATS); refuses anything over MAX_JSON bytes."""
    data = json.dumps(obj, separators=(",", ":")).encode()
    if len(data) > MAX_JSON:
        raise ProtocolError("bad json", f"JSON payload of {len(data)} bytes exceeds {MAX_JSON}")
    return data


def decode_json(payload: bytes) -> dict[str, Any]:
    """Parse a JSON payload; a non-object or oversized payload is a ProtocolError."""
    if len(payload) > MAX_JSON:
        raise ProtocolError("bad json", "JSON payload too large")
    try:
        obj = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # RecursionError: nested too deep
        raise ProtocolError("bad json", "payload is not valid JSON") from exc
    if not isinstance(obj, dict):
        raise ProtocolError("bad json", "JSON payload must be an object")
    return obj


def seal_handshake(secret: bytes, kind: int, worker: int, attempt: int, payload: bytes, version: int = 0,
                   aux: int = 0) -> list[bytes]:
    """HELLO/WELCOME frames, tagged with HMAC-SHA256 under the run secret."""
    h = Header(kind, 0, worker, attempt, 0, version, aux, len(payload)).pack()
    return [h, payload, _hmac_tag(secret, h, payload)]


def open_handshake(secret: bytes, frames: list[bytes], want: int) -> tuple[Header, bytes]:
    """Check a HELLO/WELCOME (type ``want``) and its HMAC tag; return header and payload."""
    header, payload, raw = _split(frames, TAG_BYTES)
    if header.type != want:
        raise ProtocolError("unexpected type", f"expected {TYPE_NAMES[want]}, got {TYPE_NAMES[header.type]}")
    if not hmac.compare_digest(bytes(frames[2]), _hmac_tag(secret, raw, bytes(payload))):
        raise ProtocolError("unauthenticated", "handshake tag does not verify (wrong secret?)")
    return header, bytes(payload)


def _split(frames: list, tag_bytes: int) -> tuple[Header, memoryview, bytes]:
    """The parsed header, the payload (a view) and the header frame's bytes of ``[header, payload, tag]``."""
    if len(frames) != 3 or memoryview(frames[2]).nbytes != tag_bytes:
        raise ProtocolError("malformed", f"expected 3 frames [header, payload, tag of {tag_bytes} bytes]")
    raw = bytes(frames[0])
    header = parse_header(raw)
    payload = _bytes_view(frames[1])
    if payload.nbytes != header.nbytes:
        raise ProtocolError("malformed", f"payload of {payload.nbytes} bytes, header says {header.nbytes}")
    return header, payload, raw


class Session:
    """One authenticated session's sealing and opening (AES-GMAC, strictly increasing sequence numbers).

    ``outbound``/``inbound`` are the direction bytes of this end (server: 1/0, worker: 0/1). With
    ``auth="connection"`` the header is sealed but the payload is not part of the tag (see the module).
    """

    def __init__(self, key: bytes, outbound: int, auth: str = "message") -> None:
        if auth not in AUTH_MODES:
            raise ValueError(f"auth must be one of {AUTH_MODES}, got {auth!r}")
        self._mac_payload = auth == "message"
        self._aead = AESGCM(key)
        self._out, self._in = outbound, 1 - outbound
        self.sent = 0  # sequence number of the last message sent
        self.received = 0  # ... and received

    def seal(self, kind: int, worker: int, attempt: int, version: int = 0, aux: int = 0,
             payload: bytes | memoryview = b"", flags: int = 0) -> list:
        """Frames of one message; ``payload`` may be a buffer (sent without a copy)."""
        self.sent += 1
        payload = _bytes_view(payload)
        size = payload.nbytes
        h = Header(kind, flags, worker, attempt, self.sent, version, aux, size).pack()
        # AES-GCM with the payload as associated data and the header as the (tiny) plaintext: one
        # pass over the payload, no copy of it; the tag frame carries the sealed header and the tag.
        tag = self._aead.encrypt(NONCE.pack(self._out, self.sent), h, payload if self._mac_payload else None)
        return [h, payload, tag]

    def open(self, frames: list) -> tuple[Header, memoryview]:
        """Verify one message of this session; raises ProtocolError if forged, replayed or malformed.

        ``frames`` may be bytes or zero-copy buffers; the payload is returned as a memoryview of frame 1.
        """
        header, payload, raw = _split(frames, HEADER.size + TAG_BYTES)
        if header.seq <= self.received:
            raise ProtocolError("replayed", f"seq {header.seq} <= {self.received}")
        try:
            sealed = self._aead.decrypt(NONCE.pack(self._in, header.seq), bytes(frames[2]),
                                        payload if self._mac_payload else None)
        except InvalidTag as exc:
            raise ProtocolError("unauthenticated", "message tag does not verify") from exc
        if not hmac.compare_digest(sealed, raw):
            raise ProtocolError("unauthenticated", "message header does not match its sealed copy")
        self.received = header.seq
        return header, payload


def _bytes_view(buf: bytes | memoryview) -> memoryview:
    """A flat unsigned-byte view of any contiguous buffer (numpy arrays, zmq frames, bytes)."""
    view = memoryview(buf)
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")
