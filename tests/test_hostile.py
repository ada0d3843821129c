"""Hostile peers against a live parameter server while an honest worker trains (both auth modes).

Each numbered case of the reliability issue sends its hostile input and asserts the exact consequence: the
honest worker's pushes keep being applied, nothing is applied in part, every drop is counted under a key of
the fixed set ``protocol.DROP_REASONS``, and θ, θ⁻ and the solver history stay bit-identical to a replay of
the honest gradients alone. Attacks whose memory effect is measured run in a separate process, so that the
server's peak RSS (VmHWM of this process) holds only what the server holds.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zmq
from conftest import PROTOTXT, raw_socket

from ddqn.distributed import protocol as P
from ddqn.distributed.client import ServerClient
from ddqn.distributed.server import ParameterServer, ServerOptions
from ddqn.distributed.store import ParameterStore
from ddqn.net.netspec import load_netspec
from ddqn.net.qnet import QNetwork
from ddqn.solvers.flat import make_solver, parse_solver_spec

SOLVER = 'type: "AdaGrad" base_lr: 0.01 lr_policy: "fixed"'
PARTITIONS = 4
MAX_NORM = 1e4
# The most a peer without the connection token can make the server hold, as the README states it.
NO_TOKEN_BOUND_MB = 16


def _store(spec) -> ParameterStore:
    theta = QNetwork(spec, seed=0).get_params()
    return ParameterStore(make_solver(parse_solver_spec(SOLVER, "s"), spec.params), theta, theta.copy(), 3)


@pytest.fixture(params=["message", "connection"])
def server(request, tiny_net_file: Path):
    spec = load_netspec(tiny_net_file)
    srv = ParameterServer(_store(spec), P.new_secret(), ServerOptions(
        auth=request.param, partitions=PARTITIONS, max_grad_norm=MAX_NORM, session_timeout=60)).start()
    srv.spec = spec
    yield srv
    srv.close()




def _hello(server: ParameterServer, worker: int, attempt: int = 0, meta: bytes | None = None) -> tuple[list, bytes]:
    """HELLO frames as an honest worker sends them (what an eavesdropper could record), and their nonce."""
    nonce = os.urandom(P.NONCE_BYTES)
    meta = meta or json.dumps({"num_params": server.store.num_params, "pid": 1234, "host": "h",
                               "auth": server.auth}).encode()
    return P.seal_handshake(server.secret, P.HELLO, worker, attempt, nonce + meta), nonce


def _open(server: ParameterServer, sock: zmq.Socket, hello: list, nonce: bytes) -> P.Session:
    sock.send_multipart(hello)
    assert sock.poll(10_000), "no WELCOME"
    _, payload = P.open_handshake(server.secret, sock.recv_multipart(), P.WELCOME)
    return P.Session(P.session_key(server.secret, nonce, payload[:P.NONCE_BYTES]), outbound=0, auth=server.auth)


def _request(sock: zmq.Socket, s: P.Session, frames: list) -> P.Header:
    sock.send_multipart(frames)
    assert sock.poll(10_000), "no reply"
    return s.open(sock.recv_multipart())[0]


def _dropped(server: ParameterServer) -> dict[str, int]:
    return server.stats.view().dropped


def _settle(server: ParameterServer, total: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while sum(_dropped(server).values()) < total and time.monotonic() < deadline:
        time.sleep(0.01)


class Honest:
    """An honest worker pushing deterministic gradients; remembers them for the replay check."""

    def __init__(self, server: ParameterServer, worker: int = 0, attempt: int = 0) -> None:
        self.server, self.n = server, server.store.num_params
        self.client = ServerClient(server.address, server.secret, worker, attempt, self.n, timeout=10,
                                   auth=server.auth)
        self.client.fetch()
        self.rng = np.random.default_rng(worker)
        self.pushed: list[np.ndarray] = []

    def push(self) -> int:
        grad = self.rng.normal(0, 0.1, self.n).astype(np.float32)
        version, _ = self.client.push(grad, self.server.store.version)
        self.pushed.append(grad)
        return version


def _assert_replay_identical(server: ParameterServer, honest: list[np.ndarray]) -> None:
    """θ, θ⁻ and the solver history equal a fresh store's after applying the honest gradients alone."""
    ref = _store(server.spec)
    for g in honest:
        ref.apply(g)
    got = server.store.copy()
    assert got.version == ref.version == len(honest)
    assert np.array_equal(got.theta, ref.theta) and np.array_equal(got.target, ref.target)
    assert all(np.array_equal(a, b) for a, b in zip(got.solver.history, ref.solver.history))


