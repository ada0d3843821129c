"""K games of one Gymnasium env stepped together: what every game family without its own vectorised batch uses."""
from __future__ import annotations

import gymnasium
import numpy as np

from ddqn.game.seeds import game_seeds


def batch_size(num_envs: object) -> int:
    """``num_envs`` as an int >= 1, else a ValueError."""
    if not isinstance(num_envs, (int, np.integer)) or isinstance(num_envs, bool) or num_envs < 1:
        raise ValueError(f"num_envs must be an int >= 1, got {num_envs!r}")
    return int(num_envs)


class EnvBatch:
    """K envs, each giving (H, W) uint8 frames and ``info["score"]``, stepped together; a finished game restarts in
    the same step (the ``GameBatch`` protocol of :mod:`ddqn.game`). Game i of a batch reset with seed s plays
    exactly like its env reset with ``game_seeds(s, K)[i]``."""

    def __init__(self, envs: list[gymnasium.Env]) -> None:
        self.envs = envs
        self.num_envs = batch_size(len(envs))
        self.num_actions = int(envs[0].action_space.n)
        self.frame_shape: tuple[int, int] = tuple(envs[0].observation_space.shape)
        self._started = False

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Start all games; (K, H, W) uint8 frames. A seed re-seeds every game (see ``game_seeds``)."""
        seeds: list[int | None] = game_seeds(seed, self.num_envs) if seed is not None or not self._started \
            else [None] * self.num_envs
        self._started = True
        return np.stack([env.reset(seed=s)[0] for env, s in zip(self.envs, seeds)])

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        """Advance all games by one action (K,) int in 0..num_actions-1.

        Returns frames (K, H, W) uint8 (the new game's first frame for finished games), raw rewards (K,) float32,
        terminated (K,) bool (game over), truncated (K,) bool (step cap) and info: "final_frame" (K, H, W) (the
        last frame, valid where terminated|truncated), "score" (K,) int64 (each game's score so far; of the
        finished game where it ended) and "life_lost" (K,) bool (False for games without lives).
        """
        a = np.asarray(actions)
        if a.shape != (self.num_envs,) or a.dtype.kind not in "iu" or ((a < 0) | (a >= self.num_actions)).any():
            raise ValueError(f"actions must be an int array of shape ({self.num_envs},) with values in "
                             f"0..{self.num_actions - 1}")
        if not self._started:
            raise RuntimeError("call reset() before step()")
        k = self.num_envs
        frames, final = np.empty((k, *self.frame_shape), np.uint8), np.empty((k, *self.frame_shape), np.uint8)
        rewards = np.empty(k, np.float32)
        terminated, truncated, lost = np.zeros(k, bool), np.zeros(k, bool), np.zeros(k, bool)
        score = np.empty(k, np.int64)
        for i, env in enumerate(self.envs):
            final[i], rewards[i], terminated[i], truncated[i], info = env.step(int(a[i]))
            score[i], lost[i] = info["score"], info.get("life_lost", False)
            frames[i] = env.reset()[0] if terminated[i] or truncated[i] else final[i]
        return frames, rewards, terminated, truncated, {"final_frame": final, "score": score, "life_lost": lost}

    def close(self) -> None:
        """Release the games."""
        for env in self.envs:
            env.close()
