"""docker/: the image and the docker-compose Spark cluster, checked without a Docker engine.

The compose services must run the very commands of the loopback standalone cluster (ddqn/cluster.py,
exercised by the cluster tests), differing only in host names and ports, and the image must be built by
the one install recipe (``make install``). The multi-host helper (ddqn/distributed/hosts.py: network namespaces as
hosts, exercised by tests/test_hosts.py) runs the same commands again, with each host's address for the
service's host name and the same ports. These tests parse the files and fail when they drift apart.
"""
from __future__ import annotations

import inspect
import re
import shlex
from pathlib import Path

import pytest
import yaml

from ddqn.config import NAMED_CONFIGS, load_config
from ddqn.distributed.cluster import (
    MASTER_CLASS,
    WORKER_CLASS,
    LocalCluster,
    master_command,
    spark_home,
    worker_command,
)
from ddqn.distributed.hosts import SERVER_PORT, HostsCluster

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
COMPOSE_FILE = DOCKER / "docker-compose.yml"
DOCKERFILE = DOCKER / "Dockerfile"
IMAGE_HOME = "/opt/ddqn"  # the repository inside the image (Dockerfile WORKDIR)
MASTER_URL = "spark://spark-master:7077"
JOB = "spark_jobs/train.py"

_VAR = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def interpolate(value, env: dict[str, str] | None = None):
    """Compose's variable interpolation with the defaults (``${X:-d}`` → d, ``$$`` → ``$``), recursively."""
    env = env or {}
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if isinstance(value, str):
        parts = value.split("$$")
        return "$".join(_VAR.sub(lambda m: env.get(m.group(1)) or (m.group(2) or ""), p) for p in parts)
    return value


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def compose(raw: dict) -> dict:
    return interpolate(raw)


@pytest.fixture
def local_cluster():
    """A loopback cluster object (never started): the reference for the submit command."""
    cluster = LocalCluster(workers=2)
    yield cluster
    cluster._dir.cleanup()


@pytest.fixture(scope="module")
def services(compose: dict) -> dict:
    return compose["services"]


def normalise(argv: list[str]) -> list[str]:
    """argv with the launcher (spark-class / spark-submit) reduced to its basename, all items as str."""
    return [Path(argv[0]).name, *map(str, argv[1:])]


def worker_argv(service: dict) -> list[str]:
    """The worker's argv: ``sh -c 'exec spark-class …'`` (the shell only fills in the hostname)."""
    cmd = service["command"]
    assert cmd[:2] == ["sh", "-c"] and len(cmd) == 3, cmd
    script = cmd[2].strip()
    assert script.startswith("exec "), "the shell must exec the worker so it receives signals directly"
    return shlex.split(script[len("exec "):])


def options(argv: list[str]) -> tuple[list[str], list[str], dict[str, str]]:
    """spark-submit argv → (launcher + options before the job, job argv, {conf key: value})."""
    i = argv.index(JOB)
    head, job = argv[:i], argv[i:]
    confs = dict(head[k + 1].split("=", 1) for k in range(len(head)) if head[k] == "--conf")
    return head, job, confs


def submit_job(services: dict) -> dict[str, str]:
    """The job's ``--option value`` pairs."""
    _, job, _ = options(services["submit"]["command"])
    return {job[k]: job[k + 1] for k in range(1, len(job) - 1, 2)}


def ports_of(entries) -> list[tuple[str, str]]:
    """Short-syntax ``"HOST:CONTAINER"`` port entries as (host, container)."""
    out = []
    for e in entries or []:
        host, _, container = str(e).rpartition(":")
        out.append((host, container))
    return out


def test_services_and_one_image(raw: dict, services: dict) -> None:
    assert set(services) == {"spark-master", "spark-worker", "submit"}
    images = {s.get("image") for s in services.values()}
    assert len(images) == 1 and None not in images, f"one image for every service, got {images}"
    for name, s in services.items():
        assert s["build"] == {"context": "..", "dockerfile": "docker/Dockerfile"}, name
        assert (COMPOSE_FILE.parent / s["build"]["context"] / s["build"]["dockerfile"]).resolve() == DOCKERFILE
        assert s.get("init") is True, f"{name}: init reaps the JVM's and Python workers' children"
    assert "container_name" not in raw["services"]["spark-worker"]


