"""Games the agent learns, behind one interface: Snake (the paper's game), Atari (ALE through Gymnasium) and a
user's own Gymnasium env with image observations.

``cfg.game`` picks the family (:func:`game_kind`): ``"snake"``; an ALE Gymnasium id such as ``"ALE/Breakout-v5"``
(:mod:`ddqn.game.atari`); else a user's env, ``"package.module:Class"`` or a registered Gymnasium id such as
``"ddqn/Catch-v0"`` (:mod:`ddqn.game.custom`). This module is the one place that maps ``cfg.game`` to an env. What
the rest of ddqn needs from a game, given a :class:`~ddqn.config.Config`:

* :func:`make_env` — one game as a Gymnasium env: ``reset(seed)``/``step(a)`` give (H, W) uint8 frames at the
  network's input size, ``Discrete`` actions, and ``info["score"]`` (the game's own score so far). An Atari game
  also reports ``info["life_lost"]`` (a life lost on this step, the game going on).
* :func:`make_batch` — K games stepped together (:class:`GameBatch`): the random warm-up fill and evaluation
  play many episodes at once.
* :func:`game_actions` — the number of actions, which the network's Q outputs must match.
* :func:`game_problem` — why ``cfg.game`` cannot be played (the config's check; None: it can).
"""
from __future__ import annotations

from typing import Any, Protocol

import gymnasium
import numpy as np

from ddqn.config import Config
from ddqn.errors import ConfigError
from ddqn.game import examples  # noqa: F401 - registers the example games' Gymnasium ids (ddqn/Catch-v0)
from ddqn.game.snake import SnakeBatch, SnakeEnv

SNAKE, ATARI, CUSTOM = "snake", "atari", "custom"  # the game families (game_kind)
ALE_PREFIX = "ALE/"  # an ALE Gymnasium id: ALE/<Game>-v5


class GameBatch(Protocol):
    """K games stepped together; a finished game restarts within the same step.

    ``reset(seed)`` → frames (K, H, W) uint8. ``step(actions (K,))`` → (frames (K, H, W) uint8, rewards (K,)
    float32, terminated (K,) bool, truncated (K,) bool, info) where ``info["final_frame"]`` holds each game's
    last frame before a restart and ``info["score"]`` (K,) its score so far; batches of Gymnasium envs (Atari, a
    user's game: :class:`ddqn.game.batch.EnvBatch`) add ``info["life_lost"]`` (K,) bool.
    """

    num_envs: int
    num_actions: int

    def reset(self, seed: int | None = None) -> np.ndarray: ...

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]: ...


def game_kind(game: str) -> str:
    """The family of a ``game`` value: ``SNAKE``, ``ATARI`` (``ALE/…``) or ``CUSTOM`` (a user's Gymnasium env)."""
    if game == SNAKE:
        return SNAKE
    return ATARI if game.startswith(ALE_PREFIX) else CUSTOM


def is_atari(cfg: Config) -> bool:
    """True when the config's game is an Atari (ALE) game."""
    return game_kind(cfg.game) == ATARI


def is_snake(cfg: Config) -> bool:
    """True when the config's game is Snake."""
    return cfg.game == SNAKE


def game_problem(game: str) -> str | None:
    """Why ``game`` cannot be played (None: it can): an unknown ALE id; for a user's env a module that cannot be
    imported, an id not registered, observations that are not images or actions that are not ``Discrete``
    (:mod:`ddqn.game.custom`)."""
    kind = game_kind(game)
    if kind == ATARI:
        from ddqn.game.atari import id_problem  # noqa: PLC0415 - ALE loads only for Atari runs

        return id_problem(game)
    if kind == CUSTOM:
        from ddqn.game.custom import game_problem as custom_problem  # noqa: PLC0415 - only for a user's game

        return custom_problem(game)
    return None


def make_env(cfg: Config, frame_size: int, render_mode: str | None = None) -> gymnasium.Env:
    """One game as the config describes it, observed at the network's input size ``frame_size``."""
    if is_atari(cfg):
        from ddqn.game.atari import AtariEnv  # noqa: PLC0415 - ALE and OpenCV load only for Atari runs

        return AtariEnv(cfg.game, frame_size, cfg.frame_skip, cfg.noop_max, cfg.sticky_actions,
                        cfg.max_episode_steps, render_mode)
    if game_kind(cfg.game) == CUSTOM:
        from ddqn.game.custom import ImageEnv  # noqa: PLC0415 - only for a user's game

        return ImageEnv(cfg.game, frame_size, cfg.max_episode_steps, render_mode)
    return SnakeEnv(cfg.board_size, frame_size, cfg.starve_steps, cfg.paper_look, render_mode,
                    _snake_layout(cfg, frame_size))


def make_batch(cfg: Config, frame_size: int, num_envs: int) -> GameBatch:
    """K games as the config describes them."""
    if is_atari(cfg):
        from ddqn.game.atari import AtariBatch  # noqa: PLC0415 - ALE and OpenCV load only for Atari runs

        return AtariBatch(num_envs, cfg.game, frame_size, cfg.frame_skip, cfg.noop_max, cfg.sticky_actions,
                          cfg.max_episode_steps)
    if game_kind(cfg.game) == CUSTOM:
        from ddqn.game.batch import EnvBatch, batch_size  # noqa: PLC0415 - only for a user's game
        from ddqn.game.custom import ImageEnv  # noqa: PLC0415 - only for a user's game

        return EnvBatch([ImageEnv(cfg.game, frame_size, cfg.max_episode_steps) for _ in range(batch_size(num_envs))])
    return SnakeBatch(num_envs, cfg.board_size, frame_size, cfg.starve_steps, cfg.paper_look,
                      _snake_layout(cfg, frame_size))


def _snake_layout(cfg: Config, frame_size: int) -> str:
    """The config's ``frame_layout``, or a one-line error when the net's frames are too small for it."""
    if cfg.frame_layout == "cells" and frame_size < cfg.board_size + 2:
        raise ConfigError(f"frame_layout: 'cells' needs the net's frames to be at least board_size + 2 = "
                          f"{cfg.board_size + 2} pixels wide, but {cfg.net} takes {frame_size}")
    return cfg.frame_layout


def game_actions(cfg: Config) -> int:
    """Number of actions of the config's game (Snake 4; an Atari game its minimal action set, e.g. Pong 6; a user's
    env its ``Discrete(n)``)."""
    if is_atari(cfg):
        from ddqn.game.atari import num_actions  # noqa: PLC0415 - ALE loads only for Atari runs

        return num_actions(cfg.game)
    if game_kind(cfg.game) == CUSTOM:
        from ddqn.game.custom import num_actions as custom_actions  # noqa: PLC0415 - only for a user's game

        return custom_actions(cfg.game)
    return SnakeBatch.num_actions
