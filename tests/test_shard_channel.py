"""The control channel of shards on executors (``ps_placement: executors``) without Spark: the driver's control port
(``shards.links``) against shard tasks (``shards.task``) run in threads of this process, over loopback.

A registration is accepted under the shard key and refused (and counted, and nothing kept) with a wrong key, a
tampered tag, a replayed nonce, a stale attempt, an oversized or malformed message, or no connection token; the
commands round-trip with their slices inside the messages; a command replayed or tampered on its way to a task is
dropped there; a group of shard tasks gives the same θ, θ⁻ and solver history as shard processes for the same pushes;
a shard task that dies and is run again elsewhere is found by the worker through the driver; and a request to a
server gone silent asks where it is and is answered there."""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zmq
from test_ps_shards import SOLVER, TARGET_UPDATE, Sharded, _grads, _store

from ddqn.distributed import protocol as P
from ddqn.distributed.client import MOVED_S, ServerClient
from ddqn.distributed.server import ParameterServer, ServerOptions
from ddqn.distributed.shards import channel as C
from ddqn.distributed.shards import group as G
from ddqn.distributed.shards.files import SliceState, read_slice, write_slice
from ddqn.distributed.shards.links import ControlPort, ShardLink
from ddqn.distributed.shards.slices import bounds
from ddqn.distributed.shards.task import ShardTask
from ddqn.distributed.store import ParameterStore
from ddqn.distributed.zap import plain_client
from ddqn.errors import DDQNError
from ddqn.net.netspec import load_netspec

S = 2


@pytest.fixture
def spec(tiny_net_file: Path):
    return load_netspec(tiny_net_file)


