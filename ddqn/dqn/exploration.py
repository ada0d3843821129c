"""ε for one actor among W (issue 32): how exploration is scheduled when many workers play at once.

``eps_schedule`` (config):

- ``worker`` (the default, and the slides'): ε anneals linearly from ``eps_start`` to ``eps_end`` over this
  worker's own first ``eps_decay_steps`` env steps, as Gorila's actors did. Every worker explores for the same
  wall-clock time, whatever W is.
- ``global``: the same anneal over the run's env steps, all workers together, as the parameter server counts them:
  server updates × ``train_every`` × ``push_every`` (the env steps one worker plays per update it pushes). The server
  counts an update only for a gradient it applied, so no report can move it (a worker's own STATS may claim up to
  10^12 env steps); with W workers exploration ends W times sooner in wall-clock time.
- ``ladder``: Ape-X's fixed ε per worker, ε_i = ``eps_ladder_base`` ^ (1 + ``eps_ladder_alpha`` · i / (W − 1)), from
  0.4 for worker 0 to 0.4⁸ ≈ 0.00066 for worker W − 1 with Ape-X's 0.4 and 7. With one worker (the formula divides
  by zero) ε is ``eps_ladder_base``, the ladder's most exploring rung.
- ``global-ladder``: both: each worker anneals from ``eps_start`` to its own rung ε_i over the run's env steps.

Serial training has one worker, whose env steps are the run's: ``global`` is ``worker`` there.
"""
from __future__ import annotations

from dataclasses import dataclass

from ddqn.config import EPS_SCHEDULES as SCHEDULES
from ddqn.config import Config


@dataclass(frozen=True)
class Exploration:
    """ε of worker ``worker`` of ``workers`` under ``schedule`` (see the module docstring)."""

    schedule: str
    start: float
    end: float
    decay_steps: int
    worker: int = 0
    workers: int = 1
    ladder_base: float = 0.4
    ladder_alpha: float = 7.0

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"eps_schedule: one of {', '.join(SCHEDULES)}")
        if not 0 <= self.worker < self.workers:
            raise ValueError(f"worker {self.worker} of {self.workers}")

    @property
    def rung(self) -> float:
        """This worker's ε on the Ape-X ladder."""
        if self.workers == 1:
            return self.ladder_base
        return self.ladder_base ** (1 + self.ladder_alpha * self.worker / (self.workers - 1))

    def __call__(self, own_steps: int, run_steps: int) -> float:
        """ε for the next step, after ``own_steps`` env steps of this worker and ``run_steps`` of the whole run
        (summed over workers, as the server counts them)."""
        if self.schedule == "ladder":
            return self.rung
        end = self.rung if self.schedule == "global-ladder" else self.end
        t = own_steps if self.schedule == "worker" else run_steps
        return self.start + min(max(t, 0) / self.decay_steps, 1.0) * (end - self.start)


def exploration(cfg: Config, worker: int = 0, workers: int = 1) -> Exploration:
    """The :class:`Exploration` of worker ``worker`` of ``workers`` from the config's ``eps_*`` keys."""
    return Exploration(cfg.eps_schedule, cfg.eps_start, cfg.eps_end, cfg.eps_decay_steps, worker, workers,
                       cfg.eps_ladder_base, cfg.eps_ladder_alpha)
