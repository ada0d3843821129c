"""Connections that send nothing against the driver's file descriptors (issue 28 finding 2), in both auth modes.

libzmq accepts every TCP connection to the server's port and keeps it, one descriptor each, until its handshake
completes or times out; ZeroMQ cannot limit connections per source address. A flood of idle connections must not
cost the driver its snapshots or a (re)joining worker its place: each is closed after ``HANDSHAKE_S``, the
snapshot writer keeps descriptors of its own, and a snapshot that still finds none is logged and retried. The
server whose descriptors are filled runs in a process of its own with a small descriptor limit (soft and hard).
"""
from __future__ import annotations

import errno
import os
import select
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from test_hostile import _store

from ddqn.distributed import checkpointer as checkpointer_module
from ddqn.distributed import driver as driver_module
from ddqn.distributed import protocol as P
from ddqn.distributed import server as server_module
from ddqn.distributed.checkpointer import Checkpointer
from ddqn.distributed.client import ServerClient
from ddqn.distributed.server import ParameterServer, ServerOptions
from ddqn.distributed.stats import ServerStats
from ddqn.net.netspec import load_netspec
from ddqn.stop import NEVER

SOLVER = 'type: "AdaGrad" base_lr: 0.01 lr_policy: "fixed"'
FD_LIMIT = 256  # the server process's descriptor limit (soft and hard): a few hundred idle connections fill it

SERVER_PROCESS = r'''
import resource, sys
limit = int(sys.argv[4])
resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))  # a machine whose hard limit is this
from pathlib import Path
from ddqn.distributed import protocol as P
from ddqn.distributed.checkpointer import Checkpointer
from ddqn.distributed.server import ParameterServer, ServerOptions
from ddqn.distributed.stats import ServerStats
from ddqn.distributed.store import ParameterStore
from ddqn.net.netspec import load_netspec
from ddqn.net.qnet import QNetwork
from ddqn.solvers.flat import make_solver, parse_solver_spec
from ddqn.stop import NEVER
spec = load_netspec(sys.argv[1])
theta = QNetwork(spec, seed=0).get_params()
store = ParameterStore(make_solver(parse_solver_spec(sys.argv[2], "s"), spec.params), theta, theta.copy(), 3)
server = ParameterServer(store, P.new_secret(), ServerOptions(auth=sys.argv[3], partitions=2)).start()
checkpointer = Checkpointer(Path(sys.argv[5]), spec, store, server.stats)
checkpointer.snapshot()  # every module a snapshot uses is imported before the flood
print(server.address, server.secret.hex(), flush=True)
for line in sys.stdin:  # one snapshot per line, as the driver's watch loop takes them
    try:
        print("ok", checkpointer.snapshot(), flush=True)
    except OSError as exc:
        print("error", exc.errno, exc.strerror, flush=True)
server.close()
'''


def _open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _line(proc: subprocess.Popen, timeout: float) -> str:
    assert select.select([proc.stdout], [], [], timeout)[0], f"no answer from the server process in {timeout} s"
    return proc.stdout.readline().strip()


def _fill(host: str, port: int, pid: int, within_s: float) -> list[socket.socket]:
    """TCP connections that send nothing, one at a time, each accepted before the next, until the server's
    process has all FD_LIMIT descriptors open (none is left waiting in the listen backlog)."""
    idle: list[socket.socket] = []
    end = time.monotonic() + within_s
    while (count := _open_fds(pid)) < FD_LIMIT:
        assert time.monotonic() < end, f"{len(idle)} idle connections left the server {count} descriptors"
        idle.append(socket.create_connection((host, port), timeout=5))
        accepted_by = time.monotonic() + 0.2
        while _open_fds(pid) <= count and time.monotonic() < accepted_by:
            time.sleep(0.001)
    return idle


