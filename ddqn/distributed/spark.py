"""Spark's part, the paper's "lightweight use": a SparkContext, the driver's address, and the worker job.

Spark ships the code, schedules one long-running worker task per partition and retries a failed task (whose
new attempt regenerates its replay memory and rejoins). :class:`WorkerJob` runs those tasks in a background
thread of the driver, so the driver can watch the parameter server meanwhile; :class:`ShardJob` runs the shards of
a sharded parameter server on executors (``ps_placement: executors``) the same way, in a job group of their own.
"""
from __future__ import annotations

import logging
import re
import socket
import sys
import threading

from ddqn.distributed.worker import run_partition

log = logging.getLogger("ddqn.distributed.spark")
DEFAULT_MASTER = "local[*,4]"  # local mode that retries a failed task up to 4 times
LOCAL_MASTER = re.compile(r"local(?:\[[^,\]]+(?:,\s*(\d+))?\])?")  # local, local[N], local[N,F] (F attempts)
JOB_GROUP = "ddqn-workers"
SHARD_GROUP = "ddqn-shards"  # placement executors: the shard tasks' job group


def spark_context(app: str):
    """The SparkContext: the master from spark-submit (``--master``), else ``local[*,4]``."""
    from pyspark import SparkConf, SparkContext  # noqa: PLC0415 - Spark starts a JVM

    SparkContext._ensure_initialized()  # attach to spark-submit's JVM so SparkConf sees its --master and --conf
    conf = SparkConf().setAppName(app)
    if not conf.contains("spark.master"):
        conf.setMaster(DEFAULT_MASTER)
    if conf.get("spark.master").startswith("local"):  # everything on this machine: loopback only
        conf.setIfMissing("spark.driver.host", "127.0.0.1")
        conf.setIfMissing("spark.driver.bindAddress", "127.0.0.1")
    conf.setIfMissing("spark.pyspark.python", sys.executable)
    conf.setIfMissing("spark.log.level", "WARN")
    sc = SparkContext.getOrCreate(conf)
    sc.setLogLevel("WARN")
    _quiet_when_the_jvm_is_gone(sc)
    return sc


def _quiet_when_the_jvm_is_gone(sc) -> None:
    """pyspark's accumulator server prints a traceback when the JVM at its other end exits first, which is what
    Ctrl-C does to spark-submit's JVM while this driver finishes its stop: an EOFError, or, when the JVM dies in the
    middle of writing its token, a ValueError for the token it cut short. That end is expected, so those errors are
    not printed when the peer has closed its connection; every other error of the server is."""
    server = getattr(sc, "_accumulatorServer", None)
    if server is None:
        return
    default = server.handle_error

    def handle_error(request, client_address) -> None:  # socketserver calls it inside its except block
        exc = sys.exc_info()[1]
        gone = isinstance(exc, EOFError | ConnectionError) or (isinstance(exc, ValueError) and _peer_closed(request))
        if not gone:
            default(request, client_address)

    server.handle_error = handle_error


def _peer_closed(request: socket.socket) -> bool:
    """Whether the other end of ``request`` has closed it (nothing more to read, ever), without reading."""
    try:
        return request.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:  # open, nothing sent yet
        return False
    except OSError:  # reset, or closed
        return True


def driver_host(sc) -> str:
    """The driver's own address, the one executors reach it by: spark.driver.host, resolved to an IP.

    The parameter server binds to this address only (127.0.0.1 in local mode).
    """
    host = sc.getConf().get("spark.driver.host", "127.0.0.1")
    try:
        return socket.gethostbyname(host)
    except OSError:
        return "127.0.0.1"


def task_attempts(sc) -> int:
    """How many attempts Spark makes of one task (spark.task.maxFailures as its scheduler applies it), so every
    attempt number is below it: the scheduler's own value where py4j reaches it, else Spark's rules — ``local[N,F]``
    makes F, ``local`` and ``local[N]`` make 1, a cluster ``spark.task.maxFailures`` (default 4)."""
    try:
        return int(sc._jsc.sc().taskScheduler().maxTaskFailures())
    except Exception:  # py4j raises several kinds; the rules below are Spark's own
        return attempts_of(sc.master, sc.getConf().get("spark.task.maxFailures", None))


def attempts_of(master: str, max_failures: str | None) -> int:
    """Spark's rule for the attempts of one task under ``master`` (see :func:`task_attempts`)."""
    if m := LOCAL_MASTER.fullmatch(master):
        return int(m.group(1) or 1)
    return int(max_failures or 4)


class SparkTasks:
    """N long-running tasks, one per partition, each running ``entry(job_json, index, attempt)``, in the job group
    ``group``. :meth:`start` submits the job from a background thread; :meth:`join` waits (bounded) for it;
    :meth:`cancel` cancels its tasks. ``results`` holds each task's return value, ``error`` what failed the job."""

    group, description = "", ""

    def __init__(self, sc, job_json: str, tasks: int, entry) -> None:
        self.sc, self.tasks, self.entry = sc, tasks, entry
        self.job = sc.broadcast(job_json)
        self.results: list[dict] = []
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"{self.group}-job", daemon=True)

    def _run(self) -> None:
        from pyspark import TaskContext  # noqa: PLC0415

        job, entry = self.job, self.entry

        def task(index: int, _rows):
            yield entry(job.value, index, TaskContext.get().attemptNumber())

        try:
            self.sc.setJobGroup(self.group, self.description, interruptOnCancel=True)
            self.results.extend(self.sc.parallelize(range(self.tasks), self.tasks)
                                .mapPartitionsWithIndex(task).collect())
        except BaseException as exc:  # reported by the driver thread
            self.error = exc

    def start(self) -> SparkTasks:
        self._thread.start()
        return self

    def running(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds; True if the job has ended."""
        self._thread.join(timeout=timeout)
        return not self._thread.is_alive()

    def cancel(self, timeout: float = 30.0) -> None:
        """Cancel the tasks if they still run (best effort: the JVM may already be shutting down)."""
        if not self._thread.is_alive():
            return
        try:
            self.sc.cancelJobGroup(self.group)
        except Exception as exc:  # py4j raises several kinds once the JVM is gone
            log.warning("could not cancel the Spark job %s: %s", self.group, str(exc).splitlines()[0][:200])
        self._thread.join(timeout=timeout)


class WorkerJob(SparkTasks):
    """W partitions, one worker task each, running ``job_json`` (a :class:`~ddqn.distributed.job.JobSpec`);
    ``results`` holds each task's counters."""

    group, description = JOB_GROUP, "ddqn workers"

    def __init__(self, sc, job_json: str, workers: int) -> None:
        super().__init__(sc, job_json, workers, run_partition)
        self.workers = workers


class ShardJob(SparkTasks):
    """S shard tasks of a sharded parameter server on executors (``ps_placement: executors``), each serving its
    slice until the driver tells it to exit (``ddqn.distributed.shards.task``)."""

    group, description = SHARD_GROUP, "ddqn parameter-server shards"

    def __init__(self, sc, job_json: str, shards: int) -> None:
        from ddqn.distributed.shards.task import run_shard  # noqa: PLC0415

        super().__init__(sc, job_json, shards, run_shard)