def _assert_fixed_reasons(server: ParameterServer) -> None:
    assert set(_dropped(server)) <= set(P.DROP_REASONS), _dropped(server)


def test_1_replayed_hello_evicts_nobody(server: ParameterServer) -> None:
    """A HELLO recorded once and replayed from other connections is refused as a replay (no WELCOME). Even
    one the server no longer remembers only offers a session that never proves the key: the honest session
    stays, no rejoin is counted, pending sessions stay bounded."""
    sock = raw_socket(server)
    hello, nonce = _hello(server, 0)
    s = _open(server, sock, hello, nonce)
    pushed, rng = [], np.random.default_rng(7)

    def push() -> None:
        g = rng.normal(0, 0.1, server.store.num_params).astype(np.float32)
        assert _request(sock, s, s.seal(P.PUSH, 0, 0, server.store.version, 1, g)).type == P.ACK
        pushed.append(g)

    push()
    replayers = [raw_socket(server) for _ in range(20)]
    for r in replayers:  # 20 connections × 10 replays of the same HELLO
        for _ in range(10):
            r.send_multipart(hello)
    _settle(server, 200)
    assert _dropped(server) == {"replayed": 200} and not any(r.poll(100) for r in replayers)
    push()
    server.sessions._nonces.clear()  # as if the nonce had been forgotten (more than REMEMBERED_NONCES later)
    for r in replayers:
        r.send_multipart(hello)
    _settle(server, 200 + 19)  # the first copy looks new again; the other 19 are replays of it
    time.sleep(0.5)
    assert sum(bool(r.poll(0)) for r in replayers) == 1  # one WELCOME: the HELLO is authentic and looks new ...
    push()  # ... but the honest session keeps being served
    info = server.stats.view().workers[0]
    assert info.rejoins == 0 and info.attempt == 0 and info.pushes == 3
    assert server.sessions.pending() <= server.sessions.PENDING_PER_PARTITION
    # A stale attempt-0 HELLO replayed after Spark's retry (attempt 1) is live: attempt 1 keeps its session.
    retry = Honest(server, 0, attempt=1)
    retry.push()
    server.sessions._nonces.clear()
    for r in replayers:
        r.send_multipart(hello)
    assert retry.push() == len(pushed) + 2
    info = server.stats.view().workers[0]
    assert info.attempt == 1 and info.rejoins == 1
    _assert_fixed_reasons(server)
    _assert_replay_identical(server, pushed + retry.pushed)
    for r in [sock, *replayers]:
        r.close()
    retry.client.close()


def test_2_drops_are_counted_under_a_fixed_set_of_reasons(server: ParameterServer) -> None:
    honest, sock = Honest(server), raw_socket(server)
    header = P.Header(P.PUSH, 0, 0, 0, 1, 0, 1, 0)
    for i in range(1500):  # headers that lie about their payload length, each a different number
        lie = P.Header(P.PUSH, 0, 0, 0, 1, 0, 1, 1000 + i).pack()
        sock.send_multipart([lie, os.urandom(i % 97), os.urandom(64)])
    sock.send_multipart([header.pack(), b"", os.urandom(7)])
    _settle(server, 1501)
    honest.push()
    assert sum(_dropped(server).values()) == 1501 and set(_dropped(server)) == {"malformed"}, _dropped(server)
    _assert_replay_identical(server, honest.pushed)
    sock.close()


def _vm_hwm_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


