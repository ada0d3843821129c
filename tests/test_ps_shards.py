"""The sharded parameter server (``ps_shards``, placement ``driver``) on real processes: S shard processes, the
driver's coordinator, and workers' sharded clients over ZeroMQ. S = 4 applies what one server does, bit for bit; a
gradient one shard rejects is applied by none; hostile peers change nothing; a snapshot is a consistent cut that
resumes with any S; a shard killed with SIGKILL is restarted and the run goes on."""
from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import raw_socket
from test_distributed import final_theta, run_env, submit_command
from test_hostile import _hello, _open, _request

from ddqn.distributed import protocol as P
from ddqn.distributed.checkpointer import Checkpointer, restore
from ddqn.distributed.client import ServerClient
from ddqn.distributed.server import ParameterServer, ServerOptions
from ddqn.distributed.shards import votes
from ddqn.distributed.shards.client import ShardedClient
from ddqn.distributed.shards.group import ShardGroup
from ddqn.distributed.shards.server import PUSH_ID
from ddqn.distributed.stats import ServerStats
from ddqn.distributed.store import ParameterStore
from ddqn.net.netspec import load_netspec
from ddqn.net.qnet import QNetwork
from ddqn.solvers.flat import make_solver, parse_solver_spec

ROOT = Path(__file__).resolve().parents[1]
SOLVER = ('type: "RMSProp" base_lr: 0.001 lr_policy: "fixed" rms_decay: 0.95 delta: 0.01 weight_decay: 0.0005 '
          'momentum: 0')
TARGET_UPDATE = 3
S = 4
# A run whose shard is SIGKILLed after its first snapshot must still be running when the driver notices. Snapshots
# come at the workers' 2 s step reports, and on an AMD EPYC Zen 5 two workers play ≈ 900 env steps in 2 s, so a
# 600-step run ended at its first report, before the kill landed; 4,000 steps leave a few report rounds after it.
KILLED_RUN_STEPS = "4000"


def _store(spec) -> ParameterStore:
    """The whole starting state: the tiny net's θ (seed 0), RMSProp, θ⁻ ← θ every TARGET_UPDATE updates."""
    theta = QNetwork(spec, seed=0).get_params()
    return ParameterStore(make_solver(parse_solver_spec(SOLVER, "s.prototxt"), spec.params), theta, theta.copy(),
                          TARGET_UPDATE)


class Sharded:
    """S shard processes and the coordinator over them (what the driver starts), closed by :meth:`close`."""

    def __init__(self, spec, out: Path, shards: int = S, max_grad_norm: float = math.inf,
                 store: ParameterStore | None = None, placement: str = "driver") -> None:
        self.spec, self.secret = spec, P.new_secret()
        self.group = ShardGroup(store or _store(spec), spec, parse_solver_spec(SOLVER, "s.prototxt"), 4, shards, out,
                                placement=placement, target_update=TARGET_UPDATE, max_staleness=0, staleness_lr=False, dc_lambda=0.0)
        options = ServerOptions(partitions=4, max_grad_norm=max_grad_norm, session_timeout=30)
        try:
            self.options = replace(options, shards=self.group.start(self.secret, options))
            self.coordinator = ParameterServer(self.group, self.secret, self.options, stats=ServerStats()).start()
        except BaseException:
            self.group.close()
            raise

    def client(self, worker: int = 0) -> ShardedClient:
        n = self.spec.num_params
        return ShardedClient(ServerClient(self.coordinator.address, self.secret, worker, 0, n, timeout=10), self.secret,
                             n, timeout=10)

    def dropped(self) -> dict[str, int]:
        self.group.supervise()
        return self.group.dropped()

    def close(self) -> None:
        self.coordinator.close()
        self.group.close()


@pytest.fixture
def spec(tiny_net_file: Path):
    return load_netspec(tiny_net_file)


@pytest.fixture
def sharded(spec, tmp_path: Path):
    group = Sharded(spec, tmp_path, max_grad_norm=10.0)
    yield group
    group.close()


def _grads(n: int, count: int, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(0.05 * rng.standard_normal(n)).astype(np.float32) for _ in range(count)]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


