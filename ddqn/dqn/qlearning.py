"""The pieces of deep Q-learning shared by the serial trainer and the distributed workers.

The slides' "Serial deep Q-learning" box, step by step: (1) ε-greedy action, (5) uniform minibatch from
replay (or by priority: :mod:`ddqn.replay.memory`), (6) targets y_j from Q̂, (7) gradient of the loss on the
minibatch (weighted by the minibatch's importance weights under prioritized replay). Executing the action (2–4),
applying the gradient and resetting Q̂ (8) belong to the caller: the serial trainer applies locally; a
distributed worker pushes the gradient to the parameter server.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ddqn.dqn.phases import NO_CLOCK, PhaseClock
from ddqn.net.qnet import QNetwork, bellman_targets
from ddqn.replay.memory import Batch


@dataclass(frozen=True)
class LinearSchedule:
    """ε annealed linearly from ``start`` to ``end`` over ``steps`` env steps, then held."""

    start: float
    end: float
    steps: int

    def __call__(self, t: int) -> float:
        frac = min(max(t, 0) / self.steps, 1.0)
        return self.start + frac * (self.end - self.start)


def epsilon_greedy(q: QNetwork, state: np.ndarray, epsilon: float, rng: np.random.Generator) -> int:
    """Step 1: argmax_a Q(φ, a; θ) with probability 1 − ε, else a uniformly random action.

    ``state`` is one φ, (C, H, W) uint8.
    """
    if rng.random() < epsilon:
        return int(rng.integers(q.spec.num_actions))
    return int(q.q_values(state[None])[0].argmax())


def greedy_actions(q: QNetwork, states: np.ndarray) -> np.ndarray:
    """argmax_a Q(φ_k, a) for a batch of states (K, C, H, W) → (K,) int64."""
    return q.q_values(states).argmax(axis=1)


def dqn_gradient(q: QNetwork, q_hat: QNetwork, batch: Batch, gamma: float, *, double_dqn: bool = False,
                 error_clip: float = 0.0, weighted: bool = False,
                 clock: PhaseClock = NO_CLOCK) -> tuple[float, np.ndarray]:
    """Steps 6–7: targets y_j from Q̂ (γ^steps_j for n-step batches), then loss and flat gradient of Q on the
    minibatch; ``weighted``: each sample's loss weighted by ``batch.weights`` (prioritized replay).

    Returns (loss, grad); grad is owned by ``q`` and overwritten by its next call. ``q.td_errors`` then holds the
    minibatch's TD errors y_j − Q(φ_j, a_j).
    """
    y = bellman_targets(q_hat, batch.rewards, batch.next_states, batch.terminals, gamma,
                        online_net=q if double_dqn else None, steps=batch.steps)
    clock.lap("target forward")
    loss_grad = q.loss_and_grad(batch.states, batch.actions, y, error_clip=error_clip,
                                weights=batch.weights if weighted else None)
    clock.lap("forward+backward")
    return loss_grad