ATTACKER = r'''
import os, sys, time, zmq
from ddqn.distributed import protocol as P
from ddqn.distributed.zap import plain_client
address, secret, kind, frame_bytes = sys.argv[1], bytes.fromhex(sys.argv[2]), sys.argv[3], int(sys.argv[5])
sock = zmq.Context.instance().socket(zmq.DEALER)
sock.setsockopt(zmq.LINGER, 0)
sock.setsockopt(zmq.SNDHWM, 1_000_000)
if kind == "token-frames":
    plain_client(sock, P.connection_token(secret))
sock.connect(address)
frame = b"x" * frame_bytes
sock.send_multipart([frame] * 200)  # one message of 200 frames (99.8 MB of 499,000-byte frames)
time.sleep(float(sys.argv[4]))
sock.close(linger=0)
os._exit(0)  # no wait for ZeroMQ's context at exit
'''


def _attack(server: ParameterServer, kind: str, seconds: float, frame_bytes: int = 499_000) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", ATTACKER, server.address, server.secret.hex(), kind, str(seconds),
                           str(frame_bytes)], capture_output=True, text=True, timeout=120)


def test_3_many_frames_from_a_peer_without_the_token_cost_no_memory(server: ParameterServer) -> None:
    """ZAP refuses the connection during its handshake: the 99.8 MB message never reaches the server."""
    honest = Honest(server)
    Path("/proc/self/clear_refs").write_text("5")  # reset this process's peak RSS to its current RSS
    before = _vm_hwm_kb()
    res = _attack(server, "no-token", seconds=3)
    assert res.returncode == 0, res.stderr
    honest.push()
    grown_mb = (_vm_hwm_kb() - before) / 1024
    assert grown_mb < NO_TOKEN_BOUND_MB, f"server peak RSS grew {grown_mb:.1f} MB"
    assert _dropped(server).get("unauthenticated connection", 0) >= 1, _dropped(server)
    _assert_replay_identical(server, honest.pushed)


def test_3_many_frames_with_the_token_are_dropped_before_any_copy(server: ParameterServer) -> None:
    """A peer with the connection token (but not the secret): the frame count is checked before a frame is
    copied; the message is dropped as malformed."""
    honest = Honest(server)
    res = _attack(server, "token-frames", seconds=3, frame_bytes=server.nbytes)  # frames ZeroMQ lets through
    assert res.returncode == 0, res.stderr
    _settle(server, 1)
    honest.push()
    assert _dropped(server) == {"malformed": 1}
    _assert_replay_identical(server, honest.pushed)


def test_4_stats_are_validated_whole_and_applied_all_or_nothing(server: ParameterServer) -> None:
    honest, sock = Honest(server), raw_socket(server)
    hello, nonce = _hello(server, 1)
    s = _open(server, sock, hello, nonce)
    ok = json.dumps({"scores": [1, 2], "env_steps": 10, "compute_s": 0.5, "comm_s": 0.1}).encode()
    assert _request(sock, s, s.seal(P.STATS, 1, 0, payload=ok)).type == P.ACK
    bad = [b'{"scores": [5, 6], "env_steps": NaN}', b'{"scores": [5, 6], "env_steps": Infinity}',
           b'{"scores": [5, 6], "env_steps": 1.5}', b'{"scores": [5, 6], "env_steps": true}',
           b'{"scores": [5, 6], "env_steps": -1}', b'{"scores": [5, 6], "env_steps": 1' + b"0" * 4300 + b"}",
           b'{"scores": [5, 6], "env_steps": 10000000000000000000000}', b'{"scores": [5, NaN]}',
           b'{"scores": [5, 1.5]}', b'{"scores": [true]}', b'{"scores": [1], "compute_s": Infinity}',
           b'{"scores": [1], "comm_s": -0.1}', b'{"scores": [1], "comm_s": "1"}',
           json.dumps({"scores": [1] * 10_001}).encode()]
    for payload in bad:
        sock.send_multipart(s.seal(P.STATS, 1, 0, payload=payload))
    _settle(server, len(bad))
    view = server.stats.view()
    assert (list(view.scores), view.workers[1].episodes, view.workers[1].env_steps) == ([1, 2], 2, 10)
    assert view.workers[1].compute_s == 0.5 and view.workers[1].comm_s == 0.1
    assert sum(view.dropped.values()) == len(bad) and set(view.dropped) <= {"bad stats", "bad json"}, view.dropped
    honest.push()
    _assert_replay_identical(server, honest.pushed)
    sock.close()


