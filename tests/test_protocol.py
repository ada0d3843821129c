"""The parameter server under bad input: fuzzed, truncated, unauthenticated, replayed, wrong-size messages.

None may crash the server or touch θ; each is dropped and counted; honest workers keep being served.
"""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zmq
from conftest import raw_socket, session_socket

from ddqn.distributed import protocol as P
from ddqn.distributed.checkpointer import Checkpointer, restore
from ddqn.distributed.client import ServerClient, ServerGone
from ddqn.distributed.server import ParameterServer, ServerOptions
from ddqn.distributed.spark import attempts_of
from ddqn.distributed.stats import ServerStats
from ddqn.distributed.store import ParameterStore
from ddqn.distributed.sync import SyncRounds
from ddqn.errors import DDQNError
from ddqn.net.netspec import load_netspec
from ddqn.net.qnet import QNetwork
from ddqn.solvers.flat import make_solver, parse_solver_spec

SOLVER = 'type: "AdaGrad" base_lr: 0.01 lr_policy: "fixed"'


def _server(spec, *, target_update: int = 1000, sync_workers: int = 0, prior: dict[int, int] | None = None,
            **options) -> ParameterServer:
    """A started server on the tiny net's initial θ (AdaGrad), over a fresh store."""
    theta = QNetwork(spec, seed=0).get_params()
    store = ParameterStore(make_solver(parse_solver_spec(SOLVER, "s"), spec.params), theta, theta.copy(),
                           target_update)
    rounds = SyncRounds(spec.num_params, sync_workers) if sync_workers else None
    options = ServerOptions(**{"partitions": 16, **options})
    return ParameterServer(store, P.new_secret(), options, rounds=rounds, stats=ServerStats(prior)).start()


@pytest.fixture
def server(tiny_net_file: Path):
    srv = _server(load_netspec(tiny_net_file), target_update=3, session_timeout=30)
    yield srv
    srv.close()




