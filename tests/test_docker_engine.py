"""ddqn.distributed.docker_engine without a daemon: the command lines it runs, its one-line refusals, the base
image's configuration, and the deselection of the compose-cluster tests (tests/test_compose_cluster.py runs them
for real, `make test-compose`)."""
from __future__ import annotations

import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import compose_deselection

from ddqn.distributed import docker_engine as de
from ddqn.distributed.hosts import _STALE

ROOT = Path(__file__).resolve().parent.parent


def test_dockerd_is_ours_alone_without_iptables_or_bridge(tmp_path: Path) -> None:
    engine = de.Engine(isolated=False, state=tmp_path / "state", rundir=tmp_path / "run")
    argv = engine.argv()
    assert argv[0] == "dockerd" and engine.netns is None
    opts = {a: argv[i + 1] for i, a in enumerate(argv) if a.startswith("--") and "=" not in a}
    assert opts["--host"] == f"unix://{tmp_path}/run/docker.sock" == engine.host
    assert opts["--data-root"] == f"{tmp_path}/state/engine" and opts["--exec-root"] == f"{tmp_path}/run/exec"
    assert opts["--pidfile"] == f"{tmp_path}/run/dockerd.pid" and opts["--cgroup-parent"] == de.CGROUP_PARENT
    assert opts["--config-file"] == f"{tmp_path}/run/daemon.json"  # not /etc/docker/daemon.json
    assert {"--iptables=false", "--ip-masq=false", "--bridge=none"} <= set(argv)
    assert opts["--default-address-pool"].startswith("base=10.90.")
    env = engine.env()
    assert env["DOCKER_HOST"] == engine.host and env["DOCKER_BUILDKIT"] == "1" and "DOCKER_CONTEXT" not in env


def test_the_clusters_daemon_runs_in_a_namespace_of_ours(tmp_path: Path) -> None:
    """nsenter --net only (ip netns exec would remount /sys and hide the cgroups); the namespace is named so that
    ddqn.distributed.hosts sweeps it when the run that made it was killed."""
    engine = de.Engine(isolated=True, state=tmp_path, rundir=tmp_path)
    argv = engine.argv()
    assert argv[:3] == ["nsenter", f"--net=/run/netns/{engine.netns}", "--"] and argv[3:] == engine.dockerd_argv()
    assert re.fullmatch(rf"ddqn-{__import__('os').getpid()}-\d+-docker", engine.netns)
    assert _STALE.match(engine.netns)
    assert de.Engine(isolated=True).netns != engine.netns


def test_build_and_compose_command_lines() -> None:
    argv = de.build_argv(ROOT)
    assert argv[:2] == ["docker", "build"] and argv[argv.index("--network") + 1] == "host"
    assert argv[argv.index("-f") + 1] == str(ROOT / "docker" / "Dockerfile") and argv[-1] == str(ROOT)
    assert argv[argv.index("-t") + 1] == "ddqn:local" == de.IMAGE
    assert de.import_argv()[:2] == ["docker", "import"] and de.import_argv()[-2:] == ["-", "debian:12"]
    down = de.compose_down_argv(ROOT, volumes=True)
    assert down[:4] == ["docker", "compose", "-f", str(ROOT / "docker" / "docker-compose.yml")]
    assert down[4:] == ["down", "--remove-orphans", "--volumes"] and "--volumes" not in de.compose_down_argv(ROOT)
    root = Path("/tmp/r")
    assert de.debootstrap_argv(root, "http://mirror.invalid/debian") == [
        "debootstrap", "--variant=minbase", "bookworm", "/tmp/r", "http://mirror.invalid/debian"]


def test_the_dockerfile_pulls_no_frontend(tmp_path: Path) -> None:
    """A `# syntax=` line makes BuildKit pull a frontend image: refused in one line; the repository's has none."""
    assert de.dockerfile_problem(ROOT / "docker" / "Dockerfile") is None
    bad = tmp_path / "Dockerfile"
    bad.write_text("# syntax=docker/dockerfile:1\nFROM debian:12\n")
    why = de.dockerfile_problem(bad)
    assert why is not None and "\n" not in why and "pull a frontend image" in why
    bad.write_text("FROM debian:12\n# syntax=docker/dockerfile:1\n")  # not a directive after the first line
    assert de.dockerfile_problem(bad) is None


def test_the_machines_mirror_and_another_suite(tmp_path: Path) -> None:
    sources = tmp_path / "debian.sources"
    sources.write_text("Types: deb\nURIs: http://mirror.invalid/debian\nSuites: bookworm bookworm-updates\n"
                       "Components: main\n\nTypes: deb\nURIs: http://mirror.invalid/debian-security\n"
                       "Suites: bookworm-security\n")
    assert de.machine_mirror(sources) == "http://mirror.invalid/debian"
    opts = de.suite_apt_options("trixie", tmp_path / "apt", sources)
    written = (tmp_path / "apt" / "sources.list.d" / "debian.sources").read_text()
    assert "bookworm" not in written and "Suites: trixie trixie-updates" in written and "trixie-security" in written
    assert f"Dir::State::Lists={tmp_path}/apt/lists" in opts and "Dir::Etc::SourceList=/dev/null" in opts
    sources.write_text("# nothing here\n")
    with pytest.raises(de.EngineError, match="no Debian mirror"):
        de.machine_mirror(sources)