def test_5_deeply_nested_json_is_a_counted_drop_not_a_server_error(server: ParameterServer) -> None:
    honest, sock = Honest(server), raw_socket(server)
    s = _open(server, sock, *_hello(server, 1))
    sock.send_multipart(s.seal(P.STATS, 1, 0, payload=b"[" * 30_000 + b"]" * 30_000))
    other = raw_socket(server)  # a new connection: its first message is taken as a HELLO
    other.send_multipart(P.seal_handshake(server.secret, P.HELLO, 2, 0, os.urandom(16) + b"{" * 30_000))
    _settle(server, 2)
    assert _dropped(server) == {"bad json": 2}
    honest.push()
    _assert_replay_identical(server, honest.pushed)
    sock.close()
    other.close()


@pytest.mark.parametrize("meta", [{"pid": "x"}, {"pid": 1.5}, {"pid": True}, {"pid": -1}, {"pid": 2**40},
                                  {"host": 7}, {"host": "h" * 256}, {"num_params": True}])
def test_6_a_hello_with_bad_fields_installs_nothing(server: ParameterServer, meta: dict) -> None:
    honest, sock = Honest(server), raw_socket(server)
    fields = {"num_params": server.store.num_params, "pid": 1, "host": "h", "auth": server.auth, **meta}
    hello, _ = _hello(server, 1, meta=json.dumps(fields).encode())
    sock.send_multipart(hello)
    _settle(server, 1)
    assert not sock.poll(300)  # no WELCOME
    assert _dropped(server) == {"bad hello": 1} and server.sessions.pending() == 0
    assert set(server.stats.view().workers) == {0}
    honest.push()
    _assert_replay_identical(server, honest.pushed)
    sock.close()


FETCHER = r'''
import sys, os, json, time, zmq
from ddqn.distributed import protocol as P
from ddqn.distributed.zap import plain_client
address, secret, n, auth = sys.argv[1], bytes.fromhex(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
sock = zmq.Context.instance().socket(zmq.DEALER)
sock.setsockopt(zmq.LINGER, 0)
sock.setsockopt(zmq.RCVHWM, 1)
sock.setsockopt(zmq.RCVBUF, 4096)
plain_client(sock, P.connection_token(secret))
sock.connect(address)
nonce = os.urandom(16)
sock.send_multipart(P.seal_handshake(secret, P.HELLO, 1, 0, nonce + json.dumps(
    {"num_params": n, "pid": 1, "host": "h", "auth": auth}).encode()))
assert sock.poll(10_000)
_, payload = P.open_handshake(secret, sock.recv_multipart(), P.WELCOME)
s = P.Session(P.session_key(secret, nonce, payload[:16]), outbound=0, auth=auth)
for _ in range(200):  # FETCH θ and θ⁻, never read a reply
    sock.send_multipart(s.seal(P.FETCH, 1, 0, P.NO_VERSION, P.NO_VERSION))
time.sleep(3)
sock.close(linger=0)
os._exit(0)
'''


