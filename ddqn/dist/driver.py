"""The Spark driver side of distributed deep Q-learning (the slides' "Implementation" and "Software").

The driver parses config and prototxt, starts the parameter server inside its own process, broadcasts the
architecture (prototxt text), solver-free config, server address and per-run secret, and schedules W
partitions with one long-running worker task each. Spark's part is the paper's "lightweight use":
shipping code, scheduling and retrying tasks (a retried task regenerates its replay memory and rejoins).
The driver stops its tasks when the budget is spent, on Ctrl-C, or on an error, and frees its port.
"""
from __future__ import annotations

import json
import logging
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import numpy as np

from ddqn.dist import protocol
from ddqn.config import Config, save_config
from ddqn.errors import DDQNError
from ddqn.metrics import MetricsLogger
from ddqn.net.netspec import load_netspec
from ddqn.net.qnet import QNetwork
from ddqn.dqn.evaluation import evaluate_greedy, random_score
from ddqn.dist.server import STATE_FILE, ParameterServer, prior_env_steps
from ddqn.net.snapshot import load_checkpoint
from ddqn.solvers.flat import load_solver_spec, make_solver
from ddqn.dist.worker import JobSpec, run_partition

log = logging.getLogger("ddqn.driver")
DEFAULT_MASTER = "local[*,4]"  # local mode that retries a failed task up to 4 times


def spark_context(app: str, workers: int):
    """The SparkContext (master from spark-submit, else ``local[*,4]``), checked to run ``workers`` tasks at once."""
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
    return sc


def driver_host(sc) -> str:
    """The driver's own address, the one executors reach it by: spark.driver.host, resolved to an IP.

    The parameter server binds to this address only (127.0.0.1 in local mode).
    """
    host = sc.getConf().get("spark.driver.host", "127.0.0.1")
    try:
        return socket.gethostbyname(host)
    except OSError:
        return "127.0.0.1"