def test_four_shards_give_one_servers_theta_bit_for_bit(spec, tmp_path: Path) -> None:
    """One worker, the same gradients (pushed one at a time): θ, θ⁻ and the solver history of S = 4 shard processes
    are exactly one server's, and the shards' processes end with the group. The sharded worker gets θ after every
    other push from its COMMITs' replies (``push_and_fetch``), after the others from a FETCH: each time the θ and θ⁻
    one server's FETCH gave at that version (θ⁻ resets every 3 updates, so some replies carry both)."""
    grads = _grads(spec.num_params, 7)
    one = ParameterServer(_store(spec), P.new_secret(), ServerOptions(partitions=4)).start()
    seen = []  # one server's θ and θ⁻ before each push, and at the end
    try:
        client = ServerClient(one.address, one.secret, 0, 0, spec.num_params, timeout=10)
        for g in grads:
            p = client.fetch()
            seen.append((p.theta.copy(), p.target.copy()))
            assert client.push_and_fetch(g, p.version)[2] is None  # one server's ACK carries no θ
        single = client.fetch()
        seen.append((single.theta.copy(), single.target.copy()))
        client.close()
        whole = one.store.copy()
    finally:
        one.close()
    group = Sharded(spec, tmp_path)
    pids = group.group.pids()
    try:
        assert len(set(pids)) == S and all(_alive(p) for p in pids)
        client = group.client()
        p = client.fetch()
        theta, target = p.theta.copy(), p.target.copy()
        for i, g in enumerate(grads):
            assert np.array_equal(theta, seen[i][0]) and np.array_equal(target, seen[i][1]), i
            if i % 2:
                version, stop, p = client.push_and_fetch(g, p.version)
                assert (version, stop) == (i + 1, False) and p.theta is not None
            else:
                assert client.push(g, p.version) == (i + 1, False)
                p = client.fetch(p.version, p.target_version)
            assert p.version == i + 1 and (p.target is not None) == ((i + 1) % TARGET_UPDATE == 0), i
            theta = p.theta.copy()
            target = target if p.target is None else p.target.copy()
        assert client.fetch(p.version, p.target_version).theta is None  # the reply held the current θ
        client.close()
        cut = group.group.copy()
    finally:
        group.close()
    assert not any(_alive(p) for p in pids)  # ended by pid, ports freed
    assert p.version == single.version == cut.version == len(grads)
    assert np.array_equal(theta, seen[-1][0]) and np.array_equal(target, seen[-1][1])
    assert np.array_equal(theta, single.theta) and np.array_equal(cut.theta, whole.theta)
    assert np.array_equal(cut.target, whole.target) and cut.target_version == whole.target_version == 2
    assert cut.solver.iter == whole.solver.iter
    assert all(np.array_equal(a, b) for a, b in zip(cut.solver.history, whole.solver.history, strict=True))


def test_a_gradient_one_shard_rejects_is_applied_by_none(sharded: Sharded) -> None:
    """NaN in one slice, or slices each within the norm bound whose whole is not: every shard votes, none applies."""
    n = sharded.spec.num_params
    before = sharded.group.copy()
    client = sharded.client()
    p = client.fetch()
    nan = np.full(n, 0.01, np.float32)
    nan[-1] = np.nan  # the last shard's slice
    assert client.push(nan, p.version)[0] == 0
    (lo, hi), per_slice = client.bounds[0], 0.9 * 10.0  # each slice's norm 9 ≤ max_grad_norm 10; the whole's 18
    big = np.zeros(n, np.float32)
    for lo, hi in client.bounds:
        big[lo:hi] = per_slice / math.sqrt(hi - lo)
    assert client.push(big, p.version)[0] == 0
    after = sharded.group.copy()
    assert after.version == 0 and np.array_equal(after.theta, before.theta)
    assert all(np.array_equal(a, b) for a, b in zip(after.solver.history, before.solver.history))
    dropped = sharded.dropped()
    assert dropped == {"not finite": 1, "vetoed": 2 * S}, dropped
    ok = np.full(n, 0.001, np.float32)  # an honest gradient still goes through, on every shard
    assert client.push(ok, p.version)[0] == 1
    client.close()
    assert sharded.group.copy().version == 1


