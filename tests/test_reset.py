"""A TCP reset in the middle of a PUSH loses no worker, and every push is applied exactly as acknowledged (issue 28
finding 5; both auth modes).

A proxy on loopback between each worker and a live parameter server's session port (the worker's HELLO goes to the join
port directly) ends a connection with ``SO_LINGER 0``, which sends a real RST: to both ends after passing on part of a
PUSH (the server never reads it), or all of it but not its ACK (the server applied it; the worker cannot know yet); or
to the server's end alone, the worker's end getting its RST only when it next sends. Each worker says HELLO on a new
connection, learns whether its PUSH was applied, and goes on; θ, θ⁻ and the solver history equal a replay of the
acknowledged pushes, each once (also with ``--sync``).
"""
from __future__ import annotations

import select
import socket
import struct
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from test_hostile import _assert_fixed_reasons, _assert_replay_identical, _dropped, _store

from ddqn.distributed import protocol as P
from ddqn.distributed.client import ServerClient
from ddqn.distributed.server import ParameterServer, ServerOptions
from ddqn.distributed.sync import SyncRounds
from ddqn.net.netspec import load_netspec

UP, DOWN = 0, 1  # worker → server, server → worker
RST = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends an RST instead of a FIN
HEARTBEAT_BYTES = 64  # a ZeroMQ heartbeat (PING, PONG) is shorter; every message of ours is longer (a header alone)


class ResetProxy:
    """Passes TCP connections from :attr:`address` on to the server's port; :meth:`arm` makes the next bytes in one
    direction end their connection with an RST once ``forward`` of them are passed on: to both ends, or to the server's
    alone (``server_only``: the worker's end stays open until its next bytes, which get the RST the server host's
    kernel would send for a connection it no longer has). Heartbeats pass on and do not count."""

    def __init__(self, target_port: int) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"tcp://127.0.0.1:{self._listener.getsockname()[1]}"
        self._target = target_port
        self._lock = threading.Lock()
        self._plan: tuple[int, int, bool] | None = None  # direction, bytes still to pass on, server_only
        self.connections = 0  # accepted so far
        self.cut = threading.Event()  # set when an armed cut has reached the worker's end
        self._closed = False
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def arm(self, direction: int, forward: int, server_only: bool = False) -> None:
        self.cut.clear()
        with self._lock:
            self._plan = (direction, forward, server_only)

    def close(self) -> None:
        self._closed = True
        for t in self._threads:
            t.join(timeout=5)
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed:
            if select.select([self._listener], [], [], 0.05)[0]:
                worker, _ = self._listener.accept()
                server = socket.create_connection(("127.0.0.1", self._target))
                self.connections += 1
                self._threads.append(threading.Thread(target=self._pump, args=(worker, server), daemon=True))
                self._threads[-1].start()

    def _pass_on(self, direction: int, data: bytes) -> tuple[bytes, tuple[int, int, bool] | None]:
        """What of ``data`` to pass on, and the plan that cuts the connection after it (None: no cut)."""
        with self._lock:
            plan = self._plan
            if plan is None or plan[0] != direction or len(data) < HEARTBEAT_BYTES:
                return data, None
            if len(data) <= plan[1]:
                self._plan = (direction, plan[1] - len(data), plan[2])
                return data, None
            self._plan = None
            return data[:plan[1]], plan

    def _pump(self, worker: socket.socket, server: socket.socket) -> None:
        ends = {worker: (server, UP), server: (worker, DOWN)}  # the open ends: where their bytes go
        try:
            while not self._closed and ends:
                for src in select.select(list(ends), [], [], 0.05)[0]:
                    data = src.recv(65536)
                    if not data:
                        return
                    dst, direction = ends[src]
                    if dst not in ends:  # the server's end is gone: the worker's bytes get an RST
                        del ends[worker]
                        _reset(worker)
                        self.cut.set()
                        break
                    data, cut = self._pass_on(direction, data)
                    dst.sendall(data)
                    if cut is not None:
                        _reset(server, *([] if cut[2] else [worker]))
                        ends = {worker: (server, UP)} if cut[2] else {}
                        if not cut[2]:
                            self.cut.set()
                        break
        except OSError:
            pass
        finally:
            for end in ends:
                end.close()


def _reset(*ends: socket.socket) -> None:
    for end in ends:
        end.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RST)
        end.close()


@pytest.fixture
def server(two_partition_server):
    return two_partition_server


def _clients(server: ParameterServer, closing) -> tuple[list[ResetProxy], list[ServerClient]]:
    """Two workers (partitions 0 and 1), each holding θ, each with its session connections behind a proxy of its own."""
    proxies = [ResetProxy(server.session_port) for _ in range(2)]
    for p in proxies:
        closing(p)
    clients = [ServerClient(server.address, server.secret, w, 0, server.store.num_params, timeout=5, auth=server.auth,
                            session_address=p.address) for w, p in enumerate(proxies)]
    for c in clients:
        closing(c)
        c.fetch()
    return proxies, clients


