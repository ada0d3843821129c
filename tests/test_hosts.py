"""Distributed deep Q-learning across hosts: Linux network namespaces as the docker-compose file's hosts.

Each test builds its own cluster (``ddqn.distributed.hosts.HostsCluster``: a master host, a driver host with the
parameter server, two worker hosts, each with its own address on one switch), runs the real job with
spark-submit on the driver host, and tears everything down by process id, deleting the namespaces. The faults
are a network's: a worker host partitioned for longer, or shorter, than ``server_timeout`` or for longer than
the master's ``spark.worker.timeout``, the driver host cut off from every worker, the Spark master killed. A
partition is a host's switch port set down (netem does not exist here). Spark's own timeouts keep their
defaults, which is what a user gets, except ``spark.worker.timeout`` (10 s instead of 60 s) in the test of a
partition that outlasts it.

Root only (network namespaces): tests/conftest.py deselects these tests elsewhere and says why at the end of
the run. Every wait is bounded and each test has a hard timeout. ``-s`` shows the measured times.
"""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from conftest import Output, measured, wait_until
from test_distributed import JOB, QUICK, final_theta

from ddqn.bench.stats import steady_updates_per_s
from ddqn.distributed.hosts import BLOCK_MANAGER_PORT, DRIVER_PORT, SERVER_PORT, Host, HostsCluster, netns_pids

pytestmark = pytest.mark.hosts

S = 8  # server_timeout of the fault tests: a worker exits after S s without a reply
SESSION_S = max(10, 2 * S)  # the server drops a silent session after this (ddqn.distributed.driver)
PROGRESS_S = 10  # driver.log gets a progress line (with the live worker count) every 10 s
FAULT = ["--set", f"server_timeout={S}", "--set", "log_every=100"]
LATE = {"malformed", "unauthenticated"}  # what a message of an expired session, delivered after a heal, counts as
JOINED = re.compile(r"worker (\d+) joined \(attempt \d+, pid \d+ on ([\d.]+), \2\)")  # hostname = the address the server saw


@pytest.fixture
def cluster(tmp_path: Path):
    hosts = HostsCluster(workers=2)
    try:
        yield hosts.start()
    finally:
        stop(hosts, tmp_path)


def stop(cluster: HostsCluster, tmp_path: Path) -> None:
    """Tear the hosts down, keeping their logs (daemons', executors') in ``tmp_path/hosts`` for a post-mortem."""
    try:
        if cluster.procs:
            shutil.copytree(cluster.dir, tmp_path / "hosts", dirs_exist_ok=True, ignore_dangling_symlinks=True,
                            ignore=shutil.ignore_patterns("*.jar"))
    except (OSError, shutil.Error):  # a log that vanished meanwhile: keep what was copied
        pass
    finally:
        cluster.stop()


class Job(Output):
    """The training job, submitted on the driver host; its output lines collected as they come."""

    def __init__(self, cluster: HostsCluster, out: Path, *args: str) -> None:
        self.out = out
        super().__init__(cluster.submit([JOB, *QUICK, "--workers", "2", "--out", str(out), *args],
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))

    def output(self, tail: int | None = None) -> str:
        return self.text(tail)

    def joined(self, timeout: float = 240) -> dict[int, str]:
        """partition → address of the host its worker runs on, once both workers joined."""
        found: dict[int, str] = {}

        def both() -> bool:
            found.update({int(m.group(1)): m.group(2) for m in JOINED.finditer(self.output())})
            return len(found) == 2 or self.proc.poll() is not None

        wait_until(both, timeout)
        assert len(found) == 2, f"workers did not join:\n{self.output(60)}"
        return found

    def summary(self) -> dict:
        return json.loads((self.out / "summary.json").read_text())

    def record(self) -> dict:
        return json.loads((self.out / "workers.json").read_text())


def host_of(cluster: HostsCluster, addr: str) -> Host:
    return next(h for h in cluster.hosts if h.addr == addr)


def executor_log(cluster: HostsCluster, host: Host) -> str:
    """What the executors on ``host`` wrote (a worker's own lines go to its executor's stderr)."""
    return "".join(p.read_text(errors="replace") for p in sorted((cluster.dir / host.role / "work").glob("*/*/std*")))