def _shard_session(sharded: Sharded, k: int, worker: int = 1):
    """A raw session (socket, keys) with shard ``k``, as a worker holding the run secret opens it."""
    lo, hi = sharded.group.bounds[k]
    peer = SimpleNamespace(secret=sharded.secret, auth="message", address=sharded.group.addresses()[k],
                           session_port=sharded.group.records()[k]["session_port"],
                           store=SimpleNamespace(num_params=hi - lo))
    return _open(peer, raw_socket(peer), *_hello(peer, worker))


def test_hostile_peers_against_a_shard_change_nothing_and_are_counted(sharded: Sharded) -> None:
    """An insider with the run secret (not the shard key) against shard 0: a bad MAC, an oversized PUSH, a forged
    vote, a COMMIT that asks for θ without saying which it holds, a replayed COMMIT, a retried COMMIT (asking for θ).
    θ changes only by the one honest commit, once."""
    group, k = sharded.group, 0
    lo, hi = group.bounds[k]
    sock, s = _shard_session(sharded, k)
    assert _request(sock, s, s.seal(P.FETCH, 1, 0, P.NO_VERSION, P.NO_VERSION)).type == P.PARAMS
    before = group.copy()
    grad = np.full(hi - lo, 0.01, np.float32)
    push = s.seal(P.PUSH, 1, 0, 0, 1, grad.tobytes() + (7).to_bytes(PUSH_ID, "little"))
    sock.send_multipart(push)
    assert sock.poll(10_000)
    ack = s.open(sock.recv_multipart())
    mine = bytes(ack[1])
    assert len(mine) == votes.VOTE.size and votes.VOTE.unpack(mine)[1] == 1  # its vote: valid
    # 1. a bad MAC: the tag of a COMMIT flipped
    frames = s.seal(P.COMMIT, 1, 0, 1, 7, mine * S)
    frames[2] = bytes([frames[2][0] ^ 1]) + frames[2][1:]
    sock.send_multipart(frames)
    # 2. oversized: a PUSH one slice too long
    sock.send_multipart(s.seal(P.PUSH, 1, 0, 0, 1, np.zeros(2 * (hi - lo), np.float32).tobytes() + bytes(PUSH_ID)))
    # 3. forged votes for the other shards (valid, norm 0), MAC'd under the run secret: the shard key is not the
    # worker's
    forged = b"".join(mine if i == k else votes.seal(sharded.secret, 1, 0, 7, 1, votes.Vote(i, True, 0.0))
                      for i in range(S))
    sock.send_multipart(s.seal(P.COMMIT, 1, 0, 1, 7, forged))
    # 4. a vote moved to another shard's place
    sock.send_multipart(s.seal(P.COMMIT, 1, 0, 1, 7, mine * S))
    # 5. a COMMIT flagged to ask for θ, without the θ and θ⁻ versions it holds after its votes
    sock.send_multipart(s.seal(P.COMMIT, 1, 0, 1, 7, mine * S, flags=P.F_THETA))
    deadline = time.monotonic() + 10
    while sum(sharded.dropped().values()) < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sharded.dropped() == {"unauthenticated": 3, "wrong size": 2}, sharded.dropped()
    assert not sock.poll(200)  # nothing answered
    assert np.array_equal(group.copy().theta, before.theta)
    # the honest way: every shard's vote, from pushes of the same id to each (the insider holds a session with each)
    cast = [mine]
    for i in range(1, S):
        li, hi_ = group.bounds[i]
        si_sock, si = _shard_session(sharded, i)
        body = np.full(hi_ - li, 0.01, np.float32).tobytes() + (7).to_bytes(PUSH_ID, "little")
        cast.append(bytes(_vote(si_sock, si, body)))
        si_sock.close()
    commit = s.seal(P.COMMIT, 1, 0, 1, 7, b"".join(cast))
    sock.send_multipart(commit)
    assert sock.poll(10_000)
    h, _ = s.open(sock.recv_multipart())
    assert h.flags & P.F_APPLIED and h.version == 1  # applied by shard 0 (the others got no COMMIT: see below)
    # 6. the same COMMIT frames again: replayed (its sequence number), dropped unanswered
    sock.send_multipart(commit)
    # 7. the COMMIT sent again under a new number (a retry), asking for θ: answered as applied before, not applied
    # twice, with the shard's θ slice (the insider holds version 0 of θ and θ⁻)
    have = (0).to_bytes(8, "little") * 2
    sock.send_multipart(s.seal(P.COMMIT, 1, 0, 1, 7, b"".join(cast) + have, flags=P.F_THETA))
    assert sock.poll(10_000)
    h, body = s.open(sock.recv_multipart())
    assert h.type == P.PARAMS and h.version == 1 and h.target_version == 0
    assert h.flags & (P.F_REPEAT | P.F_APPLIED | P.F_THETA | P.F_TARGET) == P.F_REPEAT | P.F_APPLIED | P.F_THETA
    sock.close()
    dropped = sharded.dropped()
    assert dropped == {"unauthenticated": 3, "wrong size": 2, "replayed": 1, "resent": 1}, dropped
    after = group.copy()  # shard 0 applied the slice; shards 1..3 hold theirs pending until they expire
    assert np.array_equal(np.frombuffer(body, np.float32), after.theta[lo:hi])
    assert group.versions() == [1, 0, 0, 0]
    assert not np.array_equal(after.theta[lo:hi], before.theta[lo:hi])
    assert np.array_equal(after.theta[hi:], before.theta[hi:])


