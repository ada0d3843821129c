"""The parameter server: owns θ, the target parameters θ⁻ and the Caffe-exact solver state.

DistBelief-style downpour SGD: workers FETCH θ (and θ⁻ when its version changed) and PUSH gradients;
each gradient is applied as it arrives (asynchronous), tagged with its staleness (server version − the
version the worker computed on). θ⁻ ← θ every ``target_update`` server updates. In synchronous mode
(``sync=True``) a round waits for one gradient from every live worker, all computed on the same θ,
applies their average, and only then answers the workers' next FETCH.

The server runs in a thread of the Spark driver with one ZeroMQ ROUTER socket bound to the driver's
address. Every message is authenticated (``ddqn.protocol``); a malformed, truncated, oversized,
wrongly-sized, non-finite or unauthenticated message is dropped and counted, never applied.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zmq

from ddqn.solvers import kernels
from ddqn.dist import protocol as P
from ddqn.config import AUTH_MODES
from ddqn.errors import DDQNError
from ddqn.net.netspec import NetSpec
from ddqn.net.snapshot import save_checkpoint
from ddqn.solvers.flat import FlatSolver

log = logging.getLogger("ddqn.dist.server")
STATE_FILE = "server_state.json"  # names the latest snapshot (what --resume reads)


@dataclass
class WorkerInfo:
    """What the server knows of one worker (partition), across its attempts."""

    partition: int
    attempt: int = 0
    pid: int = 0
    host: str = ""
    pushes: int = 0
    env_steps: int = 0  # reported in this run (all attempts)
    prior_env_steps: int = 0  # played before this run (restored by --resume)
    episodes: int = 0
    compute_s: float = 0.0
    comm_s: float = 0.0
    last_seen: float = field(default_factory=time.monotonic)
    rejoins: int = 0


@dataclass
class _Session:
    crypto: P.Session
    partition: int
    attempt: int
    last_seen: float
    pushed_round: int = -1  # sync mode: the version this session last pushed for


def prior_env_steps(record: dict, source: Path) -> dict[int, int]:
    """Env steps per partition in a record :meth:`ParameterServer.snapshot` wrote (absent in old snapshots)."""
    raw = record.get("worker_env_steps", {})
    if not isinstance(raw, dict) or not all(
            k.isdigit() and isinstance(v, int) and not isinstance(v, bool) and v >= 0 for k, v in raw.items()):
        raise DDQNError(f"{source}: worker_env_steps: must map partition numbers to step counts >= 0")
    return {int(k): v for k, v in raw.items()}


class ParameterServer:
    """Serves θ and applies gradients; see the module docstring.

    Args:
        spec: the net's flat layout (sizes are checked against it).
        solver: the Caffe-exact solver (its history is the server's state).
        theta, target: θ and θ⁻ (flat float32, owned by the server from now on).
        secret: the per-run secret (``protocol.new_secret``).
        host: the address to bind (the driver's own; 127.0.0.1 for local runs).
        target_update: C, in server updates.
        sync: synchronous rounds instead of asynchronous updates.
        expected_workers: workers the job starts (a synchronous round waits for all of them to join).
        snapshot_every: updates between snapshots (0: none) written into ``snapshot_dir``.
        session_timeout: seconds of silence after which a worker's session is dropped.
        auth: ``"message"`` (every payload MAC'd) or ``"connection"`` (see ``ddqn.protocol``).
        prior_env_steps: env steps each partition played in the runs this one resumes (its ε schedule
            continues from there, as it does for a worker that rejoins after a failure).
    """

    def __init__(self, spec: NetSpec, solver: FlatSolver, theta: np.ndarray, target: np.ndarray, secret: bytes, *,
                 host: str = "127.0.0.1", port: int = 0, target_update: int = 1000, sync: bool = False,
                 snapshot_every: int = 0, snapshot_dir: Path | None = None, session_timeout: float = 120.0,
                 expected_workers: int = 1, prior_env_steps: dict[int, int] | None = None,
                 auth: str = "message") -> None:
        if auth not in AUTH_MODES:
            raise ValueError(f"auth must be one of {AUTH_MODES}, got {auth!r}")
        self.spec, self.solver, self.secret, self.auth = spec, solver, secret, auth
        self.theta, self.target = theta, target
        self.nbytes = spec.num_params * 4
        self.target_update, self.sync, self.expected_workers = target_update, sync, expected_workers
        self.snapshot_every, self.snapshot_dir = snapshot_every, snapshot_dir
        self.session_timeout = session_timeout
        self.version = solver.iter  # server updates applied (continues across --resume)
        self.target_version = 0  # bumped each time θ⁻ ← θ
        self.workers: dict[int, WorkerInfo] = {}
        self._prior_env_steps = dict(prior_env_steps or {})
        self.dropped: Counter[str] = Counter()
        self.staleness: deque[int] = deque(maxlen=2000)
        self.scores: deque[float] = deque(maxlen=200)
        self.busy_s = 0.0  # the server thread's seconds spent receiving and handling messages (not polling)
        self.stopping = threading.Event()
        self.lock = threading.Lock()  # guards θ/θ⁻/solver against snapshots from the driver thread
        self._snapshot_lock = threading.Lock()
        self._sessions: dict[bytes, _Session] = {}
        self._published: tuple[int, np.ndarray] | None = None
        self._published_target: tuple[int, np.ndarray] | None = None
        self._grad = np.empty(spec.num_params, np.float32)
        self._round_sum = np.zeros(spec.num_params, np.float32)
        self._round_count = 0
        self._waiting: list[tuple[bytes, _Session, P.Header]] = []  # sync: FETCHes held until the round ends
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
        self.started = time.monotonic()

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> "ParameterServer":
        """Start serving in a background thread."""
        self.started = time.monotonic()
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
        """Sessions heard from within the session timeout."""
        now = time.monotonic()
        return sum(now - s.last_seen < self.session_timeout for s in self._sessions.values())

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
                self.dropped["receive error"] += 1
                continue
            ident, body = frames[0].bytes, frames[1:]
            try:
                self._handle(ident, body)
            except P.ProtocolError as exc:
                self.dropped[str(exc).split(" (")[0][:60]] += 1
            except Exception:  # a bug must not take the server (and every worker) down
                log.exception("error while handling a message")
                self.dropped["server error"] += 1
            self.busy_s += time.perf_counter() - t

    def _handle(self, ident: bytes, body: list) -> None:
        session = self._sessions.get(ident)
        if session is None:
            self._hello(ident, [f.bytes for f in body])
            return
        header, payload = session.crypto.open(body)
        if header.worker != session.partition or header.attempt != session.attempt:
            raise P.ProtocolError("message names another worker than its session")
        session.last_seen = time.monotonic()
        info = self.workers[session.partition]
        info.last_seen = session.last_seen
        if header.type == P.FETCH:
            self._fetch(ident, session, header)
        elif header.type == P.PUSH:
            self._push(ident, session, header, payload, info)
        elif header.type == P.STATS:
            self._stats(ident, session, payload, info)
        elif header.type == P.BYE:
            self._sessions.pop(ident, None)
        else:
            raise P.ProtocolError(f"unexpected {P.TYPE_NAMES[header.type]} from a worker")

    def _send(self, ident: bytes, frames: list) -> None:
        self._sock.send_multipart([ident, *frames], copy=False)

    def _hello(self, ident: bytes, frames: list[bytes]) -> None:
        header, payload = P.open_handshake(self.secret, frames, P.HELLO)
        if len(payload) < P.NONCE_BYTES:
            raise P.ProtocolError("HELLO without a nonce")
        client_nonce, meta = payload[:P.NONCE_BYTES], P.decode_json(payload[P.NONCE_BYTES:])
        if meta.get("num_params") != self.spec.num_params:
            raise P.ProtocolError("HELLO for another model size")
        if meta.get("auth", "message") != self.auth:
            raise P.ProtocolError("HELLO for another auth mode")
        server_nonce = os.urandom(P.NONCE_BYTES)
        key = P.session_key(self.secret, client_nonce, server_nonce)
        now = time.monotonic()
        for other, s in list(self._sessions.items()):  # an earlier attempt of this partition is dead: forget it
            if s.partition == header.worker and other != ident:  # (a sync round no longer waits for it)
                del self._sessions[other]
        self._sessions[ident] = _Session(P.Session(key, outbound=1, auth=self.auth), header.worker, header.attempt, now)
        info = self.workers.get(header.worker)
        if info is None:
            info = self.workers[header.worker] = WorkerInfo(header.worker,
                                                            prior_env_steps=self._prior_env_steps.get(header.worker, 0))
            log.info("worker %d joined (attempt %d, pid %s on %s)", header.worker, header.attempt,
                     meta.get("pid"), meta.get("host"))
        elif header.attempt != info.attempt or meta.get("pid") != info.pid:
            info.rejoins += 1
            log.warning("worker %d rejoined (attempt %d, pid %s on %s): its replay memory is regenerated",
                        header.worker, header.attempt, meta.get("pid"), meta.get("host"))
        info.attempt, info.pid, info.host = header.attempt, int(meta.get("pid", 0)), str(meta.get("host", ""))
        played = info.prior_env_steps + info.env_steps  # the worker's ε schedule continues from here
        reply = server_nonce + P.encode_json({"num_params": self.spec.num_params, "env_steps": played})
        self._send(ident, P.seal_handshake(self.secret, P.WELCOME, header.worker, header.attempt, reply,
                                           self.version, self.target_version))

    def _fetch(self, ident: bytes, session: _Session, header: P.Header) -> None:
        if self.sync and not self.stopping.is_set() and session.pushed_round == self.version:
            self._waiting.append((ident, session, header))  # answered when this round's average is applied
            return
        self._send_params(ident, session, header)

    def _send_params(self, ident: bytes, session: _Session, header: P.Header) -> None:
        flags, parts = (P.F_STOP if self.stopping.is_set() else 0), []
        if header.a != self.version:
            flags |= P.F_THETA
            parts.append(self._publish())
        if header.b != self.target_version:
            flags |= P.F_TARGET
            parts.append(self._publish_target())
        payload = parts[0] if len(parts) == 1 else (np.concatenate(parts) if parts else b"")
        self._send(ident, session.crypto.seal(P.PARAMS, session.partition, session.attempt, self.version,
                                              self.target_version, payload, flags))

    def _publish(self) -> np.ndarray:
        """An immutable copy of θ for the current version (copied once per version, sent without copies)."""
        if self._published is None or self._published[0] != self.version:
            self._published = (self.version, self.theta.copy())
        return self._published[1]

    def _publish_target(self) -> np.ndarray:
        if self._published_target is None or self._published_target[0] != self.target_version:
            self._published_target = (self.target_version, self.target.copy())
        return self._published_target[1]

    def _push(self, ident: bytes, session: _Session, header: P.Header, payload: memoryview, info: WorkerInfo) -> None:
        if header.nbytes != self.nbytes:
            raise P.ProtocolError("gradient of the wrong size")
        grad = np.frombuffer(payload, np.float32)  # read in place: the solver only reads it
        if not kernels.all_finite(grad):
            raise P.ProtocolError("gradient is not finite")
        staleness = self.version - header.a
        if staleness < 0:
            raise P.ProtocolError("gradient computed on a future version")
        info.pushes += 1
        self.staleness.append(staleness)
        if header.b > 1:  # a sum over push_every minibatches → their mean
            grad = np.multiply(grad, np.float32(1 / header.b), out=self._grad)
        if self.sync:
            self._sync_push(session, header, grad)
        else:
            self._apply(grad)
        self._send(ident, session.crypto.seal(P.ACK, session.partition, session.attempt, self.version, staleness,
                                              flags=P.F_STOP if self.stopping.is_set() else 0))

    def _sync_push(self, session: _Session, header: P.Header, grad: np.ndarray) -> None:
        if header.a != self.version or session.pushed_round == self.version:
            self.dropped["sync gradient for another round"] += 1
            return
        session.pushed_round = self.version
        self._round_sum += grad
        self._round_count += 1
        if self._round_count >= self._round_size():
            self._finish_round()

    def _round_size(self) -> int:
        """Gradients a synchronous round waits for: every expected worker until all joined, then every live one."""
        return self.expected_workers if len(self.workers) < self.expected_workers else self.live_workers()

    def _finish_round(self) -> None:
        if self._round_count:
            np.multiply(self._round_sum, np.float32(1 / self._round_count), out=self._grad)
            self._apply(self._grad)
        self._round_sum[:] = 0
        self._round_count = 0
        waiting, self._waiting = self._waiting, []
        for ident, session, header in waiting:
            if ident in self._sessions:
                self._send_params(ident, session, header)

    def _apply(self, grad: np.ndarray) -> None:
        with self.lock:
            self.solver.apply(self.theta, grad)
            self.version += 1
            if self.version % self.target_update == 0:
                self.target[...] = self.theta
                self.target_version += 1
        if self.snapshot_every and self.snapshot_dir and self.version % self.snapshot_every == 0:
            self.snapshot()

    def _stats(self, ident: bytes, session: _Session, payload: memoryview, info: WorkerInfo) -> None:
        stats = P.decode_json(bytes(payload))
        scores = stats.get("scores", [])
        if not isinstance(scores, list) or not all(isinstance(s, (int, float)) for s in scores):
            raise P.ProtocolError("STATS scores must be a list of numbers")
        self.scores.extend(scores)
        info.episodes += len(scores)
        for key in ("env_steps", "compute_s", "comm_s"):
            value = stats.get(key, 0)
            if not isinstance(value, (int, float)) or value < 0:
                raise P.ProtocolError(f"STATS {key} must be a number >= 0")
            setattr(info, key, getattr(info, key) + value)
        self._send(ident, session.crypto.seal(P.ACK, session.partition, session.attempt, self.version, 0,
                                              flags=P.F_STOP if self.stopping.is_set() else 0))

    def _expire_sessions(self) -> None:
        now = time.monotonic()
        for ident, s in list(self._sessions.items()):
            if now - s.last_seen > self.session_timeout:
                del self._sessions[ident]
        if self.sync and self._round_count and self._round_count >= self._round_size():
            self._finish_round()

    def env_steps_played(self) -> dict[str, int]:
        """Env steps per partition over this run and the runs it resumed (JSON keys)."""
        played = {str(p): n for p, n in self._prior_env_steps.items()}
        for p, w in list(self.workers.items()):
            played[str(p)] = w.prior_env_steps + w.env_steps
        return played

    # -- snapshots ------------------------------------------------------------------------------
    def snapshot(self) -> Path:
        """Write θ, the solver state and θ⁻ into ``snapshot_dir``, record them in ``server_state.json`` and
        append (updates, wall seconds since start, env steps, path) to ``snapshots.csv``."""
        assert self.snapshot_dir is not None
        with self._snapshot_lock:  # one writer at a time (the server thread's periodic, the driver's final)
            with self.lock:  # copy under the θ lock (≈ 3 memcpys); write after releasing it
                theta, target, solver = self.theta.copy(), self.target.copy(), self.solver.copy()
                version, wall_s = self.version, time.monotonic() - self.started
                played = self.env_steps_played()
                env_steps = sum(w.env_steps for w in list(self.workers.values()))
            model = save_checkpoint(self.snapshot_dir, "server", self.spec, theta, target, solver, STATE_FILE,
                                    {"updates": version, "worker_env_steps": played})
            log = self.snapshot_dir / "snapshots.csv"
            new = not log.exists()
            with open(log, "a") as f:
                if new:
                    f.write("updates,wall_s,env_steps,model\n")
                f.write(f"{version},{wall_s:.3f},{env_steps},{model.relative_to(self.snapshot_dir)}\n")
        return model
