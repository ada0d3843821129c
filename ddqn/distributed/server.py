"""The parameter server: the ZeroMQ loop that serves θ from the parameter store and applies gradients.

DistBelief-style downpour SGD: workers FETCH θ (and θ⁻ when its version changed) and PUSH gradients; each
gradient is applied as it arrives (asynchronous), tagged with its staleness (server version − the version
the worker computed on). With :class:`~ddqn.distributed.sync.SyncRounds` a round waits for one gradient from every
live worker (at most its ``wait_s``), all on the same θ, applies their average, and only then answers the workers'
next FETCH.

It runs in a thread of the Spark driver with two ZeroMQ ROUTER sockets bound to the driver's address: the *join*
socket (``port``), where a connection with the run's token may say HELLO and nothing else, and the *session* socket
(``session_port``), where each session has one connection, admitted once by its ticket (``ddqn.distributed.zap``).
Each turn of the loop handles every message waiting on the session socket (at most ``SESSION_BURST``) before at most
``JOIN_BURST`` of the join socket's, and the join socket is read at most ``JOIN_RATE`` messages a second: a flood of
token holders' connections can delay a HELLO, but not take the sessions' turns (ZeroMQ serves a socket's connections
in turn, so on one socket each of them would have had as many turns as a worker).

Every message is authenticated (``ddqn.distributed.protocol``); a malformed, truncated, oversized, wrongly-sized,
non-finite or unauthenticated message is dropped and counted, never applied. A connection that does not complete
its handshake within ``HANDSHAKE_S`` is closed; the process's descriptor limit is raised to its hard limit at start
(each connection holds one descriptor; ZeroMQ cannot limit them per source address). θ lives in the
:class:`~ddqn.distributed.store.ParameterStore`, the counters in :class:`~ddqn.distributed.stats.ServerStats`, sessions
in :class:`~ddqn.distributed.sessions.SessionTable`; snapshots are the driver's (:mod:`ddqn.distributed.checkpointer`).
"""
from __future__ import annotations

import ctypes
import logging
import math
import os
import resource
import threading
import time
from dataclasses import dataclass

import numpy as np
import zmq

from ddqn.config import AUTH_MODES
from ddqn.distributed import protocol as P
from ddqn.distributed.sessions import Session, SessionTable
from ddqn.distributed.stats import ServerStats
from ddqn.distributed.store import ParameterStore
from ddqn.distributed.sync import SyncRounds
from ddqn.distributed.zap import JOIN_DOMAIN, SESSION_DOMAIN, Tickets, ZapHandler, plain_server
from ddqn.solvers import kernels

log = logging.getLogger("ddqn.distributed.server")
EXPIRY_CHECK_S = 1.0  # how often the server thread looks for sessions silent past the timeout
REFUSED = (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
           | zmq.EVENT_HANDSHAKE_FAILED_AUTH)  # a connection without the token or ticket (or not speaking ZMTP)
# libzmq keeps an accepted TCP connection (one file descriptor) until its handshake completes or this times out; its
# default is 30 s. A worker's handshake is three round trips (ZMTP greeting, PLAIN HELLO/WELCOME, INITIATE/READY) and
# one ZAP check in this process: milliseconds on a cluster network, well under a second across continents. A peer
# that connects and sends nothing holds its descriptor this long, so it needs limit / HANDSHAKE_S connections per
# second to keep the descriptor table full (docs/security.md).
HANDSHAKE_S = 3.0
SEND_QUEUE = 4  # replies ZeroMQ may hold for one connection (an honest worker has one request in flight)
RECV_QUEUE = 16  # messages ZeroMQ may hold from one session connection before the server thread reads them
JOIN_QUEUE = 2  # ... and from one join connection: its HELLO (and, as libzmq counts, the routing id before it;
# with 1, no message of it is ever read). A flood waits in TCP's buffers.
SESSION_BURST = 64  # session-socket messages handled in one turn of the loop (an honest worker has one in flight)
JOIN_BURST = 4  # join-socket messages handled in one turn, after the session socket's
# Join-socket messages handled per second at most. A worker says HELLO once per connection (at its start and after a
# reset); a token holder can send as many as it likes, each one a copy and an HMAC of up to 64 KB (≈ 0.1 ms of the
# server thread, and as much again of libzmq's I/O thread). Unread, they wait in ZeroMQ's queues (RECV_QUEUE per
# connection) and then in TCP's, so the flood slows down instead of taking the driver's cores.
JOIN_RATE = 1000
MAX_SCORES = 10_000  # episode scores in one STATS report (a worker reports every 2 s)
MAX_COUNT = 10**12  # bound of every STATS count and second total
# Env steps one partition can play per second of wall clock, far above any real one: a worker plays one game, and
# the fastest single game measured is SnakeEnv at 82,161 steps/s with no net and no replay memory (make bench-env);
# an honest worker plays tens to a few thousand per second. A STATS report claiming more env steps than this rate
# times the seconds since its partition's previous report (or since the server started) is dropped whole.
MAX_ENV_STEPS_PER_S = 1_000_000