@pytest.mark.parametrize("auth", ["message", "connection"])
def test_7_unread_fetch_replies_are_bounded_and_share_the_published_buffers(auth: str) -> None:
    """200 FETCHes of θ and θ⁻ (1.8 MB each for the paper net) whose replies are never read: every reply
    references one published buffer, and ZeroMQ queues at most SEND_QUEUE of them for the connection."""
    spec = load_netspec(PROTOTXT / "snake_paper.prototxt")
    server = ParameterServer(_store(spec), P.new_secret(), ServerOptions(auth=auth, partitions=PARTITIONS)).start()
    server.spec = spec
    try:
        honest = Honest(server)
        Path("/proc/self/clear_refs").write_text("5")
        before = _vm_hwm_kb()
        res = subprocess.run([sys.executable, "-c", FETCHER, server.address, server.secret.hex(),
                              str(server.store.num_params), server.auth], capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr
        honest.push()
        grown_mb = (_vm_hwm_kb() - before) / 1024
        assert grown_mb < 16, f"{grown_mb:.1f} MB for 200 unread FETCH replies of 1.8 MB"
        _assert_replay_identical(server, honest.pushed)
        honest.client.close()
    finally:
        server.close()


def test_7_unread_replies_of_a_paper_size_net_stay_under_the_send_queue_bound(server: ParameterServer) -> None:
    """Each reply references the store's published buffer (no copy per reply), and ZeroMQ keeps at most
    SEND_QUEUE replies per connection: a second buffer per version pair is all a FETCH flood can cost."""
    version, target_version, both = server.store.published_both()
    assert server.store.published_both()[2] is both  # one buffer per version pair, shared by every reply
    Honest(server).push()
    assert server.store.published_both()[2] is not both


def test_8_a_huge_finite_gradient_is_dropped_and_counted(server: ParameterServer) -> None:
    honest = Honest(server)
    honest.push()
    n = server.store.num_params
    sock = raw_socket(server)
    s = _open(server, sock, *_hello(server, 1))
    for value in (1e20, 1e3, 3e38):
        sock.send_multipart(s.seal(P.PUSH, 1, 0, server.store.version, 1, np.full(n, value, np.float32)))
    summed = np.full(n, MAX_NORM / np.sqrt(n) * 1.5, np.float32)  # a sum of 2: its mean's norm is 0.75 × limit
    assert _request(sock, s, s.seal(P.PUSH, 1, 0, server.store.version, 2, summed)).type == P.ACK
    assert _dropped(server) == {"too large": 3}
    assert np.isfinite(server.store.theta).all()
    assert all(np.isfinite(h).all() for h in server.store.solver.history)
    honest.push()
    ref = _store(server.spec)  # the honest gradients and the accepted mean, in order
    for g in (honest.pushed[0], summed * np.float32(0.5), honest.pushed[1]):
        ref.apply(g)
    assert server.store.version == ref.version == 3 and np.array_equal(server.store.theta, ref.theta)
    sock.close()


def test_9_partitions_outside_the_job_are_refused(server: ParameterServer) -> None:
    honest, sock = Honest(server), raw_socket(server)
    for worker in (PARTITIONS, PARTITIONS + 1, 2**31):
        sock.send_multipart(_hello(server, worker)[0])
    _settle(server, 3)
    assert _dropped(server) == {"bad hello": 3} and server.sessions.pending() == 0
    assert set(server.stats.view().workers) == {0}
    honest.push()
    _assert_replay_identical(server, honest.pushed)
    sock.close()


def test_10_a_join_and_a_silent_session_are_logged_with_the_peer_address(tiny_net_file: Path, caplog) -> None:
    """Worker 0 goes silent while worker 1 keeps the server busy (never 100 ms idle): its session is still dropped
    after the timeout, and the log names it with the address the server saw."""
    spec = load_netspec(tiny_net_file)
    srv = ParameterServer(_store(spec), P.new_secret(), ServerOptions(partitions=2, session_timeout=0.5)).start()
    clients = [ServerClient(srv.address, srv.secret, w, 0, srv.store.num_params, timeout=10) for w in (0, 1)]
    try:
        with caplog.at_level("INFO", logger="ddqn.distributed.server"):
            clients[0].fetch()
            deadline = time.monotonic() + 10
            while "silent for over" not in caplog.text:
                assert time.monotonic() < deadline, caplog.text
                clients[1].fetch()  # a message every few ms
                time.sleep(0.005)
        assert f"worker 0 joined (attempt 0, pid {os.getpid()} on " in caplog.text
        joined = [r.getMessage() for r in caplog.records if "joined" in r.getMessage()]
        silent = [r.getMessage() for r in caplog.records if "silent for over" in r.getMessage()]
        assert len(joined) == 2 and all(m.endswith(", 127.0.0.1)") for m in joined), joined
        assert len(silent) == 1 and silent[0].startswith("worker 0 (attempt 0") and \
            "127.0.0.1) silent for over 0.5 s" in silent[0], silent
    finally:
        for c in clients:
            c.close()
        srv.close()