def _vote(sock, s: P.Session, body: bytes) -> memoryview:
    sock.send_multipart(s.seal(P.PUSH, 1, 0, 0, 1, body))
    assert sock.poll(10_000)
    return s.open(sock.recv_multipart())[1]


def test_a_snapshot_is_a_cut_that_resumes_with_another_number_of_shards(spec, sharded: Sharded,
                                                                         tmp_path: Path) -> None:
    """A cut taken while two workers push, written as one server's snapshot, resumed whole (``restore``) and by
    three shards: the same θ, θ⁻ and solver state."""
    clients = [sharded.client(w) for w in (0, 1)]
    stop = threading.Event()

    def work(c: ShardedClient, seed: int) -> None:
        for g in _grads(spec.num_params, 400, seed):
            if stop.is_set():
                return
            c.push(g, c.fetch().version)

    threads = [threading.Thread(target=work, args=(c, i)) for i, c in enumerate(clients)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 30
        while min(sharded.group.versions() or [0]) < 10 and time.monotonic() < deadline:
            time.sleep(0.05)
            sharded.group.supervise()
        stats = ServerStats()
        (tmp_path / "run").mkdir()
        model = Checkpointer(tmp_path / "run", spec, sharded.group, stats).snapshot()  # the cut, mid-run
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
        for c in clients:
            c.close()
    assert model.is_file()
    record = json.loads((tmp_path / "run" / "server_state.json").read_text())
    assert record["updates"] > 0
    solver = make_solver(parse_solver_spec(SOLVER, "s.prototxt"), spec.params)
    theta, target, _ = restore(tmp_path / "run", spec, solver)
    assert solver.iter == record["updates"]
    # the same state, cut again into 3 slices
    store = ParameterStore(solver, theta.copy(), target.copy(), TARGET_UPDATE)
    three = Sharded(spec, tmp_path / "three", shards=3, store=store)
    try:
        again = three.group.copy()
        c = three.client()
        p = c.fetch()
        c.close()
    finally:
        three.close()
    assert again.version == record["updates"] and np.array_equal(again.theta, theta)
    assert np.array_equal(p.theta, theta) and np.array_equal(p.target, target)
    assert all(np.array_equal(a, b) for a, b in zip(again.solver.history, solver.history, strict=True))


def test_a_killed_shard_is_restarted_and_the_run_goes_on(sharded: Sharded) -> None:
    """SIGKILL of one shard's pid: the group notices at its next look, starts it again on the same ports from the
    last cut (rolling the others back to it), the worker reconnects, and a cut after more pushes is consistent."""
    group, n = sharded.group, sharded.spec.num_params
    client = sharded.client()
    for g in _grads(n, 3):
        client.push(g, client.fetch().version)
    cut = group.copy()  # the last snapshot: 3 updates
    for g in _grads(n, 2, seed=5):
        client.push(g, client.fetch().version)
    victim, addresses = group.pids()[2], group.addresses()
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while _alive(victim) and time.monotonic() < deadline:
        time.sleep(0.01)
    group.supervise()
    assert group.restarts == 1 and group.pids()[2] != victim and group.addresses() == addresses
    rolled = group.copy()
    assert np.array_equal(rolled.theta, cut.theta) and rolled.version == 6  # 5 updates seen, then the next number
    applied = 0
    for g in _grads(n, 4, seed=9):
        before = group.copy().version
        client.push(g, client.fetch().version)
        applied += group.copy().version > before
    assert applied == 4 and client.reconnects >= 1
    client.close()
    final = group.copy()
    group.supervise()
    assert set(group.versions()) == {final.version} == {10}


ORPHAN = """
import sys, time
from pathlib import Path
sys.path[:0] = [{tests!r}, {root!r}]
from test_ps_shards import Sharded
from ddqn.net.netspec import load_netspec
group = Sharded(load_netspec({net!r}), Path({out!r}), shards=2)
print(" ".join(map(str, group.group.pids())), flush=True)
time.sleep(120)
"""


def test_shards_end_when_their_driver_is_killed(tiny_net_file: Path, tmp_path: Path) -> None:
    """SIGKILL of the driver's process (no finally runs): each shard reads end-of-file on its control pipe and exits,
    freeing its ports."""
    code = ORPHAN.format(tests=str(ROOT / "tests"), root=str(ROOT), net=str(tiny_net_file), out=str(tmp_path))
    driver = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(p) for p in driver.stdout.readline().split()]
        assert len(pids) == 2 and all(_alive(p) for p in pids)
    finally:
        driver.kill()
        driver.wait(timeout=10)
        driver.stdout.close()
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(p) for p in pids)