def _ignore_signals() -> None:
    """Let the driver finish its clean-up (snapshot, stop tasks, close the port) once it was interrupted."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _cancel(sc) -> None:
    """Cancel the worker tasks (best effort: the JVM may already be shutting down)."""
    try:
        sc.cancelJobGroup("ddqn-workers")
    except Exception as exc:  # noqa: BLE001 - py4j raises several kinds once the JVM is gone
        log.warning("could not cancel the Spark job: %s", str(exc).splitlines()[0][:200])


class Driver:
    """One distributed run: server + Spark job + progress + final evaluation.

    Args:
        cfg: validated config (``cfg.workers`` worker tasks).
        out_dir: snapshots, metrics (train.csv, eval.csv, workers.json, TensorBoard) and the GIF.
        sync: synchronous rounds (the baseline) instead of asynchronous downpour SGD.
        resume: continue θ, θ⁻ and solver state from ``out_dir``'s last snapshot.
    """

    def __init__(self, cfg: Config, out_dir: str | Path, sync: bool = False, resume: bool = False,
                 progress: bool = True) -> None:
        self.cfg, self.out, self.sync, self.progress = cfg, Path(out_dir), sync, progress
        self.out.mkdir(parents=True, exist_ok=True)
        self.spec = load_netspec(cfg.path("net"))
        self.solver = make_solver(load_solver_spec(cfg.path("solver")), self.spec.params, cfg.server_threads)
        self.q = QNetwork(self.spec, seed=cfg.seed)
        theta = self.q.get_params()
        target = theta.copy()
        self.prior_env_steps: dict[int, int] = {}
        if resume:
            theta, target, record = load_checkpoint(self.out, STATE_FILE, self.spec, self.solver)
            self.prior_env_steps = prior_env_steps(record, self.out / STATE_FILE)
        self.theta, self.target = theta, target
        self.start_updates = self.solver.iter  # server updates before this run (> 0 after --resume)

    def run(self, minutes: float | None = None, steps: int | None = None) -> dict:
        """Train until ``minutes`` of wall clock or ``steps`` env steps over all workers; return a summary."""
        cfg = self.cfg
        save_config(cfg, self.out / "config.yaml")
        sc = spark_context("ddqn", cfg.workers)
        if sc.defaultParallelism < cfg.workers:
            raise DDQNError(f"workers: {cfg.workers} worker tasks need {cfg.workers} task slots at once; "
                            f"the Spark master {sc.master} offers {sc.defaultParallelism}")
        # the random-policy baseline first: nothing may run between starting the server and its try/finally
        baseline = random_score(cfg, self.spec.state_shape[1], cfg.eval_episodes, cfg.seed)
        secret = protocol.new_secret()
        server = ParameterServer(self.spec, self.solver, self.theta, self.target, secret, host=driver_host(sc),
                                 port=cfg.server_port,
                                 target_update=cfg.target_update, sync=self.sync, snapshot_every=cfg.snapshot_every,
                                 snapshot_dir=self.out,
                                 session_timeout=max(10.0, 2 * cfg.server_timeout),
                                 expected_workers=cfg.workers, prior_env_steps=self.prior_env_steps,
                                 auth=cfg.auth).start()
        job = JobSpec(self.spec.text, self.spec.source, cfg.to_dict(), server.address, secret.hex())
        job_b = sc.broadcast(job.to_json())
        results: list = []
        failure: list[BaseException] = []

        def spark_job() -> None:
            from pyspark import TaskContext  # noqa: PLC0415

            def task(index: int, _rows):
                yield run_partition(job_b.value, index, TaskContext.get().attemptNumber())

            try:
                sc.setJobGroup("ddqn-workers", "ddqn workers", interruptOnCancel=True)
                results.extend(sc.parallelize(range(cfg.workers), cfg.workers)
                               .mapPartitionsWithIndex(task).collect())
            except BaseException as exc:  # noqa: BLE001 - reported by the driver thread
                failure.append(exc)

        thread = threading.Thread(target=spark_job, name="ddqn-spark-job", daemon=True)
        start = time.monotonic()
        log_ = MetricsLogger(self.out)
        try:
            thread.start()
            self._watch(server, thread, log_, start, minutes, steps)
            server.request_stop()
            thread.join(timeout=cfg.server_timeout + 60)
        except KeyboardInterrupt:
            _ignore_signals()  # Ctrl-C reaches spark-submit's JVM too, which then sends us SIGTERM
            print("\ninterrupted: stopping workers", flush=True)
            server.request_stop()
            model = server.snapshot()  # first: it needs nothing from Spark, whose JVM may be going down
            print(f"snapshot written to {model}", flush=True)
            thread.join(timeout=15)
            raise
        finally:
            if thread.is_alive():
                _cancel(sc)
                thread.join(timeout=30)
            server.close()
            log_.close()
            self._write_workers(server, results)
        if failure:
            server.snapshot()
            raise DDQNError(f"the Spark job failed: {str(failure[0]).splitlines()[0][:300]}")
        return self._finish(server, results, baseline, time.monotonic() - start)

    def _watch(self, server: ParameterServer, thread: threading.Thread, log_: MetricsLogger, start: float,
               minutes: float | None, steps: int | None) -> None:
        """Print one progress line and log metrics until the budget is spent or the job ends."""
        deadline = start + 60 * minutes if minutes else float("inf")
        last_log, last_updates, last_steps, last_t = start, server.version, 0, start
        while thread.is_alive():
            time.sleep(0.5)
            now = time.monotonic()
            env_steps = sum(w.env_steps for w in server.workers.values())
            if now - last_log >= 5 or now >= deadline or (steps and env_steps >= steps):
                dt = now - last_t
                stal = np.array(server.staleness) if server.staleness else np.zeros(1)
                row = {"server/updates": server.version, "server/updates_per_s": (server.version - last_updates) / dt,
                       "rollout/env_steps_per_s": (env_steps - last_steps) / dt,
                       "rollout/ep_score_mean": float(np.mean(server.scores)) if server.scores else 0.0,
                       "server/staleness_p50": float(np.percentile(stal, 50)),
                       "server/staleness_p95": float(np.percentile(stal, 95)),
                       "server/live_workers": server.live_workers(), "server/dropped": sum(server.dropped.values())}
                log_.log("train", env_steps, row, now - start)
                if self.progress:
                    print(f"[{(now - start) / 60:5.1f} min] updates {server.version} "
                          f"({row['server/updates_per_s']:.0f}/s) env steps {env_steps} "
                          f"({row['rollout/env_steps_per_s']:.0f}/s) score {row['rollout/ep_score_mean']:.2f} "
                          f"staleness p50/p95 {row['server/staleness_p50']:.0f}/{row['server/staleness_p95']:.0f} "
                          f"workers {row['server/live_workers']}", flush=True)
                last_log, last_updates, last_steps, last_t = now, server.version, env_steps, now
            if now >= deadline or (steps and env_steps >= steps):
                return

    def _write_workers(self, server: ParameterServer, results: list) -> None:
        record = {"workers": {p: vars(w) for p, w in server.workers.items()}, "dropped": dict(server.dropped),
                  "updates": server.version, "results": results}
        (self.out / "workers.json").write_text(json.dumps(record, indent=2, default=float))

    def _finish(self, server: ParameterServer, results: list, random_score: float, wall_s: float) -> dict:
        model = server.snapshot()
        self.q.set_params(server.theta)
        scores = evaluate_greedy(self.q, self.cfg, self.cfg.eval_episodes, seed=10_000 + self.cfg.seed)
        env_steps = sum(w.env_steps for w in server.workers.values())
        with MetricsLogger(self.out) as log_:
            log_.log("eval", env_steps, {"eval/greedy_score_mean": float(scores.mean()),
                                         "eval/greedy_score_median": float(np.median(scores)),
                                         "eval/greedy_score_max": float(scores.max()),
                                         "eval/random_score_mean": random_score, "eval/updates": server.version}, wall_s)
        stal = np.array(server.staleness) if server.staleness else np.zeros(1)
        summary = {"model": str(model), "updates": server.version, "env_steps": env_steps,
                   "minutes": wall_s / 60, "updates_per_s": (server.version - self.start_updates) / wall_s,
                   "staleness_p50": float(np.percentile(stal, 50)), "staleness_p95": float(np.percentile(stal, 95)),
                   "workers": {p: {"pushes": w.pushes, "attempt": w.attempt, "rejoins": w.rejoins,
                                   "env_steps": w.env_steps, "compute_s": w.compute_s, "comm_s": w.comm_s}
                               for p, w in server.workers.items()},
                   "dropped": dict(server.dropped), "greedy_score_mean": float(scores.mean()),
                   "greedy_score_median": float(np.median(scores)), "greedy_score_max": int(scores.max()),
                   "random_score_mean": random_score, "sync": self.sync}
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2))
        return summary
