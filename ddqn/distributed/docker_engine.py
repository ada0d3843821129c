"""A Docker engine of ddqn's own, for the docker-compose cluster (docker/) on a machine with no Docker daemon.

    python -m ddqn.distributed.docker_engine install   # docker.io, Compose v2 and buildx, debootstrap (apt-get)
    python -m ddqn.distributed.docker_engine image     # base image debian:12 (debootstrap), then ddqn:local
    python -m ddqn.distributed.docker_engine run -- make cluster-up cluster-train cluster-results cluster-down
    python -m ddqn.distributed.docker_engine clean     # what a killed run left: its daemon, its namespace

The daemon is ours alone: its own socket, data root (``/var/lib/ddqn-docker``), exec root and pid file, no
iptables rules, no default bridge, containers under the cgroup ``ddqn-docker``. It is started by
:class:`Engine`, waited for (bounded), and stopped by its process id; whatever still runs with our exec root in
its command line, or in our cgroup, is then killed by id. It runs in one of two places:

- **the machine's namespace, for building** (``isolated=False``): ``docker build --network host`` runs
  ``make install`` inside the image, which needs the package registries. ``--bridge=none`` adds no interface.
- **a network namespace of ours, for the cluster** (``isolated=True``): ``nsenter
  --net=/run/netns/ddqn-<pid>-<n>-docker dockerd …``. Compose's bridge network, the containers' veths and the
  published ports exist only there, and the namespace is deleted at :meth:`Engine.stop` (ddqn.distributed.hosts
  sweeps one left by a run killed with -9). Containers reach each other by name through Docker's embedded DNS,
  which works without the daemon's iptables rules.

No image can be pulled here, so the base image is made from a debootstrap root of Debian 12, with this machine's
package-client configuration (apt sources and options, pip's configuration, extra CA certificates), as
``fresh-debian`` makes its roots: ``tar -C ROOT -c . | docker import - debian:12``. Compose v2 and buildx are
Debian 13's packages (``docker-compose`` 2.26, ``docker-buildx`` 0.13): Debian 12 has only Compose v1, and their
.debs need nothing but libc6 ≥ 2.34, so on Debian 12 they are fetched with ``apt-get download`` from the
machine's own mirror under the suite name trixie and installed beside Debian 12's ``docker.io`` (Engine 20.10).
Needs root.
"""
from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ddqn.distributed.hosts import PREFIX, netns_pids, sweep_stale

REPO = Path(__file__).resolve().parents[2]
STATE = Path("/var/lib/ddqn-docker")  # data root (engine/), the daemon's log; the base root while it is made
RUN = Path("/run/ddqn-docker")  # socket, pid file, exec root (the managed containerd and its shims)
IMAGE = "ddqn:local"
BASE_IMAGE = "debian:12"
BASE_SUITE = "bookworm"
COMPOSE_SUITE = "trixie"  # Debian 13: Compose v2 and buildx as packages
ENGINE_PACKAGES = ("docker.io", "debootstrap")  # Debian 12's docker.io has the docker command too
CLI_PACKAGE_13 = "docker-cli"  # Debian 13 packages the docker command apart (docker.io only recommends it)
COMPOSE_PACKAGES = ("docker-compose", "docker-buildx")
CGROUP_PARENT = "ddqn-docker"
ADDRESS_POOL = "base=10.90.0.0/16,size=24"  # compose's networks: inside the namespace only
SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
COMMAND_TIMEOUT_S = 300.0  # one docker, apt-get or ip command
BUILD_TIMEOUT_S = 3600.0  # the image build: Debian packages, the venv, Caffe compiled
DEBOOTSTRAP_TIMEOUT_S = 1200.0
_SERIAL = itertools.count(1)
DOCKER_LINK = re.compile(r"docker0|br-[0-9a-f]{12}|veth[0-9a-f]{7}")  # the names of the interfaces Docker makes


class EngineError(RuntimeError):
    """A step failed: the message is one line naming the command."""


def refusal() -> str | None:
    """Why this machine cannot run the engine (one line), or None."""
    if os.geteuid() != 0:
        return "it needs root: a daemon of its own and a network namespace (`make test-compose` uses sudo)"
    if debian_version() not in ("12", "13"):
        return "supported on Debian 12 and Debian 13 only (docs/clusters.md)"
    return None


