"""Serial deep Q-learning: the slides' algorithm box, one game, one process, one Caffe net pair.

    given replay memory D with capacity N; initialise Q, Q̂ with the same random weights θ
    repeat until timeout: for t = 1..T:
      1. a_t = argmax_a Q(φ_t, a; θ) w.p. 1 − ε, else a random action
      2. execute a_t, observe r_t and frame x_{t+1}
      3. φ_{t+1} = φ(s_t, a_t, x_{t+1})
      4. store (φ_t, a_t, r_t, φ_{t+1}) in D
      5. sample a minibatch (φ_j, a_j, r_j, φ_{j+1}) ~ D uniformly
      6. y_j = r_j if terminal else r_j + γ max_a′ Q̂(φ_{j+1}, a′)
      7. gradient step for Q on the minibatch (Caffe-exact AdaGrad/RMSProp on the flat θ)
      8. every C steps reset Q̂ = Q

Outputs in ``out_dir``: ``config.yaml``, ``train.csv``/``eval.csv`` and TensorBoard events (``tb/``),
snapshots (``snapshots/serial_iter_<updates>.{caffemodel,solverstate}`` plus the target net's
``.target.caffemodel``) and ``trainer_state.json`` naming the latest one, ``summary.json`` at the end.

Stopping: :meth:`SerialTrainer.train` takes a ``stop`` flag (:mod:`ddqn.stop`; the ``ddqn`` command sets it on
Ctrl-C or SIGTERM) and checks it at every env step and every evaluation step. Once set, the run writes a final
snapshot, closes its CSV and TensorBoard sinks and raises :class:`~ddqn.errors.Interrupted`; it does not
evaluate.
"""
from __future__ import annotations

import json
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ddqn.config import Config, save_config
from ddqn.dqn.evaluation import eval_row, evaluate, random_score, score_summary
from ddqn.dqn.loop import ExperienceLoop
from ddqn.errors import DDQNError, Interrupted
from ddqn.game import game_actions
from ddqn.metrics import MetricsLogger
from ddqn.net.blas_core import blas_info, describe
from ddqn.net.netspec import load_netspec
from ddqn.net.qnet import QNetwork
from ddqn.net.snapshot import load_checkpoint, save_checkpoint
from ddqn.replay import make_replay
from ddqn.rundir import set_aside_earlier_run
from ddqn.solvers.flat import load_solver_spec, make_solver
from ddqn.stop import NEVER, Stoppable

STATE_FILE = "trainer_state.json"
SNAPSHOT_NAME = "serial"  # snapshots are <out>/snapshots/serial_iter_<updates>.* (save_checkpoint)


@dataclass
class Progress:
    """Counters of a run (restored on resume)."""

    env_steps: int = 0  # learning env steps (after the random warm-up)
    updates: int = 0  # gradient steps applied
    episodes: int = 0
    wall_s: float = 0.0  # training wall-clock seconds, evaluations excluded


