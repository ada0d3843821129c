"""A Spark standalone cluster on this machine: master and workers from the pyspark install, on 127.0.0.1.

    python -m ddqn.distributed.cluster [--workers 2] -- spark_jobs/train.py [job args]

starts a master and N one-core workers (``spark-class org.apache.spark.deploy.master.Master`` / ``...Worker``,
the same commands the docker-compose services run), waits until every worker registered, runs
``spark-submit --master spark://127.0.0.1:<port>`` with the job, and tears the cluster down by the
processes' own ids — also on error or Ctrl-C. Every wait is bounded.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"


def spark_home() -> Path:
    """SPARK_HOME of the pyspark package (its bin/ holds spark-class and spark-submit)."""
    import pyspark  # noqa: PLC0415

    return Path(pyspark.__file__).resolve().parent


def spark_submit_path() -> Path:
    """The ``spark-submit`` script of the installed pyspark."""
    return spark_home() / "bin" / "spark-submit"


def spark_submit_env(python: str) -> dict[str, str]:
    """Variables (to add to ``os.environ``) for ``spark-submit``: driver and executors run ``python``; Spark's
    own servers bind to loopback (what the Makefile's SPARK_ENV sets)."""
    return {"PYSPARK_PYTHON": python, "PYSPARK_DRIVER_PYTHON": python, "SPARK_LOCAL_IP": "127.0.0.1"}


def master_command(host: str, port: int, webui_port: int) -> list[str]:
    """The standalone master's command line."""
    return [str(spark_home() / "bin" / "spark-class"), MASTER_CLASS, "--host", host, "--port", str(port),
            "--webui-port", str(webui_port)]


def worker_command(master_url: str, host: str, cores: int, memory: str, webui_port: int) -> list[str]:
    """A standalone worker's command line."""
    return [str(spark_home() / "bin" / "spark-class"), WORKER_CLASS, "--host", host, "--cores", str(cores),
            "--memory", memory, "--webui-port", str(webui_port), master_url]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def signal_group(pgid: int, sig: int) -> None:
    """Send ``sig`` to process group ``pgid`` (a process started with ``start_new_session``); gone is fine."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def stop_groups(procs: list[subprocess.Popen], timeout: float = 20.0) -> None:
    """Stop the process groups of ``procs`` by their own ids: SIGTERM all (newest first), wait up to
    ``timeout`` s in all, then SIGKILL what is left. Clears ``procs``."""
    for proc in reversed(procs):
        if proc.poll() is None:
            signal_group(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            signal_group(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    procs.clear()


def wait_job(proc: subprocess.Popen, timeout: float | None, grace: float) -> int:
    """Wait for a submitted job; on Ctrl-C or after ``timeout`` s, SIGINT its group (the driver stops its
    workers and writes a final snapshot), give it ``grace`` s, then SIGKILL. Returns its exit code."""
    try:
        return proc.wait(timeout=timeout)
    except (KeyboardInterrupt, subprocess.TimeoutExpired):
        signal_group(proc.pid, signal.SIGINT)
        try:
            return proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            signal_group(proc.pid, signal.SIGKILL)
            return proc.wait()


class LocalCluster:
    """Master + ``workers`` one-core workers on 127.0.0.1; a context manager that always tears down."""

    def __init__(self, workers: int = 2, memory: str = "2g", start_timeout: float = 120.0) -> None:
        self.workers, self.memory, self.start_timeout = workers, memory, start_timeout
        self.host = "127.0.0.1"
        self.port, self.webui_port = free_port(), free_port()
        self.master_url = f"spark://{self.host}:{self.port}"
        self.procs: list[subprocess.Popen] = []
        self._dir = tempfile.TemporaryDirectory(prefix="ddqn-cluster-")
        self.env = dict(os.environ, SPARK_LOCAL_IP=self.host, SPARK_WORKER_DIR=str(Path(self._dir.name) / "work"),
                        SPARK_LOG_DIR=str(Path(self._dir.name) / "logs"), PYSPARK_PYTHON=sys.executable,
                        SPARK_HOME=str(spark_home()))

    def _spawn(self, cmd: list[str], name: str) -> subprocess.Popen:
        log = open(Path(self._dir.name) / f"{name}.log", "wb")
        proc = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.procs.append(proc)
        return proc

    def start(self) -> LocalCluster:
        """Start master and workers; return once all workers are ALIVE (or raise after the timeout)."""
        self._spawn(master_command(self.host, self.port, self.webui_port), "master")
        for i in range(self.workers):
            self._spawn(worker_command(self.master_url, self.host, 1, self.memory, free_port()), f"worker-{i}")
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self.procs):
                raise RuntimeError(f"a cluster process exited early; logs in {self._dir.name}")
            if self.alive_workers() >= self.workers:
                return self
            time.sleep(1)
        raise TimeoutError(f"{self.workers} workers did not register within {self.start_timeout:g} s")

    def alive_workers(self) -> int:
        """Workers the master reports ALIVE (from its web UI's JSON)."""
        try:
            with urllib.request.urlopen(f"http://{self.host}:{self.webui_port}/json/", timeout=2) as r:
                state = json.load(r)
        except (OSError, ValueError):
            return 0
        return sum(w.get("state") == "ALIVE" for w in state.get("workers", []))

    def stop(self, timeout: float = 20.0) -> None:
        """Stop every process this cluster started, by its own process group id (SIGTERM, then SIGKILL)."""
        stop_groups(self.procs, timeout)
        self._dir.cleanup()

    def submit_command(self, job: list[str]) -> list[str]:
        """``spark-submit`` of ``job`` (script and args) to this cluster, one executor core per worker."""
        return [str(spark_home() / "bin" / "spark-submit"), "--master", self.master_url,
                "--conf", f"spark.driver.host={self.host}", "--conf", f"spark.driver.bindAddress={self.host}",
                "--conf", "spark.executor.cores=1", "--conf", f"spark.cores.max={self.workers}",
                "--conf", "spark.scheduler.minRegisteredResourcesRatio=1.0",
                "--conf", "spark.scheduler.maxRegisteredResourcesWaitingTime=120s",
                "--conf", "spark.log.level=WARN", *job]

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


JobArgs = tuple[argparse.Namespace, list[str]]


def parse_job_args(prog: str, description: str, workers_help: str, argv: list[str] | None,
                   more: Callable[[argparse.ArgumentParser], None] | None = None) -> JobArgs:
    """``[--workers N] [--timeout S] -- spark_jobs/train.py [args]``: the options and the job to submit; ``more``
    adds a caller's own options."""
    ap = argparse.ArgumentParser(prog=prog, description=description)
    ap.add_argument("--workers", type=int, default=2, help=workers_help)
    ap.add_argument("--timeout", type=float, default=None, help="stop the job after this many seconds")
    if more is not None:
        more(ap)
    ap.add_argument("job", nargs=argparse.REMAINDER, help="-- spark_jobs/train.py [args]")
    args = ap.parse_args(argv)
    job = args.job[1:] if args.job[:1] == ["--"] else args.job
    if not job:
        ap.error("give the job to submit after --, e.g. -- spark_jobs/train.py --minutes 5")
    return args, job


def main(argv: list[str] | None = None) -> int:
    args, job = parse_job_args("python -m ddqn.distributed.cluster", __doc__.splitlines()[0],
                               "one-core Spark workers (default 2)", argv)
    with LocalCluster(args.workers) as cluster:
        print(f"cluster up: {cluster.master_url} with {args.workers} workers "
              f"(web UI http://{cluster.host}:{cluster.webui_port})", flush=True)
        proc = subprocess.Popen(cluster.submit_command(job), env=cluster.env, start_new_session=True)
        try:
            return wait_job(proc, args.timeout, grace=60)
        finally:
            print("cluster down", flush=True)


if __name__ == "__main__":
    sys.exit(main())