def _pusher(server: ParameterServer, rng: np.random.Generator) -> tuple[Callable[[ServerClient], None], list]:
    """``push(client)``: a fresh gradient on the current θ, which must be the next one applied; and the list of the
    pushes applied so far, in order."""
    applied: list[np.ndarray] = []

    def push(client: ServerClient) -> None:
        grad = rng.normal(0, 0.1, server.store.num_params).astype(np.float32)
        assert client.push(grad, server.store.version)[0] == len(applied) + 1
        applied.append(grad)

    return push, applied


@pytest.fixture
def closing():
    """Proxies and clients a test opens, closed after it even when it fails."""
    opened: list = []
    yield opened.append
    for thing in reversed(opened):
        thing.close()


def test_a_reset_in_the_middle_of_a_push_loses_no_worker_and_applies_each_push_once(server: ParameterServer,
                                                                                   closing) -> None:
    """Worker 0's connection is reset halfway through a PUSH's gradient, worker 1's after its whole PUSH but before
    the ACK. Both say HELLO on a new connection and go on; worker 0's PUSH is applied once (on the new connection),
    worker 1's once (before the reset), and each worker knows which; nothing else is applied."""
    proxies, clients = _clients(server, closing)
    push, applied = _pusher(server, np.random.default_rng(5))
    for w in (0, 1, 0, 1):
        push(clients[w])
    gradient_bytes = server.store.num_params * 4
    proxies[0].arm(UP, gradient_bytes // 2)  # the PUSH's header and part of its gradient, then an RST
    push(clients[0])
    assert proxies[0].cut.is_set()
    assert (clients[0].reconnects, clients[0].repeated) == (1, 0)  # re-sent on the new connection, applied there
    proxies[1].arm(DOWN, 0)  # the whole PUSH goes through; its ACK does not
    push(clients[1])
    assert proxies[1].cut.is_set()
    assert (clients[1].reconnects, clients[1].repeated) == (1, 1)  # applied before the reset, not again
    for w in (0, 1, 0, 1, 0, 1):
        push(clients[w])
    assert [p.connections for p in proxies] == [2, 2]
    workers = server.stats.view().workers
    assert [workers[w].pushes for w in (0, 1)] == [6, 6]  # as many as each worker had acknowledged
    assert [workers[w].rejoins for w in (0, 1)] == [0, 0] and [workers[w].attempt for w in (0, 1)] == [0, 0]
    assert _dropped(server) == {"resent": 1}, _dropped(server)  # worker 1's PUSH, answered again, not applied
    _assert_fixed_reasons(server)
    _assert_replay_identical(server, applied)


@pytest.mark.parametrize("auth", ["message", "connection"])
def test_a_reset_in_a_sync_round_keeps_the_workers_place_in_it(tiny_net_file: Path, auth: str, closing) -> None:
    """--sync: worker 0's ACK of round 0 is lost to a reset, worker 1's PUSH of round 1 is cut halfway. The new
    sessions keep their workers' places in the rounds, so each round closes on the second worker's push (not on its
    30 s clock) and applies the mean of the two gradients, each counted once."""
    spec = load_netspec(tiny_net_file)
    srv = ParameterServer(_store(spec), P.new_secret(), ServerOptions(auth=auth, partitions=2, session_timeout=60),
                          rounds=SyncRounds(spec.num_params, 2, wait_s=30)).start()
    srv.spec = spec
    closing(srv)
    proxies, clients = _clients(srv, closing)
    rng, means = np.random.default_rng(6), []
    for version, (first, second), cut in ((0, (0, 1), (DOWN, 0)), (1, (1, 0), (UP, srv.store.num_params * 2))):
        grads = [rng.normal(0, 0.1, spec.num_params).astype(np.float32) for _ in range(2)]
        proxies[first].arm(*cut)
        assert clients[first].push(grads[0], version)[0] == version  # the round waits for the other worker
        assert proxies[first].cut.is_set() and clients[first].reconnects == 1
        assert clients[second].push(grads[1], version)[0] == version + 1  # ... and closes on its push
        means.append((grads[0] + grads[1]) * np.float32(0.5))
    assert (clients[0].repeated, clients[1].repeated) == (1, 0)
    grads = [rng.normal(0, 0.1, spec.num_params).astype(np.float32) for _ in range(2)]  # both go on
    assert clients[0].push(grads[0], 2)[0] == 2 and clients[1].push(grads[1], 2)[0] == 3
    means.append((grads[0] + grads[1]) * np.float32(0.5))
    assert _dropped(srv) == {"resent": 1}, _dropped(srv)
    _assert_replay_identical(srv, means)


def test_a_reset_only_the_servers_end_sees_is_noticed_by_the_worker(server: ParameterServer, closing) -> None:
    """The server's end of worker 0's connection is reset after it read a whole PUSH, before the ACK leaves; the
    worker's end stays open, waiting (the RST reaches it only when it sends). Its heartbeat draws the RST: it
    reconnects within its timeout, learns that the push was applied, and goes on."""
    proxies, clients = _clients(server, closing)
    push, applied = _pusher(server, np.random.default_rng(7))
    push(clients[0])
    proxies[0].arm(DOWN, 0, server_only=True)
    push(clients[0])
    assert proxies[0].cut.is_set() and (clients[0].reconnects, clients[0].repeated) == (1, 1)
    for c in (clients[1], clients[0]):
        push(c)
    assert _dropped(server) == {"resent": 1}, _dropped(server)
    _assert_replay_identical(server, applied)