def test_compose_v1_counts_as_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    versions = {"docker.io": "20.10.24+dfsg1-1+deb12u1+b6", "debootstrap": "1.0.128", "docker-compose": "1.29.2-3"}
    monkeypatch.setattr(de, "package_version", versions.get)
    monkeypatch.setattr(de, "debian_version", lambda: "12")
    assert de.missing_packages() == ["docker-compose", "docker-buildx"]
    versions |= {"docker-compose": "2.26.1-4", "docker-buildx": "0.13.1+ds1-3"}
    assert de.missing_packages() == []
    del versions["docker.io"]
    assert de.missing_packages() == ["docker.io"]
    monkeypatch.setattr(de, "debian_version", lambda: "13")  # the docker command is a package of its own there
    assert de.missing_packages() == ["docker.io", "docker-cli"]


def test_no_service_starts_while_installing(tmp_path: Path) -> None:
    policy = tmp_path / "policy-rc.d"
    with de.no_service_start(policy):
        assert policy.read_text().rstrip().endswith("exit 101") and policy.stat().st_mode & 0o111
    assert not policy.exists()
    policy.write_text("#!/bin/sh\nexit 0\n")  # the machine's own: left as it was
    with de.no_service_start(policy):
        pass
    assert policy.read_text() == "#!/bin/sh\nexit 0\n"


def test_debian_version(tmp_path: Path) -> None:
    release = tmp_path / "os-release"
    release.write_text('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n')
    assert de.debian_version(release) == "12"
    release.write_text('ID=ubuntu\nVERSION_ID="24.04"\n')
    assert de.debian_version(release) is None
    assert de.debian_version(tmp_path / "missing") is None


def one_line_error(capsys: pytest.CaptureFixture, rc: int) -> str:
    err = capsys.readouterr().err
    assert rc != 0 and err.count("\n") == 1 and err.startswith("python -m ddqn.distributed.docker_engine: error: ")
    return err


def test_refusals_are_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(de.os, "geteuid", lambda: 1000)
    for what in ("install", "image", "clean"):
        assert "it needs root" in one_line_error(capsys, de.main([what]))
    assert "needs a command after --" in one_line_error(capsys, de.main(["run"]))
    monkeypatch.setattr(de.os, "geteuid", lambda: 0)
    monkeypatch.setattr(de, "debian_version", lambda: "11")
    assert "Debian 12 and Debian 13 only" in one_line_error(capsys, de.main(["install"]))
    with pytest.raises(SystemExit):
        de.main(["launch"])


def test_a_failed_command_is_one_line() -> None:
    with pytest.raises(de.EngineError) as err:
        de.run([sys.executable, "-c", "import sys; print('a\\nerror: the reason\\nmore help', file=sys.stderr); "
                                      "sys.exit(3)"])
    assert str(err.value).endswith("error: the reason") and "\n" not in str(err.value)
    with pytest.raises(de.EngineError, match="timed out"):
        de.run(["sleep", "5"], timeout=0.2)


def test_compose_tests_are_deselected_unless_asked_for() -> None:
    reason = compose_deselection("", None)
    assert reason is not None and "-m compose" in reason and "make test-compose" in reason
    assert compose_deselection("hosts", None) == reason
    assert compose_deselection("compose", None) is None
    assert compose_deselection("compose", "it needs root") == "it needs root"
    assert compose_deselection("hosts or compose", None) is None


def test_a_plain_run_deselects_them_and_says_why() -> None:
    """pytest without -m collects tests/test_compose_cluster.py and deselects its tests, saying so at the end."""
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          str(ROOT / "tests" / "test_compose_cluster.py")], capture_output=True, text=True,
                         timeout=120, cwd=ROOT)
    assert res.returncode == 5, res.stdout[-2000:]  # no tests ran
    assert re.search(r"^deselected 3 compose-cluster tests: they run only with -m compose", res.stdout, re.M), \
        res.stdout[-2000:]


def test_make_targets() -> None:
    """`make test` does not ask for the compose tests; `make test-compose` does, alone; cluster-up builds unless
    COMPOSE_BUILD= (the engine module built the image); cluster-train reads without a terminal."""
    makefile = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    recipe = {m.group(1): m.group(2) for m in re.finditer(r"^([\w-]+):.*\n\t(.*)$", makefile, re.M)}
    test = shlex.split(recipe["test"])
    assert "-m" not in test[test.index("pytest"):] and "compose" not in recipe["test"]
    compose = shlex.split(recipe["test-compose"])
    compose = compose[compose.index("pytest"):]
    assert compose[compose.index("-m") + 1] == "compose" and compose[-1] == "tests/test_compose_cluster.py"
    assert re.search(r"^COMPOSE_BUILD \?= --build$", makefile, re.M)
    assert "up -d $(COMPOSE_BUILD) --wait" in recipe["cluster-up"]
    assert "$$([ -t 0 ] || echo -T) submit" in recipe["cluster-train"]
    assert re.search(r"^COMPOSE := docker compose ", makefile, re.M), "Compose v2"


def test_alive_and_kill() -> None:
    """kill() ends a process by its id and waits until it is gone (a zombie counts as gone)."""
    proc = subprocess.Popen(["sleep", "30"])
    for _ in range(100):  # until the child has exec'd (its command line is empty before)
        if de.cmdline(proc.pid) == "sleep 30":
            break
        time.sleep(0.05)
    assert de.alive(proc.pid)
    killed = de.kill([proc.pid])
    assert killed and killed[0].startswith(f"{proc.pid} sleep 30") and not de.alive(proc.pid)
    proc.wait()
    assert de.kill([proc.pid]) == [] and not de.alive(proc.pid)


def test_only_dockers_interfaces_would_be_deleted() -> None:
    for name in ("docker0", "br-5e9501bbccd7", "veth1a2b3c4"):
        assert de.DOCKER_LINK.fullmatch(name), name
    for name in ("eth0", "lo", "ifb0", "br0", "h-master", "br-5e95"):
        assert not de.DOCKER_LINK.fullmatch(name), name