@dataclass(frozen=True)
class ServerOptions:
    """Where and how the server listens, and what it accepts.

    Args:
        host, port: the address to bind (the driver's own; 127.0.0.1 for local runs); port 0 = any free port.
        session_port: the session socket's port; 0 = ``port`` + 1 if ``port`` is fixed, else any free port.
        session_timeout: seconds of silence after which a worker's session is dropped.
        auth: ``"message"`` (every payload MAC'd) or ``"connection"`` (see ``ddqn.distributed.protocol``).
        partitions: the job's worker partitions; a HELLO for another partition is refused.
        max_grad_norm: a gradient whose L2 norm exceeds this is dropped ("too large"), never applied.
        max_attempts: Spark's attempts of one task (its scheduler's ``spark.task.maxFailures``; the driver reads
            it from its SparkContext): attempts are numbered 0 … max_attempts − 1, a HELLO claiming another is
            refused.
        shards: a sharded server's shard addresses (``ps_shards > 1``): this server is then the driver's
            coordinator, which names them in its WELCOME and serves HELLO, STATS and BYE only (θ lives in the
            shards, ``ddqn.distributed.shards.server``). Empty (one server): the WELCOME is as it always was. The
            WELCOME names where the shards are now (the store's ``where()``, with their version: a shard on an
            executor that Spark reran may have moved), these addresses if the store names none.
    """

    host: str = "127.0.0.1"
    port: int = 0
    session_port: int = 0
    session_timeout: float = 120.0
    auth: str = "message"
    partitions: int = 1
    max_grad_norm: float = math.inf
    max_attempts: int = 4  # spark.task.maxFailures' default
    shards: tuple[str, ...] = ()