def test_master_command_is_cluster_master_command(services: dict) -> None:
    cmd = services["spark-master"]["command"]
    assert normalise(cmd) == normalise(master_command("spark-master", 7077, 8080))
    assert cmd[1] == MASTER_CLASS
    assert services["spark-master"]["hostname"] == "spark-master"
    assert ("8080", "8080") in ports_of(services["spark-master"]["ports"]), "the master web UI is published"
    assert "7077" in map(str, services["spark-master"].get("expose", []))


def test_worker_command_is_cluster_worker_command(services: dict) -> None:
    argv = worker_argv(services["spark-worker"])
    assert argv[1] == WORKER_CLASS
    host = argv[argv.index("--host") + 1]
    assert host == "${HOSTNAME}", "each replica must register under its own hostname"
    memory = inspect.signature(LocalCluster).parameters["memory"].default
    assert normalise(argv) == normalise(worker_command(MASTER_URL, host, 1, memory, 8081))


def test_worker_is_scalable(raw: dict, services: dict) -> None:
    worker = services["spark-worker"]
    for key in ("container_name", "hostname", "ports"):
        assert key not in worker, f"spark-worker: {key} would break --scale spark-worker=N"
    assert int(worker["deploy"]["replicas"]) == int(submit_job(services)["--workers"]), \
        "default replicas = default --workers of the job"
    assert raw["services"]["spark-worker"]["deploy"]["replicas"] == "${WORKERS:-2}"


