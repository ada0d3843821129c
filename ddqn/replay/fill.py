"""The random warm-up: "populates replay dataset with experiences via random policy" (slides, Software).

Played on K games at once (:func:`ddqn.game.make_batch`); whole episodes only, so every stored transition has
its history. Shapes: frames (K, H, W) uint8.
"""
from __future__ import annotations

import numpy as np

from ddqn.config import Config
from ddqn.game import make_batch
from ddqn.replay.memory import ReplayMemory

FILL_GAMES = 64


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
        actions = rng.integers(0, batch.num_actions, FILL_GAMES)
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