class ParameterServer:
    """Serves ``store`` to authenticated workers; see the module docstring.

    Subclasses (the shards of a sharded server) may handle more message types (:meth:`_other`), do work between turns
    of the loop (:meth:`_turn`) and choose which types a re-sent request is recognised for (:attr:`ONCE`).

    Args:
        store: θ, θ⁻ and the solver (the server thread applies gradients to it).
        secret: the per-run secret (``protocol.new_secret``).
        options: address, timeouts and limits (:class:`ServerOptions`).
        rounds: synchronous rounds (the baseline), or None for asynchronous updates.
        stats: the counters (with env steps restored by ``--resume``); a fresh one by default.
    """

    ONCE = (P.PUSH, P.STATS)  # requests answered once: one re-sent after a reset is answered F_REPEAT, not applied

    def __init__(self, store: ParameterStore, secret: bytes, options: ServerOptions = ServerOptions(), *,
                 rounds: SyncRounds | None = None, stats: ServerStats | None = None) -> None:
        if options.auth not in AUTH_MODES:
            raise ValueError(f"auth must be one of {AUTH_MODES}, got {options.auth!r}")
        self.store, self.secret, self.options, self.auth, self.rounds = store, secret, options, options.auth, rounds
        self.stats = stats or ServerStats()
        self.sessions = SessionTable(options.session_timeout)
        self.nbytes = store.num_params * 4
        self.stopping = threading.Event()
        self._grad = np.empty(store.num_params, np.float32)
        self._max_norm_sq = options.max_grad_norm ** 2
        self._reported_at: dict[int, float] = {}  # partition → when its last STATS report was applied
        self._started = time.monotonic()
        self._ctx = zmq.Context()
        self._tickets = Tickets(SessionTable.MAX_OFFERS, SessionTable.OFFER_S)  # one per offer, used once
        self._zap = ZapHandler(self._ctx, P.connection_token(secret), self._tickets).start()
        _seed_routing_ids()
        raise_fd_limit()
        hello = P.NONCE_BYTES + P.MAX_JSON  # the largest frame of a HELLO
        self._join_sock = self._router(JOIN_DOMAIN, JOIN_QUEUE, hello)  # no connection without the token gets in
        self._session_sock = self._router(SESSION_DOMAIN, RECV_QUEUE, max(self.nbytes, hello))  # ... or the ticket
        self._refusals = [s.get_monitor_socket(REFUSED) for s in (self._join_sock, self._session_sock)]  # counted
        self.port = _bind(self._join_sock, options.host, options.port)
        self.session_port = _bind(self._session_sock, options.host,
                                  options.session_port or (options.port + 1 if options.port else 0))
        self.address = f"tcp://{options.host}:{self.port}"
        self._thread = threading.Thread(target=self._serve, name="ddqn-parameter-server", daemon=True)
        self._closed = False
        self._kind, self._parts = "other", {}  # the message being handled: its kind and seconds by part (stats)
        # partition → (version, θ) last sent to it: the θ its next gradient is computed on (DC-ASGD's θ_fetched). Each
        # is a published buffer the store made for that version, so it costs no copy: at most one θ (or θ and θ⁻)
        # per partition stays alive
        self._held: dict[int, tuple[int, np.ndarray]] = {}

    def _router(self, domain: bytes, recv_queue: int, largest: int) -> zmq.Socket:
        """A ROUTER socket that admits only connections the ZAP handler admits for ``domain``, holds at most
        ``recv_queue`` unread messages of each, and ends one that sends a frame of over ``largest`` bytes (+ 4 kB)."""
        sock = self._ctx.socket(zmq.ROUTER)
        plain_server(sock, domain)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.HANDSHAKE_IVL, int(HANDSHAKE_S * 1000))  # before bind: the listener copies it
        sock.setsockopt(zmq.MAXMSGSIZE, largest + 4096)  # a larger frame ends its connection
        sock.setsockopt(zmq.SNDHWM, SEND_QUEUE)  # replies beyond it are dropped by ZeroMQ, not queued
        sock.setsockopt(zmq.RCVHWM, recv_queue)
        return sock

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> ParameterServer:
        """Start serving in a background thread."""
        self._started = time.monotonic()
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
        for sock, monitor in zip((self._join_sock, self._session_sock), self._refusals):
            sock.disable_monitor()
            monitor.close(linger=0)
            sock.close(linger=0)
        self._zap.close()
        self._ctx.term()

    def live_workers(self) -> int:
        """Sessions heard from within the session timeout (read by the server thread's own policies)."""
        return self.sessions.live()

    # -- the loop -------------------------------------------------------------------------------
    def _serve(self) -> None:
        everything, sessions_only = zmq.Poller(), zmq.Poller()  # the second while the join socket waits its turn
        for sock in (self._session_sock, *self._refusals):
            everything.register(sock, zmq.POLLIN)
            sessions_only.register(sock, zmq.POLLIN)
        everything.register(self._join_sock, zmq.POLLIN)
        check_s = min(EXPIRY_CHECK_S, self.rounds.wait_s / 4) if self.rounds else EXPIRY_CHECK_S  # a round's clock too
        next_expiry = time.monotonic() + check_s
        join_at = 0.0  # when the join socket may be read again (JOIN_RATE)
        while not self._closed:
            wait_s = join_at - time.monotonic()
            if wait_s > 0:
                ready = dict(sessions_only.poll(min(100, math.ceil(wait_s * 1000))))
            else:
                ready = dict(everything.poll(100))
            if time.monotonic() >= next_expiry:  # also when busy: a busy server must still notice a silent worker
                self._expire_sessions()
                next_expiry = time.monotonic() + check_s
            for monitor in self._refusals:
                if monitor in ready:
                    monitor.recv_multipart()
                    self.stats.dropped("unauthenticated connection")
            if self._session_sock in ready:  # the sessions first: every message waiting, up to SESSION_BURST
                self._drain(self._session_sock, SESSION_BURST, self._session_message)
            if self._join_sock in ready:
                handled = self._drain(self._join_sock, JOIN_BURST, self._join_message)
                join_at = time.monotonic() + handled / JOIN_RATE
            self._turn()

    def _turn(self) -> None:
        """Called once per turn of the loop (at least every 100 ms) in the server thread; nothing here."""

    def _drain(self, sock: zmq.Socket, most: int, handle) -> int:
        """Read and handle (``handle(ident, body)``) up to ``most`` messages waiting on ``sock``; returns how many
        were read. A message that fails a check is dropped and counted; the time spent is the server's busy time."""
        for n in range(most):
            # poll, not a non-blocking receive: it also takes in libzmq's pending commands, among them the peers'
            # acknowledgements of replies sent (a receive takes them at most once a millisecond, and a ROUTER drops a
            # reply to a connection it still counts SEND_QUEUE replies behind)
            if not sock.poll(0, zmq.POLLIN):
                return n
            t, cpu = time.perf_counter(), time.thread_time()
            try:
                frames = _receive(sock)
            except zmq.ZMQError:
                self.stats.dropped("receive error")
                continue
            self._kind, self._parts = "other", {}
            self._part("receive", t)
            try:
                if len(frames) != 4:  # identity + [header, payload, tag]: counted before any frame is copied
                    raise P.ProtocolError("malformed", f"{len(frames) - 1} frames")
                handle(frames[0].bytes, frames[1:])
            except P.ProtocolError as exc:
                self.stats.dropped(exc.reason)
            except Exception:  # a bug must not take the server (and every worker) down
                log.exception("error while handling a message")
                self.stats.dropped("server error")
            self.stats.busy(time.perf_counter() - t, self._kind, self._parts, time.thread_time() - cpu)
        return most

    def _part(self, name: str, since: float) -> float:
        """Add the seconds since ``since`` to part ``name`` of the message being handled; returns now."""
        now = time.perf_counter()
        self._parts[name] = self._parts.get(name, 0.0) + now - since
        return now

    def _join_message(self, ident: bytes, body: list) -> None:
        """The join socket serves HELLOs only; anything else is dropped (malformed, or a HELLO's failed check)."""
        if len(body[1]) > P.NONCE_BYTES + P.MAX_JSON or len(body[0]) != P.HEADER.size:
            raise P.ProtocolError("malformed", "not a HELLO")
        self._kind = "hello"
        self._hello(ident, [f.bytes for f in body], _peer_address(body[0]))

    def _session_message(self, ident: bytes, body: list) -> None:
        """A message on the session socket: its connection's session (the ZAP user id) must open it."""
        session = self.sessions.get(_user_id(body[0]))
        if session is None:  # the session ended (expired, replaced, BYE) or its offer was dropped
            raise P.ProtocolError("unauthenticated", "no session for this connection")
        t = time.perf_counter()
        header, payload = session.crypto.open(body)
        self._part("verify", t)
        self._kind = P.TYPE_NAMES.get(header.type, "other").lower()
        if header.worker != session.partition or header.attempt != session.attempt:
            raise P.ProtocolError("wrong worker")
        if not session.proven:
            self._admit(session.sid)
        session.last_seen = time.monotonic()
        self.stats.seen(session.partition)
        if self.options.shards and header.type in (P.FETCH, P.PUSH):  # the coordinator of shards holds no θ
            raise P.ProtocolError("unexpected type", f"{P.TYPE_NAMES[header.type]} to the coordinator of shards")
        if header.type in self.ONCE and self.sessions.taken(session, header.seq):
            self.stats.dropped("resent")  # answered before a reset: answered again, never applied twice
            self._ack(ident, session, header.seq, flags=P.F_REPEAT)
        elif header.type == P.FETCH:
            self._fetch(ident, session, header)
        elif header.type == P.PUSH:
            self._push(ident, session, header, payload)
        elif header.type == P.STATS:
            self._stats(ident, session, header.seq, payload)
        elif header.type == P.BYE:
            self.sessions.close(session.sid)
        else:
            self._other(ident, session, header, payload)

    def _other(self, ident: bytes, session: Session, header: P.Header, payload: memoryview) -> None:
        """A verified message of a type this server does not serve: dropped."""
        raise P.ProtocolError("unexpected type", f"{P.TYPE_NAMES[header.type]} from a worker")

    def _send(self, ident: bytes, session: Session, *seal_args, **seal_kw) -> None:
        """Seal a reply with ``session``'s key and hand it to ZeroMQ for the connection ``ident``."""
        t = time.perf_counter()
        header, payload, tag = session.crypto.seal(*seal_args, **seal_kw)
        t = self._part("seal", t)
        sock = self._session_sock  # frame by frame: send_multipart's checks per frame cost more than these sends
        sock.send(ident, zmq.SNDMORE)
        sock.send(header, zmq.SNDMORE)
        sock.send(payload, zmq.SNDMORE, copy=payload.nbytes < sock.copy_threshold)  # a large θ: no copy
        sock.send(tag)
        self._part("send", t)

    def _flags(self) -> int:
        return P.F_STOP if self.stopping.is_set() else 0

    def _ack(self, ident: bytes, session: Session, seq: int, staleness: int = 0, flags: int = 0) -> None:
        """Answer the PUSH or STATS numbered ``seq``, and remember it as taken: if the worker sends it again after a
        reset (it cannot know this ACK arrived), it is answered, not applied again."""
        self.sessions.take(session, seq)
        self._send(ident, session, P.ACK, session.partition, session.attempt, self.store.version, staleness,
                   flags=self._flags() | flags)

    def _hello(self, ident: bytes, frames: list[bytes], peer: str) -> None:
        """An authentic HELLO offers a session (WELCOME answers it); nothing live changes until it proves the key."""
        header, payload = P.open_handshake(self.secret, frames, P.HELLO)
        if len(payload) < P.NONCE_BYTES:
            raise P.ProtocolError("bad hello", "no nonce")
        client_nonce = payload[:P.NONCE_BYTES]
        if not self.sessions.fresh(client_nonce):
            raise P.ProtocolError("replayed", "HELLO seen before")
        meta = P.decode_json(payload[P.NONCE_BYTES:])
        pid, host = meta.get("pid", 0), meta.get("host", "")
        if not 0 <= header.worker < self.options.partitions:
            raise P.ProtocolError("bad hello", f"partition {header.worker} is not one of the job's")
        if header.attempt >= self.options.max_attempts:
            raise P.ProtocolError("bad hello", f"attempt {header.attempt}: Spark makes {self.options.max_attempts}")
        if self.sessions.stale(header.worker, header.attempt):
            raise P.ProtocolError("stale attempt", f"attempt {header.attempt} of partition {header.worker}")
        if meta.get("num_params") != self.store.num_params or isinstance(meta.get("num_params"), bool):
            raise P.ProtocolError("bad hello", "another model size")
        if meta.get("auth", "message") != self.auth:
            raise P.ProtocolError("bad hello", "another auth mode")
        if not (type(pid) is int and 0 <= pid < 2**31 and isinstance(host, str) and len(host) <= 255):
            raise P.ProtocolError("bad hello", "pid must be an integer and host a short string")
        client_id = meta.get("client_id", "")  # none: the session is a client of its own
        if not (isinstance(client_id, str) and len(client_id) <= 2 * P.NONCE_BYTES):
            raise P.ProtocolError("bad hello", "client_id must be a short string")
        server_nonce = os.urandom(P.NONCE_BYTES)
        key, sid = P.session_key(self.secret, client_nonce, server_nonce), server_nonce.hex().encode()
        self.sessions.offer(ident, P.Session(key, outbound=1, auth=self.auth), header.worker, header.attempt,
                            pid, host, peer, client_id, sid)
        self._tickets.issue(sid, P.session_ticket(key))  # before the WELCOME: the worker connects right after it
        welcome = {"num_params": self.store.num_params, "session_port": self.session_port,
                   "env_steps": self.stats.played_of(header.worker)}
        if self.options.shards:  # only for a sharded server: one server's WELCOME stays byte for byte as it was
            shards, moved = self.store.where()  # where they are now (a shard on an executor may have moved)
            welcome["shards"], welcome["shards_version"] = list(shards or self.options.shards), moved
        reply = server_nonce + P.encode_json(welcome)
        welcome = P.seal_handshake(self.secret, P.WELCOME, header.worker, header.attempt, reply, self.store.version,
                                   self.store.target_version)
        self._join_sock.send_multipart([ident, *welcome])

    def _admit(self, sid: bytes) -> None:
        """The first sealed message of an offered session verified: it becomes the partition's live session."""
        session = self.sessions.promote(sid)
        rejoin, _ = self.stats.joined(session.partition, session.attempt, session.pid, session.host)
        if session.reconnected:
            log.info("worker %d reconnected (attempt %d, pid %s on %s, %s): its connection was reset",
                     session.partition, session.attempt, session.pid, session.host, session.peer or "?")
        elif rejoin:
            log.warning("worker %d rejoined (attempt %d, pid %s on %s, %s): its replay memory is regenerated",
                        session.partition, session.attempt, session.pid, session.host, session.peer or "?")
        else:
            log.info("worker %d joined (attempt %d, pid %s on %s, %s)", session.partition, session.attempt,
                     session.pid, session.host, session.peer or "?")

    def _fetch(self, ident: bytes, session: Session, header: P.Header) -> None:
        if self.rounds and not self.stopping.is_set() and self.rounds.holds_fetch(session, self.store.version):
            self.rounds.waiting.append((ident, session, header.target_version))  # answered when the round ends
            return
        self._send_params(ident, session, header.version, header.target_version)

    def _send_params(self, ident: bytes, session: Session, have: int, have_target: int, flags: int = 0) -> None:
        """PARAMS with θ if the worker's version is not current and θ⁻ if its target version is not (``flags``: more
        flags to set, a shard's COMMIT's)."""
        flags, version, target_version = self._flags() | flags, self.store.version, self.store.target_version
        need_theta, need_target = have != version, have_target != target_version
        payload = b""  # the store's published buffers go out without a copy (ZeroMQ holds a reference)
        t = time.perf_counter()
        if need_theta and need_target:
            version, target_version, payload = self.store.published_both()
        elif need_theta:
            version, payload = self.store.published()
        elif need_target:
            target_version, payload = self.store.published_target()
        self._part("publish", t)  # a copy of θ (and θ⁻) made once per version, then shared by every reply
        if need_theta and self.store.dc_lambda:
            self._held[session.partition] = (version, payload[:self.store.num_params])
        flags |= (P.F_THETA if need_theta else 0) | (P.F_TARGET if need_target else 0)
        if self._kind == "fetch":  # answering this FETCH (not one a sync round held): what it carries
            self._kind = "fetch_both" if need_theta and need_target else "fetch" if need_theta or need_target else \
                "fetch_none"
        self._send(ident, session, P.PARAMS, session.partition, session.attempt, version, target_version, payload,
                   flags)

    def _push(self, ident: bytes, session: Session, header: P.Header, payload: memoryview) -> None:
        t = time.perf_counter()
        if header.nbytes != self.nbytes:
            raise P.ProtocolError("wrong size")
        grad = np.frombuffer(payload, np.float32)  # read in place: the solver only reads it
        norm_sq = kernels.norm_squared(grad)  # float64: NaN or ±inf anywhere makes it non-finite
        if not math.isfinite(norm_sq):
            raise P.ProtocolError("not finite")
        if norm_sq > self._max_norm_sq * max(header.summed, 1) ** 2:  # a sum of `summed` honest gradients
            raise P.ProtocolError("too large", f"norm {math.sqrt(norm_sq):.3g}")
        staleness = self.store.version - header.version
        if staleness < 0:
            raise P.ProtocolError("future version")
        if not self.store.admits(staleness):  # max_staleness: dropped and counted, but an honest worker gets its ACK
            self.stats.dropped("too stale")
            self._ack(ident, session, header.seq, staleness)
            return
        grad = self._mean(grad, header.summed)
        t = self._part("check", t)
        if self.rounds is None:
            self._apply_gradient(session, grad, header.version, staleness)
            self._part("apply", t)
            self.stats.pushed(session.partition, staleness)
        elif not self.rounds.add(session, header.version, self.store.version, grad):
            self.stats.dropped("stale round")  # counted as a drop, not as one of the worker's pushes
        else:
            self.stats.pushed(session.partition, staleness)  # in this round's mean
            if self._round_complete():
                self._finish_round()
        self._ack(ident, session, header.seq, staleness)

    def _mean(self, grad: np.ndarray, summed: int) -> np.ndarray:
        """A sum over ``summed`` minibatches (``push_every``) → their mean, in the server's scratch buffer."""
        return np.multiply(grad, np.float32(1 / summed), out=self._grad) if summed > 1 else grad

    def _apply_gradient(self, session: Session, grad: np.ndarray, base: int, staleness: int) -> None:
        """One solver step with a gradient computed on θ version ``base``; DC-ASGD compensates it against the θ this
        session last fetched when that is the version it was computed on."""
        held = self._held.get(session.partition)
        self.store.apply(grad, staleness, held[1] if held and held[0] == base else None)

    def _round_complete(self) -> bool:
        return self.rounds is not None and self.rounds.complete(self.store.version, self.sessions.live_sessions(),
                                                                self.stats.joined_count())

    def _finish_round(self) -> None:
        version = self.store.version
        waiting, dropped = self.rounds.finish(self.store.apply, version, self.sessions.live_sessions())
        for s in dropped:
            log.warning("worker %d (attempt %d, pid %s on %s) did not push for round %d within %g s: the rounds go on "
                        "without it until it pushes", s.partition, s.attempt, s.pid, s.host, version,
                        self.rounds.wait_s)
        for ident, session, have_target in waiting:
            if session.sid in self.sessions:
                self._send_params(ident, session, P.NO_VERSION, have_target)

    def _stats(self, ident: bytes, session: Session, seq: int, payload: memoryview) -> None:
        """A worker's report: validated whole (types and bounds), then applied all at once.

        Every check is a type test or a comparison of ints and floats, which raise on no value (``math.isfinite``
        of an integer beyond a float's range would); NaN and ±inf fail the bounds."""
        stats = P.decode_json(bytes(payload))
        scores = stats.get("scores", [])
        if not (isinstance(scores, list) and len(scores) <= MAX_SCORES  # a score may be negative (Pong, Catch)
                and all(type(s) is int and -MAX_COUNT <= s <= MAX_COUNT for s in scores)):
            raise P.ProtocolError("bad stats", f"scores: a list of at most {MAX_SCORES} integers")
        env_steps, compute_s, comm_s = (stats.get(k, 0) for k in ("env_steps", "compute_s", "comm_s"))
        if not (type(env_steps) is int and 0 <= env_steps <= MAX_COUNT):
            raise P.ProtocolError("bad stats", "env_steps: an integer count")
        if not all(type(x) in (int, float) and 0 <= x <= MAX_COUNT for x in (compute_s, comm_s)):
            raise P.ProtocolError("bad stats", "compute_s, comm_s: finite seconds >= 0")
        now = time.monotonic()
        elapsed = now - self._reported_at.get(session.partition, self._started)
        if env_steps > MAX_ENV_STEPS_PER_S * elapsed:
            raise P.ProtocolError("too fast", f"{env_steps} env steps in {elapsed:.3g} s")
        self._reported_at[session.partition] = now
        self.stats.reported(session.partition, scores, env_steps, float(compute_s), float(comm_s))
        self._ack(ident, session, seq)

    def _expire_sessions(self) -> None:
        for s in self.sessions.expire():
            log.warning("worker %d (attempt %d, pid %s on %s, %s) silent for over %g s: its session is dropped",
                        s.partition, s.attempt, s.pid, s.host, s.peer or "?", self.sessions.timeout)
        if self._round_complete():
            self._finish_round()