@pytest.mark.parametrize("args, words", [
    (["--set", "ps_shards=0"], "ps_shards: must be an integer >= 1"),
    (["--set", "ps_shards=two"], "ps_shards: expected int"),
    (["--set", "ps_placement=moon"], "ps_placement: must be 'driver' or 'executors'"),
    (["--set", "ps_shards=100000000"], "ps_shards: 100000000 is not between 1 and the net's"),
    (["--set", "ps_shards=2", "--sync"], "ps_shards: 2 shards serve asynchronous updates only"),
    (["--set", "ps_shards=2", "--set", "solver={clip}"], "clip_gradients needs the whole gradient's norm"),
])
def test_bad_shard_settings_are_one_line_errors(args: list[str], words: str, tmp_path: Path) -> None:
    """The Spark job's entry point (as spark-submit runs it) refuses them before Spark starts: one line, exit 2."""
    clip = tmp_path / "clip.prototxt"
    clip.write_text('type: "SGD" base_lr: 0.01 lr_policy: "fixed" clip_gradients: 10')
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(ROOT / "spark_jobs" / "train.py"), *(a.format(clip=clip) for a in args),
                           "--steps", "1", "--out", str(tmp_path / "run"), "--quiet"], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(lines) == 1 and words in lines[0] and "Traceback" not in proc.stderr, proc.stderr


def _descendants(pid: int) -> list[int]:
    """The process ids below ``pid`` in the process tree (from /proc), nearest first."""
    found, todo = [], [pid]
    while todo:
        parent = todo.pop(0)
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
            found += children
            todo += children
    return found


def _shard_pids(submit_pid: int) -> list[int]:
    """The shard processes a spark-submit's driver started (its descendants running shard_process)."""
    pids = []
    for pid in _descendants(submit_pid):
        try:
            if b"ddqn.distributed.shards.process" in Path(f"/proc/{pid}/cmdline").read_bytes():
                pids.append(pid)
        except OSError:
            pass
    return pids


