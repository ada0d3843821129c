"""A multi-host Spark standalone cluster on one machine: Linux network namespaces as hosts.

    sudo python -m ddqn.distributed.hosts [--workers 2] [--link-gbit R] [--timeout S] -- spark_jobs/train.py [job args]

lays the hosts out as docker/docker-compose.yml does: the Spark master on one host, the driver (and with it
the parameter server) on another, and one one-core Spark worker on each of the rest. A host is a network
namespace (``ip netns add``) with its own loopback, its own interface and a private address, plugged by a
veth pair into a bridge that lives in a namespace of its own (the "switch"). Nothing is added to the
machine's own namespace, the hosts have no route beyond their /24, and every host's processes see their
address as their hostname (a UTS namespace): that is what the parameter server records for a worker.

The hosts run the docker-compose services' commands: :func:`ddqn.distributed.cluster.master_command`,
:func:`~ddqn.distributed.cluster.worker_command` and ``LocalCluster.submit_command``, with addresses for host
names and the compose file's fixed ports (tests/test_docker_compose.py checks that).
:meth:`HostsCluster.cut` and :meth:`HostsCluster.heal` pull and replug a host's cable (its switch port
down / up). With ``link_gbit`` every host's cable has that rate in each direction, like a full-duplex NIC: a
token-bucket qdisc (``tc … tbf``) on both ends of its veth, since a qdisc shapes only what leaves its interface
(netem, for a delay, does not exist on our machines). :meth:`HostsCluster.link_bytes` reads a host's interface
counters. Teardown stops what runs in each namespace by process id and deletes the namespaces, also on an
error, Ctrl-C or interpreter exit; namespaces left by a process that no longer exists are swept at the next
start. Every wait is bounded. Needs root and iproute2 (``make install`` installs it).
"""
from __future__ import annotations

import argparse
import atexit
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ddqn.distributed.cluster import (
    LocalCluster,
    master_command,
    parse_job_args,
    spark_home,
    stop_groups,
    wait_job,
    worker_command,
)

# The docker-compose file's ports: each host has its own port space, so they are fixed here as there.
MASTER_PORT = 7077
MASTER_UI_PORT = 8080
WORKER_UI_PORT = 8081
SERVER_PORT = 7078  # the parameter server (config server_port; its sessions' port is the next, 7079)
DRIVER_PORT = 7081  # spark.driver.port: executors -> driver RPC
BLOCK_MANAGER_PORT = 7080  # spark.driver.blockManager.port: broadcasts and task results
DRIVER_CONF = {"spark.driver.port": DRIVER_PORT, "spark.driver.blockManager.port": BLOCK_MANAGER_PORT}
PREFIX = "ddqn"  # namespaces are named ddqn-<pid of the creating process>-<n>-<role>
IP_TIMEOUT_S = 15.0  # bound on one `ip` or `tc` command
# A shaped link's token bucket: at least 128 KiB (what FACTS measured working at 1 Gbit/s), else 1 ms at the
# rate, so that one bucket holds a few of the 64 KiB segments a veth passes; a queue of 50 ms at the rate.
MIN_BURST_BYTES = 128 * 1024
BURST_S = 0.001
QUEUE_S = 0.05
# run argv in a UTS namespace whose hostname is the host's address ($0), then exec argv ("$@")
SET_HOSTNAME = 'echo "$0" > /proc/sys/kernel/hostname && exec "$@"'
_STALE = re.compile(rf"^{PREFIX}-(\d+)-\d+-")
_SERIAL = itertools.count(1)
_LIVE: set[HostsCluster] = set()


