"""The parameter server: the ZeroMQ loop that serves θ from the parameter store and applies gradients.

DistBelief-style downpour SGD: workers FETCH θ (and θ⁻ when its version changed) and PUSH gradients; each
gradient is applied as it arrives (asynchronous), tagged with its staleness (server version − the version
the worker computed on). With :class:`~ddqn.dist.sync.SyncRounds` a round waits for one gradient from every
live worker, all on the same θ, applies their average, and only then answers the workers' next FETCH.

It runs in a thread of the Spark driver with one ZeroMQ ROUTER socket bound to the driver's address. Every
message is authenticated (``ddqn.dist.protocol``); a malformed, truncated, oversized, wrongly-sized,
non-finite or unauthenticated message is dropped and counted, never applied. θ lives in the
:class:`~ddqn.dist.store.ParameterStore`, the counters in :class:`~ddqn.dist.stats.ServerStats`, sessions
in :class:`~ddqn.dist.sessions.SessionTable`; snapshots are the driver's (:mod:`ddqn.dist.checkpointer`).
"""
from __future__ import annotations

import logging
import os
import threading
import time

import numpy as np
import zmq

from ddqn.config import AUTH_MODES
from ddqn.dist import protocol as P
from ddqn.dist.sessions import Session, SessionTable
from ddqn.dist.stats import ServerStats
from ddqn.dist.store import ParameterStore
from ddqn.dist.sync import SyncRounds
from ddqn.solvers import kernels

log = logging.getLogger("ddqn.dist.server")


