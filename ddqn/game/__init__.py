"""Games the agent learns, behind one interface (Snake, the paper's game; room for another family).

What the rest of ddqn needs from a game family, given a :class:`~ddqn.config.Config`:

* :func:`make_env` — one game as a Gymnasium env: ``reset(seed)``/``step(a)`` give (H, W) uint8 frames at the
  network's input size, ``Discrete`` actions, and ``info["score"]`` (the game's own score) when an episode ends.
* :func:`make_batch` — K games stepped together (:class:`GameBatch`): the random warm-up fill and greedy
  evaluation play many episodes at once.
"""
from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from ddqn.config import Config
from ddqn.game.snake import SnakeBatch, SnakeEnv


class GameBatch(Protocol):
    """K games stepped together; a finished game restarts within the same step.

    ``reset(seed)`` → frames (K, H, W) uint8. ``step(actions (K,))`` → (frames (K, H, W) uint8, rewards (K,)
    float32, terminated (K,) bool, truncated (K,) bool, info) where ``info["final_frame"]`` holds each game's
    last frame before a restart and ``info["score"]`` (K,) its score so far.
    """

    num_envs: int
    num_actions: int

    def reset(self, seed: int | None = None) -> np.ndarray: ...

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]: ...


def make_env(cfg: Config, frame_size: int, render_mode: str | None = None) -> SnakeEnv:
    """One game as the config describes it, rendered at the network's input size."""
    return SnakeEnv(cfg.board_size, frame_size, cfg.starve_steps, cfg.paper_look, render_mode)


def make_batch(cfg: Config, frame_size: int, num_envs: int) -> GameBatch:
    """K games as the config describes them."""
    return SnakeBatch(num_envs, cfg.board_size, frame_size, cfg.starve_steps, cfg.paper_look)