class HostsError(RuntimeError):
    """An ``ip`` command failed, or the cluster did not come up in time."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return _run(["ip", *args], check)


def _run(argv: list[str], check: bool = True) -> subprocess.CompletedProcess:
    """An ``ip`` or ``tc`` command, bounded in time; a failure (when ``check``) is a HostsError naming it."""
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=IP_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise HostsError(f"{' '.join(argv)}: {exc}") from exc
    if check and res.returncode != 0:
        raise HostsError(f"{' '.join(argv)}: {res.stderr.strip() or f'exit code {res.returncode}'}")
    return res


def netns_pids(ns: str) -> list[int]:
    """Process ids in network namespace ``ns`` (``ip netns pids``); [] if it does not exist."""
    res = _ip("netns", "pids", ns, check=False)
    return [int(p) for p in res.stdout.split() if p.isdigit()] if res.returncode == 0 else []


def _kill_netns(ns: str, timeout: float = 10.0) -> list[tuple[int, str]]:
    """SIGKILL every process in ``ns`` by its id; returns [(pid, command line)] of those that were there."""
    found = []
    for pid in netns_pids(ns):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            os.kill(pid, signal.SIGKILL)
            found.append((pid, cmd[:200]))
        except (OSError, ProcessLookupError):
            pass
    deadline = time.monotonic() + timeout
    while netns_pids(ns) and time.monotonic() < deadline:
        time.sleep(0.1)
    return found


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale() -> list[str]:
    """Delete the namespaces ``ddqn-<pid>-…`` whose creating process no longer exists (a run killed with -9),
    after killing what still runs in them; returns their names."""
    res = _ip("netns", "list", check=False)
    names = [line.split()[0] for line in res.stdout.splitlines() if line.strip()]
    stale = [n for n in names if (m := _STALE.match(n)) and not _pid_alive(int(m.group(1)))]
    for ns in sorted(stale, key=lambda n: n.endswith("-switch")):  # hosts first, the switch last
        _kill_netns(ns)
        _ip("netns", "del", ns, check=False)
    return stale


def unavailable() -> str | None:
    """Why namespace hosts cannot be made here (one line), or None if they can: root, iproute2, util-linux's
    unshare, and a kernel (or container) that lets this process create a namespace, a veth pair and a bridge."""
    if os.geteuid() != 0:
        return "they need root for network namespaces (CI runs as root; `make test-hosts` uses sudo)"
    for tool, package in (("ip", "iproute2"), ("unshare", "util-linux")):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (Debian package {package}; `make install` installs iproute2)"
    probe = f"{PREFIX}-{os.getpid()}-0-probe"
    try:
        _ip("netns", "add", probe)
        _ip("-n", probe, "link", "add", "probe0", "type", "veth", "peer", "name", "probe1")
        _ip("-n", probe, "link", "add", "probe-br", "type", "bridge")
    except HostsError as exc:
        return f"network namespaces cannot be made here ({exc}; a chroot or container may not allow them)"
    finally:
        _ip("netns", "del", probe, check=False)
    try:
        uts = subprocess.run(["unshare", "--uts", "true"], capture_output=True, text=True, timeout=IP_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`unshare --uts` does not run here ({exc})"
    if uts.returncode != 0:
        return f"UTS namespaces cannot be made here (unshare --uts: {uts.stderr.strip()})"
    return None


@dataclass(frozen=True)
class Host:
    """One host: its role, network namespace, address, and its port on the switch (the veth end there)."""

    role: str
    ns: str
    addr: str
    switch_port: str


class HostsCluster:
    """Master, driver and ``workers`` worker hosts, each a network namespace; a context manager that always
    tears down. Nothing exists before :meth:`start` (so the commands can be inspected without root).

    Args:
        workers: worker hosts, one one-core Spark worker each.
        memory: each Spark worker's memory (the compose file's, ``LocalCluster``'s default).
        subnet: the hosts' /24 (first three octets); it exists only inside this cluster's namespaces.
        daemon_conf: Spark conf for the master and worker daemons (e.g. a lower ``spark.worker.timeout``).
        start_timeout: seconds for the master and every worker to be ALIVE.
        link_gbit: each host's link rate in Gbit/s, in each direction (None: a veth's own, unlimited).
    """

    def __init__(self, workers: int = 2, memory: str = "2g", subnet: str = "10.89.0",
                 daemon_conf: dict[str, object] | None = None, start_timeout: float = 120.0,
                 link_gbit: float | None = None) -> None:
        if not 1 <= workers <= 200:
            raise ValueError("workers: 1 to 200")
        if link_gbit is not None and not 0.001 <= link_gbit <= 100:
            raise ValueError("link_gbit: 0.001 to 100 Gbit/s")
        self.link_gbit = link_gbit
        self.tag = f"{PREFIX}-{os.getpid()}-{next(_SERIAL)}"
        self.workers, self.memory, self.start_timeout = workers, memory, start_timeout
        self.daemon_conf = dict(daemon_conf or {})
        self.switch = f"{self.tag}-switch"
        self.master = self._host("master", f"{subnet}.2")
        self.driver = self._host("driver", f"{subnet}.3")
        self.worker_hosts = [self._host(f"worker-{i}", f"{subnet}.{10 + i}") for i in range(workers)]
        self.host = self.driver.addr  # where spark-submit runs (LocalCluster.submit_command's spark.driver.host)
        self.master_url = f"spark://{self.master.addr}:{MASTER_PORT}"
        self.procs: list[subprocess.Popen] = []
        self.daemons: dict[str, subprocess.Popen] = {}  # role -> the Spark master / worker process on that host
        self.leftovers: dict[str, list[tuple[int, str]]] = {}  # what teardown had to kill by pid, per host
        self._made: list[str] = []  # namespaces created, in order
        self._dir: tempfile.TemporaryDirectory | None = None

    def _host(self, role: str, addr: str) -> Host:
        return Host(role, f"{self.tag}-{role}", addr, f"h-{role}")

    @property
    def hosts(self) -> list[Host]:
        return [self.master, self.driver, *self.worker_hosts]

    @property
    def dir(self) -> Path:
        """Logs and Spark work directories (a temporary directory, removed at teardown)."""
        if self._dir is None:
            self._dir = tempfile.TemporaryDirectory(prefix=f"{self.tag}-")
        return Path(self._dir.name)

    # -- the commands (the docker-compose services') ------------------------------------------
    def master_argv(self) -> list[str]:
        return master_command(self.master.addr, MASTER_PORT, MASTER_UI_PORT)

    def worker_argv(self, i: int) -> list[str]:
        return worker_command(self.master_url, self.worker_hosts[i].addr, 1, self.memory, WORKER_UI_PORT)

    def submit_command(self, job: list[str], conf: dict[str, object] | None = None) -> list[str]:
        """The compose ``submit`` service's command for this cluster: ``LocalCluster.submit_command`` (this
        cluster's master URL, the driver host's address as spark.driver.host, one core per worker), the fixed
        driver ports, then ``conf`` (e.g. lower timeouts), the job, and the fixed parameter-server port."""
        base = LocalCluster.submit_command(self, job)  # reads master_url, host, workers: the same command
        head = base[:len(base) - len(job)]
        extra = [a for k, v in {**DRIVER_CONF, **(conf or {})}.items() for a in ("--conf", f"{k}={v}")]
        return [*head, *extra, *job, "--set", f"server_port={SERVER_PORT}"]

    def launch_argv(self, host: Host, argv: list[str]) -> list[str]:
        """``argv`` run on ``host``: in its network namespace, with its address as hostname."""
        return ["ip", "netns", "exec", host.ns, "unshare", "--uts", "sh", "-c", SET_HOSTNAME, host.addr, *argv]

    def env(self, host: Host) -> dict[str, str]:
        """Environment of ``host``'s processes: Spark binds to the host's address, its work and log
        directories are the host's own."""
        d = self.dir / host.role
        opts = " ".join(f"-D{k}={v}" for k, v in self.daemon_conf.items())
        env = dict(os.environ, SPARK_HOME=str(spark_home()), SPARK_LOCAL_IP=host.addr,
                   SPARK_WORKER_DIR=str(d / "work"), SPARK_LOG_DIR=str(d / "logs"),
                   PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable)
        if opts:
            env.update(SPARK_MASTER_OPTS=opts, SPARK_WORKER_OPTS=opts)
        return env

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> HostsCluster:
        """Make the network, start master and workers; return once every worker is ALIVE (else tear down
        and raise)."""
        sweep_stale()
        _LIVE.add(self)
        try:
            self.network()
            self.daemons["master"] = self.spawn(self.master, self.master_argv(), "master")
            self._wait(lambda: self.master_state().get("status") == "ALIVE", "the master")
            for i, host in enumerate(self.worker_hosts):
                self.daemons[host.role] = self.spawn(host, self.worker_argv(i), host.role)
            self._wait(lambda: self.alive_workers() >= self.workers, f"{self.workers} workers")
        except BaseException:
            self.stop()
            raise
        return self

    def network(self) -> HostsCluster:
        """The switch (a bridge in its own namespace) and one namespace per host, cabled to it at ``link_gbit``
        (:meth:`start` calls it; alone, it makes the hosts without Spark, torn down by :meth:`stop`)."""
        _LIVE.add(self)
        self._netns_add(self.switch)
        _ip("-n", self.switch, "link", "set", "lo", "up")
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge", "forward_delay", "0", "stp_state", "0")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        for host in self.hosts:
            self._netns_add(host.ns)
            port = host.switch_port
            _ip("-n", self.switch, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", host.ns)
            _ip("-n", self.switch, "link", "set", port, "master", "br0")
            _ip("-n", self.switch, "link", "set", port, "up")
            _ip("-n", host.ns, "addr", "add", f"{host.addr}/24", "dev", "eth0")
            _ip("-n", host.ns, "link", "set", "eth0", "up")
            _ip("-n", host.ns, "link", "set", "lo", "up")
            if self.link_gbit is not None:  # what leaves the host, and what the switch sends it
                shape(host.ns, "eth0", self.link_gbit)
                shape(self.switch, port, self.link_gbit)
        return self

    def _netns_add(self, ns: str) -> None:
        _ip("netns", "add", ns)
        self._made.append(ns)

    def _wait(self, ready, what: str) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self.procs):
                raise HostsError(f"a cluster process exited early; logs in {self.dir}")
            if ready():
                return
            time.sleep(1)
        raise HostsError(f"{what} did not come up within {self.start_timeout:g} s; logs in {self.dir}")

    def spawn(self, host: Host, argv: list[str], name: str, **popen) -> subprocess.Popen:
        """Start ``argv`` on ``host`` in a session of its own (so teardown can signal its group); output to
        ``<dir>/<name>.log`` unless ``stdout`` is given. Tracked: :meth:`stop` ends it."""
        if "stdout" not in popen:
            with open(self.dir / f"{name}.log", "wb") as log:
                return self.spawn(host, argv, name, stdout=log, stderr=subprocess.STDOUT, **popen)
        proc = subprocess.Popen(self.launch_argv(host, argv), env=popen.pop("env", self.env(host)),
                                start_new_session=True, **popen)
        self.procs.append(proc)
        return proc

    def submit(self, job: list[str], conf: dict[str, object] | None = None, **popen) -> subprocess.Popen:
        """Run the job with ``spark-submit`` on the driver host (see :meth:`submit_command`)."""
        return self.spawn(self.driver, self.submit_command(job, conf), "submit", **popen)

    def stop(self, timeout: float = 20.0) -> None:
        """Tear down: SIGTERM the process groups this cluster started (then SIGKILL), kill by id whatever still
        runs in its namespaces (recorded in :attr:`leftovers`), delete the namespaces and the temp directory."""
        stop_groups(self.procs, timeout)
        for ns in reversed(self._made):
            if found := _kill_netns(ns):
                self.leftovers[ns] = found
            _ip("netns", "del", ns, check=False)
        self._made.clear()
        _LIVE.discard(self)
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def __enter__(self) -> HostsCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- looking and cutting -------------------------------------------------------------------
    def run(self, host: Host, argv: list[str], timeout: float = 15.0) -> subprocess.CompletedProcess:
        """Run a short command on ``host`` and wait for it (bounded)."""
        return subprocess.run(self.launch_argv(host, argv), env=self.env(host), capture_output=True, text=True,
                              timeout=timeout)

    def master_state(self) -> dict:
        """The master web UI's JSON (workers, their cores, applications), fetched on the master host; {} if it
        does not answer."""
        url = f"http://{self.master.addr}:{MASTER_UI_PORT}/json/"
        code = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=3).read().decode())"
        try:
            res = self.run(self.master, [sys.executable, "-c", code, url], timeout=10)
            return json.loads(res.stdout) if res.returncode == 0 else {}
        except (subprocess.TimeoutExpired, ValueError):
            return {}

    def alive_workers(self) -> int:
        return sum(w.get("state") == "ALIVE" for w in self.master_state().get("workers", []))

    def probe(self, host: Host, addr: str, port: int, timeout: float = 3.0) -> str:
        """Open a TCP connection from ``host`` to ``addr:port`` and close it: "open", "refused", "timeout" or
        the error's name."""
        code = ("import socket, sys\ntry:\n socket.create_connection((sys.argv[1], int(sys.argv[2])), "
                "float(sys.argv[3])).close(); print('open')\nexcept ConnectionRefusedError: print('refused')\n"
                "except TimeoutError: print('timeout')\nexcept OSError as e: print(type(e).__name__, e.errno)")
        res = self.run(host, [sys.executable, "-c", code, addr, str(port), str(timeout)], timeout=timeout + 10)
        return res.stdout.strip() or res.stderr.strip()[-200:]

    def pids(self, host: Host) -> list[int]:
        """Processes running on ``host`` now."""
        return netns_pids(host.ns)

    def link_bytes(self, host: Host) -> dict[str, int]:
        """Bytes through ``host``'s interface so far, its own counters: ``rx`` (received) and ``tx`` (sent)."""
        res = _ip("-n", host.ns, "-s", "-j", "link", "show", "dev", "eth0")
        stats = json.loads(res.stdout)[0]["stats64"]
        return {"rx": int(stats["rx"]["bytes"]), "tx": int(stats["tx"]["bytes"])}

    def cut(self, host: Host) -> None:
        """Pull ``host``'s cable: its switch port goes down (its own interface keeps its address)."""
        _ip("-n", self.switch, "link", "set", host.switch_port, "down")

    def heal(self, host: Host) -> None:
        """Plug ``host``'s cable back in."""
        _ip("-n", self.switch, "link", "set", host.switch_port, "up")