def _peer(port: ControlPort, key: bytes | None = None) -> zmq.Socket:
    """A DEALER on the control port, logged in with the control token of ``key`` (the port's by default)."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    plain_client(sock, C.control_token(key or port.key))
    sock.connect(port.address)
    return sock


def _registration(key: bytes, shard: int = 0, attempt: int = 0, nonce: bytes | None = None, **extra) -> list:
    return C.seal(key, C.TO_DRIVER, {"kind": "register", "shard": shard, "attempt": attempt, "pid": 4242,
                                     "host": "h", "nonce": (nonce or os.urandom(C.NONCE)).hex(), **extra})


def _settle(port: ControlPort, count: int, timeout: float = 5.0) -> None:
    """Pump the port until it has dropped ``count`` messages in all (or a registration is pending)."""
    port.pump(time.monotonic() + timeout, lambda: sum(port.dropped.values()) >= count)


def test_registration_is_accepted_with_the_key_and_refused_otherwise_each_counted(tmp_path: Path) -> None:
    key = os.urandom(32)
    port = ControlPort(key, "127.0.0.1", [(0, 100), (100, 200)], 1)
    try:
        sock = _peer(port)
        sock.send_multipart(_registration(os.urandom(32)))  # 1. another key
        frames = _registration(key)
        frames[-1] = bytes([frames[-1][0] ^ 1]) + frames[-1][1:]  # 2. its tag tampered
        sock.send_multipart(frames)
        frames = _registration(key)
        frames[0] = bytes(frames[0]).replace(b'"shard":0', b'"shard":1')  # 3. a header changed after its tag
        sock.send_multipart(frames)
        big = [json.dumps({"kind": "register", "padding": "x" * C.MAX_HEADER}).encode()]  # 4. over MAX_HEADER
        sock.send_multipart([*big, C.tag(key, C.TO_DRIVER, big)])  # (its tag is right)
        sock.send_multipart([*_registration(key)[:1], b"\0" * 64, _registration(key)[-1]])  # 5. an array: malformed
        sock.send_multipart(_registration(key, shard=7))  # 6. a shard the run does not have
        _settle(port, 6)
        assert port.dropped == {"unauthenticated": 3, "oversized": 1, "malformed": 2}, port.dropped
        assert port.pending == {}
        # the honest one is kept; the same frames again are a replay; an older attempt is stale
        nonce = os.urandom(C.NONCE)
        honest = _registration(key, shard=1, attempt=2, nonce=nonce)
        sock.send_multipart(honest)
        port.pump(time.monotonic() + 5, lambda: 1 in port.pending)
        reg = port.pending[1]
        assert (reg.shard, reg.attempt, reg.pid, reg.nonce) == (1, 2, 4242, nonce)
        sock.send_multipart(honest)
        sock.send_multipart(_registration(key, shard=1, attempt=1))
        _settle(port, 8)
        assert port.dropped == {"unauthenticated": 3, "oversized": 1, "malformed": 2, "replayed": 1,
                                "stale attempt": 1}, port.dropped
        assert port.pending[1] == reg and list(port.pending) == [1]
        sock.close()
        # a peer without the control token (the workers' connection token, say) is refused before anything is read
        stranger = zmq.Context.instance().socket(zmq.DEALER)
        stranger.setsockopt(zmq.LINGER, 0)
        plain_client(stranger, P.connection_token(key))
        stranger.connect(port.address)
        stranger.send_multipart(_registration(key, shard=0, attempt=3))
        port.pump(time.monotonic() + 1.0, lambda: 0 in port.pending)
        stranger.close()
        assert 0 not in port.pending and sum(port.dropped.values()) == 8
    finally:
        port.close()


def _init(spec, key: bytes, secret: bytes) -> dict:
    """What the group gives every shard (``ShardGroup._init``), for the tiny net and SOLVER."""
    return {"net_text": spec.text, "net_source": spec.source, "actions": 4, "solver_text": SOLVER,
            "solver_source": "s.prototxt", "shards": S, "secret_hex": secret.hex(), "key_hex": key.hex(),
            "options": {"host": "127.0.0.1", "port": 0, "session_port": 0, "session_timeout": 30.0,
                        "auth": "message", "partitions": 4, "max_grad_norm": 1e9, "max_attempts": 4},
            "target_update": TARGET_UPDATE, "max_staleness": 0, "staleness_lr": False, "dc_lambda": 0.0}


class Tasks:
    """S shard tasks run in threads of this process (what Spark would run on executors), behind a control port:
    ``ExecutorShards``'s interface, for ``shards.group.launcher``."""

    def __init__(self, key: bytes, host: str, slices: list[tuple[int, int]], histories: int, init: dict,
                 only: tuple[int, ...] | None = None) -> None:
        self.port = ControlPort(key, host, slices, histories)
        self.spec = {**init, "control": self.port.address, "bounds": slices, "histories": histories}
        self.tasks: dict[int, ShardTask] = {}
        self.threads: list[threading.Thread] = []
        for k in range(len(slices)) if only is None else only:
            self.run(k, 0)

    def run(self, shard: int, attempt: int) -> ShardTask:
        task = ShardTask(json.loads(json.dumps(self.spec)), shard, attempt)
        self.tasks[shard] = task

        def serve() -> None:
            try:
                task.register()
                task.serve()
            finally:
                task.close()

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        self.threads.append(thread)
        return task

    def failed(self) -> None:
        return None

    def spawn(self, shard: int, init: dict, key: bytes, cwd: Path) -> ShardLink:
        return ShardLink(self.port, shard, init, self.failed)

    def dropped(self) -> dict[str, int]:
        return dict(self.port.dropped)

    def close(self) -> None:
        """The tasks told to exit end; one whose link was replaced ends when the port closes (its driver is gone)."""
        for t in self.threads:
            t.join(timeout=2)
        self.port.close()
        for t in self.threads:
            t.join(timeout=10)


@pytest.fixture
def on_threads(monkeypatch):
    """ShardGroups whose ``executors`` placement runs its tasks in threads (no Spark); the launchers made."""
    made: list[Tasks] = []

    def launcher(placement, sc, key, host, slices, histories, init):
        if placement == "driver":
            return G.LocalShards()
        made.append(Tasks(key, host, slices, histories, init))
        return made[-1]

    monkeypatch.setattr(G, "launcher", launcher)
    return made


def _cut(spec, tmp_path: Path, lo: int, hi: int) -> Path:
    store = _store(spec)
    s = store.copy()
    path = tmp_path / "cut"
    write_slice(path, SliceState(lo, hi, s.theta[lo:hi], s.target[lo:hi], [h[lo:hi] for h in s.solver.history], 5,
                                 1, s.solver.iter))
    return path