class ParameterServer:
    """Serves ``store`` to authenticated workers; see the module docstring.

    Args:
        store: θ, θ⁻ and the solver (the server thread applies gradients to it).
        secret: the per-run secret (``protocol.new_secret``).
        host, port: the address to bind (the driver's own; 127.0.0.1 for local runs); port 0 = any free port.
        rounds: synchronous rounds (the baseline), or None for asynchronous updates.
        session_timeout: seconds of silence after which a worker's session is dropped.
        auth: ``"message"`` (every payload MAC'd) or ``"connection"`` (see ``ddqn.dist.protocol``).
        stats: the counters (with env steps restored by ``--resume``); a fresh one by default.
    """

    def __init__(self, store: ParameterStore, secret: bytes, *, host: str = "127.0.0.1", port: int = 0,
                 rounds: SyncRounds | None = None, session_timeout: float = 120.0, auth: str = "message",
                 stats: ServerStats | None = None) -> None:
        if auth not in AUTH_MODES:
            raise ValueError(f"auth must be one of {AUTH_MODES}, got {auth!r}")
        self.store, self.secret, self.auth, self.rounds = store, secret, auth, rounds
        self.stats = stats or ServerStats()
        self.sessions = SessionTable(session_timeout)
        self.nbytes = store.num_params * 4
        self.stopping = threading.Event()
        self._grad = np.empty(store.num_params, np.float32)
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.ROUTER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.MAXMSGSIZE, self.nbytes + 4096)  # larger frames never reach us
        if port:
            self._sock.bind(f"tcp://{host}:{port}")
            self.port = port
        else:
            self.port = self._sock.bind_to_random_port(f"tcp://{host}")
        self.address = f"tcp://{host}:{self.port}"
        self._thread = threading.Thread(target=self._serve, name="ddqn-parameter-server", daemon=True)
        self._closed = False

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> "ParameterServer":
        """Start serving in a background thread."""
        self._thread.start()
        return self

    def request_stop(self) -> None:
        """Tell every worker to stop in its next reply; keep serving until :meth:`close`."""
        self.stopping.set()

    def close(self, grace: float = 5.0) -> None:
        """Stop serving, close the socket and free the port."""
        if self._closed:
            return
        self.stopping.set()
        self._closed = True
        if self._thread.is_alive():
            self._thread.join(timeout=grace + 2)
        self._sock.close(linger=0)
        self._ctx.term()

    def live_workers(self) -> int:
        """Sessions heard from within the session timeout (read by the server thread's own policies)."""
        return self.sessions.live()

    # -- the loop -------------------------------------------------------------------------------
    def _serve(self) -> None:
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        while not self._closed:
            if not poller.poll(100):
                self._expire_sessions()
                continue
            t = time.perf_counter()
            try:
                frames = self._sock.recv_multipart(copy=False)
            except zmq.ZMQError:
                self.stats.dropped("receive error")
                continue
            ident, body = frames[0].bytes, frames[1:]
            try:
                self._handle(ident, body)
            except P.ProtocolError as exc:
                self.stats.dropped(str(exc).split(" (")[0][:60])
            except Exception:  # a bug must not take the server (and every worker) down
                log.exception("error while handling a message")
                self.stats.dropped("server error")
            self.stats.busy(time.perf_counter() - t)

    def _handle(self, ident: bytes, body: list) -> None:
        session = self.sessions.get(ident)
        if session is None:
            self._hello(ident, [f.bytes for f in body])
            return
        header, payload = session.crypto.open(body)
        if header.worker != session.partition or header.attempt != session.attempt:
            raise P.ProtocolError("message names another worker than its session")
        session.last_seen = time.monotonic()
        self.stats.seen(session.partition)
        if header.type == P.FETCH:
            self._fetch(ident, session, header)
        elif header.type == P.PUSH:
            self._push(ident, session, header, payload)
        elif header.type == P.STATS:
            self._stats(ident, session, payload)
        elif header.type == P.BYE:
            self.sessions.close(ident)
        else:
            raise P.ProtocolError(f"unexpected {P.TYPE_NAMES[header.type]} from a worker")

    def _send(self, ident: bytes, frames: list) -> None:
        self._sock.send_multipart([ident, *frames], copy=False)

    def _flags(self) -> int:
        return P.F_STOP if self.stopping.is_set() else 0

    def _hello(self, ident: bytes, frames: list[bytes]) -> None:
        header, payload = P.open_handshake(self.secret, frames, P.HELLO)
        if len(payload) < P.NONCE_BYTES:
            raise P.ProtocolError("HELLO without a nonce")
        client_nonce, meta = payload[:P.NONCE_BYTES], P.decode_json(payload[P.NONCE_BYTES:])
        if meta.get("num_params") != self.store.num_params:
            raise P.ProtocolError("HELLO for another model size")
        if meta.get("auth", "message") != self.auth:
            raise P.ProtocolError("HELLO for another auth mode")
        server_nonce = os.urandom(P.NONCE_BYTES)
        key = P.session_key(self.secret, client_nonce, server_nonce)
        self.sessions.open(ident, P.Session(key, outbound=1, auth=self.auth), header.worker, header.attempt)
        pid, host = int(meta.get("pid", 0)), str(meta.get("host", ""))
        rejoin, played = self.stats.joined(header.worker, header.attempt, pid, host)
        if rejoin:
            log.warning("worker %d rejoined (attempt %d, pid %s on %s): its replay memory is regenerated",
                        header.worker, header.attempt, pid, host)
        else:
            log.info("worker %d joined (attempt %d, pid %s on %s)", header.worker, header.attempt, pid, host)
        reply = server_nonce + P.encode_json({"num_params": self.store.num_params, "env_steps": played})
        self._send(ident, P.seal_handshake(self.secret, P.WELCOME, header.worker, header.attempt, reply,
                                           self.store.version, self.store.target_version))

    def _fetch(self, ident: bytes, session: Session, header: P.Header) -> None:
        if self.rounds and not self.stopping.is_set() and self.rounds.holds_fetch(session, self.store.version):
            self.rounds.waiting.append((ident, session, header.target_version))  # answered when the round ends
            return
        self._send_params(ident, session, header.version, header.target_version)

    def _send_params(self, ident: bytes, session: Session, have: int, have_target: int) -> None:
        """PARAMS with θ if the worker's version is not current and θ⁻ if its target version is not."""
        flags, parts = self._flags(), []
        version, theta = self.store.published()
        target_version, target = self.store.published_target()
        if have != version:
            flags |= P.F_THETA
            parts.append(theta)
        if have_target != target_version:
            flags |= P.F_TARGET
            parts.append(target)
        payload = parts[0] if len(parts) == 1 else (np.concatenate(parts) if parts else b"")
        self._send(ident, session.crypto.seal(P.PARAMS, session.partition, session.attempt, version,
                                              target_version, payload, flags))

    def _push(self, ident: bytes, session: Session, header: P.Header, payload: memoryview) -> None:
        if header.nbytes != self.nbytes:
            raise P.ProtocolError("gradient of the wrong size")
        grad = np.frombuffer(payload, np.float32)  # read in place: the solver only reads it
        if not kernels.all_finite(grad):
            raise P.ProtocolError("gradient is not finite")
        staleness = self.store.version - header.version
        if staleness < 0:
            raise P.ProtocolError("gradient computed on a future version")
        self.stats.pushed(session.partition, staleness)
        if header.summed > 1:  # a sum over push_every minibatches → their mean
            grad = np.multiply(grad, np.float32(1 / header.summed), out=self._grad)
        if self.rounds is None:
            self.store.apply(grad)
        elif not self.rounds.add(session, header.version, self.store.version, grad):
            self.stats.dropped("sync gradient for another round")
        elif self._round_complete():
            self._finish_round()
        self._send(ident, session.crypto.seal(P.ACK, session.partition, session.attempt, self.store.version,
                                              staleness, flags=self._flags()))

    def _round_complete(self) -> bool:
        return self.rounds is not None and self.rounds.complete(self.stats.joined_count(), self.sessions.live())

    def _finish_round(self) -> None:
        for ident, session, have_target in self.rounds.finish(self.store.apply):
            if ident in self.sessions:
                self._send_params(ident, session, P.NO_VERSION, have_target)

    def _stats(self, ident: bytes, session: Session, payload: memoryview) -> None:
        stats = P.decode_json(bytes(payload))
        scores = stats.get("scores", [])
        if not isinstance(scores, list) or not all(isinstance(s, (int, float)) for s in scores):
            raise P.ProtocolError("STATS scores must be a list of numbers")
        values = {}
        for key in ("env_steps", "compute_s", "comm_s"):
            value = stats.get(key, 0)
            if not isinstance(value, (int, float)) or value < 0:
                raise P.ProtocolError(f"STATS {key} must be a number >= 0")
            values[key] = value
        self.stats.reported(session.partition, scores, **values)
        self._send(ident, session.crypto.seal(P.ACK, session.partition, session.attempt, self.store.version, 0,
                                              flags=self._flags()))

    def _expire_sessions(self) -> None:
        self.sessions.expire()
        if self._round_complete():
            self._finish_round()
