"""A user's own game: any Gymnasium env with image observations and discrete actions, seen as the net sees it.

``cfg.game`` names it in one of two forms (``docs/own-game.md``):

* ``package.module:Class`` — a ``gymnasium.Env`` subclass, built as ``Class()``;
* a registered Gymnasium id, e.g. ``ddqn/Catch-v0``, or ``module:Name-v0``, for which ``module`` is imported
  first (the module that registers the id), built by ``gymnasium.make``.

Either way the module is imported in every process that plays — the driver, each Spark executor, the evaluator
— so it must be importable there: an installed package, or shipped with ``spark-submit --py-files``.

What ddqn needs, checked when a config is loaded (:func:`game_problem`, a one-line error): observations a
``Box`` of dtype uint8 with bounds 0..255 and shape (H, W), (H, W, 1) or (H, W, 3); actions ``Discrete(n)``
numbered from 0 (the net's Q outputs must number n, checked with the prototxt).

Preprocessing (:class:`ImageEnv`) is Gymnasium's own wrappers: ``TimeLimit`` (``max_episode_steps`` agent steps);
an RGB image to grayscale (``GrayscaleObservation``: ITU-R 709 luma), an (H, W, 1) image to (H, W)
(``ReshapeObservation``); then, unless it already is F × F, ``ResizeObservation`` to the net's input F × F
(OpenCV area interpolation). No frame skip, no no-op starts, no lives: those are ALE's. The frame stack is not an
env wrapper: as for every game, the experience loop stacks the last C frames and the replay memory stores each
frame once (C and F come from the prototxt's input shape).

``info["score"]`` is the sum of the env's raw rewards this episode, rounded to a whole number (ddqn's scores
are integers); learning sees the rewards clipped by ``reward_clip``. ``render()`` (``render_mode="rgb_array"``)
is the env's last raw observation as RGB, enlarged by a whole factor to at least 160 pixels a side: what GIFs
show.
"""
from __future__ import annotations

import functools
import importlib
import math
import re
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces
from gymnasium.wrappers import GrayscaleObservation, ReshapeObservation, ResizeObservation, TimeLimit

from ddqn.errors import ConfigError

CLASS_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")  # package.module:Class
FORMS = "'snake', an ALE id such as 'ALE/Breakout-v5', a registered Gymnasium id or 'package.module:Class'"
RENDER_MIN = 160  # pixels: the shorter side of a rendered (GIF) frame is enlarged to at least this


class _Unplayable(Exception):
    """Why a game cannot be played; ``str`` is the reason, without the game's name."""