def _settle(server: ParameterServer, before: int, at_least: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while sum(server.stats.view().dropped.values()) < before + at_least and time.monotonic() < deadline:
        time.sleep(0.02)


def test_honest_worker_fetches_pushes_and_gets_stop(server: ParameterServer) -> None:
    n = server.store.num_params
    client = ServerClient(server.address, server.secret, worker=0, attempt=0, num_params=n, timeout=10)
    first = client.fetch()
    assert first.version == 0 and np.array_equal(first.theta, server.store.theta) and first.target is not None
    grad = np.full(n, 0.5, np.float32)
    for i in range(4):
        version, stop = client.push(grad, base_version=i)
        assert version == i + 1 and not stop
    p = client.fetch(first.version, first.target_version)
    assert p.version == 4 and p.theta is not None and np.array_equal(p.theta, server.store.theta)
    assert p.target is not None and p.target_version == 1  # θ⁻ ← θ after 3 updates (target_update=3)
    same = client.fetch(p.version, p.target_version)
    assert same.theta is None and same.target is None  # nothing new: no payload
    assert not client.stats([3, 1], env_steps=10, compute_s=0.5, comm_s=0.1)
    assert list(server.stats.view().scores) == [3, 1] and server.stats.view().workers[0].env_steps == 10
    server.request_stop()
    assert client.push(grad, base_version=4)[1]
    client.close()


def test_the_server_threads_time_is_recorded_by_message_kind_and_part(server: ParameterServer) -> None:
    """Every message's time is split by part (receive, verify, check, apply, publish, seal, send) under its kind;
    the parts of each kind sum to no more than its total (the loop's own work is the rest)."""
    n = server.store.num_params
    client = ServerClient(server.address, server.secret, worker=0, attempt=0, num_params=n, timeout=10)
    first = client.fetch()  # θ and θ⁻
    for i in range(2):
        client.push(np.full(n, 0.5, np.float32), base_version=i)
    client.fetch(first.version, first.target_version)  # θ only (θ⁻ resets after 3 updates)
    client.fetch(2, first.target_version)  # nothing new
    client.stats([1], env_steps=5, compute_s=0.1, comm_s=0.1)
    client.close()
    deadline = time.monotonic() + 5  # the server records a message's time after its reply (and BYE has none)
    while "bye" not in (parts := server.stats.view().parts) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert {k: c["n"] for k, c in parts.items()} == {"hello": 1, "fetch_both": 1, "push": 2, "fetch": 1, "fetch_none": 1,
                                                     "stats": 1, "bye": 1}, parts
    assert {"receive", "verify", "check", "apply", "seal", "send"} <= parts["push"].keys()
    assert {"publish", "seal", "send"} <= parts["fetch"].keys() and "apply" not in parts["fetch"]
    for kind, c in parts.items():
        assert 0 < sum(v for p, v in c.items() if p not in ("n", "total")) <= c["total"], (kind, c)


def test_staleness_is_recorded(server: ParameterServer) -> None:
    n = server.store.num_params
    a = ServerClient(server.address, server.secret, 0, 0, n, timeout=10)
    b = ServerClient(server.address, server.secret, 1, 0, n, timeout=10)
    a.fetch(), b.fetch()
    grad = np.ones(n, np.float32)
    a.push(grad, 0), a.push(grad, 1), a.push(grad, 2)
    b.push(grad, 0)  # computed on version 0, arrives at version 3
    assert list(server.stats.view().staleness) == [0, 0, 0, 3]


def test_rejoining_and_resumed_workers_continue_their_epsilon_schedule(tiny_net_file: Path, tmp_path: Path) -> None:
    """WELCOME tells a worker how many env steps its partition already played (this run's attempts, and the
    runs a --resume continues, via the snapshot record); the worker anneals ε from there, not from 1.0."""
    spec = load_netspec(tiny_net_file)
    srv = _server(spec, prior={1: 7000})
    try:
        first = ServerClient(srv.address, srv.secret, 0, 0, spec.num_params, timeout=10)
        assert first.prior_env_steps == 0
        time.sleep(0.01)  # 500 env steps take time: a report may claim MAX_ENV_STEPS_PER_S per second since the last
        first.stats([], env_steps=500, compute_s=0.0, comm_s=0.0)
        again = ServerClient(srv.address, srv.secret, 0, 1, spec.num_params, timeout=10)  # Spark's retry
        assert again.prior_env_steps == 500 and srv.stats.view().workers[0].rejoins == 0  # not proven yet
        again.fetch()  # its first sealed message proves the key: now it replaces attempt 0
        assert srv.stats.view().workers[0].rejoins == 1 and srv.stats.view().workers[0].attempt == 1
        other = ServerClient(srv.address, srv.secret, 1, 0, spec.num_params, timeout=10)
        assert other.prior_env_steps == 7000
        other.stats([], env_steps=30, compute_s=0.0, comm_s=0.0)
        Checkpointer(tmp_path, spec, srv.store, srv.stats).snapshot()
        record = json.loads((tmp_path / "server_state.json").read_text())
        assert record["worker_env_steps"] == {"0": 500, "1": 7030}
        solver = make_solver(parse_solver_spec(SOLVER, "s"), spec.params)
        assert restore(tmp_path, spec, solver)[2] == {0: 500, 1: 7030}
        (tmp_path / "server_state.json").write_text(json.dumps({**record, "worker_env_steps": {"0": -1}}))
        with pytest.raises(DDQNError, match="worker_env_steps"):
            restore(tmp_path, spec, solver)
        for c in (first, again, other):
            c.close()
    finally:
        srv.close()


def test_sync_round_does_not_wait_for_a_replaced_attempt(tiny_net_file: Path) -> None:
    """A retried task's HELLO retires its dead predecessor's session at once, so the next synchronous round
    needs the live workers only (not a 2 × server_timeout wait for the dead session to expire)."""
    spec = load_netspec(tiny_net_file)
    srv = _server(spec, sync_workers=2, session_timeout=300)
    n, grad = spec.num_params, np.ones(spec.num_params, np.float32)
    try:
        dead = ServerClient(srv.address, srv.secret, 0, 0, n, timeout=10)
        b = ServerClient(srv.address, srv.secret, 1, 0, n, timeout=10)
        dead.fetch(), b.fetch()
        retry = ServerClient(srv.address, srv.secret, 0, 1, n, timeout=10)  # attempt 0 never says BYE
        retry.fetch()
        assert srv.live_workers() == 2
        assert retry.push(grad, 0)[0] == 0  # round 0 waits for worker 1 ...
        assert b.push(grad, 0)[0] == 1  # ... and only for it
        assert srv.store.version == 1
        for c in (dead, b, retry):
            c.close()
    finally:
        srv.close()


def test_garbage_never_touches_theta(server: ParameterServer) -> None:
    n = server.store.num_params
    honest = ServerClient(server.address, server.secret, 0, 0, n, timeout=10)
    honest.fetch()
    theta0 = server.store.theta.copy()
    rng = np.random.default_rng(1)
    raw = raw_socket(server)
    before = sum(server.stats.view().dropped.values())
    sent = 0
    # 1. fuzz: random frames of random counts and sizes
    for _ in range(200):
        raw.send_multipart([os.urandom(int(rng.integers(0, 200))) for _ in range(int(rng.integers(1, 5)))])
        sent += 1
    # 2. a well-formed HELLO under the wrong secret
    raw.send_multipart(P.seal_handshake(P.new_secret(), P.HELLO, 5, 0, os.urandom(16) + b'{"num_params": %d}' % n))
    # 3. truncated HELLO (tag cut) and a header with a lying length
    good = P.seal_handshake(server.secret, P.HELLO, 5, 0, os.urandom(16) + b'{"num_params": %d}' % n)
    raw.send_multipart([good[0], good[1], good[2][:8]])
    raw.send_multipart([good[0], good[1][:-3], good[2]])
    # 4. a PUSH-shaped message without any session: unauthenticated
    fake = P.Header(P.PUSH, 0, 0, 0, 1, 0, 1, 4 * n).pack()
    raw.send_multipart([fake, np.zeros(n, np.float32).tobytes(), os.urandom(64)])
    # 5. a HELLO for another model size (authentic, but wrong)
    raw.send_multipart(P.seal_handshake(server.secret, P.HELLO, 6, 0, os.urandom(16) + b'{"num_params": 7}'))
    # 6. an oversized message: ZeroMQ's MAXMSGSIZE drops the connection before it reaches the server
    big = raw_socket(server)
    big.send_multipart([b"x" * 16, os.urandom(4 * n + 10_000), b"y" * 16])
    sent += 5
    _settle(server, before, sent)
    assert sum(server.stats.view().dropped.values()) >= before + sent - 1
    assert np.array_equal(server.store.theta, theta0) and server.store.version == 0
    # the honest worker is still served
    assert honest.push(np.zeros(n, np.float32), 0)[0] == 1
    big.close()
    raw.close()


def _session(server: ParameterServer, worker: int) -> tuple[zmq.Socket, P.Session]:
    """An authenticated raw session (as a worker holding the secret would open)."""
    sock = raw_socket(server)
    nonce = os.urandom(16)
    sock.send_multipart(P.seal_handshake(server.secret, P.HELLO, worker, 0,
                                         nonce + b'{"num_params": %d}' % server.store.num_params))
    assert sock.poll(10_000)
    _, payload = P.open_handshake(server.secret, sock.recv_multipart(), P.WELCOME)
    sock.close()  # the join connection: the session's messages go on its own connection to the session port
    key = P.session_key(server.secret, nonce, payload[:16])
    return session_socket(server, payload[:16], key), P.Session(key, outbound=0)


def test_bad_messages_inside_a_session_are_dropped(server: ParameterServer) -> None:
    n = server.store.num_params
    sock, s = _session(server, worker=3)
    theta0 = server.store.theta.copy()
    before = sum(server.stats.view().dropped.values())
    good = s.seal(P.PUSH, 3, 0, 0, 1, np.ones(n, np.float32))
    tampered = bytearray(good[1].tobytes())
    tampered[17] ^= 0x40
    sock.send_multipart([good[0], bytes(tampered), good[2]])  # payload altered in flight
    sock.send_multipart(s.seal(P.PUSH, 3, 0, 0, 1, np.ones(n - 1, np.float32)))  # wrong size
    sock.send_multipart(s.seal(P.PUSH, 3, 0, 0, 1, np.full(n, np.nan, np.float32)))  # not finite
    sock.send_multipart(s.seal(P.PUSH, 3, 0, 99, 1, np.ones(n, np.float32)))  # a future version
    sock.send_multipart(s.seal(P.PUSH, 4, 0, 0, 1, np.ones(n, np.float32)))  # another worker's name
    sock.send_multipart(s.seal(P.STATS, 3, 0, payload=b"[1, 2"))  # malformed JSON
    sock.send_multipart(s.seal(P.STATS, 3, 0, payload=b'{"scores": "many"}'))  # wrong field type
    _settle(server, before, 7)
    assert sum(server.stats.view().dropped.values()) == before + 7, server.stats.view().dropped
    assert np.array_equal(server.store.theta, theta0) and server.store.version == 0
    ok = s.seal(P.PUSH, 3, 0, 0, 1, np.ones(n, np.float32))
    sock.send_multipart(ok)
    assert sock.poll(10_000)
    h, _ = s.open(sock.recv_multipart())
    assert h.type == P.ACK and h.version == 1
    sock.send_multipart(ok)  # the same message again: a replay
    _settle(server, before + 7, 1)
    assert server.store.version == 1 and sum(server.stats.view().dropped.values()) == before + 8
    assert np.isfinite(server.store.theta).all()
    sock.close()


def test_connection_auth_seals_every_header_but_not_payloads(tiny_net_file: Path) -> None:
    """auth: connection (like spark.authenticate): honest workers are served; forged, replayed and resized
    messages are still dropped; a payload altered in flight is NOT detected (the documented trade-off);
    a worker of the other mode cannot open a session."""
    spec = load_netspec(tiny_net_file)
    srv = _server(spec, auth="connection")
    n = spec.num_params
    sock = raw_socket(srv)
    honest = None
    try:
        honest = ServerClient(srv.address, srv.secret, 0, 0, n, timeout=10, auth="connection")
        assert honest.fetch().version == 0 and honest.push(np.ones(n, np.float32), 0)[0] == 1
        with pytest.raises(ServerGone):  # HELLO for the other mode: dropped, no WELCOME
            ServerClient(srv.address, srv.secret, 1, 0, n, timeout=1.0, auth="message")
        nonce = os.urandom(16)
        sock.send_multipart(P.seal_handshake(srv.secret, P.HELLO, 2, 0,
                                             nonce + b'{"num_params": %d, "auth": "connection"}' % n))
        assert sock.poll(10_000)
        _, payload = P.open_handshake(srv.secret, sock.recv_multipart(), P.WELCOME)
        s = P.Session(P.session_key(srv.secret, nonce, payload[:16]), outbound=0, auth="connection")
        sock.close()  # the join connection; then the session's own connection to the session port
        sock = session_socket(srv, payload[:16], P.session_key(srv.secret, nonce, payload[:16]))
        before, theta1 = sum(srv.stats.view().dropped.values()), srv.store.theta.copy()
        good = s.seal(P.PUSH, 2, 0, 1, 1, np.ones(n, np.float32))
        header = bytearray(good[0])
        header[-12] ^= 1  # the header's payload length, altered
        sock.send_multipart([bytes(header), good[1], good[2]])
        sock.send_multipart([good[0], good[1], os.urandom(64)])  # a forged tag
        _settle(srv, before, 2)
        assert sum(srv.stats.view().dropped.values()) == before + 2 and np.array_equal(srv.store.theta, theta1)
        altered = np.frombuffer(good[1], np.float32).copy()
        altered[0] = 5.0
        sock.send_multipart([good[0], altered.tobytes(), good[2]])
        assert sock.poll(10_000) and s.open(sock.recv_multipart())[0].version == 2  # accepted: payloads are not MAC'd
        sock.send_multipart([good[0], altered.tobytes(), good[2]])  # replayed
        sock.send_multipart(s.seal(P.PUSH, 2, 0, 2, 1, np.ones(n - 1, np.float32)))  # wrong size
        _settle(srv, before + 2, 2)
        assert srv.store.version == 2 and sum(srv.stats.view().dropped.values()) == before + 4, srv.stats.view().dropped
    finally:  # an open socket of the shared context would block the interpreter's exit on a failure
        sock.close()
        if honest is not None:
            honest.close()
        srv.close()


def test_worker_exits_when_the_server_is_gone(server: ParameterServer) -> None:
    client = ServerClient(server.address, server.secret, 0, 0, server.store.num_params, timeout=1.0)
    client.fetch()
    server.close()
    start = time.monotonic()
    with pytest.raises(ServerGone):
        client.push(np.zeros(server.store.num_params, np.float32), 0)
    assert time.monotonic() - start < 5
    client.close()


def test_no_server_at_all_is_bounded() -> None:
    start = time.monotonic()
    with pytest.raises(ServerGone):
        ServerClient("tcp://127.0.0.1:9", P.new_secret(), 0, 0, 10, timeout=1.0)
    assert time.monotonic() - start < 5


def test_driver_reads_a_consistent_copy_while_workers_join(tiny_net_file: Path) -> None:
    """The driver's statistics (ServerStats.view) are one consistent copy even while HELLOs for new workers
    and their reports arrive: 10,000 reads, none fails, each one's totals agree with its per-worker counts."""
    spec = load_netspec(tiny_net_file)
    srv = _server(spec, session_timeout=30, partitions=10_000)
    joined, stop = [], threading.Event()

    def join_workers() -> None:
        for partition in range(10_000):
            if stop.is_set():
                return
            c = ServerClient(srv.address, srv.secret, partition, 0, spec.num_params, timeout=10)
            c.stats([1, 2], env_steps=3, compute_s=0.0, comm_s=0.0)
            c.close()
            joined.append(partition)

    thread = threading.Thread(target=join_workers)
    thread.start()
    try:
        sizes, reads, deadline = set(), 0, time.monotonic() + 120
        while (reads < 10_000 or len(joined) < 20) and time.monotonic() < deadline:
            reads += 1
            view = srv.stats.view()
            sizes.add(len(view.workers))
            assert view.episodes == sum(w.episodes for w in view.workers.values())
            assert view.env_steps == 3 * sum(w.episodes for w in view.workers.values()) // 2
        assert reads >= 10_000 and len(sizes) > 5, (reads, sizes)  # workers really joined while we read
    finally:
        stop.set()
        thread.join(timeout=60)
        srv.close()


def test_task_attempts_follow_sparks_rules() -> None:
    """The attempts Spark makes of one task (the server admits attempt numbers below it), by master and
    spark.task.maxFailures, as Spark's SparkContext.createTaskScheduler decides them."""
    assert [attempts_of(m, f) for m, f in [("local", None), ("local[2]", "8"), ("local[*]", None),
                                           ("local[*,4]", None), ("local[2, 3]", None), ("spark://h:7077", None),
                                           ("spark://h:7077", "9"), ("local-cluster[2,1,1024]", None),
                                           ("yarn", "2")]] == [1, 1, 1, 4, 3, 4, 9, 4, 2]
