"""The docker-compose cluster, run for real: the image built by the one recipe, the cluster started with 2 workers,
`make cluster-train`, a worker container killed mid-run, and nothing left behind.

``make test-compose`` (root; marker ``compose``, deselected unless ``-m compose``: tests/conftest.py says so at
the end of any other run). ddqn.distributed.docker_engine installs the engine if it is missing, starts a dockerd of
its own in the machine's namespace to build ``ddqn:local`` with host networking (the image's ``make install``
needs the package registries), stops it, and starts it again in a network namespace of its own for the cluster:
the Makefile's ``cluster-*`` targets then run against it (DOCKER_HOST), with ``COMPOSE_BUILD=`` since the image is
built. The tests run in file order on one engine; the last one tears everything down and looks for leftovers.
``-s`` shows the measured build time and updates/s.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from conftest import Output, measured, wait_until

from ddqn.distributed import docker_engine as de

pytestmark = pytest.mark.compose

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / "runs" / "cluster-train"  # where `make cluster-results` copies the run
MINUTES = 3
KILL_MINUTES = 5  # room for the killed worker's rerun: a new executor, replay warm-up, then its rejoin
VOLUME = "ddqn_ddqn-data"
# "worker P joined (attempt 0, pid N on HOSTNAME, PEER)": a worker container's hostname is its short id
JOINED = re.compile(r"worker (\d+) joined \(attempt 0, pid \d+ on (\w+), [^)]*\)")


@pytest.fixture(scope="module")
def engine():
    """ddqn:local built, then a dockerd of ours in its own network namespace; stopped at the end in any case."""
    de.install()
    with de.Engine(isolated=False) as builder:
        measured(f"{de.IMAGE} built in {de.build(builder):.0f} s (base image and build cache as found)")
    eng = de.Engine(isolated=True).start()
    try:
        yield eng
    finally:
        if eng.proc is not None:  # a test failed before the last one stopped it
            de.run(de.compose_down_argv(volumes=True), check=False, env=eng.env())
        eng.stop()


def make(engine: de.Engine, *args: str, **popen) -> subprocess.Popen:
    """``make ARGS`` in the repository against ``engine``, its output (stderr too) as text lines."""
    argv = ["make", "--no-print-directory", "-C", str(ROOT), *args, "COMPOSE_BUILD=", "WORKERS=2"]
    return subprocess.Popen(argv, env=engine.env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **popen)


def results(engine: de.Engine) -> dict:
    """`make cluster-results` (the run copied out of the volume to runs/cluster-train); its summary.json."""
    shutil.rmtree(RUN, ignore_errors=True)
    out = Output(make(engine, "cluster-results"))
    assert out.wait(300) == 0, out.text(30)
    return json.loads((RUN / "summary.json").read_text())


@pytest.mark.timeout(4800)
def test_cluster_trains_and_its_run_is_copied_out(engine: de.Engine) -> None:
    """`make cluster-up cluster-train` (master + 2 workers, `make train`'s job for a few minutes) ends with the
    run's last lines; the copy holds a snapshot, the CSV metrics and the GIF."""
    start = time.monotonic()
    out = Output(make(engine, "cluster-up", "cluster-train", f"MINUTES={MINUTES}"))
    assert out.wait(MINUTES * 60 + 900) == 0, out.text(60)
    text = out.text()
    for line in ("server updates in", "snapshot: /data/runs/train/snapshots/", "gif:      /data/runs/train/agent.gif"):
        assert line in text, text[-3000:]
    summary = results(engine)
    assert set(summary["workers"]) == {"0", "1"} and all(w["pushes"] > 0 for w in summary["workers"].values())
    snapshots = sorted((RUN / "snapshots").glob("server_iter_*.caffemodel"))
    assert snapshots and snapshots[-1].stat().st_size > 100_000, snapshots
    rows = (RUN / "train.csv").read_text().splitlines()
    assert len(rows) > 2 and "," in rows[0]
    assert len((RUN / "eval.csv").read_text().splitlines()) >= 2
    assert (RUN / "agent.gif").read_bytes()[:6] in (b"GIF87a", b"GIF89a")
    measured(f"compose cluster, 2 workers, paper config, {MINUTES} min: {summary['updates']} server updates, "
             f"{summary['updates_per_s']:.1f} updates/s; make cluster-up cluster-train took "
             f"{time.monotonic() - start:.0f} s")


@pytest.mark.timeout(1800)
def test_a_killed_worker_container_is_rerun_and_the_run_finishes(engine: de.Engine) -> None:
    """SIGKILL to one worker's container once both workers joined: Spark loses that executor; the container is
    started again (a host back from a crash), Spark reruns the partition's task there (attempt 1), and the run
    finishes as usual."""
    de.run(["docker", "volume", "rm", "-f", VOLUME], env=engine.env())  # a fresh run directory
    out = Output(make(engine, "cluster-train", f"MINUTES={KILL_MINUTES}"))
    joined: dict[int, str] = {}

    def both() -> bool:
        joined.update({int(m.group(1)): m.group(2) for m in JOINED.finditer(out.text())})
        return len(joined) == 2 or out.proc.poll() is not None

    assert wait_until(both, 600) is not None and len(joined) == 2, out.text(60)
    time.sleep(20)  # pushes under way
    victim = joined[0]  # the container's hostname is its short id
    engine.docker("kill", victim)
    lost = wait_until(lambda: re.search(r"Lost executor|ExecutorLost", out.text()), 120)
    engine.docker("start", victim)
    rejoined = wait_until(lambda: "worker 0 rejoined (attempt 1" in out.text(), 300)
    assert rejoined is not None, out.text(60)
    noticed = "not within 120 s" if lost is None else f"after {lost:.0f} s"
    measured(f"worker container {victim} killed: Spark's 'Lost executor' {noticed}; attempt 1 rejoined "
             f"{rejoined:.0f} s after the container was started again")
    assert out.wait(KILL_MINUTES * 60 + 900) == 0, out.text(60)
    summary = results(engine)
    w0, w1 = summary["workers"]["0"], summary["workers"]["1"]
    assert w0["attempt"] == 1 and w0["rejoins"] == 1 and w1["attempt"] == 0, summary["workers"]
    assert sorted((RUN / "snapshots").glob("server_iter_*.caffemodel"))


@pytest.mark.timeout(600)
def test_nothing_is_left_behind(engine: de.Engine) -> None:
    """`make cluster-down`, the volume removed: no container, volume or network, no image but ddqn:local and
    debian:12; then the daemon stopped: none of its processes, no namespace, mount, cgroup or socket of ours."""
    out = Output(make(engine, "cluster-down"))
    assert out.wait(300) == 0, out.text(30)
    de.run(["docker", "volume", "rm", "-f", VOLUME], env=engine.env())
    assert engine.docker_leftovers() == {}
    images = set(engine.docker("image", "ls", "--format", "{{.Repository}}:{{.Tag}}").stdout.split())
    assert images == {de.IMAGE, de.BASE_IMAGE}
    links = de.machine_links()
    engine.stop()
    assert engine.leftovers() == {}
    assert engine.killed == [], "stopping the daemon left processes to kill by id"
    assert de.machine_links() == links, "the machine's own namespace got an interface"
    assert not any(de.DOCKER_LINK.fullmatch(link) for link in links), links
