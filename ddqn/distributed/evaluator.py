"""Greedy evaluation while a distributed run trains, in a separate, low-priority process.

The driver hands it a copy of θ every ``eval_every`` env steps (summed over workers); the child plays the
same greedy evaluation as serial training (:func:`ddqn.dqn.evaluation.evaluate`) on its own Caffe net at
nice 10, so it takes no time from the parameter server thread and yields the cores to the workers.
At most one evaluation is in flight: a boundary that passes while one runs is skipped. The child dies with the
driver however the driver ends (a second Ctrl-C exits at once, a ``kill -9``): the kernel kills it then.
"""
from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import queue
import signal
from dataclasses import dataclass

import numpy as np

NICE = 10
PR_SET_PDEATHSIG = 1  # Linux prctl(2): the signal this process gets when the thread that started it exits


@dataclass(frozen=True)
class EvalResult:
    """Greedy scores of θ as it was at ``env_steps`` env steps, ``updates`` updates and ``wall_s`` seconds."""

    env_steps: int
    updates: int
    wall_s: float
    scores: np.ndarray


def _die_with(parent: int) -> None:
    """Have the kernel SIGKILL this process when ``parent`` (the driver) exits, and exit now if it already has.

    Otherwise a driver that ends without :meth:`BackgroundEvaluator.close` leaves the child waiting on its queue
    forever (the queue's pipe has a writer in the child itself, so it never sees end-of-file)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: close() still ends the child
        return
    if os.getppid() != parent:  # the driver ended before the call
        os._exit(0)


def _serve(net_text: str, net_source: str, config: dict, tasks: mp.Queue, results: mp.Queue, parent: int) -> None:
    """The child: evaluate each θ it receives until it receives None (the driver handles Ctrl-C and ends it)."""
    _die_with(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the terminal signals the whole process group
    os.nice(NICE)
    from ddqn.config import make_config  # noqa: PLC0415 - imported in the child only
    from ddqn.dqn.evaluation import evaluate  # noqa: PLC0415
    from ddqn.game import game_actions  # noqa: PLC0415
    from ddqn.net.netspec import parse_netspec  # noqa: PLC0415
    from ddqn.net.qnet import QNetwork  # noqa: PLC0415

    cfg = make_config(config, "broadcast config")
    q = QNetwork(parse_netspec(net_text, net_source, game_actions(cfg)))
    while (task := tasks.get()) is not None:
        env_steps, updates, wall_s, theta = task
        q.set_params(theta)
        results.put((env_steps, updates, wall_s, evaluate(q, cfg)))


class BackgroundEvaluator:
    """A child process (spawned, not forked: the driver holds a JVM gateway and threads) that evaluates θ.

    Create it in the driver's main thread: the child is killed when the thread that started it exits."""

    def __init__(self, net_text: str, net_source: str, config: dict) -> None:
        ctx = mp.get_context("spawn")
        self._tasks, self._results = ctx.Queue(), ctx.Queue()
        args = (net_text, net_source, config, self._tasks, self._results, os.getpid())
        self._proc = ctx.Process(target=_serve, args=args, name="ddqn-evaluator", daemon=True)
        self._busy = False
        self._proc.start()

    @property
    def busy(self) -> bool:
        return self._busy

    def submit(self, env_steps: int, updates: int, wall_s: float, theta: np.ndarray) -> bool:
        """Start evaluating ``theta`` (a copy the evaluator may keep); False if one is still running."""
        if self._busy or not self._proc.is_alive():
            return False
        self._tasks.put((env_steps, updates, wall_s, theta))
        self._busy = True
        return True

    def result(self, timeout: float = 0.0) -> EvalResult | None:
        """The finished evaluation, if one finished within ``timeout`` seconds."""
        if not self._busy:
            return None
        try:
            env_steps, updates, wall_s, scores = self._results.get(timeout=timeout) if timeout else \
                self._results.get_nowait()
        except queue.Empty:
            return None
        self._busy = False
        return EvalResult(env_steps, updates, wall_s, scores)

    def close(self, timeout: float = 5.0) -> None:
        """Ask the child to exit; kill it if it does not within ``timeout`` seconds."""
        if self._proc.is_alive():
            try:
                self._tasks.put_nowait(None)
            except (ValueError, OSError):
                pass
            self._proc.join(timeout)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(timeout)
        self._tasks.cancel_join_thread()
        self._results.cancel_join_thread()
