"""Atari 2600 games (the Arcade Learning Environment through Gymnasium) with the DQN papers' preprocessing.

:class:`AtariEnv` is one game: ``gym.make(<ALE id>, frameskip=1, repeat_action_probability=sticky_actions,
full_action_space=False)`` inside Gymnasium's ``AtariPreprocessing``: 1 to ``noop_max`` no-op frames at reset,
the agent's action repeated for ``frame_skip`` frames, the pixel-wise max of the last two of them, grayscale,
resized to ``frame_size`` × ``frame_size`` (area interpolation). Observation: one (F, F) uint8 frame; actions:
the game's minimal action set, ``Discrete(n)`` (Breakout 4, Pong 6). Rewards are the game's raw points; the
learning side clips them (``reward_clip``, :mod:`ddqn.replay.transition`).

``info`` at every step and reset: ``"score"`` — the raw points of this game so far (what evaluation reports),
``"lives"`` — lives left, and ``"life_lost"`` — a life was lost on this step and the game did not end
(``terminated`` means game over). A game is cut (``truncated``) after ``max_episode_steps`` agent steps (the
papers' 108,000 frames = 27,000 steps at frame skip 4).

Sticky actions: the default is deterministic (``sticky_actions: 0.0``), as in the DQN papers (Mnih et al. 2013,
2015) and Gorila (Nair et al. 2015), so scores compare with theirs; the randomness is the no-op start alone.
Machado et al. (2018) recommend repeating the previous action with probability 0.25 (the v5 ids' default), which
punishes open-loop policies: one config key away (``sticky_actions: 0.25``).

``render()`` (``render_mode="rgb_array"``) is the real game screen, (210, 160, 3) uint8, not the network's input.

:class:`AtariBatch` steps K games together with same-step autoreset (:class:`ddqn.game.batch.EnvBatch`). Game i
of a batch reset with seed s plays exactly like ``AtariEnv(...).reset(seed=game_seeds(s, K)[i])``.
"""
from __future__ import annotations

import re
from typing import Any

import ale_py
import gymnasium
import numpy as np
from gymnasium.wrappers import AtariPreprocessing

from ddqn.game.batch import EnvBatch, batch_size

gymnasium.register_envs(ale_py)  # make the ALE/… ids known to gym.make (importing ale_py does it; explicit here)
ALE_ID = re.compile(r"ALE/[A-Za-z0-9]+-v5")  # the form of the ids ddqn accepts, e.g. ALE/Breakout-v5
SCREEN = (210, 160, 3)  # the real Atari screen, RGB


def id_problem(game: str) -> str | None:
    """Why ``game`` is not an ALE id ddqn can play (None: it is one)."""
    if not ALE_ID.fullmatch(game):
        return "must be an ALE Gymnasium id of the form 'ALE/<Game>-v5', such as 'ALE/Breakout-v5' or 'ALE/Pong-v5'"
    if game not in gymnasium.registry:
        return f"ale-py {ale_py.__version__} has no game with this id (e.g. ALE/Breakout-v5, ALE/Pong-v5)"
    return None


def _make_ale(game: str, frame_skip: int, noop_max: int, sticky_actions: float, max_episode_steps: int,
              render_mode: str | None) -> gymnasium.Env:
    ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)  # no banner on stderr (it would break one-line errors)
    # ALE's own frame limit is set beyond ours (no-op frames included), so the agent-step cap alone cuts a game
    limit = frame_skip * max_episode_steps + noop_max + 1
    return gymnasium.make(game, frameskip=1, repeat_action_probability=sticky_actions, full_action_space=False,
                          max_num_frames_per_episode=limit, render_mode=render_mode)


class AtariEnv(gymnasium.Wrapper):
    """One Atari game with DQN preprocessing; observation (frame_size, frame_size) uint8 (module docstring).

    Args:
        game: ALE Gymnasium id, e.g. ``"ALE/Breakout-v5"``.
        frame_size: F, the side of the square observation (the network's input; 84 in the papers).
        frame_skip: agent actions are repeated for this many frames (max-pooled over the last two).
        noop_max: reset plays 1..noop_max no-op frames (0: none).
        sticky_actions: ALE's repeat_action_probability (0: deterministic, as the DQN papers).
        max_episode_steps: agent steps per game before it is truncated.
        render_mode: None or ``"rgb_array"`` (the real screen).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 15}  # 60 Hz / frame skip 4

    def __init__(self, game: str, frame_size: int = 84, frame_skip: int = 4, noop_max: int = 30,
                 sticky_actions: float = 0.0, max_episode_steps: int = 27_000, render_mode: str | None = None) -> None:
        problem = id_problem(game)
        if problem:
            raise ValueError(f"game {game!r}: {problem}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array' for Atari games, got {render_mode!r}")
        if max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be >= 1, got {max_episode_steps!r}")
        base = _make_ale(game, frame_skip, noop_max, sticky_actions, max_episode_steps, render_mode)
        super().__init__(AtariPreprocessing(base, noop_max=noop_max, frame_skip=frame_skip, screen_size=frame_size,
                                            terminal_on_life_loss=False, grayscale_obs=True, scale_obs=False))
        self.game, self.max_episode_steps = game, int(max_episode_steps)
        self.score, self.steps, self.lives = 0, 0, 0

    @property
    def num_actions(self) -> int:
        """Size of the game's minimal action set."""
        return int(self.action_space.n)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        frame, info = self.env.reset(seed=seed, options=options)
        self.score, self.steps, self.lives = 0, 0, self.unwrapped.ale.lives()
        return frame, self._info(info, False)

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        """One agent step (``frame_skip`` frames): (frame (F, F) uint8, raw reward, game over, cut, info)."""
        frame, reward, terminated, truncated, info = self.env.step(action)
        self.score += int(reward)  # ALE rewards are whole points
        self.steps += 1
        lives = self.unwrapped.ale.lives()
        lost, self.lives = lives < self.lives and not terminated, lives
        truncated = not terminated and (truncated or self.steps >= self.max_episode_steps)
        return frame, float(reward), bool(terminated), bool(truncated), self._info(info, lost)

    def _info(self, info: dict, life_lost: bool) -> dict[str, Any]:
        return {**info, "score": self.score, "life_lost": life_lost}

    def render(self) -> np.ndarray | None:
        """rgb_array: the real game screen, (210, 160, 3) uint8."""
        if self.render_mode != "rgb_array":
            gymnasium.logger.warn("render() called without render_mode='rgb_array'")
            return None
        return self.unwrapped.ale.getScreenRGB()


class AtariBatch(EnvBatch):
    """K Atari games stepped together; a finished game restarts in the same step (``GameBatch`` protocol)."""

    def __init__(self, num_envs: int, game: str, frame_size: int = 84, frame_skip: int = 4, noop_max: int = 30,
                 sticky_actions: float = 0.0, max_episode_steps: int = 27_000) -> None:
        super().__init__([AtariEnv(game, frame_size, frame_skip, noop_max, sticky_actions, max_episode_steps)
                          for _ in range(batch_size(num_envs))])
        self.frame_size = int(frame_size)


def num_actions(game: str) -> int:
    """The size of ``game``'s minimal action set (builds the emulator once: ≈ 0.1 s)."""
    env = _make_ale(game, 1, 0, 0.0, 1, None)
    try:
        return int(env.action_space.n)
    finally:
        env.close()
