"""The Spark driver side of distributed deep Q-learning (the slides' "Implementation" and "Software").

The driver parses config and prototxt, starts the parameter server inside its own process, broadcasts the
architecture (prototxt text), config, server address and per-run secret, and runs W partitions with one
long-running worker task each (:class:`~ddqn.distributed.spark.WorkerJob`). While they train it shows one
progress bar, logs metrics every ``log_every`` env steps, evaluates every ``eval_every`` (in a background
process) and snapshots every ``snapshot_every`` — env steps summed over all workers, as in serial training. A
snapshot that finds no free file descriptor (a flood of connections to the server's port) is retried at each check
until one is written; a final one is retried for up to ``FINAL_SNAPSHOT_S``.
It stops its tasks when the budget is spent, on Ctrl-C, or on an error, and frees its port.

    run():  start server → start job → watch → finish

Ctrl-C and SIGTERM only set a stop flag (:mod:`ddqn.stop`, installed by ``spark_jobs/train.py``); the watch loop
sees it within 50 ms, and the driver then tells the workers to stop, writes a final snapshot (first: on Ctrl-C
spark-submit's JVM exits within a second, and the snapshot needs nothing from it), waits up to 15 s for the
tasks, cancels them, closes the server's port and raises :class:`~ddqn.errors.Interrupted` (exit code 130).
"""
from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from dataclasses import replace
from pathlib import Path

from tqdm import tqdm

from ddqn.config import Config, save_config
from ddqn.distributed import protocol
from ddqn.distributed.checkpointer import Checkpointer, restore
from ddqn.distributed.evaluator import BackgroundEvaluator, EvalResult
from ddqn.distributed.job import JobSpec
from ddqn.distributed.server import HANDSHAKE_S, ParameterServer, ServerOptions
from ddqn.distributed.shards.group import ShardGroup
from ddqn.distributed.spark import WorkerJob, driver_host, spark_context, task_attempts
from ddqn.distributed.stats import ServerStats, StatsView, train_row
from ddqn.distributed.store import ParameterStore
from ddqn.distributed.sync import SyncRounds
from ddqn.dqn.evaluation import eval_row, evaluate, random_score, score_summary
from ddqn.errors import DDQNError, Interrupted
from ddqn.game import game_actions
from ddqn.metrics import Every, MetricsLogger
from ddqn.net.blas_core import blas_info, describe
from ddqn.net.netspec import load_netspec
from ddqn.net.qnet import QNetwork
from ddqn.rundir import set_aside_earlier_run
from ddqn.solvers.flat import load_solver_spec, make_solver
from ddqn.stop import NEVER, Stoppable, sleep_unless

log = logging.getLogger("ddqn.distributed.driver")
progress_log = logging.getLogger("ddqn.progress")  # driver.log only: the terminal has the bar
progress_log.propagate = False
LOG_FILE = "driver.log"  # the full progress lines and the server's log, in the run directory
RATE_WINDOW_S = 30.0  # rates on the progress bar are over this window
POLL_S = 0.5
SPARK_START_S = 300.0  # bound on creating the SparkContext
STOP_JOIN_S = 15.0  # after a stop, how long the tasks get to end by themselves before they are cancelled
# How long a final snapshot is retried when no file descriptor is free: the connections that hold them now are closed
# within HANDSHAKE_S, and the ones libzmq accepts next within HANDSHAKE_S more.
FINAL_SNAPSHOT_S = 2 * HANDSHAKE_S + 1


def _start_spark(stop: Stoppable):
    """The SparkContext, created in a helper thread; :class:`Interrupted` if ``stop`` is set meanwhile.

    Created in the main thread, pyspark's SparkContext replaces the SIGINT handler with its own, which raises
    KeyboardInterrupt wherever the main thread happens to be; from another thread it leaves the stop flag's
    handler in place.
    """
    made: list = []

    def create() -> None:
        try:
            made.append(spark_context("ddqn"))
        except BaseException as exc:  # raised again in the calling thread
            made.append(exc)

    thread = threading.Thread(target=create, name="ddqn-spark-context", daemon=True)
    thread.start()
    end = time.monotonic() + SPARK_START_S
    while thread.is_alive():
        if stop.is_set():
            raise Interrupted()
        if time.monotonic() > end:
            raise DDQNError(f"Spark did not start within {SPARK_START_S:.0f} s")
        thread.join(timeout=0.05)
    if isinstance(made[0], BaseException):
        raise made[0]
    return made[0]