def test_commands_round_trip_with_their_slices_and_a_replayed_or_tampered_command_is_dropped(
        spec, tmp_path: Path) -> None:
    """One task, one link: registration, accept with the starting slice, then status, hold/release, dump (its slice
    comes back), publish, load (a slice goes out), stop; a command sent again, or tampered, is dropped by the task and
    counted, and changes nothing."""
    key, secret = os.urandom(32), P.new_secret()
    slices = bounds(spec.num_params, S)
    lo, hi = slices[1]
    tasks = Tasks(key, "127.0.0.1", slices, 1, _init(spec, key, secret), only=(1,))
    try:
        cut = _cut(spec, tmp_path, lo, hi)
        link = ShardLink(tasks.port, 1, {"state": str(cut), "version": 5, "target_version": 1})
        record = link.registered(time.monotonic() + 60)
        assert record["shard"] == 1 and record["attempt"] == 0 and record["pid"] == os.getpid()
        assert record["address"].startswith("tcp://127.0.0.1:")
        status = link.call({"cmd": "status"})
        assert status["version"] == 5 and status["target_version"] == 1 and status["pending"] == []
        assert link.call({"cmd": "hold"})["held"] == [] and tasks.tasks[1].server.holding.is_set()
        link.call({"cmd": "release"})
        assert not tasks.tasks[1].server.holding.is_set()
        dumped = link.call({"cmd": "dump", "dir": str(tmp_path / "dump")})
        assert dumped == {"ok": True, "version": 5, "target_version": 1, "iter": 0}
        back, start = read_slice(tmp_path / "dump"), read_slice(cut)
        assert np.array_equal(back.theta, start.theta) and np.array_equal(back.history[0], start.history[0])
        assert link.call({"cmd": "publish", "path": str(tmp_path / "eval.f32")})["version"] == 5
        assert np.array_equal(np.fromfile(tmp_path / "eval.f32", "<f4"), start.theta)
        other = SliceState(lo, hi, start.theta + 1, start.target - 1, [start.history[0] + 2], 0, 0, 9)
        write_slice(tmp_path / "other", other)
        assert link.call({"cmd": "load", "dir": str(tmp_path / "other"), "version": 20, "target_version": 4}) == \
            {"ok": True, "version": 20}
        store = tasks.tasks[1].server.store
        assert np.array_equal(store.theta, other.theta) and store.solver.iter == 9 and store.target_version == 4
        # a command seen before (its frames again) and a tampered one: dropped at the task, no reply, nothing done
        frames = C.seal(link._key, C.TO_SHARD, {"kind": "cmd", "seq": link._seq, "cmd": {"cmd": "stop"}})
        tasks.port.send(link._ident, frames)
        frames = C.seal(link._key, C.TO_SHARD, {"kind": "cmd", "seq": link._seq + 1, "cmd": {"cmd": "stop"}})
        frames[0] = bytes(frames[0]).replace(b"stop", b"hold")
        tasks.port.send(link._ident, frames)
        deadline = time.monotonic() + 5
        while sum(tasks.tasks[1].dropped.values()) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert tasks.tasks[1].dropped == {"replayed": 1, "unauthenticated": 1}
        assert not tasks.tasks[1].server.stopping.is_set() and not tasks.tasks[1].server.holding.is_set()
        link.call({"cmd": "stop"})  # the honest next command still goes through
        assert tasks.tasks[1].server.stopping.is_set()
        # a reply the driver already has (replayed towards the driver), and one to no command: dropped, counted
        for seq in (link._seq, link._seq + 5):
            reply = C.seal(tasks.tasks[1]._key, C.TO_DRIVER, {"kind": "reply", "seq": seq, "reply": {"ok": True}})
            tasks.port._dispatch([link._ident, *reply])  # as the port reads it from the link's connection
        big = [np.zeros(hi - lo + 2, np.float32)] * 3  # more than θ, θ⁻ and one history: oversized, before its tag
        tasks.port._dispatch([link._ident, *C.seal(os.urandom(32), C.TO_DRIVER, {"kind": "reply", "seq": 99}, big)])
        assert tasks.port.dropped == {"replayed": 1, "unexpected": 1, "oversized": 1}
        assert link.call({"cmd": "status"})["version"] == 20
        link.end()
        reply = C.seal(tasks.tasks[1]._key, C.TO_DRIVER, {"kind": "reply", "seq": 99, "reply": {"ok": True}})
        tasks.port._dispatch([link._ident, *reply])  # from a link that was ended
        assert tasks.port.dropped == {"replayed": 1, "unexpected": 2, "oversized": 1}
    finally:
        tasks.close()


def _pushes(sharded: Sharded, grads: list[np.ndarray]) -> None:
    client = sharded.client()
    version = -1
    for g in grads:
        p = client.fetch(version if version >= 0 else P.NO_VERSION)
        version = p.version
        assert client.push(g, p.version) == (version + 1, False)
    client.close()