def debian_version(os_release: Path = Path("/etc/os-release")) -> str | None:
    try:
        info = dict(line.split("=", 1) for line in os_release.read_text().splitlines() if "=" in line)
    except OSError:
        return None
    return info.get("VERSION_ID", "").strip('"') if info.get("ID") == "debian" else None


def run(argv: list[str], timeout: float = COMMAND_TIMEOUT_S, check: bool = True, **kw) -> subprocess.CompletedProcess:
    """``argv``, bounded in time, output captured; a failure (when ``check``) is an EngineError in one line."""
    kw.setdefault("capture_output", "stdout" not in kw)
    try:
        res = subprocess.run(argv, text=True, timeout=timeout, **kw)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EngineError(f"{' '.join(argv[:6])}: {exc}") from exc
    if check and res.returncode != 0:
        lines = [ln.strip() for ln in (res.stderr or res.stdout or "").splitlines() if ln.strip()]
        errors = [ln for ln in lines if "error" in ln.lower()] or lines or [f"exit code {res.returncode}"]
        raise EngineError(f"{' '.join(argv[:6])}: {errors[-1][-300:]}")
    return res


# -- installing ---------------------------------------------------------------------------------------------
def package_version(name: str) -> str | None:
    res = run(["dpkg-query", "-W", "-f", "${Status} ${Version}", name], check=False)
    return res.stdout.split()[-1] if res.returncode == 0 and "install ok installed" in res.stdout else None


def missing_packages() -> list[str]:
    """Packages to install: the engine's, and Compose v2 and buildx unless present (Compose v1 counts as missing)."""
    engine = (*ENGINE_PACKAGES, CLI_PACKAGE_13) if debian_version() == "13" else ENGINE_PACKAGES
    missing = [p for p in engine if package_version(p) is None]
    compose = package_version("docker-compose")
    if compose is None or compose.split(":")[-1].startswith("1."):
        missing.append("docker-compose")
    return missing + [p for p in COMPOSE_PACKAGES[1:] if package_version(p) is None]


def suite_apt_options(suite: str, tmp: Path, sources: Path = SOURCES) -> list[str]:
    """apt options that see only this machine's mirror under ``suite``, with lists and caches kept in ``tmp``:
    the machine's own apt state is not touched."""
    parts = tmp / "sources.list.d"
    for d in (parts, tmp / "lists" / "partial", tmp / "cache" / "archives" / "partial"):
        d.mkdir(parents=True, exist_ok=True)
    text = sources.read_text()
    (parts / "debian.sources").write_text(re.sub(rf"\b{BASE_SUITE}\b", suite, text))
    return ["-o", "Dir::Etc::SourceList=/dev/null", "-o", f"Dir::Etc::SourceParts={parts}",
            "-o", f"Dir::State::Lists={tmp / 'lists'}", "-o", f"Dir::Cache={tmp / 'cache'}"]


@contextlib.contextmanager
def no_service_start(path: Path = Path("/usr/sbin/policy-rc.d")):
    """While installing, no package starts its service (the system's dockerd would put its bridge and iptables
    rules in the machine's namespace): a policy-rc.d that says no, unless one is there already."""
    made = not path.exists()
    if made:
        path.write_text("#!/bin/sh\n# ddqn.distributed.docker_engine: no service starts while it installs\nexit 101\n")
        path.chmod(0o755)
    try:
        yield
    finally:
        if made:
            path.unlink(missing_ok=True)


def install(log=print) -> list[str]:
    """Install what is missing (see :func:`missing_packages`); returns the packages installed."""
    missing = missing_packages()
    if not missing:
        return []
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    apt = ["apt-get", "install", "-y", "-qq", "--no-install-recommends"]
    log(f"[docker-engine] installing: {' '.join(missing)}")
    with no_service_start():
        run(["apt-get", "update", "-qq"], env=env)
        if engine := [p for p in missing if p not in COMPOSE_PACKAGES]:
            run([*apt, *engine], env=env)
        compose = [p for p in missing if p in COMPOSE_PACKAGES]
        if compose and debian_version() == "13":
            run([*apt, *compose], env=env)
        elif compose:  # Debian 12: Debian 13's .debs (they need only libc6 >= 2.34)
            with tempfile.TemporaryDirectory(prefix="ddqn-apt-") as tmp:
                opts = suite_apt_options(COMPOSE_SUITE, Path(tmp))
                run(["apt-get", *opts, "update", "-qq"], env=env)
                debs = Path(tmp) / "debs"
                debs.mkdir()
                run(["apt-get", *opts, "download", *compose], cwd=debs, env=env)
                run([*apt, *sorted(str(p) for p in debs.glob("*.deb"))], env=env)
    return missing


