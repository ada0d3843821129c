"""Many games at once (SnakeBatch): the random-policy replay fill and greedy evaluation.

Shapes: frames (K, H, W) uint8; stacked states φ (K, C, H, W) uint8 with C = history.
"""
from __future__ import annotations

import numpy as np

from .agent import greedy_actions
from .config import Config
from .qnet import QNetwork
from .replay import ReplayMemory
from .snake import SnakeBatch, SnakeEnv, random_policy_score

FILL_GAMES = 64


def make_env(cfg: Config, frame_size: int, render_mode: str | None = None) -> SnakeEnv:
    """One game as the config describes it, rendered at the network's input size."""
    return SnakeEnv(cfg.board_size, frame_size, cfg.starve_steps, cfg.paper_look, render_mode)


def make_batch(cfg: Config, frame_size: int, num_envs: int) -> SnakeBatch:
    """K games as the config describes them."""
    return SnakeBatch(num_envs, cfg.board_size, frame_size, cfg.starve_steps, cfg.paper_look)


def random_score(cfg: Config, frame_size: int, episodes: int, seed: int) -> float:
    """Mean score of the uniform random policy on the config's game (the baseline every evaluation reports)."""
    return random_policy_score(cfg.board_size, episodes, seed, frame_size=frame_size,
                               max_steps_without_apple=cfg.starve_steps)


def fill_random(replay: ReplayMemory, transitions: int, cfg: Config, frame_size: int, seed: int) -> int:
    """Add at least ``transitions`` random-policy transitions to ``replay``, whole episodes only.

    The slides' "populates replay dataset with experiences via random policy". Returns the number added.
    """
    batch = make_batch(cfg, frame_size, FILL_GAMES)
    rng = np.random.default_rng([seed, 2])
    frames = batch.reset(seed)
    first = list(frames)
    steps: list[list[tuple[int, float, np.ndarray, bool]]] = [[] for _ in range(FILL_GAMES)]
    added = 0
    while added < transitions:
        actions = rng.integers(0, 4, FILL_GAMES)
        frames, rewards, terminated, truncated, info = batch.step(actions)
        done = terminated | truncated
        for i in range(FILL_GAMES):
            nxt = info["final_frame"][i] if done[i] else frames[i]
            steps[i].append((int(actions[i]), float(rewards[i]), nxt, bool(terminated[i])))
            if done[i]:
                replay.start_episode(first[i])
                for a, r, x, term in steps[i]:
                    replay.add(a, r, x, term)
                added += len(steps[i])
                first[i], steps[i] = frames[i], []
    return added


def evaluate_greedy(q: QNetwork, cfg: Config, episodes: int, seed: int) -> np.ndarray:
    """Scores (apples) of ``episodes`` greedy episodes, played side by side; (episodes,) int64."""
    history, frame_size = q.spec.state_shape[0], q.spec.state_shape[1]
    batch = make_batch(cfg, frame_size, episodes)
    frames = batch.reset(seed)
    states = np.repeat(frames[:, None], history, axis=1)
    scores = np.zeros(episodes, np.int64)
    done = np.zeros(episodes, bool)
    actions = np.zeros(episodes, np.int64)
    while not done.all():
        live = np.flatnonzero(~done)
        actions[live] = greedy_actions(q, states[live])
        frames, _, terminated, truncated, info = batch.step(actions)
        ended = (terminated | truncated) & ~done
        scores[ended] = info["score"][ended]
        done |= ended
        states[:, :-1] = states[:, 1:]
        states[:, -1] = frames
        restarted = np.flatnonzero(terminated | truncated)
        states[restarted] = frames[restarted, None]
    return scores