def gave_up(cluster: HostsCluster, host: Host, partition: int) -> bool:
    """Whether the worker of ``partition`` on ``host`` exited because the server did not answer."""
    return f"worker {partition}: no reply from the parameter server" in executor_log(cluster, host)


def progress(out: Path) -> list[tuple[float, int]]:
    """(epoch seconds, live workers) of driver.log's progress lines."""
    log = out / "driver.log"
    text = log.read_text() if log.exists() else ""
    return [(datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp(), int(m.group(2)))
            for m in re.finditer(r"^(\S+ \S+) ddqn\.progress: .*, workers (\d+)$", text, re.M)]


def train_rows(out: Path) -> list[dict[str, float]]:
    """train.csv's rows (env steps, wall seconds, updates, live workers), as numbers."""
    path = out / "train.csv"
    if not path.exists():
        return []
    with open(path) as f:
        return [{k: float(v) for k, v in row.items() if v} for row in csv.DictReader(f)
                if row.get("server/live_workers")]


def stray_processes(cluster: HostsCluster) -> dict[str, list[str]]:
    """Processes on each host other than its own Spark daemon (executors, Python workers, a driver): their
    ids and command lines."""
    daemon = {role: proc.pid for role, proc in cluster.daemons.items()}
    found = {h.role: [p for p in cluster.pids(h) if p != daemon.get(h.role)] for h in cluster.hosts}
    lines = {role: [f"{p} {command_line(p)}" for p in pids] for role, pids in found.items()}
    # a process that ended between the listing and the reading of its command line is not left over
    lines = {role: [x for x in xs if not x.endswith(" (gone)")] for role, xs in lines.items()}
    return {role: xs for role, xs in lines.items() if xs}