def _say(line: str) -> None:
    """Print a line; on Ctrl-C spark-submit's JVM, the reader of our stdout, may already be gone."""
    try:
        print(line, flush=True)
    except OSError:
        pass


class Driver:
    """One distributed run: parameter store and server, Spark job, progress, evaluation and snapshots.

    Args:
        cfg: validated config (``cfg.workers`` worker tasks).
        out_dir: snapshots, metrics (train.csv, eval.csv, workers.json, TensorBoard), driver.log and the GIF (an
            earlier run there is moved to ``<out_dir>.N`` first: :mod:`ddqn.rundir`).
        sync: synchronous rounds (the baseline) instead of asynchronous downpour SGD.
        resume: continue θ, θ⁻, solver state and each partition's ε schedule from ``out_dir``'s last snapshot.
        progress: show a live progress bar.
    """

    def __init__(self, cfg: Config, out_dir: str | Path, sync: bool = False, resume: bool = False,
                 progress: bool = True) -> None:
        self.cfg, self.out, self.sync, self.progress = cfg, Path(out_dir), sync, progress
        if not resume:
            set_aside_earlier_run(self.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.spec = load_netspec(cfg.path("net"), game_actions(cfg))
        solver_spec = load_solver_spec(cfg.path("solver"))
        solver = make_solver(solver_spec, self.spec.params, cfg.server_threads)
        if cfg.ps_shards > 1 and sync:
            raise DDQNError(f"ps_shards: {cfg.ps_shards} shards serve asynchronous updates only, not --sync")
        self.q = QNetwork(self.spec, seed=cfg.seed)
        theta, target, played = self.q.get_params(), None, {}
        if resume:
            theta, target, played = restore(self.out, self.spec, solver)
        self.store: ParameterStore | ShardGroup = ParameterStore(
            solver, theta, theta.copy() if target is None else target, cfg.target_update, cfg.max_staleness,
            cfg.staleness_lr, cfg.dc_lambda)
        if cfg.ps_shards > 1:  # the store's state is cut into S slices, one shard each (at run())
            self.store = ShardGroup(self.store, self.spec, solver_spec, game_actions(cfg), cfg.ps_shards, self.out,
                                    placement=cfg.ps_placement, target_update=cfg.target_update,
                                    max_staleness=cfg.max_staleness, staleness_lr=cfg.staleness_lr,
                                    dc_lambda=cfg.dc_lambda)
        self.stats = ServerStats(played)
        self.checkpointer = Checkpointer(self.out, self.spec, self.store, self.stats)
        self.start_updates = self.store.version  # server updates before this run (> 0 after --resume)

    def run(self, minutes: float | None = None, steps: int | None = None, stop: Stoppable = NEVER) -> dict:
        """Train until ``minutes`` of wall clock or ``steps`` env steps over all workers; return a summary.

        Once ``stop`` is set: stop the tasks, write a final snapshot, free the port, raise :class:`Interrupted`.
        With shards, their processes end (by pid) whatever happens.
        """
        try:
            return self._run(minutes, steps, stop)
        finally:
            self.store.close()

    def _run(self, minutes: float | None, steps: int | None, stop: Stoppable) -> dict:
        cfg = self.cfg
        save_config(cfg, self.out / "config.yaml")
        _say(f"driver {describe(blas_info())}")  # the header: which kernels this process's Caffe runs
        try:
            sc = _start_spark(stop)
            shard_tasks = cfg.ps_shards if cfg.ps_shards > 1 and cfg.ps_placement == "executors" else 0
            if sc.defaultParallelism < cfg.workers + shard_tasks:
                if shard_tasks:
                    raise DDQNError(f"ps_placement: executors: {cfg.workers} worker tasks and {shard_tasks} shard "
                                    f"tasks need {cfg.workers + shard_tasks} task slots at once; the Spark master "
                                    f"{sc.master} offers {sc.defaultParallelism}")
                raise DDQNError(f"workers: {cfg.workers} worker tasks need {cfg.workers} task slots at once; "
                                f"the Spark master {sc.master} offers {sc.defaultParallelism}")
            # the random-policy baseline first: nothing may run between starting the server and its try/finally
            baseline = random_score(cfg, self.spec.state_shape[1], cfg.eval_episodes, cfg.seed, stop=stop)
        except Interrupted:
            self._snapshot_interrupted()
            raise
        secret = protocol.new_secret()
        options = ServerOptions(host=driver_host(sc), port=cfg.server_port, session_port=cfg.server_session_port,
                                auth=cfg.auth, partitions=cfg.workers, max_grad_norm=cfg.max_grad_norm,
                                session_timeout=max(10.0, 2 * cfg.server_timeout), max_attempts=task_attempts(sc))
        file_log = _file_log(self.out / LOG_FILE)  # from here on: the shards' start is in driver.log too
        try:
            # the shards (if any) first: the driver's WELCOME names them (on executors: a Spark job of their own)
            options = replace(options, shards=self.store.start(secret, options, sc))
            server = ParameterServer(self.store, secret, options, stats=self.stats,
                                     rounds=SyncRounds(self.spec.num_params, cfg.workers, cfg.server_timeout / 2)
                                     if self.sync else None).start()
        except BaseException:
            _close_file_log(file_log)
            raise
        job = WorkerJob(sc, JobSpec(self.spec.text, self.spec.source, cfg.to_dict(), server.address,
                                    secret.hex()).to_json(), cfg.workers)
        evaluator = BackgroundEvaluator(self.spec.text, self.spec.source, cfg.to_dict())
        start = time.monotonic()
        metrics = MetricsLogger(self.out)
        interrupted = False
        try:
            job.start()
            self._watch(server, job, evaluator, metrics, baseline, start, minutes, steps, stop)
            server.request_stop()  # the workers finish their step, report and end
            self.store.request_stop()
            end = time.monotonic() + cfg.server_timeout + 60
            while not job.join(timeout=0.05) and not stop.is_set() and time.monotonic() < end:
                pass
            if stop.is_set():
                interrupted = True
                # first: it needs nothing from Spark, whose JVM may be going down (but shards on executors, if any)
                self._snapshot_interrupted()
                job.join(timeout=STOP_JOIN_S)  # the workers were told to stop; then cancel() below
        finally:
            job.cancel()
            server.close()
            evaluator.close()
            metrics.close()
            _close_file_log(file_log)
            self._write_workers(job.results)
        if interrupted:
            raise Interrupted()
        if job.error is not None:
            self.checkpointer.final_snapshot(FINAL_SNAPSHOT_S)
            raise DDQNError(f"the Spark job failed: {str(job.error).splitlines()[0][:300]}")
        return self._finish(job.results, baseline, time.monotonic() - start, stop)

    def _snapshot_interrupted(self) -> Path | None:
        """The final snapshot of a stopped run, and where it went (terminal and driver.log). Shards on executors live
        in Spark's Python workers, which a Ctrl-C may end first (spark-submit's JVM exits within a second): then there
        is no final snapshot, and the driver says so."""
        try:
            model = self.checkpointer.final_snapshot(FINAL_SNAPSHOT_S)
        except DDQNError as exc:
            if getattr(self.store, "placement", "driver") != "executors":
                raise
            progress_log.info("interrupted: no final snapshot (%s); --resume continues from the last one", exc)
            _say(f"\ninterrupted: no final snapshot, the shards are gone ({str(exc)[:200]}); --resume continues "
                 "from the last one")
            return None
        progress_log.info("interrupted: snapshot written to %s", model)
        _say(f"\ninterrupted: snapshot written to {model}")
        return model

    def _watch(self, server: ParameterServer, job: WorkerJob, evaluator: BackgroundEvaluator,
               metrics: MetricsLogger, baseline: float, start: float, minutes: float | None,
               steps: int | None, stop: Stoppable) -> None:
        """Until the budget is spent, the job ends or ``stop`` is set: progress bar, metric rows, evaluations,
        snapshots. ``stop`` is looked at every 50 ms."""
        cfg = self.cfg
        deadline = start + 60 * minutes if minutes else float("inf")
        log_due, eval_due, snap_due = Every(cfg.log_every), Every(cfg.eval_every), Every(cfg.snapshot_every)
        window: deque[tuple[float, int, int]] = deque()  # (time, updates, env steps) over RATE_WINDOW_S
        last_line = start
        snap_pending = False  # a snapshot was due but found no free file descriptor: tried again at each check
        # the bar only on a terminal (disable=None): a log file gets the 10-second lines below, not carriage returns
        with tqdm(total=steps, unit="step", dynamic_ncols=True, disable=None if self.progress else True) as bar:
            while job.running() and not sleep_unless(stop, POLL_S):
                self.store.supervise()  # a dead shard is restarted; the versions are read
                now, view, version = time.monotonic(), self._view(), self.store.version
                env_steps = view.env_steps
                window.append((now, version, env_steps))
                while now - window[0][0] > RATE_WINDOW_S and len(window) > 2:
                    window.popleft()
                row = train_row(view, version, window[0], window[-1], server.live_workers())
                bar.update(env_steps - bar.n)
                bar.set_postfix_str(_postfix(row), refresh=False)
                if now - last_line >= 10:
                    progress_log.info("[%5.1f min] %s", (now - start) / 60, _postfix(row))
                    last_line = now
                if log_due.due(env_steps):
                    metrics.log("train", env_steps, row, now - start)
                if (done := evaluator.result()) is not None:
                    self._log_eval(metrics, done, baseline)
                if eval_due.due(env_steps) and not evaluator.busy:
                    updates, theta = self.store.published()  # an immutable copy of θ, shared with FETCH replies
                    evaluator.submit(env_steps, updates, now - start, theta)
                if snap_due.due(env_steps) or snap_pending:
                    snap_pending = self.checkpointer.try_snapshot() is None
                if now >= deadline or (steps and env_steps >= steps):
                    return

    @staticmethod
    def _log_eval(metrics: MetricsLogger, done: EvalResult, baseline: float) -> None:
        metrics.log("eval", done.env_steps, eval_row(done.scores, baseline, done.updates), done.wall_s)

    def _write_workers(self, results: list) -> None:
        view = self._view()
        record = {"workers": {p: vars(w) for p, w in view.workers.items()}, "dropped": view.dropped,
                  "updates": self.store.version, "results": results}
        (self.out / "workers.json").write_text(json.dumps(record, indent=2, default=float))

    def _view(self) -> StatsView:
        """The driver's counters, with what the store counts itself (with shards: staleness, pushes, drops)."""
        return self.store.counted(self.stats.view())

    def _finish(self, results: list, baseline: float, wall_s: float, stop: Stoppable) -> dict:
        model = self.checkpointer.final_snapshot(FINAL_SNAPSHOT_S)
        state = self.store.copy()
        self.q.set_params(state.theta)
        try:
            scores = evaluate(self.q, self.cfg, stop)
        except Interrupted:  # stopped during the final evaluation: the snapshot above is the final one
            _say(f"\ninterrupted: snapshot written to {model}")
            raise
        view = self._view()
        with MetricsLogger(self.out) as metrics:
            metrics.log("eval", view.env_steps, eval_row(scores, baseline, state.version), wall_s)
        p50, p95 = view.staleness_percentiles()
        summary = {**self.store.summary(), "model": str(model), "updates": state.version, "env_steps": view.env_steps,
                   "minutes": wall_s / 60, "updates_per_s": (state.version - self.start_updates) / wall_s,
                   "staleness_p50": p50, "staleness_p95": p95,
                   "workers": {p: {"pushes": w.pushes, "attempt": w.attempt, "rejoins": w.rejoins,
                                   "env_steps": w.env_steps, "compute_s": w.compute_s, "comm_s": w.comm_s}
                               for p, w in view.workers.items()},
                   "dropped": view.dropped, **score_summary(scores, baseline), "sync": self.sync,
                   "blas": {"driver": blas_info(), "workers": {r["partition"]: r.get("blas") for r in results}}}
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2))
        return summary


def _postfix(row: dict[str, float]) -> str:
    """The progress fields, as the bar and driver.log show them."""
    return (f"updates {row['server/updates']:.0f} ({row['server/updates_per_s']:.0f}/s), "
            f"{row['rollout/env_steps_per_s']:.0f} env steps/s, score {row['rollout/ep_score_mean']:.2f}, "
            f"staleness p50/p95 {row['server/staleness_p50']:.0f}/{row['server/staleness_p95']:.0f}, "
            f"workers {row['server/live_workers']:.0f}")


def _file_log(path: Path) -> logging.Handler:
    """Send ddqn's log records (server joins, progress lines) to ``path`` as well."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    for name in ("ddqn", "ddqn.progress"):
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        if logger.level == logging.NOTSET or logger.level > logging.INFO:
            logger.setLevel(logging.INFO)
    return handler


def _close_file_log(handler: logging.Handler) -> None:
    """Stop sending ddqn's log records to the file of :func:`_file_log`."""
    for name in ("ddqn", "ddqn.progress"):
        logging.getLogger(name).removeHandler(handler)
    handler.close()