def _submit_killing_a_shard(cmd: list[str], tmp_path: Path, pick: Callable[[int], int]) -> tuple[int, str]:
    """Run ``cmd`` (a spark-submit) to its end, bounded in time; SIGKILL the pid ``pick(submit's pid)`` names once it
    names one (0: not yet). Returns (the killed pid or 0, the run's stderr)."""
    out_file, err_file = tmp_path / "stdout", tmp_path / "stderr"
    with open(out_file, "w") as stdout_f, open(err_file, "w") as stderr_f:
        proc = subprocess.Popen(cmd, env=run_env(), stdout=stdout_f, stderr=stderr_f, text=True)
    killed = 0
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if pid := pick(proc.pid):
                os.kill(pid, signal.SIGKILL)
                killed = pid
                break
            time.sleep(0.2)
        proc.wait(timeout=400)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stderr = err_file.read_text()
    assert killed and proc.returncode == 0, stderr[-3000:]
    return killed, stderr


def _resumes_with(out: Path, shards: int, first: int) -> None:
    """``--resume`` of the run in ``out`` with ps_shards=``shards`` goes on from its snapshot past ``first`` updates."""
    res = subprocess.run(submit_command("--workers", "2", "--steps", "200", "--out", str(out), "--resume",
                                        "--set", f"ps_shards={shards}"), env=run_env(), capture_output=True, text=True,
                         timeout=400)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "resumed from" in res.stdout
    state = json.loads((out / "server_state.json").read_text())
    assert state["updates"] > first and np.isfinite(final_theta(out)).all()
    assert json.loads((out / "summary.json").read_text()).get("ps_shards", 1) == shards


def test_spark_run_with_shards_survives_a_killed_shard_and_resumes_with_another_s(tmp_path: Path) -> None:
    """A real spark-submit with ps_shards=2: one shard process SIGKILLed after the first snapshot is restarted, the
    run finishes (exit 0) with its final snapshot, no shard process is left; then --resume with ps_shards=3."""
    out = tmp_path / "run"
    cmd = submit_command("--workers", "2", "--steps", KILLED_RUN_STEPS, "--out", str(out), "--set", "ps_shards=2",
                         "--set", "snapshot_every=150")
    seen: set[int] = set()

    def pick(submit: int) -> int:
        shards = _shard_pids(submit)
        if len(shards) == 2 and (out / "snapshots.csv").is_file():
            seen.update(shards)
            return shards[-1]
        return 0

    killed, stderr = _submit_killing_a_shard(cmd, tmp_path, pick)
    log = (out / "driver.log").read_text() + stderr
    assert f"(pid {killed}) died" in log and "restarted from the last snapshot's cut" in log, log[-3000:]
    assert all(f"of 2: pid {p} at" in log for p in seen), log[:3000]  # each shard's start, in driver.log
    summary = json.loads((out / "summary.json").read_text())
    assert summary["shard_restarts"] == 1 and summary["ps_shards"] == 2 and summary["updates"] > 0, summary
    assert summary["staleness_p95"] >= 1, summary  # the shards' staleness: two workers' pushes interleave
    started = seen | {int(p) for p in re.findall(r"shard \d+ restarted: pid (\d+)", log)}
    assert len(started) == 3 and not any(_alive(p) for p in started), started  # two, and the restarted one
    assert np.isfinite(final_theta(out)).all()
    assert "versions differ" not in log  # every cut consistent
    _resumes_with(out, 3, summary["updates"])


STARTED = re.compile(r"shard (\d) of 2: pid (\d+) at (\S+)")  # driver.log: a shard registered (its task's pid)


def _started(log_file: Path) -> dict[int, tuple[int, str]]:
    """shard → (pid, address) of the shards' first registrations, as driver.log names them."""
    try:
        text = log_file.read_text()
    except OSError:
        return {}
    return {int(m.group(1)): (int(m.group(2)), m.group(3)) for m in STARTED.finditer(text)}