def _import(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # the module itself, or one it imports, is missing
        raise _Unplayable(f"cannot import module {module!r} ({' '.join(str(exc).split())})") from exc


def _build(game: str) -> gymnasium.Env:
    """The user's env as it is (no preprocessing)."""
    if CLASS_PATH.fullmatch(game):
        module, name = game.split(":")
        cls = getattr(_import(module), name, None)
        if cls is None:
            raise _Unplayable(f"module {module!r} has no attribute {name!r}")
        if not (isinstance(cls, type) and issubclass(cls, gymnasium.Env)):
            raise _Unplayable(f"{name!r} in module {module!r} is not a gymnasium.Env subclass")
        return cls()
    module, _, env_id = game.rpartition(":")
    if module:
        _import(module)
    if env_id not in gymnasium.registry:
        raise _Unplayable(f"no Gymnasium env is registered with id {env_id!r} (an id your package registers: write "
                          f"'package.module:{env_id}', so that every process imports it first); game must be {FORMS}")
    return gymnasium.make(env_id)


def _describe(space: spaces.Space) -> str:
    """A space on one short line."""
    if isinstance(space, spaces.Box):
        return f"Box(shape {space.shape}, dtype {space.dtype})"
    return " ".join(str(space).split())[:80]


def spaces_problem(env: gymnasium.Env) -> str | None:
    """Why ``env``'s spaces are not what ddqn plays (None: they are)."""
    obs, act = env.observation_space, env.action_space
    if not isinstance(act, spaces.Discrete):
        return f"action space {_describe(act)} is not Discrete: the Q-network has one output per action"
    if int(act.start) != 0:
        return f"action space {_describe(act)} must number its actions from 0"
    shape = getattr(obs, "shape", None) or ()
    if not (isinstance(obs, spaces.Box) and obs.dtype == np.uint8
            and (len(shape) == 2 or len(shape) == 3 and shape[2] in (1, 3))):
        return (f"observation space {_describe(obs)} is not an image: ddqn needs a uint8 Box of shape (H, W), "
                "(H, W, 1) or (H, W, 3)")
    if not (np.all(obs.low == 0) and np.all(obs.high == 255)):
        return f"observation space {_describe(obs)} must have pixel bounds 0 and 255 (the net scales by 1/255)"
    return None


def load_env(game: str) -> gymnasium.Env:
    """The user's env as it is, with spaces ddqn plays; a one-line :class:`ConfigError` naming the game if not."""
    try:
        env = _build(game)
    except _Unplayable as exc:
        raise ConfigError(f"game {game!r}: {exc}") from exc
    problem = spaces_problem(env)
    if problem:
        env.close()
        raise ConfigError(f"game {game!r}: {problem}")
    return env


@functools.lru_cache(maxsize=8)
def game_problem(game: str) -> str | None:
    """Why ``game`` is not a user env ddqn can play (None: it is). Builds it once per process and game."""
    try:
        env = _build(game)
    except _Unplayable as exc:
        return str(exc)
    try:
        return spaces_problem(env)
    finally:
        env.close()


def num_actions(game: str) -> int:
    """n of the env's ``Discrete(n)`` actions."""
    env = load_env(game)
    try:
        return int(env.action_space.n)
    finally:
        env.close()


class _LastObservation(gymnasium.ObservationWrapper):
    """Keeps the env's last raw observation (``last``) for ``render()``."""

    def observation(self, observation: np.ndarray) -> np.ndarray:
        self.last = observation
        return observation


class ImageEnv(gymnasium.Wrapper):
    """A user's env as the net sees it: observation (F, F) uint8, ``info["score"]`` (module docstring).

    Args:
        game: ``package.module:Class`` or a registered Gymnasium id.
        frame_size: F, the side of the net's square input in pixels.
        max_episode_steps: agent steps before an episode is cut (``truncated``).
        render_mode: None or ``"rgb_array"`` (the raw observation, enlarged).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 15}

    def __init__(self, game: str, frame_size: int, max_episode_steps: int = 27_000,
                 render_mode: str | None = None) -> None:
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self._raw = _LastObservation(load_env(game))
        env: gymnasium.Env = TimeLimit(self._raw, max_episode_steps)
        shape = self._raw.observation_space.shape
        if len(shape) == 3:
            env = GrayscaleObservation(env) if shape[2] == 3 else ReshapeObservation(env, shape[:2])
        if shape[:2] != (frame_size, frame_size):
            env = ResizeObservation(env, (frame_size, frame_size))
        super().__init__(env)
        self.game, self._render_mode, self.score = game, render_mode, 0.0

    @property
    def render_mode(self) -> str | None:
        return self._render_mode

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        frame, _ = self.env.reset(seed=seed, options=options)
        self.score = 0.0
        return frame, {"score": 0}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        """One agent step: (frame (F, F) uint8, raw reward, terminated, truncated, {"score": int})."""
        frame, reward, terminated, truncated, _ = self.env.step(int(action))
        self.score += float(reward)
        return frame, float(reward), bool(terminated), bool(truncated), {"score": round(self.score)}

    def render(self) -> np.ndarray | None:
        """rgb_array: the last raw observation as (kH, kW, 3) uint8, k the least whole factor making it at least
        ``RENDER_MIN`` pixels a side."""
        if self._render_mode != "rgb_array":
            gymnasium.logger.warn("render() called without render_mode='rgb_array'")
            return None
        image = np.asarray(self._raw.last, np.uint8).reshape(*self._raw.observation_space.shape[:2], -1)
        if image.shape[2] == 1:
            image = np.repeat(image, 3, axis=2)  # gray as RGB
        k = max(1, math.ceil(RENDER_MIN / min(image.shape[:2])))
        return np.repeat(np.repeat(image, k, axis=0), k, axis=1)
