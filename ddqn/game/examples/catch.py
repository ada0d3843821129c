"""Catch: a ball falls, a paddle catches it — a tiny pixel game for trying ddqn on a user's own env.

Board of n×n cells (default 8). A ball starts in a uniformly random column of the top row and falls one row per
step; the paddle (one cell) starts in the middle of the bottom row. Actions ``Discrete(3)``: 0 left, 1 stay,
2 right (the paddle stops at the walls). When the ball reaches the bottom row the episode ends
(``terminated``) with reward +1 if the paddle is under it, else −1; every other step gives 0. An episode lasts
n − 1 steps; the random policy scores about −0.7 on 8 cells, a perfect one +1.

Observation: an RGB image, (n·c, n·c, 3) uint8 with c pixels per cell (default 2: 16×16×3); black background,
white ball, blue paddle. ddqn turns it into the net's input (grayscale, resized) like any user env
(:mod:`ddqn.game.custom`). ``render()`` (``render_mode="rgb_array"``) is the observation.
"""
from __future__ import annotations

import operator
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

LEFT, STAY, RIGHT = 0, 1, 2
BACKGROUND, BALL, PADDLE = (0, 0, 0), (255, 255, 255), (40, 120, 255)  # RGB


class Catch(gymnasium.Env):
    """One game of Catch; observation (size·cell, size·cell, 3) uint8, actions Discrete(3) (module docstring).

    Args:
        size: n, cells per side (>= 3).
        cell: pixels per cell side (>= 1).
        render_mode: None or ``"rgb_array"``.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 8}

    def __init__(self, size: int = 8, cell: int = 2, render_mode: str | None = None) -> None:
        if not isinstance(size, int) or size < 3:
            raise ValueError(f"size must be an int >= 3, got {size!r}")
        if not isinstance(cell, int) or cell < 1:
            raise ValueError(f"cell must be an int >= 1, got {cell!r}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.size, self.cell, self.render_mode = size, cell, render_mode
        side = size * cell
        self.observation_space = spaces.Box(0, 255, (side, side, 3), np.uint8)
        self.action_space = spaces.Discrete(3)
        self.ball = (0, 0)  # (row, column)
        self.paddle = size // 2  # column, in the bottom row
        self.over = True

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self.ball = (0, int(self.np_random.integers(self.size)))
        self.paddle, self.over = self.size // 2, False
        return self._image(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Move the paddle, drop the ball one row: (image, reward −1/0/+1, ball landed, False, {})."""
        a = operator.index(action)
        if not 0 <= a < 3:
            raise ValueError(f"action must be in 0..2, got {action!r}")
        if self.over:
            raise RuntimeError("episode is over (or never started): call reset()")
        self.paddle = min(max(self.paddle + a - STAY, 0), self.size - 1)
        self.ball = (self.ball[0] + 1, self.ball[1])
        self.over = self.ball[0] == self.size - 1
        reward = (1.0 if self.paddle == self.ball[1] else -1.0) if self.over else 0.0
        return self._image(), reward, self.over, False, {}

    def _image(self) -> np.ndarray:
        """The board as (size·cell, size·cell, 3) uint8 RGB."""
        cells = np.zeros((self.size, self.size, 3), np.uint8)
        cells[:] = BACKGROUND
        cells[self.size - 1, self.paddle] = PADDLE
        cells[self.ball] = BALL  # a caught ball is drawn over the paddle
        return np.repeat(np.repeat(cells, self.cell, axis=0), self.cell, axis=1)

    def render(self) -> np.ndarray | None:
        """rgb_array: the observation, (size·cell, size·cell, 3) uint8."""
        if self.render_mode != "rgb_array":
            gymnasium.logger.warn("render() called without render_mode='rgb_array'")
            return None
        return self._image()
