"""A worker's connection to the parameter server: HELLO, then FETCH / PUSH / STATS, every wait bounded.

One request is outstanding at a time (ZeroMQ DEALER → the server's ROUTER). A reply that does not come
within ``timeout`` seconds means the server is gone: :class:`ServerGone` is raised and the worker exits.

Joining takes two connections: HELLO → WELCOME on the server's join port (logged in with the run's connection
token), then the session's own connection to the session port the WELCOME names, logged in with the session's id and
ticket (``protocol.session_ticket``), which the server admits once; that connection carries every later message. It
never reconnects by itself (its ticket is used up): a session connection that ends or is refused is replaced as a
reset one is.

A connection that is reset (ZeroMQ reports it disconnected; a heartbeat draws the RST of a connection that only the
server's end saw reset) is replaced within that time: new sockets, a new HELLO
for the same partition, attempt and client id, and the request in flight sent again under its own sequence number,
which continues across the client's sessions. The server answers a PUSH or STATS it had already taken before the reset
with an ACK flagged ``F_REPEAT`` and does not apply it again: each is applied at most once, and the worker knows
whether it was (:attr:`ServerClient.repeated`).

A client may be given ``locate``, a function that names where its server is now (a shard of a sharded server on an
executor, which Spark may rerun elsewhere): a HELLO unanswered for ``LOCATE_S``, or a request unanswered for
``MOVED_S`` (a host gone silent resets nothing), asks it, and is sent again to the new address if it changed (a
request under its own sequence number, on a new session there). :meth:`ServerClient.rejoin` opens a new session on
purpose (a fresh WELCOME).
"""
from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import zmq

from ddqn.distributed import protocol as P
from ddqn.distributed.zap import USERNAME, plain_client

log = logging.getLogger(__name__)

# ZeroMQ's own reconnect of the join connection, in ms: only a first connect that failed needs it (a reset connection is
# replaced by a new socket); longer than ZeroMQ's default, so that it does not race the replacement. The session
# connection never reconnects by itself (-1): its ticket admits one connection.
RECONNECT_MS = 1000
# What ends a connection for the client: disconnected, or refused at the handshake (a used or expired ticket)
GONE = (zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
        | zmq.EVENT_HANDSHAKE_FAILED_AUTH)
# A ZMTP heartbeat (PING) this often, in ms: a connection whose server end was reset answers it with an RST, so a
# worker waiting for a reply notices a reset that only the server's end saw
HEARTBEAT_MS = 1000
LOCATE_S = 2.0  # a HELLO unanswered this long asks ``locate`` where the server is now (when the client has one)
MOVED_S = 5.0  # … and a request unanswered this long (longer: a snapshot's cut holds a shard's PUSHes for up to 2 s)


class ServerGone(RuntimeError):
    """The parameter server did not answer in time (or answered with something unverifiable)."""


@dataclass(frozen=True)
class Params:
    """A FETCH reply: θ and/or θ⁻ when they changed (else None), their versions, and the stop flag."""

    version: int
    target_version: int
    theta: np.ndarray | None
    target: np.ndarray | None
    stop: bool