def test_spark_run_with_shards_on_executors_survives_a_killed_shard_task_and_resumes_with_one_server(
        tmp_path: Path) -> None:
    """ps_placement=executors, ps_shards=2 on local[4,4] (2 workers + 2 shard tasks): the Python process of one shard
    task (its pid from driver.log's registration, checked to be this run's) is SIGKILLed after the first snapshot;
    Spark reruns the task, its new attempt registers, every shard rolls back to the cut, the workers find it, and the
    run exits 0 with a consistent final snapshot, which resumes with ps_shards=1."""
    out = tmp_path / "run"
    cmd = submit_command("--workers", "2", "--steps", KILLED_RUN_STEPS, "--out", str(out), "--set", "ps_shards=2",
                         "--set", "ps_placement=executors", "--set", "snapshot_every=150", master="local[4,4]")
    started: dict[int, tuple[int, str]] = {}

    def pick(submit: int) -> int:
        started.update(_started(out / "driver.log"))
        if len(started) == 2 and (out / "snapshots.csv").is_file():
            assert started[1][0] in _descendants(submit), started  # this run's Python worker, never another
            return started[1][0]
        return 0

    killed, stderr = _submit_killing_a_shard(cmd, tmp_path, pick)
    log = (out / "driver.log").read_text() + stderr
    assert all(a.startswith("tcp://127.0.0.1:") for _, a in started.values()), started
    assert f"(pid {killed}) died" in log and "restarted from the last snapshot's cut" in log, log[-3000:]
    restarted = re.findall(r"shard 1 restarted: pid (\d+) at (\S+)", log)
    assert len(restarted) == 1 and int(restarted[0][0]) != killed, restarted
    summary = json.loads((out / "summary.json").read_text())
    assert summary["shard_restarts"] == 1 and summary["ps_shards"] == 2, summary
    assert summary["ps_placement"] == "executors" and summary["updates"] > 0, summary
    assert all(w["pushes"] > 0 for w in summary["workers"].values()), summary
    assert set(summary["control_dropped"]) <= {"replayed", "unexpected"}, summary  # late replies at most
    assert "versions differ" not in log  # every cut consistent
    tasks = [killed, int(restarted[0][0])]  # the shard tasks' Python processes end with the run's Spark
    deadline = time.monotonic() + 15
    while any(_alive(p) for p in tasks) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(p) for p in tasks), tasks
    assert np.isfinite(final_theta(out)).all()
    _resumes_with(out, 1, summary["updates"])


