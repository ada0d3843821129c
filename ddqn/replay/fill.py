"""The random warm-up: "populates replay dataset with experiences via random policy" (slides, Software).

Played on K games at once (:func:`ddqn.game.make_batch`); whole episodes only, so every stored transition has
its history. Transitions are stored as the experience loop stores them (:func:`ddqn.replay.transition.store_step`:
clipped rewards, a lost life terminal for learning). Shapes: frames (K, H, W) uint8.
"""
from __future__ import annotations

import numpy as np

from ddqn.config import Config
from ddqn.game import is_snake, make_batch
from ddqn.replay.memory import ReplayMemory
from ddqn.replay.transition import store_step

FILL_GAMES = 64  # Snake: episodes of tens of steps
# An Atari game lasts hundreds to thousands of steps and is buffered whole (84×84 frames): fewer games in flight
# bound the overshoot past the requested count and the buffer (8 Pong games ≈ 8 × 900 × 7 KB ≈ 50 MB). A user's
# env, whose game length ddqn does not know, plays as many.
ATARI_FILL_GAMES = 8


def fill_random(replay: ReplayMemory, transitions: int, cfg: Config, frame_size: int, seed: int) -> int:
    """Add at least ``transitions`` random-policy transitions to ``replay``, whole episodes only.

    The slides' "populates replay dataset with experiences via random policy". Returns the number added.
    """
    k = FILL_GAMES if is_snake(cfg) else ATARI_FILL_GAMES
    batch = make_batch(cfg, frame_size, k)
    rng = np.random.default_rng([seed, 2])
    frames = batch.reset(seed)
    first = list(frames)
    steps: list[list[tuple]] = [[] for _ in range(k)]  # per game: (a, r, x', terminated, truncated, life_lost)
    no_lives = np.zeros(k, bool)
    added = 0
    while added < transitions:
        actions = rng.integers(0, batch.num_actions, k)
        frames, rewards, terminated, truncated, info = batch.step(actions)
        lost = info.get("life_lost", no_lives)
        done = terminated | truncated
        for i in range(k):
            nxt = info["final_frame"][i] if done[i] else frames[i]
            steps[i].append((int(actions[i]), float(rewards[i]), nxt, bool(terminated[i]), bool(truncated[i]),
                             bool(lost[i])))
            if done[i]:
                replay.start_episode(first[i])
                for step in steps[i]:
                    store_step(replay, cfg, *step)
                added += len(steps[i])
                first[i], steps[i] = frames[i], []
    return added