class ServerClient:
    """The worker end of the protocol for partition ``worker`` (Spark task attempt ``attempt``).

    ``address`` is the server's join port; ``session_address`` where its session port is reached (default: the
    join address's host, at the port the WELCOME names; another address where a proxy stands in between).
    """

    def __init__(self, address: str, secret: bytes, worker: int, attempt: int, num_params: int,
                 timeout: float = 60.0, auth: str = "message", session_address: str | None = None,
                 locate: Callable[[], str] | None = None) -> None:
        self.worker, self.attempt, self.num_params, self.auth = worker, attempt, num_params, auth
        self._locate = locate
        self.address, self.session_address, self._secret = address, session_address, secret
        self.client_id = os.urandom(P.NONCE_BYTES).hex()  # named in each HELLO: the server knows a reconnect by it
        self.timeout_ms = int(timeout * 1000)
        self.reconnects = 0  # connections replaced after a reset, each with a new HELLO
        self.repeated = 0  # PUSH/STATS in flight at a reset that the server had taken before it (not applied again)
        self._ctx = zmq.Context()
        self._sock: zmq.Socket | None = None
        self.welcome: dict = {}  # the last WELCOME's JSON (a sharded server's names its shards)
        try:
            self._session, self.prior_env_steps = self._connect(self._deadline())
        except BaseException:  # no session: free the socket and context now, not in a garbage collector's thread
            self._close_socket()
            self._ctx.term()
            raise

    def _deadline(self) -> float:
        return time.monotonic() + self.timeout_ms / 1000

    def _open_socket(self, address: str, username: bytes, password: bytes, reconnect_ms: int) -> None:
        """A new connection to ``address``, logged in with PLAIN ``username``/``password``, replacing the one before."""
        self._close_socket()
        self._sock = self._ctx.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.RECONNECT_IVL, reconnect_ms)
        self._sock.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_MS)
        self._sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 2 * self.timeout_ms)  # a silent path: the request's timeout first
        self._sock.setsockopt(zmq.SNDTIMEO, self.timeout_ms)
        self._sock.setsockopt(zmq.MAXMSGSIZE, 2 * self.num_params * 4 + 4096)
        plain_client(self._sock, password, username)  # the server's ZAP handler admits this connection
        self._resets = self._sock.get_monitor_socket(GONE)  # a message here: the connection is gone
        self._poller = zmq.Poller()
        self._poller.register(self._sock, zmq.POLLIN)
        self._poller.register(self._resets, zmq.POLLIN)
        self._sock.connect(address)

    def _close_socket(self) -> None:
        if self._sock is not None:
            self._sock.disable_monitor()
            self._resets.close(linger=0)
            self._sock.close(linger=0)
            self._sock = None

    def _reply(self, deadline: float, what: str) -> list | None:
        """The reply to the request just sent (a ``what``), or None if the connection was reset first."""
        ready = dict(self._poller.poll(max(0, int((deadline - time.monotonic()) * 1000))))
        if self._sock in ready:
            return self._sock.recv_multipart(copy=False)
        if self._resets in ready:
            return None
        raise ServerGone(f"no reply from the parameter server in {self.timeout_ms / 1000:g} s (to a {what})")

    def _connect(self, deadline: float) -> tuple[P.Session, int]:
        """A new session: HELLO → WELCOME on a join connection (another one after each reset), then the session's
        connection to the session port (its first message goes out with the first request). Returns the session and
        the env steps the partition played before (the WELCOME's ``env_steps``)."""
        meta = P.encode_json({"num_params": self.num_params, "pid": os.getpid(), "host": socket.gethostname(),
                              "auth": self.auth, "client_id": self.client_id})
        frames = None
        while frames is None:
            self._open_socket(self.address, USERNAME, P.connection_token(self._secret), RECONNECT_MS)
            nonce = os.urandom(P.NONCE_BYTES)  # a new HELLO each time: the server refuses one it has seen
            self._sock.send_multipart(P.seal_handshake(self._secret, P.HELLO, self.worker, self.attempt, nonce + meta))
            frames = self._located_reply(deadline, LOCATE_S, "HELLO")
        try:
            _, payload = P.open_handshake(self._secret, [f.bytes for f in frames], P.WELCOME)
            welcome = P.decode_json(payload[P.NONCE_BYTES:])
        except P.ProtocolError as exc:
            raise ServerGone(f"bad WELCOME from the parameter server: {exc}") from exc
        played, port = welcome.get("env_steps", 0), welcome.get("session_port")
        if not all(type(x) is int for x in (played, port)) or played < 0 or not 0 < port < 65536:
            raise ServerGone("bad WELCOME from the parameter server: env_steps must be an integer >= 0 and "
                             "session_port a TCP port")
        self.welcome = welcome
        server_nonce = payload[:P.NONCE_BYTES]
        key = P.session_key(self._secret, nonce, server_nonce)
        address = self.session_address or f"{self.address.rsplit(':', 1)[0]}:{port}"
        self._open_socket(address, server_nonce.hex().encode(), P.session_ticket(key), -1)
        return P.Session(key, outbound=0, auth=self.auth), played

    def _located_reply(self, deadline: float, every: float, what: str) -> list | None:
        """The reply (or None: the connection was reset, or the server moved: connect again). With ``locate``, a
        reply that does not come for ``every`` seconds asks where the server is now; the address changes if it
        moved."""
        while True:
            if self._locate is None:
                return self._reply(deadline, what)
            try:
                return self._reply(min(deadline, time.monotonic() + every), what)
            except ServerGone:
                if time.monotonic() >= deadline:
                    raise
            where = self._locate()
            if where != self.address:
                self.address = where
                return None

    def rejoin(self) -> dict:
        """A new session on purpose (HELLO → WELCOME, proved at once by an empty STATS report); the new WELCOME."""
        sent = self._session.sent
        self._session, _ = self._connect(self._deadline())
        self._session.sent = sent  # sequence numbers go on across the client's sessions
        self.stats([], 0, 0.0, 0.0)
        return self.welcome

    def _reconnect(self, deadline: float) -> None:
        """Replace a reset connection: the server knows the new one by another routing id, so a new session."""
        log.warning("worker %d: connection to the parameter server reset; HELLO again", self.worker)
        sent = self._session.sent
        self._session, _ = self._connect(deadline)
        self._session.sent = sent  # sequence numbers go on across the client's sessions
        self.reconnects += 1

    def request(self, kind: int, version: int = 0, aux: int = 0, payload: bytes | np.ndarray = b"", flags: int = 0
                ) -> tuple[P.Header, memoryview]:
        """Send one request and return its verified reply; after a reset, the same request (the same sequence
        number) on a new connection. ServerGone if no reply comes within the timeout, resets included."""
        deadline = self._deadline()
        if self._resets.poll(0):  # reset since the last reply: the server no longer knows this connection
            self._reconnect(deadline)
        seq = self._session.sent + 1  # this request's number, whichever connection carries it
        frames = None
        while frames is None:
            self._session.sent = seq - 1
            try:
                self._sock.send_multipart(self._session.seal(kind, self.worker, self.attempt, version, aux, payload,
                                                            flags), copy=False)
            except zmq.Again as exc:
                raise ServerGone("could not send to the parameter server") from exc
            frames = self._located_reply(deadline, MOVED_S, P.TYPE_NAMES.get(kind, "request"))
            if frames is None:
                self._reconnect(deadline)
        try:
            header, body = self._session.open(frames)
        except P.ProtocolError as exc:
            raise ServerGone(f"unverifiable reply from the parameter server: {exc}") from exc
        self.repeated += bool(header.flags & P.F_REPEAT)
        return header, body

    def fetch(self, have_version: int = P.NO_VERSION, have_target: int = P.NO_VERSION) -> Params:
        """θ (if newer than ``have_version``) and θ⁻ (if its version differs from ``have_target``)."""
        return self.params(*self.request(P.FETCH, have_version, have_target))

    def params(self, h: P.Header, payload: memoryview) -> Params:
        """The Params of a PARAMS reply (to a FETCH, or to a shard's COMMIT that asked for θ)."""
        arrays = np.frombuffer(payload, np.float32)
        n = bool(h.flags & P.F_THETA) + bool(h.flags & P.F_TARGET)
        if arrays.size != n * self.num_params:
            raise ServerGone("PARAMS reply of the wrong size")
        theta = arrays[:self.num_params] if h.flags & P.F_THETA else None
        target = arrays[-self.num_params:] if h.flags & P.F_TARGET else None
        return Params(h.version, h.target_version, theta, target, bool(h.flags & P.F_STOP))

    def push(self, grad: np.ndarray, base_version: int, count: int = 1) -> tuple[int, bool]:
        """Send a gradient (sum of ``count`` minibatch gradients) computed on θ of ``base_version``.

        Returns (server version, stop flag). A push in flight at a reset is sent again on the new connection and
        applied at most once: :attr:`repeated` grows by one if the server had applied it before the reset.
        """
        h, _ = self.request(P.PUSH, base_version, count, grad)
        return h.version, bool(h.flags & P.F_STOP)

    def push_and_fetch(self, grad: np.ndarray, base_version: int, count: int = 1) -> tuple[int, bool, Params | None]:
        """:meth:`push`, and θ if its reply carries it: never from one server (its ACK carries no θ; the worker
        fetches as before). A sharded server's COMMIT reply does (``ShardedClient.push_and_fetch``)."""
        return *self.push(grad, base_version, count), None

    def stats(self, scores: list[int], env_steps: int, compute_s: float, comm_s: float) -> bool:
        """Report finished episodes' scores and time split since the last report; returns the stop flag."""
        body = P.encode_json({"scores": scores, "env_steps": env_steps, "compute_s": compute_s, "comm_s": comm_s})
        h, _ = self.request(P.STATS, payload=body)
        return bool(h.flags & P.F_STOP)

    def close(self) -> None:
        """Say BYE (best effort) and free the socket; closing again does nothing."""
        if self._sock is None:
            return
        try:
            self._sock.send_multipart(self._session.seal(P.BYE, self.worker, self.attempt), copy=False,
                                      flags=zmq.NOBLOCK)
        except zmq.ZMQError:
            pass
        self._close_socket()
        self._ctx.term()