def test_submit_is_cluster_submit_command(services: dict, local_cluster: LocalCluster) -> None:
    """LocalCluster.submit_command with this cluster's master, the submit container's hostname as driver
    host and the compose cores, followed only by extra --conf pairs (fixed driver ports, waiting for
    executors), then the job."""
    head, job, confs = options(services["submit"]["command"])
    ref_head, ref_job, _ = options(local_cluster.submit_command([JOB]))
    assert ref_job == [JOB]
    replace = {"spark.driver.host": "submit", "spark.driver.bindAddress": "submit",
               "spark.cores.max": submit_job(services)["--workers"]}
    expected = ["spark-submit", "--master", MASTER_URL]
    for item in ref_head[3:]:
        key = item.split("=", 1)[0]
        expected.append(f"{key}={replace[key]}" if key in replace else item)
    assert normalise(ref_head)[:2] == expected[:2]
    assert head[:len(expected)] == expected
    extra = head[len(expected):]
    assert extra[::2] == ["--conf"] * (len(extra) // 2) and len(extra) % 2 == 0, extra
    assert services["submit"]["hostname"] == "submit" == confs["spark.driver.host"]


def test_submit_runs_make_train_config(services: dict) -> None:
    _, job, _ = options(services["submit"]["command"])
    assert job == [JOB, "--config", "paper", "--workers", "2", "--minutes", "30", "--out", "/data/runs/train",
                   "--set", "server_port=7078"]
    assert (ROOT / JOB).is_file()
    assert (NAMED_CONFIGS / "paper.yaml").is_file()
    cfg = load_config("paper", ["server_port=7078", "workers=2"])
    assert cfg.server_port == 7078 and cfg.workers == 2


def make_train_mismatches(makefile: str, services: dict) -> list[str] | None:
    """Differences between the Makefile's ``spark-submit spark_jobs/train.py`` recipe and the submit job
    (None when the Makefile has no such recipe)."""
    lines = [ln for ln in makefile.splitlines() if JOB in ln and "spark-submit" in ln]
    if not lines:
        return None
    args = shlex.split(lines[0].strip())
    job = submit_job(services)
    bad = []
    config = args[args.index("--config") + 1]
    if config == "$(CONFIG)":  # `make train CONFIG=…`: its default is the target's `train: CONFIG ?= …`
        default = re.search(r"^train:\s*CONFIG\s*\??=\s*(\S+)", makefile, re.M)
        config = default.group(1) if default else config
    if config != job["--config"]:
        bad.append("--config")
    if "--workers" in args and args[args.index("--workers") + 1].isdigit() and \
            args[args.index("--workers") + 1] != job["--workers"]:
        bad.append("--workers")
    m = re.search(r"^MINUTES\s*\??=\s*(\S+)", makefile, re.M)
    if m and m.group(1) != job["--minutes"]:
        bad.append("--minutes")
    return bad


def test_submit_matches_make_train(services: dict) -> None:
    """The cluster runs `make train`'s config."""
    assert make_train_mismatches((ROOT / "Makefile").read_text(), services) == []


def test_make_train_check_itself(services: dict) -> None:
    recipe = "MINUTES ?= {m}\ntrain: install\n\t$(VENV)/bin/spark-submit spark_jobs/train.py --config {c} " \
             "--workers 2 --minutes $(MINUTES) --out runs/train\n"
    assert make_train_mismatches(recipe.format(m=30, c="paper"), services) == []
    assert make_train_mismatches(recipe.format(m=10, c="small"), services) == ["--config", "--minutes"]
    with_default = "train: CONFIG ?= {d}\n" + recipe.format(m=30, c="$(CONFIG)")
    assert make_train_mismatches(with_default.format(d="paper"), services) == []
    assert make_train_mismatches(with_default.format(d="small"), services) == ["--config"]
    assert make_train_mismatches("test:\n\tpytest\n", services) is None


def test_driver_ports_fixed_and_exposed(services: dict) -> None:
    submit = services["submit"]
    _, job, confs = options(submit["command"])
    cfg = load_config("paper", [job[job.index("--set") + 1]])
    server_port, session_port = cfg.server_port, cfg.server_session_port or cfg.server_port + 1
    fixed = {server_port, session_port, int(confs["spark.driver.port"]), int(confs["spark.driver.blockManager.port"])}
    assert 0 not in fixed and len(fixed) == 4, "parameter server (2), driver RPC and block manager: fixed, distinct"
    assert fixed <= {int(p) for p in submit["expose"]}
    assert ("4040", "4040") in ports_of(submit["ports"]), "driver web UI published"
    assert confs["spark.scheduler.minRegisteredResourcesRatio"] == "1.0", "wait for every worker's executor"


def test_volume_holds_outputs(raw: dict, services: dict) -> None:
    submit = services["submit"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in submit["volumes"]}
    assert "/data" in mounts and mounts["/data"] in raw["volumes"], "a named volume at /data"
    _, job, _ = options(submit["command"])
    assert job[job.index("--out") + 1].startswith("/data/")


def test_health_checks_and_start_order(services: dict) -> None:
    for name in ("spark-master", "spark-worker"):
        test = services[name]["healthcheck"]["test"]
        assert test[0] in ("CMD", "CMD-SHELL") and any("/json/" in part for part in test), name
    worker_check = " ".join(services["spark-worker"]["healthcheck"]["test"])
    assert "http://localhost:8081/json/" in worker_check and "http://spark-master:8080/json/" in worker_check
    assert 'os.environ["HOSTNAME"]' in worker_check, "healthy = registered under the --host it was given"
    assert "http://localhost:8080/json/" in " ".join(services["spark-master"]["healthcheck"]["test"])
    for name in ("spark-worker", "submit"):
        assert services[name]["depends_on"]["spark-master"]["condition"] == "service_healthy", name


def test_health_check_python_is_valid(services: dict) -> None:
    for name in ("spark-master", "spark-worker"):
        test = services[name]["healthcheck"]["test"]
        assert test[1] == f"{IMAGE_HOME}/.venv/bin/python" and test[2] == "-c"
        compile(test[3], f"{name} healthcheck", "exec")


def test_no_secret_configured(raw: dict) -> None:
    """The per-run secret is made by the driver and broadcast with the job: nothing in compose."""
    text = yaml.safe_dump(raw).lower()
    assert "secrets" not in raw
    for s in raw["services"].values():
        env = s.get("environment") or {}
        keys = env if isinstance(env, dict) else [e.split("=")[0] for e in env]
        assert not any("secret" in k.lower() for k in keys)
    assert "secret=" not in text


def test_dockerfile_runs_the_one_install_recipe() -> None:
    text = DOCKERFILE.read_text()
    instructions = [ln.strip() for ln in re.sub(r"\\\n", " ", text).splitlines()
                    if ln.strip() and not ln.lstrip().startswith("#")]
    froms = [ln.split()[1] for ln in instructions if ln.upper().startswith("FROM ")]
    assert len(froms) == 1 and re.fullmatch(r"debian:(12|bookworm)([-.@].*)?", froms[0]), froms
    runs = [ln for ln in instructions if ln.upper().startswith("RUN ")]
    assert any(re.search(r"\bmake install\b", r) for r in runs), "the image must run `make install`"
    # One recipe: the Dockerfile installs nothing the Makefile installs.
    makefile = (ROOT / "Makefile").read_text()
    deb = re.search(r"^DEB_PACKAGES :=(.*?)(?:\n\n|\n[^ \n])", makefile, re.S | re.M).group(1)
    for pkg in deb.replace("\\", " ").split():
        if pkg != "build-essential":
            assert not re.search(rf"(?<![\w.-]){re.escape(pkg)}(?![\w.-])", text), f"{pkg} belongs to make install"
    assert not re.search(r"pip3? install|-m pip|caffe_build", " ".join(runs)), "pip/Caffe belong to make install"
    assert "WORKDIR /opt/ddqn" in instructions
    assert re.search(r"\bDDQN_CACHE=/opt/", text), "the Caffe build must live in the image, not in ~/.cache"


def test_dockerfile_paths_match_the_install() -> None:
    """SPARK_HOME, PATH and PYSPARK_PYTHON point where `make install` puts the venv and pyspark."""
    text = DOCKERFILE.read_text()
    venv = re.search(r"^VENV := (\S+)", (ROOT / "Makefile").read_text(), re.M).group(1)
    debian = re.search(r"^FROM debian:(\S+)", text, re.M).group(1)
    py = {"12": "3.11", "bookworm": "3.11", "13": "3.13", "trixie": "3.13"}[debian]  # each release's python3
    site = f"{IMAGE_HOME}/{venv}/lib/python{py}/site-packages"
    assert re.search(r"SPARK_HOME=(\S+)", text).group(1) == f"{site}/pyspark"
    local = spark_home()  # pyspark's package dir is SPARK_HOME here too: it holds the launch scripts
    assert local.name == "pyspark" and local.parent.name == "site-packages"
    assert (local / "bin" / "spark-class").is_file() and (local / "bin" / "spark-submit").is_file()
    path = re.search(r"PATH=(\S+)", text).group(1).split(":")
    assert path[:2] == [f"{IMAGE_HOME}/{venv}/bin", "${SPARK_HOME}/bin"], path
    assert re.search(rf"PYSPARK_PYTHON={IMAGE_HOME}/{venv}/bin/python\b", text)
    assert f"{IMAGE_HOME}/{venv}/bin/python" in COMPOSE_FILE.read_text(), "health checks use the venv's Python"


def test_dockerignore_keeps_local_state_out() -> None:
    ignore = DOCKERFILE.with_name(DOCKERFILE.name + ".dockerignore")
    patterns = {ln.strip() for ln in ignore.read_text().splitlines() if ln.strip() and not ln.startswith("#")}
    assert {".venv", ".git", "runs", "results"} <= patterns
    assert any("__pycache__" in p for p in patterns)


def test_compose_env_defaults_follow_environment(raw: dict) -> None:
    """WORKERS / MINUTES from the environment (as the Makefile passes them) reach the job and the replicas."""
    env = {"WORKERS": "4", "MINUTES": "5"}
    services = interpolate(raw, env)["services"]
    _, job, confs = options(services["submit"]["command"])
    assert job[job.index("--workers") + 1] == "4" == confs["spark.cores.max"]
    assert job[job.index("--minutes") + 1] == "5"
    assert services["spark-worker"]["deploy"]["replicas"] == "4"


@pytest.fixture
def hosts_cluster() -> HostsCluster:
    """A namespace-hosts cluster object, never started: its commands are known without root or namespaces."""
    return HostsCluster(workers=2)


def on_hosts(argv: list[str], hosts: HostsCluster) -> list[str]:
    """A compose command with each service's host name replaced by the address of its host in ``hosts``."""
    out = []
    for item in map(str, argv):
        item = hosts.master.addr if item == "spark-master" else item
        item = re.sub(r"(?<=//)spark-master(?=:)", hosts.master.addr, item)
        out.append(re.sub(r"(?<==)submit$", hosts.driver.addr, item))
    return out


def test_hosts_helper_runs_the_compose_commands(services: dict, hosts_cluster: HostsCluster) -> None:
    """ddqn.distributed.hosts starts the compose services' very commands, each on its own host: the master's, one
    worker's per worker host (registered under the host's address, its hostname there as $HOSTNAME is in
    compose), and the submit service's spark-submit with the driver host's address and the same fixed ports."""
    hosts = hosts_cluster
    master = services["spark-master"]["command"]
    assert normalise(hosts.master_argv()) == normalise(on_hosts(master, hosts))
    worker = worker_argv(services["spark-worker"])
    for i, host in enumerate(hosts.worker_hosts):
        expected = [host.addr if item == "${HOSTNAME}" else item for item in on_hosts(worker, hosts)]
        assert expected[expected.index("--host") + 1] == host.addr
        assert normalise(hosts.worker_argv(i)) == normalise(expected)
    submit = services["submit"]["command"]
    _, job, _ = options(submit)
    assert job[-2:] == ["--set", f"server_port={SERVER_PORT}"], "the helper fixes the parameter server's port too"
    assert normalise(hosts.submit_command(job[:-2])) == normalise(on_hosts(submit, hosts))
    # the only additions on a host: its network namespace, and its address as its hostname
    for host, argv in ((hosts.master, hosts.master_argv()), (hosts.driver, hosts.submit_command([JOB]))):
        wrapped = hosts.launch_argv(host, argv)
        assert wrapped[:4] == ["ip", "netns", "exec", host.ns] and wrapped[-len(argv):] == argv
        assert wrapped[4:-len(argv)] == ["unshare", "--uts", "sh", "-c", wrapped[8], host.addr]
        assert "hostname" in wrapped[8] and wrapped[8].endswith('exec "$@"')


def test_hosts_helper_extra_conf_comes_after_the_compose_options(services: dict, hosts_cluster: HostsCluster) -> None:
    """Tests lower Spark's timeouts with extra --conf pairs: appended after the compose options, before the job."""
    plain = hosts_cluster.submit_command([JOB])
    extra = hosts_cluster.submit_command([JOB], {"spark.network.timeout": "30s"})
    i = plain.index(JOB)
    assert extra[:i] == plain[:i] and extra[i:i + 2] == ["--conf", "spark.network.timeout=30s"]
    assert extra[i + 2:] == plain[i:]


def test_make_train_hosts_runs_the_compose_job() -> None:
    """`make train-hosts` runs the submit service's job (`make train`'s config) with one worker host per worker."""
    makefile = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    recipe = re.search(r"^train-hosts:.*\n\t(.*)$", makefile, re.M).group(1)
    args = shlex.split(recipe)
    assert args[1:4] == ["$(PY)", "-m", "ddqn.distributed.hosts"], args
    helper, job = args[4:args.index("--")], args[args.index("--") + 1:]
    assert helper == ["--workers", "$(WORKERS)", "$(if", "$(LINK_GBIT),--link-gbit", "$(LINK_GBIT))"]  # rated links on request
    assert job[:7] == [JOB, "--config", "paper", "--workers", "$(WORKERS)", "--minutes", "$(MINUTES)"], job
    assert re.search(r"^WORKERS \?= 2$", makefile, re.M), "the compose file's default worker count"