def command_line(pid: int) -> str:
    """``pid``'s command line, then its state and parent (to tell a hung process from one being born)."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[-300:]
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        wchan = Path(f"/proc/{pid}/wchan").read_text()
    except OSError:
        return "(gone)"
    try:
        parent_cmd = Path(f"/proc/{stat[1]}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:80]
    except OSError:
        parent_cmd = "(gone)"
    return f"{cmd} [state {stat[0]} in {wchan or '-'}; parent {stat[1]}: {parent_cmd}]"


def settled(cluster: HostsCluster, timeout: float = 45) -> dict[str, list[str]]:
    """Wait until only the Spark daemons run (the job's processes ended by themselves); what is left then, each
    with how long it has been there (one hung process, or a churn of new ones)."""
    start, first_seen = time.monotonic(), {}

    def strays() -> dict[str, list[str]]:
        found = stray_processes(cluster)
        for line in (x for xs in found.values() for x in xs):
            first_seen.setdefault(line.split()[0], time.monotonic())
        return found

    last: dict[str, list[str]] = {}

    def clean() -> bool:
        nonlocal last
        last = strays()
        return not last

    # what the last poll saw, not a new listing: a process born after a clean poll (the Spark worker's own
    # `rm -rf` of a finished executor's directory) is not the job's
    wait_until(clean, timeout, step=0.5)
    now = time.monotonic()
    return {role: [f"{x} (there for {now - first_seen.get(x.split()[0], now):.0f} of {now - start:.0f} s)" for x in xs]
            for role, xs in last.items()}


def printed_pushes(job: Job) -> dict[int, int]:
    """Pushes per partition as train.py's last lines print them."""
    line = next(ln for ln in reversed(job.lines) if ln.startswith("workers: "))
    return {int(p): int(n) for p, n in re.findall(r"(\d+): (\d+) pushes", line)}


def applied_once(job: Job, in_flight: dict[int, int] | None = None) -> dict:
    """The bookkeeping of a finished run: every gradient the server took was applied exactly once (updates =
    the server's pushes), and the server took exactly what each worker had acknowledged, plus at most the
    ``in_flight[p]`` pushes a partition sent into a cut whose ACK never came back."""
    summary, record = job.summary(), job.record()
    server = {int(p): w["pushes"] for p, w in summary["workers"].items()}
    acked = Counter()
    for r in record["results"]:
        acked[r["partition"]] += r["pushes"]
    assert set(server) == {0, 1} and summary["updates"] == sum(server.values()) == record["updates"], summary
    for p in server:
        assert 0 <= server[p] - acked[p] <= (in_flight or {}).get(p, 0), (p, server, dict(acked))
    assert printed_pushes(job) == server  # what the user reads is what the server counted
    assert np.isfinite(final_theta(job.out)).all()
    snapshot = json.loads((job.out / "server_state.json").read_text())
    assert snapshot["updates"] == summary["updates"], "the final snapshot holds every update"
    return summary


@pytest.mark.timeout(300)
def test_happy_path_across_hosts(cluster: HostsCluster, tmp_path: Path) -> None:
    out = tmp_path / "run"
    job = Job(cluster, out, "--steps", "600", "--set", "log_every=100")
    hosts = job.joined()
    workers = {h.addr for h in cluster.worker_hosts}
    assert set(hosts.values()) == workers, hosts  # one worker per worker host, known by that host's address
    # the parameter server listens on the driver host's address, which the worker hosts reach; not on loopback
    for host in cluster.worker_hosts:
        assert cluster.probe(host, cluster.driver.addr, SERVER_PORT) == "open"
    assert cluster.probe(cluster.driver, "127.0.0.1", SERVER_PORT) == "refused"
    def busy() -> set[str]:
        return {w["host"] for w in cluster.master_state().get("workers", []) if w.get("coresused") == 1}

    assert wait_until(lambda: busy() == workers, 20) is not None, cluster.master_state()  # an executor on each
    assert job.wait(300) == 0, job.output(60)

    summary = applied_once(job)
    assert all(w["pushes"] > 50 for w in summary["workers"].values()), summary["workers"]
    recorded = {int(p): w["host"] for p, w in job.record()["workers"].items()}
    assert recorded == hosts  # the server recorded each worker host's own address
    assert set(summary["dropped"]) <= {"unauthenticated connection"}, summary["dropped"]  # only our two probes
    steady = steady_updates_per_s(out / "train.csv")  # None when the run is shorter than two report rounds
    measured(f"updates/s across hosts: {summary['updates_per_s']:.1f} over the run, "
             + ("no steady rate (fewer than two train.csv rows after the first quarter)" if steady is None
                else f"{steady:.1f} steady (train.csv after the first quarter)"))

    assert cluster.pids(cluster.driver) == []  # spark-submit, the Python driver and its evaluator are gone
    assert settled(cluster) == {}  # executors and Python workers ended with the job
    stop(cluster, tmp_path)
    assert cluster.leftovers == {}  # stopping the daemons left nothing to kill by pid
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert cluster.tag not in listed and all(netns_pids(h.ns) == [] for h in cluster.hosts)


@pytest.mark.timeout(360)
def test_worker_host_partitioned_longer_than_server_timeout(cluster: HostsCluster, tmp_path: Path) -> None:
    out = tmp_path / "partition"
    job = Job(cluster, out, "--minutes", "1", *FAULT)
    hosts = job.joined()
    victim = host_of(cluster, hosts[0])
    # the server names the silent worker by its host's address as it saw the connection
    silent = re.compile(rf"worker 0 \(attempt 0, pid \d+ on \S+, {re.escape(victim.addr)}\) silent for over "
                        rf"{SESSION_S:g} s")
    time.sleep(6)  # both are pushing
    rows_before = len(train_rows(out))
    cut = time.monotonic()
    cluster.cut(victim)
    try:
        exit_s = wait_until(lambda: gave_up(cluster, victim, 0), S + 10)
        noticed = wait_until(lambda: any(r["server/live_workers"] == 1 for r in train_rows(out)[rows_before:]),
                             SESSION_S + 20)
        noticed_s = None if noticed is None else time.monotonic() - cut
        # keep the cable out until the server has dropped the session: a segment the kernel retransmits once the
        # link is back (or the rerun's HELLO) would otherwise refresh or replace it in the server's ≤ 1 s between
        # expiry checks, and the session would never have been silent for the full timeout
        wait_until(lambda: silent.search(job.output()), 10)
    finally:
        cluster.heal(victim)
    cut_s = time.monotonic() - cut
    assert exit_s is not None and exit_s <= S + 5, f"worker 0 still there {S + 10} s into the partition"
    assert noticed_s is not None and noticed_s <= SESSION_S + 10, "the driver did not notice the lost worker"
    assert cut_s > S  # longer than server_timeout
    measured(f"worker host partitioned: worker exit {exit_s:.1f} s after the cut (server_timeout {S} s), "
             f"driver's live worker count dropped {noticed_s:.1f} s after it (session timeout {SESSION_S} s); "
             f"link down {cut_s:.1f} s")
    assert job.wait(300) == 0, job.output(60)
    assert silent.search(job.output()), job.output(60)

    summary = job.summary()
    w0, w1 = summary["workers"]["0"], summary["workers"]["1"]
    rescheduled = w0["attempt"] > 0
    if rescheduled:  # Spark ran the partition again: its new attempt rejoined
        assert w0["rejoins"] >= 1 and "worker 0 rejoined" in job.output()
        assert summary["updates"] == w0["pushes"] + w1["pushes"] and np.isfinite(final_theta(out)).all()
    else:  # the driver carried on with the live worker: the lost one's task ended, nothing reran it
        applied_once(job, in_flight={0: 1})
        assert w0["rejoins"] == 0 and "rejoined" not in job.output()
        assert w1["pushes"] > w0["pushes"] > 0 and w1["env_steps"] > w0["env_steps"]
        after = train_rows(out)[rows_before:]
        live = [r["server/live_workers"] for r in after]
        assert 1 in live and live[live.index(1):] == [1] * (len(live) - live.index(1)), live  # never back to 2
        assert after[-1]["server/updates"] > after[live.index(1)]["server/updates"]  # it kept serving the other
    measured(f"worker host partitioned: {'Spark reran the task' if rescheduled else 'the driver carried on'}; "
             f"pushes {w0['pushes']} (cut) / {w1['pushes']}")
    assert set(summary["dropped"]) <= LATE, summary["dropped"]
    assert settled(cluster) == {}  # no hung Python worker or executor JVM on any host


@pytest.mark.timeout(360)
def test_worker_host_partitioned_past_sparks_worker_timeout_is_rerun(tmp_path: Path) -> None:
    """Cut longer than the master's spark.worker.timeout (60 s by default, 10 s here): the master drops the worker
    host and its executor, Spark reruns the partition's task once the host is back, and the new attempt rejoins."""
    out = tmp_path / "rerun"
    cluster = HostsCluster(workers=2, daemon_conf={"spark.worker.timeout": 10})
    try:
        cluster.start()
        job = Job(cluster, out, "--minutes", "1.25", *FAULT)
        hosts = job.joined()
        victim = host_of(cluster, hosts[0])
        time.sleep(6)
        cut = time.monotonic()
        cluster.cut(victim)
        try:
            exit_s = wait_until(lambda: gave_up(cluster, victim, 0), S + 10)
            lost_s = wait_until(lambda: re.search(rf"Lost executor \S+ on {re.escape(victim.addr)}", job.output()), 45)
            lost_s = None if lost_s is None else time.monotonic() - cut
        finally:
            cluster.heal(victim)
        healed = time.monotonic()
        assert exit_s is not None and exit_s <= S + 5
        assert lost_s is not None, job.output(40)  # the master declared the host lost; the driver was told
        rejoined = wait_until(lambda: "worker 0 rejoined (attempt 1" in job.output(), 90)
        assert rejoined is not None, job.output(40)
        assert re.search(rf"worker 0 rejoined \(attempt 1, pid \d+ on \S+, {re.escape(victim.addr)}\)",
                         job.output()), job.output(40)
        measured(f"partition past spark.worker.timeout (10 s): worker exit {exit_s:.1f} s, Spark's 'Lost executor' "
                 f"{lost_s:.1f} s after the cut; links back after {healed - cut:.1f} s, attempt 1 rejoined "
                 f"{rejoined:.1f} s later")
        assert job.wait(240) == 0, job.output(60)

        summary, record = job.summary(), job.record()
        w0, w1 = summary["workers"]["0"], summary["workers"]["1"]
        assert w0["attempt"] == 1 and w0["rejoins"] == 1 and w1["attempt"] == w1["rejoins"] == 0, summary["workers"]
        assert summary["updates"] == w0["pushes"] + w1["pushes"] == record["updates"]  # each applied once
        ended = {r["partition"]: r for r in record["results"]}
        assert ended[0]["attempt"] == 1 and 0 < ended[0]["pushes"] < w0["pushes"]  # attempt 0's pushes counted too
        assert ended[1]["pushes"] == w1["pushes"] and printed_pushes(job) == {0: w0["pushes"], 1: w1["pushes"]}
        assert set(summary["dropped"]) <= LATE and np.isfinite(final_theta(out)).all()
        assert settled(cluster) == {}  # attempt 0's executor is gone too
    finally:
        stop(cluster, tmp_path)


@pytest.mark.timeout(300)
def test_worker_host_partitioned_briefly(cluster: HostsCluster, tmp_path: Path) -> None:
    timeout, blip = 10, 3.0  # a worker waits 10 s; TCP's retransmission after a 3 s cut comes within ≈ 6.2 s
    out = tmp_path / "blip"
    job = Job(cluster, out, "--minutes", "0.6", "--set", f"server_timeout={timeout}", "--set", "log_every=100")
    hosts = job.joined()
    victim = host_of(cluster, hosts[0])
    time.sleep(6)
    rows_before = len(train_rows(out))
    cluster.cut(victim)
    try:
        time.sleep(blip)
    finally:
        cluster.heal(victim)
    assert job.wait(240) == 0, job.output(60)

    assert not gave_up(cluster, victim, 0)  # it resumed on the same connection
    text = job.output()
    assert len(re.findall(r"worker 0 joined", text)) == 1 and "rejoined" not in text, text[-3000:]
    summary = applied_once(job)  # nothing lost, nothing twice: TCP delivered every message once
    w0, w1 = summary["workers"]["0"], summary["workers"]["1"]
    assert w0["attempt"] == w0["rejoins"] == 0 and summary["dropped"] == {}, summary
    live = [r["server/live_workers"] for r in train_rows(out)[rows_before:]]
    assert live and set(live) == {2}, live  # one session per partition throughout, none dropped
    assert w0["env_steps"] >= 0.5 * w1["env_steps"], (w0, w1)  # it kept playing after the blip
    measured(f"brief partition ({blip:g} s): env steps {w0['env_steps']} (cut) / {w1['env_steps']}, no rejoin")
    assert settled(cluster) == {}


RECEIVER = r"""
import socket, sys, time
srv = socket.create_server((sys.argv[1], int(sys.argv[2])))
srv.settimeout(30)
print("listening", flush=True)
conn, _ = srv.accept()
conn.settimeout(30)
first, total = None, 0
while chunk := conn.recv(1 << 20):
    first = first or time.monotonic()
    total += len(chunk)
print(total, time.monotonic() - first, flush=True)
"""
SENDER = "import socket, sys; s = socket.create_connection((sys.argv[1], int(sys.argv[2])), 10); " \
         "s.sendall(bytes(int(sys.argv[3]))); s.close()"


def transfer(cluster: HostsCluster, src: Host, dst: Host, nbytes: int) -> float:
    """Send ``nbytes`` over TCP from ``src`` to ``dst``; the receiver's Gbit/s from its first byte to its last."""
    recv = subprocess.Popen(cluster.launch_argv(dst, [sys.executable, "-c", RECEIVER, dst.addr, "5599"]),
                            stdout=subprocess.PIPE, text=True)
    try:
        assert recv.stdout.readline().strip() == "listening"
        res = cluster.run(src, [sys.executable, "-c", SENDER, dst.addr, "5599", str(nbytes)], timeout=60)
        assert res.returncode == 0, res.stderr
        got, seconds = recv.stdout.readline().split()
        assert int(got) == nbytes
        return nbytes * 8 / float(seconds) / 1e9
    finally:
        recv.kill()
        recv.wait(10)


@pytest.mark.timeout(120)
def test_a_links_rate_is_what_it_was_given_in_each_direction() -> None:
    """Issue 31: ``link_gbit`` shapes each host's cable in both directions (a token bucket at each end of its veth).
    A bulk TCP transfer never gets above the rate, either way, where an unshaped veth carries several times more;
    the interfaces' own counters see the bytes."""
    rate, nbytes = 0.25, 24_000_000  # ≈ 0.8 s at the rate
    shaped, free = HostsCluster(workers=1, link_gbit=rate), HostsCluster(workers=1)
    try:
        worker, driver = shaped.network().worker_hosts[0], shaped.driver
        before = shaped.link_bytes(worker)
        up, down = transfer(shaped, worker, driver, nbytes), transfer(shaped, driver, worker, nbytes)
        after = shaped.link_bytes(worker)
        unshaped = transfer(free.network(), free.worker_hosts[0], free.driver, nbytes)
    finally:
        shaped.stop()
        free.stop()
    measured(f"a {rate:g} Gbit/s link carried {up:.3f} Gbit/s up and {down:.3f} down; unshaped {unshaped:.2f}")
    # never above the rate; below it only by what the cores let the receiver take (0.80 and 0.92 of it were seen
    # during the suite, 0.92-0.96 alone)
    assert 0.6 * rate <= up <= 1.02 * rate and 0.6 * rate <= down <= 1.02 * rate, (up, down)
    assert unshaped > 2 * rate  # the shaping made the difference
    assert nbytes <= after["tx"] - before["tx"] <= 1.1 * nbytes + 2_000_000, (before, after)
    assert nbytes <= after["rx"] - before["rx"] <= 1.1 * nbytes + 2_000_000, (before, after)
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert shaped.tag not in listed and free.tag not in listed


def session_connections(cluster: HostsCluster, host: Host) -> str:
    """``host``'s established TCP connections to the parameter server's session port, as ss lists them."""
    return cluster.run(host, ["ss", "-t", "-n", "state", "established", "dst", cluster.driver.addr, "dport", "=",
                              str(SERVER_PORT + 1)]).stdout


def reset_connections(cluster: HostsCluster, host: Host) -> str:
    """Abort ``host``'s TCP connections to the parameter server's two ports (``ss -K``: the kernel's socket
    destroy, which sends the driver host a real RST); what ss printed of the sockets it killed."""
    res = cluster.run(host, ["ss", "-K", "-t", "dst", cluster.driver.addr, "(", "dport", "=", str(SERVER_PORT), "or",
                             "dport", "=", str(SERVER_PORT + 1), ")"])
    return res.stdout


def reset_session(cluster: HostsCluster, host: Host, within: float = 30.0) -> str:
    """Reset ``host``'s connections once its session connection is up; what ss printed of the sockets it killed. A
    session connection that closes between ss's listing and its kill (libzmq reconnecting a socket whose ticket is
    spent: the session port refuses it at once) leaves no session socket to kill, so the reset is tried again."""
    deadline = time.monotonic() + within
    killed = ""
    while time.monotonic() < deadline:
        wait_until(lambda: f":{SERVER_PORT + 1}" in session_connections(cluster, host), deadline - time.monotonic())
        killed = reset_connections(cluster, host)
        if f"{cluster.driver.addr}:{SERVER_PORT + 1}" in killed:
            break
        time.sleep(0.2)
    return killed


@pytest.mark.timeout(300)
def test_tcp_resets_between_hosts_cost_no_worker_and_no_push(cluster: HostsCluster, tmp_path: Path) -> None:
    """Issue 28 finding 5 across hosts: a worker host's connections to the server are reset (a real RST on the
    link, three times, 2 s apart, while it pushes some 30 times a second). Each time the worker reconnects with a
    new HELLO and goes on; the run ends with both workers, no rejoin by Spark, and every push applied exactly as
    acknowledged (one that was in flight at a reset is re-sent and applied once)."""
    out = tmp_path / "resets"
    job = Job(cluster, out, "--minutes", "0.6", *FAULT)
    hosts = job.joined()
    victim = host_of(cluster, hosts[0])
    time.sleep(4)
    killed = []
    for _ in range(3):  # each time once the worker has its session connection again (it reconnects after a reset)
        killed.append(reset_session(cluster, victim))
        time.sleep(2)
    assert all(f"{cluster.driver.addr}:{SERVER_PORT + 1}" in k for k in killed), (  # a session connection each
        killed, executor_log(cluster, victim)[-4000:])
    assert job.wait(240) == 0, job.output(60)

    summary = applied_once(job)  # exactly what each worker acknowledged: nothing lost, nothing twice
    w0 = summary["workers"]["0"]
    assert w0["attempt"] == w0["rejoins"] == 0, w0  # the same task throughout: Spark reran nothing
    assert not gave_up(cluster, victim, 0)
    reconnects = {r["partition"]: r["reconnects"] for r in job.record()["results"]}
    assert reconnects[0] >= 3 and reconnects[1] == 0, reconnects
    assert len(re.findall(r"worker 0 reconnected", (out / "driver.log").read_text())) >= 3
    assert set(summary["dropped"]) <= {"resent"}, summary["dropped"]  # a re-sent PUSH is known, not re-applied
    measured(f"3 resets between hosts: worker 0 reconnected {reconnects[0]} times, pushes "
             f"{w0['pushes']} / {summary['workers']['1']['pushes']}, dropped {summary['dropped']}")
    assert settled(cluster) == {}


@pytest.mark.timeout(420)
def test_driver_host_cut_off_then_resumed(cluster: HostsCluster, tmp_path: Path) -> None:
    out = tmp_path / "cutoff"
    job = Job(cluster, out, "--minutes", "3", *FAULT)  # the budget outlasts the test: the run ends with its workers
    hosts = job.joined()
    time.sleep(6)
    cut, cut_wall = time.monotonic(), time.time()
    cluster.cut(cluster.driver)
    exits: dict[int, float] = {}  # partition -> seconds from the cut to its worker giving up

    def all_gave_up() -> bool:
        for p, addr in hosts.items():
            if p not in exits and gave_up(cluster, host_of(cluster, addr), p):
                exits[p] = time.monotonic() - cut
        return len(exits) == len(hosts)

    try:
        wait_until(all_gave_up, S + 10)
        wait_until(lambda: any(t > cut_wall and n == 0 for t, n in progress(out)), SESSION_S + PROGRESS_S + 15)
        noticed_s = next((t - cut_wall for t, n in progress(out) if t > cut_wall and n == 0), None)
    finally:
        cluster.heal(cluster.driver)
    healed = time.monotonic()
    assert len(exits) == 2 and max(exits.values()) <= S + 5, exits  # every worker gave up within its bound
    assert noticed_s is not None and noticed_s <= SESSION_S + PROGRESS_S + 5, progress(out)  # driver.log: "workers 0"
    assert job.wait(240) == 0, job.output(60)  # once the links are back, the tasks' ends reach the driver
    done_s = time.monotonic() - healed
    measured(f"driver host cut off: workers exit {', '.join(f'{t:.1f}' for t in exits.values())} s after the cut, "
             f"driver.log reports 0 live workers {noticed_s:.1f} s after it; links back after "
             f"{healed - cut:.1f} s, run finished {done_s:.1f} s later")
    assert done_s <= 120
    summary = applied_once(job, in_flight={0: 1, 1: 1})  # with its final snapshot
    assert set(summary["dropped"]) <= LATE, summary["dropped"]
    assert "snapshot: " in job.output()
    before = summary["updates"]
    assert settled(cluster) == {}

    resumed = Job(cluster, out, "--resume", "--steps", "300")
    assert resumed.wait(300) == 0, resumed.output(60)
    assert f"update {before})" in resumed.output()  # "resumed from … (update N)"
    state = json.loads((out / "server_state.json").read_text())
    assert state["updates"] > before and np.isfinite(final_theta(out)).all()
    assert all(w["pushes"] > 0 for w in resumed.summary()["workers"].values())


@pytest.mark.timeout(300)
def test_spark_master_killed_mid_run(cluster: HostsCluster, tmp_path: Path) -> None:
    out = tmp_path / "masterless"
    job = Job(cluster, out, "--minutes", "0.6", *FAULT)
    job.joined()
    time.sleep(6)
    master = cluster.daemons["master"]
    os.kill(master.pid, signal.SIGKILL)  # the master's JVM, by its own id
    assert wait_until(lambda: cluster.pids(cluster.master) == [], 10) is not None
    rc = job.wait(240)
    text = job.output()
    assert re.search(r"Disconnected from Spark cluster|Connection to \S+:7077 failed", text), text[-3000:]  # loud
    assert np.isfinite(final_theta(out)).all()  # a snapshot, whichever way the run ended
    if rc == 0:  # the executors it had were enough: the run finished
        summary = applied_once(job)
        assert all(w["pushes"] > 0 for w in summary["workers"].values()) and summary["dropped"] == {}
    else:  # failed: one error line, after its final snapshot
        assert "train.py: error: " in text, text[-3000:]
    measured(f"Spark master killed: spark-submit exit code {rc}")
    # the driver stopped its tasks and freed its ports: nothing runs on its host, its ports refuse connections
    assert cluster.pids(cluster.driver) == []
    for port in (SERVER_PORT, SERVER_PORT + 1, DRIVER_PORT, BLOCK_MANAGER_PORT):  # the join and session ports too
        assert cluster.probe(cluster.worker_hosts[0], cluster.driver.addr, port) == "refused", port
    assert settled(cluster) == {}