class SerialTrainer:
    """Deep Q-learning on one game with pycaffe (see the module docstring).

    Args:
        cfg: the validated run configuration.
        out_dir: where metrics, snapshots and the config go (an earlier run there is moved to ``<out_dir>.N``
            first: :mod:`ddqn.rundir`).
        resume: continue from ``out_dir/trainer_state.json`` (θ, Q̂, solver history, counters).
        progress: show a tqdm progress bar.
    """

    def __init__(self, cfg: Config, out_dir: str | Path, resume: bool = False, progress: bool = True) -> None:
        self.cfg, self.out = cfg, Path(out_dir)
        if not resume:
            set_aside_earlier_run(self.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.spec = load_netspec(cfg.path("net"), game_actions(cfg))
        self.solver = make_solver(load_solver_spec(cfg.path("solver")), self.spec.params)
        self.q = QNetwork(self.spec, seed=cfg.seed)
        self.q_hat = QNetwork(self.spec)
        self.theta = self.q.get_params()
        self.state = Progress()
        if resume:
            self._restore()
        else:
            self.q_hat.set_params(self.theta)
        self.q.set_params(self.theta)
        history, h, w = self.spec.state_shape
        self.frame_size = h
        seed = cfg.seed + self.state.env_steps
        self.replay = make_replay(cfg, (h, w), history, seed, self.out / "replay")
        rng = np.random.default_rng([cfg.seed, self.state.env_steps])
        self.loop = ExperienceLoop(cfg, self.q, self.q_hat, self.replay, rng, seed, self.state.env_steps)
        self.progress = progress
        self.scores: deque[int] = deque(maxlen=100)
        self._last_eval: tuple[int, np.ndarray] = (-1, np.zeros(0))

    # -- set-up ---------------------------------------------------------------------------------

    def _restore(self) -> None:
        self.theta, target, record = load_checkpoint(self.out, STATE_FILE, self.spec, self.solver)
        self.q_hat.set_params(target)
        try:
            self.state = Progress(**record["progress"])
        except (KeyError, TypeError) as exc:
            raise DDQNError(f"{self.out / STATE_FILE}: cannot resume: no progress counters ({exc})") from exc

    def snapshot(self) -> Path:
        """Write θ, solver state and Q̂ for the current update; record them in trainer_state.json."""
        return save_checkpoint(self.out, SNAPSHOT_NAME, self.spec, self.theta, self.q_hat.get_params(), self.solver,
                               STATE_FILE, {"progress": vars(self.state)})

    # -- the algorithm --------------------------------------------------------------------------
    def train(self, steps: int | None = None, minutes: float | None = None, stop: Stoppable = NEVER) -> dict:
        """Run until ``steps`` more learning env steps or ``minutes`` of wall clock; return a summary.

        Once ``stop`` is set (checked at every env step and evaluation step) a final snapshot is written, the
        sinks are closed and :class:`~ddqn.errors.Interrupted` is raised.
        """
        cfg = self.cfg
        save_config(cfg, self.out / "config.yaml")
        print(describe(blas_info()), flush=True)  # the header: which kernels Caffe runs
        start = time.monotonic()
        deadline = start + 60 * minutes if minutes else float("inf")
        stop_at = self.state.env_steps + steps if steps else None
        log = MetricsLogger(self.out)
        try:
            summary = self._run(log, stop_at, deadline, stop)
        finally:
            log.close()
            self.replay.close()
        if summary is None:
            raise Interrupted()
        return summary

    def _run(self, log: MetricsLogger, stop_at: int | None, deadline: float, stop: Stoppable) -> dict | None:
        """Warm-up, the loop, the final evaluation and snapshot: the summary; None when stopped (after a snapshot)."""
        cfg = self.cfg
        try:
            if not stop.is_set():
                self.loop.warm_up(cfg.replay_warmup - len(self.replay))  # bounded: < 1 s Snake, ~10 s Atari
            baseline = random_score(cfg, self.frame_size, cfg.eval_episodes, cfg.seed, stop=stop)
            self._loop(log, stop_at, deadline, baseline, stop)
            if not stop.is_set():  # an interrupted run snapshots and ends; it does not evaluate
                return self._finish(log, baseline, stop)
        except Interrupted:  # raised at a step boundary of an evaluation once the flag is set
            pass
        model = self.snapshot()
        print(f"\ninterrupted: snapshot written to {model}", flush=True)
        return None

    def _loop(self, log: MetricsLogger, stop_at: int | None, deadline: float, baseline: float,
              stop: Stoppable) -> None:
        cfg, st, loop = self.cfg, self.state, self.loop
        losses: list[float] = []
        bar = tqdm(total=(stop_at - st.env_steps) if stop_at else None, disable=None if self.progress else True,
                   unit="step", dynamic_ncols=True)
        tick = time.monotonic()
        with bar:
            while not stop.is_set() and (stop_at is None or st.env_steps < stop_at) and time.monotonic() < deadline:
                eps = loop.current_epsilon
                if loop.step():  # 1-4
                    loss, grad = loop.gradient()  # 5-7
                    self.solver.apply(self.theta, grad)  # 7. the gradient step, on θ here
                    self.q.set_params(self.theta)
                    losses.append(loss)
                    st.updates += 1
                    if st.updates % cfg.target_update == 0:
                        self.q_hat.set_params(self.theta)  # 8. every C steps Q̂ = Q
                st.env_steps = loop.env_steps
                finished = loop.take_scores()
                st.episodes += len(finished)
                self.scores.extend(finished)
                bar.update(1)
                now = time.monotonic()
                st.wall_s += now - tick
                tick = now
                if st.env_steps % cfg.log_every == 0:
                    mean = float(np.mean(self.scores)) if self.scores else 0.0
                    log.log("train", st.env_steps, {
                        "rollout/ep_score_mean": mean, "rollout/episodes": st.episodes, "rollout/epsilon": eps,
                        "train/loss": float(np.mean(losses)) if losses else 0.0, "train/updates": st.updates,
                        "train/lr": float(self.solver.rate())}, st.wall_s)
                    bar.set_postfix(ep=st.episodes, score=f"{mean:.2f}", eps=f"{eps:.2f}",
                                    loss=f"{np.mean(losses) if losses else 0:.4f}")
                    losses.clear()
                if st.env_steps % cfg.eval_every == 0:
                    self._evaluate(log, baseline, stop)
                    tick = time.monotonic()  # evaluation time is not training time
                if st.env_steps % cfg.snapshot_every == 0:
                    self.snapshot()
                    tick = time.monotonic()

    def _evaluate(self, log: MetricsLogger, baseline: float, stop: Stoppable) -> np.ndarray:
        if self._last_eval[0] == self.state.env_steps:  # the final evaluation may coincide with a periodic one
            return self._last_eval[1]
        scores = evaluate(self.q, self.cfg, stop)  # raises Interrupted at a step boundary once stop is set
        log.log("eval", self.state.env_steps, eval_row(scores, baseline, self.state.updates), self.state.wall_s)
        self._last_eval = (self.state.env_steps, scores)
        return scores

    def _finish(self, log: MetricsLogger, baseline: float, stop: Stoppable) -> dict:
        scores = self._evaluate(log, baseline, stop)
        model = self.snapshot()
        summary = {"model": str(model), "net": str(self.cfg.path("net")), "env_steps": self.state.env_steps,
                   "updates": self.state.updates, "episodes": self.state.episodes,
                   "train_minutes": self.state.wall_s / 60, **score_summary(scores, baseline), "blas": blas_info()}
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2))
        return summary