# -- the daemon ---------------------------------------------------------------------------------------------
class Engine:
    """A dockerd of our own (see the module's docstring); a context manager that always stops it.

    Args:
        isolated: run the daemon in a network namespace of ours (the cluster), else in the machine's (building).
        state: its data root's parent and its log's directory.
        rundir: its socket, pid file and exec root.
    """

    def __init__(self, isolated: bool, state: Path = STATE, rundir: Path = RUN,
                 start_timeout: float = START_TIMEOUT_S) -> None:
        self.isolated, self.state, self.rundir, self.start_timeout = isolated, state, rundir, start_timeout
        self.netns = f"{PREFIX}-{os.getpid()}-{next(_SERIAL)}-docker" if isolated else None
        self.proc: subprocess.Popen | None = None
        self.killed: list[str] = []  # what stop() had to kill by id (command lines)

    @property
    def socket(self) -> Path:
        return self.rundir / "docker.sock"

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    def dockerd_argv(self) -> list[str]:
        return ["dockerd", "--host", self.host, "--data-root", str(self.state / "engine"),
                "--exec-root", str(self.rundir / "exec"), "--pidfile", str(self.rundir / "dockerd.pid"),
                "--config-file", str(self.rundir / "daemon.json"), "--iptables=false", "--ip-masq=false",
                "--bridge=none", "--cgroup-parent", CGROUP_PARENT, "--default-address-pool", ADDRESS_POOL]

    def argv(self) -> list[str]:
        """dockerd, in our network namespace when isolated: ``nsenter --net`` enters the network namespace alone
        (``ip netns exec`` would also remount /sys, hiding the cgroup hierarchy dockerd needs)."""
        if not self.isolated:
            return self.dockerd_argv()
        return ["nsenter", f"--net=/run/netns/{self.netns}", "--", *self.dockerd_argv()]

    def env(self) -> dict[str, str]:
        """The environment of docker and compose commands for this daemon."""
        env = {k: v for k, v in os.environ.items() if k not in ("DOCKER_CONTEXT", "DOCKER_CONFIG")}
        return dict(env, DOCKER_HOST=self.host, DOCKER_BUILDKIT="1", DOCKER_CONFIG=str(self.rundir / "client"))

    def docker(self, *args: str, timeout: float = COMMAND_TIMEOUT_S, check: bool = True,
               **kw) -> subprocess.CompletedProcess:
        return run(["docker", *args], timeout=timeout, check=check, env=self.env(), **kw)

    def start(self) -> Engine:
        """Start the daemon and return once it answers (else stop what was started and raise)."""
        clean(self.rundir, self.state)
        for d in (self.rundir / "client", self.state):
            d.mkdir(parents=True, exist_ok=True)
        (self.rundir / "daemon.json").write_text("{}\n")
        links = machine_links()
        if not self.isolated:  # networks a killed cluster run left in the store: their bridges would be remade here
            shutil.rmtree(self.state / "engine" / "network", ignore_errors=True)
        try:
            if self.isolated:
                run(["ip", "netns", "add", self.netns])
                run(["ip", "-n", self.netns, "link", "set", "lo", "up"])
            with open(self.state / "dockerd.log", "ab") as log:
                self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, start_new_session=True)
            deadline = time.monotonic() + self.start_timeout
            while not self.answers():
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise EngineError(f"dockerd did not answer within {self.start_timeout:g} s: "
                                      f"{self.log_tail() or 'no output'} (log {self.state / 'dockerd.log'})")
                time.sleep(0.5)
            if not self.isolated:  # containers of a killed cluster run: their network is gone with the store
                self.docker("container", "prune", "-f")
            if new := sorted(machine_links() - links):  # never expected: an interface appeared here
                made = [n for n in new if DOCKER_LINK.fullmatch(n)]  # Docker's: deleted; another's: left alone
                for link in made:
                    run(["ip", "link", "del", link], check=False)
                raise EngineError(f"{', '.join(new)} appeared in the machine's namespace while dockerd started "
                                  f"(Docker's deleted: {', '.join(made) or 'none'}); stopping it")
        except BaseException:
            self.stop()
            raise
        return self

    def answers(self) -> bool:
        """Whether the daemon answers on its socket now (a probe of at most 10 s)."""
        try:
            return self.docker("version", "--format", "{{.Server.Version}}", check=False, timeout=10).returncode == 0
        except EngineError:  # the probe timed out
            return False

    def log_tail(self) -> str:
        try:
            lines = (self.state / "dockerd.log").read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return lines[-1][-300:] if lines else ""

    def stop(self) -> None:
        """SIGTERM the daemon by its id (SIGKILL after STOP_TIMEOUT_S), kill by id whatever of ours still runs,
        delete our namespace. Safe to call twice."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.proc = None
        self.killed += kill(ours(self.rundir))
        if self.netns:
            self.killed += kill(netns_pids(self.netns))
            run(["ip", "netns", "del", self.netns], check=False)
        for p in (self.socket, self.rundir / "dockerd.pid"):
            p.unlink(missing_ok=True)
        unmount(self.state, self.rundir)
        remove_cgroups()

    def __enter__(self) -> Engine:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what is left -----------------------------------------------------------------------------------
    def docker_leftovers(self) -> dict[str, list[str]]:
        """What the running daemon still holds beyond the two images: containers, volumes, networks other than
        its built-in ones, images other than ddqn:local and debian:12."""
        found = {
            "containers": self.docker("ps", "-a", "--format", "{{.Names}}").stdout.split(),
            "volumes": self.docker("volume", "ls", "-q").stdout.split(),
            "networks": [n for n in self.docker("network", "ls", "--format", "{{.Name}}").stdout.split()
                         if n not in ("host", "none", "bridge")],
            "images": [i for i in self.docker("image", "ls", "-a", "--format", "{{.Repository}}:{{.Tag}}")
                       .stdout.split() if i not in (IMAGE, BASE_IMAGE)],
        }
        return {k: v for k, v in found.items() if v}

    def leftovers(self) -> dict[str, list[str]]:
        """After :meth:`stop`: processes of ours (by command line or cgroup), our namespace, mounts under our
        directories, our socket."""
        found = {
            "processes": [f"{p} {cmdline(p)}" for p in ours(self.rundir)],
            "namespaces": [self.netns] if self.netns and self.netns in netns_names() else [],
            "mounts": [m for m in mounts() if m.startswith((str(self.state), str(self.rundir)))],
            "socket": [str(self.socket)] if self.socket.exists() else [],
            "cgroups": [str(d) for d in cgroups()],
        }
        return {k: v for k, v in found.items() if v}


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def ours(rundir: Path = RUN) -> list[int]:
    """Processes of our engine: those whose command line names our run directory (dockerd, its containerd and
    shims) and those in our cgroup (the containers' processes)."""
    pids = {int(p.name) for p in Path("/proc").iterdir()
            if p.name.isdigit() and int(p.name) != os.getpid() and str(rundir) in cmdline(int(p.name))}
    for procs in Path("/sys/fs/cgroup").glob(f"*/{CGROUP_PARENT}/**/cgroup.procs"):
        with contextlib.suppress(OSError):
            pids |= {int(x) for x in procs.read_text().split()}
    return sorted(pids)


def cgroups() -> list[Path]:
    """Our cgroup directories (``<controller>/ddqn-docker`` and the containers' below it), deepest first."""
    found = [d for top in Path("/sys/fs/cgroup").glob(f"*/{CGROUP_PARENT}") for d in (top, *top.rglob("*"))
             if d.is_dir()]
    return sorted(found, key=lambda d: len(d.parts), reverse=True)


def remove_cgroups() -> None:
    """rmdir our cgroups once no process is in them (a cgroup directory is removed by rmdir alone)."""
    for d in cgroups():
        with contextlib.suppress(OSError):
            d.rmdir()


def kill(pids: list[int], timeout: float = 10.0) -> list[str]:
    """SIGKILL each process by its id and wait (bounded) until they are gone; returns their command lines."""
    killed = []
    for pid in pids:
        line = cmdline(pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            killed.append(f"{pid} {line[:200]}")
    deadline = time.monotonic() + timeout
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return killed


def alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def machine_links() -> set[str]:
    """Interfaces of this process's network namespace (the machine's)."""
    res = run(["ip", "-o", "link", "show"], check=False)
    return {line.split(":")[1].strip().split("@")[0] for line in res.stdout.splitlines() if ":" in line}


def netns_names() -> list[str]:
    res = run(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in res.stdout.splitlines() if line.strip()]


def mounts() -> list[str]:
    """Mount points in this process's mount namespace."""
    try:
        return [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    except OSError:
        return []


def unmount(*dirs: Path) -> list[str]:
    """Lazily unmount, deepest first, what is still mounted under ``dirs`` (a daemon killed with -9 leaves its
    containers' overlay mounts); returns the mount points."""
    found = sorted({m for m in mounts() if m.startswith(tuple(f"{d}/" for d in dirs))}, key=len, reverse=True)
    for m in found:
        run(["umount", "--lazy", m], check=False)
    return found


def clean(rundir: Path = RUN, state: Path = STATE) -> list[str]:
    """What a killed run left: our namespaces whose process is gone (with what runs in them), any process of our
    engine (a daemon from an earlier run of this machine), mounts under our directories and our empty cgroups.
    Returns what was removed, killed or unmounted."""
    done = sweep_stale() + kill(ours(rundir))
    done += unmount(state, rundir)
    remove_cgroups()
    # a killed daemon's files: no daemon of ours runs now (a new dockerd would take a stale containerd.pid whose
    # number is in use again for a containerd of its own, and wait for it forever)
    for path in (rundir / "docker.sock", rundir / "dockerd.pid", rundir / "exec" / "containerd" / "containerd.pid"):
        if path.exists():
            path.unlink()
            done.append(str(path))
    return done


# -- images -------------------------------------------------------------------------------------------------
def machine_mirror(sources: Path = SOURCES) -> str:
    """The Debian mirror this machine's apt uses (the first ``URIs:`` of its deb822 sources)."""
    try:
        m = re.search(r"^URIs:\s*(\S+)", sources.read_text(), re.M)
    except OSError:
        m = None
    if m is None:
        raise EngineError(f"no Debian mirror in {sources} (debootstrap needs one)")
    return m.group(1)


def debootstrap_argv(root: Path, mirror: str, suite: str = BASE_SUITE) -> list[str]:
    return ["debootstrap", "--variant=minbase", suite, str(root), mirror]


def import_argv() -> list[str]:
    return ["docker", "import", "--change", 'CMD ["bash"]', "-", BASE_IMAGE]


def configure_root(root: Path, sources: Path = SOURCES) -> None:
    """This machine's package-client configuration in ``root``, as fresh-debian does: apt's sources and
    options, pip's configuration, the extra CA certificates (installed by ca-certificates when the Dockerfile
    installs it)."""
    (root / "etc/apt/sources.list").unlink(missing_ok=True)  # debootstrap's; the deb822 file replaces it
    (root / "etc/apt/sources.list.d").mkdir(parents=True, exist_ok=True)
    shutil.copy(sources, root / "etc/apt/sources.list.d/debian.sources")
    for conf in Path("/etc/apt/apt.conf.d").glob("99*"):
        shutil.copy(conf, root / "etc/apt/apt.conf.d" / conf.name)
    if Path("/etc/pip.conf").is_file():
        shutil.copy("/etc/pip.conf", root / "etc/pip.conf")
    certs = root / "usr/local/share/ca-certificates"
    certs.mkdir(parents=True, exist_ok=True)
    for crt in Path("/usr/local/share/ca-certificates").glob("*.crt"):
        shutil.copy(crt, certs / crt.name)
    for d in ("var/lib/apt/lists", "var/cache/apt/archives"):
        for f in (root / d).glob("*"):
            if f.is_file():
                f.unlink()


def base_image(engine: Engine, log=print) -> str:
    """debian:12 in ``engine``: reused when there, else imported from a debootstrap root (made, or reused when
    a finished one is there) and the root removed. Returns "reused" or "imported"."""
    if engine.docker("image", "inspect", BASE_IMAGE, check=False).returncode == 0:
        return "reused"
    root = engine.state / "debian-12-root"
    done = root / ".ddqn-debootstrap-ok"
    if not done.exists():
        log(f"[docker-engine] debootstrap {BASE_SUITE} into {root}")
        shutil.rmtree(root, ignore_errors=True)
        run(debootstrap_argv(root, machine_mirror()), timeout=DEBOOTSTRAP_TIMEOUT_S)
        done.touch()
    configure_root(root)
    tar = subprocess.Popen(["tar", "--numeric-owner", "--exclude=./.ddqn-debootstrap-ok", "-C", str(root), "-c", "."],
                           stdout=subprocess.PIPE)
    try:
        run(import_argv(), stdin=tar.stdout, env=engine.env())
    finally:
        tar.stdout.close()
        tar.wait(timeout=60)
    shutil.rmtree(root)
    return "imported"


def dockerfile_problem(dockerfile: Path) -> str | None:
    """Why ``dockerfile`` cannot be built here (one line), or None: a ``# syntax=`` directive makes BuildKit
    pull a frontend image, and no container registry is reachable."""
    for line in dockerfile.read_text().splitlines():
        if not line.startswith("#"):
            return None
        if re.match(r"#\s*syntax\s*=", line):
            return f"{dockerfile}: `{line.strip()}` makes BuildKit pull a frontend image; no registry is reachable"
    return None


def build_argv(repo: Path = REPO) -> list[str]:
    """ddqn:local from docker/Dockerfile, the repository as context, RUN steps on the machine's network (the
    image's `make install` reaches the package registries)."""
    return ["docker", "build", "--network", "host", "-f", str(repo / "docker" / "Dockerfile"), "-t", IMAGE, str(repo)]


def build(engine: Engine, repo: Path = REPO, log=print) -> float:
    """Build ddqn:local (the base image first); returns the build's seconds. The image a rebuild replaces is
    removed (no dangling image stays)."""
    if why := dockerfile_problem(repo / "docker" / "Dockerfile"):
        raise EngineError(why)
    log(f"[docker-engine] base image {BASE_IMAGE}: {base_image(engine, log)}")
    start = time.monotonic()
    log(f"[docker-engine] {' '.join(build_argv(repo))}")
    with open(engine.state / "build.log", "w") as out:
        res = run(build_argv(repo), timeout=BUILD_TIMEOUT_S, check=False, env=engine.env(), stdout=out,
                  stderr=subprocess.STDOUT)
    if res.returncode != 0:
        raise EngineError(f"docker build failed (exit code {res.returncode}); log {engine.state / 'build.log'}")
    engine.docker("image", "prune", "-f")
    leaked = engine.docker("run", "--rm", "--network", "none", IMAGE, "sh", "-c",
                           "for p in .git runs results .pytest_cache; do [ -e $p ] && echo $p; done; true")
    if leaked.stdout.split():
        raise EngineError(f"{IMAGE} holds {' '.join(leaked.stdout.split())} from the build context: the builder did "
                          f"not apply docker/Dockerfile.dockerignore (BuildKit is needed)")
    return time.monotonic() - start


def compose_down_argv(repo: Path = REPO, volumes: bool = False) -> list[str]:
    return ["docker", "compose", "-f", str(repo / "docker" / "docker-compose.yml"), "down", "--remove-orphans",
            *(["--volumes"] if volumes else [])]


# -- the command ------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    prog = "python -m ddqn.distributed.docker_engine"
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["install", "image", "run", "clean"])
    ap.add_argument("command", nargs=argparse.REMAINDER, help="run: the command, after --")
    args = ap.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if args.what == "run" and not command:
        print(f"{prog}: error: run needs a command after --", file=sys.stderr)
        return 2
    if (why := refusal()) is not None:
        print(f"{prog}: error: {why}", file=sys.stderr)
        return 2
    try:
        if args.what == "install":
            print(f"[docker-engine] installed: {' '.join(install()) or 'nothing (all there)'}")
        elif args.what == "clean":
            print(f"[docker-engine] removed: {'; '.join(clean()) or 'nothing'}")
        elif args.what == "image":
            install()
            with Engine(isolated=False) as engine:
                print(f"[docker-engine] {IMAGE} built in {build(engine):.0f} s")
        else:
            with Engine(isolated=True) as engine:
                print(f"[docker-engine] dockerd in namespace {engine.netns}: DOCKER_HOST={engine.host}", flush=True)
                try:
                    return subprocess.run(command, env=engine.env()).returncode
                finally:
                    run(compose_down_argv(), check=False, env=engine.env())
    except (EngineError, OSError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