@pytest.mark.parametrize("auth", ["message", "connection"])
def test_r2_2_idle_connections_leave_snapshots_and_joins_working(tiny_net_file: Path, tmp_path: Path,
                                                                auth: str) -> None:
    """A few hundred TCP connections that send nothing fill the server process's FD_LIMIT descriptors. While they
    are held, a snapshot is still written (the checkpointer's reserved descriptors), and an honest worker's
    HELLO, FETCH and PUSH succeed as soon as libzmq closes the idle connections, after HANDSHAKE_S (it used to keep
    them 30 s: the snapshot failed with EMFILE and the worker left 'server gone')."""
    proc = subprocess.Popen([sys.executable, "-c", SERVER_PROCESS, str(tiny_net_file), SOLVER, auth, str(FD_LIMIT),
                             str(tmp_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    idle: list[socket.socket] = []
    try:
        address, secret_hex = _line(proc, 120).split()
        host, port = address.removeprefix("tcp://").rsplit(":", 1)
        idle = _fill(host, int(port), proc.pid, within_s=10)
        proc.stdin.write("snap\n")
        proc.stdin.flush()
        answer = _line(proc, 10)
        assert answer.startswith("ok "), f"snapshot with {len(idle)} idle connections held: {answer}"
        assert Path(answer.split(" ", 1)[1]).is_file() and len(idle) > FD_LIMIT // 2
        t = time.monotonic()
        client = ServerClient(address, bytes.fromhex(secret_hex), 0, 0, load_netspec(tiny_net_file).num_params,
                              timeout=10, auth=auth)
        try:
            assert client.fetch().theta is not None
            assert client.push(np.zeros(client.num_params, np.float32), 0)[0] == 1
        finally:
            client.close()
        joined_s = time.monotonic() - t
        assert joined_s < server_module.HANDSHAKE_S + 2, f"joined after {joined_s:.1f} s"
        proc.stdin.write("snap\n")
        proc.stdin.flush()
        assert _line(proc, 10).startswith("ok "), "the second snapshot"
        assert proc.poll() is None
    finally:
        for s in idle:
            s.close()
        if proc.poll() is None:
            proc.kill()  # by its pid
        proc.wait(timeout=30)


@pytest.mark.parametrize("auth", ["message", "connection"])
def test_r2_2_a_connection_that_sends_nothing_is_closed_after_the_handshake_timeout(tiny_net_file: Path,
                                                                                    auth: str) -> None:
    """The bound the docs state: the server holds a connection that never completes its handshake for HANDSHAKE_S
    (libzmq's default was 30 s), so a peer holds at most its connection rate × HANDSHAKE_S descriptors."""
    srv = ParameterServer(_store(load_netspec(tiny_net_file)), P.new_secret(), ServerOptions(auth=auth)).start()
    try:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
            t = time.monotonic()
            while s.recv(4096):  # the server's greeting, then the end of the connection
                pass
            held_s = time.monotonic() - t
        assert server_module.HANDSHAKE_S - 0.5 < held_s < server_module.HANDSHAKE_S + 1, held_s
        counted_by = time.monotonic() + 2  # the server thread reads libzmq's event after the connection ends
        while not srv.stats.view().dropped and time.monotonic() < counted_by:
            time.sleep(0.01)
        assert srv.stats.view().dropped == {"unauthenticated connection": 1}
    finally:
        srv.close()


def test_r2_2_a_snapshot_without_descriptors_is_logged_once_and_retried(tiny_net_file: Path, tmp_path: Path,
                                                                       monkeypatch, caplog) -> None:
    """EMFILE (or ENFILE) while writing is no error of the run: ``try_snapshot`` logs it once per failing streak,
    naming the errno, and returns None (the driver's watch retries at its next check); ``final_snapshot`` retries
    for a bounded time. Any other OSError (a full disk) is raised as before."""
    spec = load_netspec(tiny_net_file)
    store = _store(spec)
    checkpointer = Checkpointer(tmp_path, spec, store, ServerStats())
    save, failures = checkpointer_module.save_checkpoint, []

    def flaky(*args, **kwargs):
        if failures:
            raise OSError(failures.pop(), os.strerror(errno.EMFILE))
        return save(*args, **kwargs)

    monkeypatch.setattr(checkpointer_module, "save_checkpoint", flaky)
    with caplog.at_level("WARNING", logger="ddqn.distributed.checkpointer"):
        failures.extend([errno.EMFILE, errno.ENFILE, errno.EMFILE])
        assert [checkpointer.try_snapshot() for _ in range(3)] == [None, None, None]
        assert len(caplog.records) == 1 and "EMFILE" in caplog.text, caplog.text
        assert checkpointer.try_snapshot().is_file()
        failures.extend([errno.EMFILE] * 3)
        t = time.monotonic()
        assert checkpointer.final_snapshot(within_s=10).is_file() and time.monotonic() - t < 10
        assert len(caplog.records) == 2
    failures.extend([errno.EMFILE] * 100)
    with pytest.raises(OSError, match="open files"):
        checkpointer.final_snapshot(within_s=0.3)
    failures.clear()
    failures.append(errno.ENOSPC)
    with pytest.raises(OSError):
        checkpointer.try_snapshot()
    assert len(checkpointer._reserve) == checkpointer_module.RESERVED_FDS  # given back after every attempt


def test_r2_2_the_drivers_watch_retries_a_snapshot_without_descriptors(tiny_net_file: Path, tmp_path: Path,
                                                                       monkeypatch) -> None:
    """The watch loop takes a due snapshot that fails with EMFILE as no error of the run: it tries again at each
    check (every POLL_S) until one is written, then waits for the next one due (it used to end the run)."""
    spec = load_netspec(tiny_net_file)
    driver = driver_module.Driver.__new__(driver_module.Driver)  # no Spark, no config file: what _watch reads
    driver.cfg = SimpleNamespace(log_every=10**9, eval_every=10**9, snapshot_every=100)
    driver.progress, driver.store, driver.stats = False, _store(spec), ServerStats()
    driver.checkpointer = Checkpointer(tmp_path, spec, driver.store, driver.stats)
    driver.stats.joined(0, 0, 1, "h")
    driver.stats.reported(0, [], 150, 0.0, 0.0)  # past the first snapshot due, at 100 env steps
    save, failures, attempts = checkpointer_module.save_checkpoint, [errno.EMFILE, errno.EMFILE], []

    def flaky(*args, **kwargs):
        attempts.append(time.monotonic())
        if failures:
            raise OSError(failures.pop(), os.strerror(errno.EMFILE))
        return save(*args, **kwargs)

    monkeypatch.setattr(checkpointer_module, "save_checkpoint", flaky)
    checks = iter(range(5))
    job = SimpleNamespace(running=lambda: next(checks, None) is not None)
    evaluator = SimpleNamespace(result=lambda: None, busy=False)
    driver._watch(SimpleNamespace(live_workers=lambda: 1), job, evaluator, None, 0.0, time.monotonic(), None, None,
                  NEVER)
    assert len(attempts) == 3 and not failures  # two failed, the third written; none after (none due)
    assert len((tmp_path / "snapshots.csv").read_text().splitlines()) == 2  # the header and one snapshot