def _seed_routing_ids() -> None:
    """Make the ROUTER's automatic routing ids unpredictable: call just before creating it.

    libzmq numbers a ROUTER's peers from a counter that starts at C's ``rand()``, which it never seeds, so the
    ids are the same in every process; a peer that sets the next ones as its own explicit ids (ZMQ_ROUTING_ID)
    makes libzmq abort the whole process (``Assertion failed: ok (src/socket_base.cpp:2113)``) when an ordinary
    connection is then given one of them. The ZAP handler cannot refuse such peers: with PLAIN, the identity
    frame of a ZAP request is the server socket's own. Seeding ``rand()`` from the OS makes the counter's start
    one of 2**32 values no peer can observe."""
    try:
        srand = ctypes.CDLL(None).srand  # the C library's, which libzmq calls
    except (OSError, AttributeError):  # not a glibc-like process: nothing to seed
        log.warning("cannot seed rand(): the parameter server's routing ids stay predictable")
        return
    srand.argtypes = [ctypes.c_uint]
    srand(int.from_bytes(os.urandom(4), "little"))


def raise_fd_limit() -> dict[str, int]:
    """Raise this process's soft limit on open file descriptors to its hard limit, and log it; returns the soft limit
    before, and both after (``soft_before``, ``soft``, ``hard``).

    Every TCP connection libzmq accepts holds a descriptor until its handshake completes or times out
    (``HANDSHAKE_S``); when they run out, snapshots fail (EMFILE) and no worker can connect until some close. Only
    the hard limit (``ulimit -Hn``, systemd's ``LimitNOFILE``, docker's ``--ulimit nofile``) can raise it further."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:  # e.g. an unlimited hard limit above the kernel's nr_open
            log.warning("cannot raise the open-file limit from %d to %s: %s", soft, hard, exc)
    now_soft, now_hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if now_soft == now_hard:
        log.info("open-file limit %d (the hard limit; it was %d): connections that send nothing are closed after %g s",
                 now_hard, soft, HANDSHAKE_S)
    return {"soft_before": soft, "soft": now_soft, "hard": now_hard}


def _bind(sock: zmq.Socket, host: str, port: int) -> int:
    """Bind ``sock`` to ``host``:``port`` (0: any free port); returns the port."""
    if port:
        sock.bind(f"tcp://{host}:{port}")
        return port
    return sock.bind_to_random_port(f"tcp://{host}")


def _receive(sock: zmq.Socket) -> list[zmq.Frame]:
    """One whole message's frames, none copied (``recv_multipart(copy=False)`` without its socket option call per
    frame: each frame says whether more follow)."""
    frames = [sock.recv(copy=False)]
    while frames[-1].more:
        frames.append(sock.recv(copy=False))
    return frames


def _user_id(frame: zmq.Frame) -> bytes:
    """The ZAP user id of the connection a message came on (on the session socket: its session id), or b""."""
    try:
        return str(frame.get("User-Id")).encode()
    except (zmq.ZMQError, UnicodeDecodeError, TypeError):
        return b""


def _peer_address(frame: zmq.Frame) -> str:
    """The IP address a message came from (ZeroMQ's ``Peer-Address`` property), or "" where there is none."""
    try:
        return str(frame.get("Peer-Address"))
    except (zmq.ZMQError, UnicodeDecodeError, TypeError):
        return ""