def shape(ns: str, dev: str, gbit: float) -> None:
    """A rate of ``gbit`` Gbit/s on what leaves ``dev`` in namespace ``ns``: a token-bucket qdisc."""
    rate = gbit * 1e9 / 8  # bytes/s
    burst = max(MIN_BURST_BYTES, int(rate * BURST_S))
    _run(["tc", "-n", ns, "qdisc", "replace", "dev", dev, "root", "tbf", "rate", f"{int(gbit * 1e9)}bit",
          "burst", str(burst), "limit", str(burst + int(rate * QUEUE_S))])


@atexit.register
def _stop_all() -> None:
    """Tear down every cluster still up when the interpreter exits."""
    for cluster in list(_LIVE):
        cluster.stop()


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def _link_option(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--link-gbit", type=float, default=None, metavar="R",
                    help="every host's link rate in Gbit/s, each direction (default: unlimited)")


def main(argv: list[str] | None = None) -> int:
    prog = "python -m ddqn.distributed.hosts"
    args, job = parse_job_args(prog, __doc__.splitlines()[0],
                               "worker hosts, one one-core Spark worker each (default 2)", argv, _link_option)
    if (why := unavailable()) is not None:
        print(f"{prog}: error: {why}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM tears down as Ctrl-C does
    with HostsCluster(args.workers, link_gbit=args.link_gbit) as cluster:
        print(f"hosts up: master {cluster.master.addr} ({cluster.master_url}), driver and parameter server "
              f"{cluster.driver.addr} (ports {SERVER_PORT} and {SERVER_PORT + 1}), workers "
              f"{', '.join(h.addr for h in cluster.worker_hosts)}; links "
              f"{'unlimited' if args.link_gbit is None else f'{args.link_gbit:g} Gbit/s each way'}; "
              f"namespaces {cluster.tag}-*", flush=True)
        print(f"spark-submit: {' '.join(cluster.submit_command(job))}", flush=True)
        proc = cluster.submit(job, stdout=None)
        try:
            return wait_job(proc, args.timeout, grace=90)
        finally:
            print("hosts down", flush=True)


if __name__ == "__main__":
    sys.exit(main())