def test_shards_on_executors_need_a_task_slot_each_beside_the_workers(tmp_path: Path) -> None:
    """local[2] offers 2 task slots: 2 workers and 2 shard tasks need 4, a one-line error (exit 2) names both."""
    res = subprocess.run(submit_command("--workers", "2", "--steps", "10", "--out", str(tmp_path / "run"),
                                        "--set", "ps_shards=2", "--set", "ps_placement=executors", master="local[2]"),
                         env=run_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stderr[-3000:]
    # spark-submit runs the Python driver with its stderr joined to its stdout (Spark's PythonRunner)
    lines = [line for line in (res.stdout + res.stderr).splitlines() if "error" in line]
    assert len(lines) == 1 and "2 worker tasks and 2 shard tasks need 4 task slots at once" in lines[0], lines
    assert "offers 2" in lines[0] and "Traceback" not in res.stdout + res.stderr, res.stderr[-3000:]


def _final_cut_resumes_on_the_hosts(cluster, out: Path, updates: int) -> None:
    """The run's final snapshot holds all its ``updates`` and resumes with one server on the hosts."""
    from test_hosts import Job

    state = json.loads((out / "server_state.json").read_text())
    assert state["updates"] == updates and np.isfinite(final_theta(out)).all()
    resumed = Job(cluster, out, "--steps", "100", "--resume", "--set", "ps_shards=1")
    assert resumed.wait(300) == 0, resumed.output(60)
    assert json.loads((out / "server_state.json").read_text())["updates"] > state["updates"]


@pytest.mark.hosts
@pytest.mark.timeout(480)
def test_shards_on_executor_hosts_listen_there_and_a_killed_one_is_rerun(tmp_path: Path) -> None:
    """ps_placement=executors, ps_shards=2 on four one-core worker hosts (2 workers + 2 shard tasks): the shards'
    addresses are worker hosts' (not the driver's), one host each; a shard task's process killed there is rerun by
    Spark, the run ends (exit 0) with a consistent snapshot that resumes with ps_shards=1, and nothing is left."""
    from test_hosts import Job, settled, stop

    from ddqn.distributed.hosts import HostsCluster

    cluster = HostsCluster(workers=4)
    try:
        cluster.start()
        out = tmp_path / "run"
        job = Job(cluster, out, "--steps", KILLED_RUN_STEPS, "--set", "ps_shards=2", "--set", "ps_placement=executors",
                  "--set", "snapshot_every=150", "--set", "log_every=100")
        job.joined()
        deadline, killed, started = time.monotonic() + 240, 0, {}
        while time.monotonic() < deadline and job.proc.poll() is None:
            started = _started(out / "driver.log")
            if len(started) == 2 and (out / "snapshots.csv").is_file():
                pid, address = started[1]
                host = next(h for h in cluster.worker_hosts if address.startswith(f"tcp://{h.addr}:"))
                assert pid in cluster.pids(host), (pid, address)  # the shard task's process, on its host
                os.kill(pid, signal.SIGKILL)
                killed = pid
                break
            time.sleep(0.2)
        assert killed, f"no snapshot with two shards running:\n{job.output(60)}"
        assert job.wait(300) == 0, job.output(60)
        workers = {h.addr for h in cluster.worker_hosts}
        hosts = [a.removeprefix("tcp://").rsplit(":", 1)[0] for _, a in started.values()]
        assert len(set(hosts)) == 2 and set(hosts) <= workers and cluster.driver.addr not in hosts, started
        log = (out / "driver.log").read_text()
        assert f"(pid {killed}) died" in log and "shard 1 restarted: pid" in log, log[-3000:]
        assert "versions differ" not in log
        summary = job.summary()
        assert summary["shard_restarts"] == 1 and summary["ps_placement"] == "executors", summary
        assert settled(cluster) == {}  # the job's processes, shard tasks included, ended
        _final_cut_resumes_on_the_hosts(cluster, out, summary["updates"])
    finally:
        stop(cluster, tmp_path)


@pytest.mark.hosts
@pytest.mark.timeout(420)
def test_a_shard_killed_on_the_hosts_is_restarted_and_the_run_ends_with_a_consistent_snapshot(
        tmp_path: Path) -> None:
    """ps_shards=2 (placement driver) on network-namespace hosts: the shards listen on the driver host's address
    (not loopback: the worker hosts reach them), one is SIGKILLed after the first snapshot, the driver restarts it
    from that cut, the run ends (exit 0) with a final snapshot that resumes, and nothing is left on any host."""
    from test_hosts import Job, settled, stop

    from ddqn.distributed.hosts import HostsCluster

    cluster = HostsCluster(workers=2)
    try:
        cluster.start()
        out = tmp_path / "run"
        job = Job(cluster, out, "--steps", KILLED_RUN_STEPS, "--set", "ps_shards=2", "--set", "snapshot_every=150",
                  "--set", "log_every=100")
        hosts = job.joined()
        assert set(hosts.values()) == {h.addr for h in cluster.worker_hosts}, hosts

        def shards() -> list[int]:
            return [p for p in cluster.pids(cluster.driver)
                    if b"ddqn.distributed.shards.process" in _cmdline(p)]

        deadline, killed = time.monotonic() + 240, 0
        while time.monotonic() < deadline and job.proc.poll() is None:
            found = shards()
            if len(found) == 2 and (out / "snapshots.csv").is_file():
                killed = found[-1]
                os.kill(killed, signal.SIGKILL)
                break
            time.sleep(0.2)
        assert killed, f"no snapshot with two shards running:\n{job.output(60)}"
        assert job.wait(300) == 0, job.output(60)
        log = (out / "driver.log").read_text()
        addresses = re.findall(r"shard \d of 2: pid \d+ at (\S+)", log)
        assert len(addresses) == 2 and all(a.startswith(f"tcp://{cluster.driver.addr}:") for a in addresses), log[:2000]
        assert f"(pid {killed}) died" in log and "restarted from the last snapshot's cut" in log, log[-3000:]
        assert "versions differ" not in log
        summary = job.summary()
        assert summary["shard_restarts"] == 1 and summary["updates"] > 0, summary
        assert shards() == [] and settled(cluster) == {}  # the shards ended with their driver, the job's processes too
        _final_cut_resumes_on_the_hosts(cluster, out, summary["updates"])
    finally:
        stop(cluster, tmp_path)


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""