def test_shard_tasks_give_the_theta_of_shard_processes(spec, tmp_path: Path, on_threads) -> None:
    """The same pushes through S shard processes (pipes) and S shard tasks (the control channel): the same θ, θ⁻ and
    solver history, bit for bit, and the tasks end when the group closes."""
    grads = _grads(spec.num_params, 7)
    cuts = []
    for placement in ("driver", "executors"):
        sharded = Sharded(spec, tmp_path / placement, shards=S, placement=placement)
        try:
            assert sharded.group.where() == (sharded.group.addresses(), 1)
            _pushes(sharded, grads)
            cuts.append(sharded.group.copy())
            summary = sharded.group.summary()
        finally:
            sharded.close()
    assert summary == {"ps_shards": S, "ps_placement": "executors", "shard_restarts": 0, "control_dropped": {}}
    pipes, tasks = cuts
    assert pipes.version == tasks.version == len(grads) and pipes.target_version == tasks.target_version
    assert np.array_equal(pipes.theta, tasks.theta) and np.array_equal(pipes.target, tasks.target)
    assert all(np.array_equal(a, b) for a, b in zip(pipes.solver.history, tasks.solver.history, strict=True))
    assert not any(t.is_alive() for t in on_threads[0].threads)


def test_a_shard_task_run_again_elsewhere_is_restored_and_found_by_the_worker(spec, tmp_path: Path,
                                                                              on_threads) -> None:
    """Shard 1's task ends (its ports close, as a killed one's do) and a new attempt registers (as Spark's rerun
    does) on other ports: the group rolls every shard back to the last cut, the addresses' version goes up, and the
    worker, whose shard connection is gone, asks the driver and goes on at the new address."""
    sharded = Sharded(spec, tmp_path, shards=S, placement="executors")
    try:
        group, n = sharded.group, spec.num_params
        client = sharded.client()
        for g in _grads(n, 3):
            client.push(g, client.fetch().version)
        cut = group.copy()
        for g in _grads(n, 2, seed=5):
            client.push(g, client.fetch().version)
        tasks, old = on_threads[0], group.addresses()
        tasks.tasks[1].server.close(grace=0)  # its ports close, as a killed task's do (its control link stays open)
        tasks.run(1, 1)  # Spark's rerun: attempt 1
        deadline = time.monotonic() + 30
        while group.restarts == 0 and time.monotonic() < deadline:
            group.supervise()
            time.sleep(0.05)
        addresses, moved = group.where()
        assert group.restarts == 1 and moved == 2 and addresses[0] == old[0] and addresses[1] != old[1]
        assert group.records()[1]["attempt"] == 1
        rolled = group.copy()
        assert np.array_equal(rolled.theta, cut.theta) and rolled.version == 6
        applied = 0
        for g in _grads(n, 3, seed=9):
            before = group.copy().version
            client.push(g, client.fetch().version)
            applied += group.copy().version > before
        assert applied == 3 and client.addresses == list(addresses) and client.shards_version == 2
        client.close()
        group.supervise()
        assert set(group.versions()) == {9}
    finally:
        sharded.close()


def test_the_group_refuses_executors_without_spark(spec, tmp_path: Path) -> None:
    with pytest.raises(DDQNError, match="needs a SparkContext"):
        Sharded(spec, tmp_path, shards=S, placement="executors")


def test_a_request_to_a_server_gone_silent_asks_where_it_is_and_is_sent_there(spec) -> None:
    """A host that goes silent resets no connection: a FETCH unanswered for MOVED_S asks ``locate``, which names
    another server (where Spark reran the shard), and the FETCH is answered there, within the request's timeout."""
    secret, gate = P.new_secret(), threading.Event()
    silent = _store(spec)
    silent.published_both = lambda: (gate.wait(30), ParameterStore.published_both(silent))[1]  # its thread hangs
    a = ParameterServer(silent, secret, ServerOptions(partitions=4)).start()
    b = ParameterServer(_store(spec), secret, ServerOptions(partitions=4)).start()
    asked: list[float] = []

    def locate() -> str:
        asked.append(time.monotonic())
        return b.address

    try:
        client = ServerClient(a.address, secret, 0, 0, spec.num_params, timeout=30, locate=locate)
        start = time.monotonic()
        p = client.fetch()
        assert p.theta is not None and np.array_equal(p.theta, b.store.theta) and client.address == b.address
        assert len(asked) == 1 and asked[0] - start >= MOVED_S - 0.1, (asked, start)
        client.close()
    finally:
        gate.set()
        a.close()
        b.close()
