"""Watch an agent: a greedy episode as an animated GIF or in the terminal.

Both loops take ``stop`` (:mod:`ddqn.stop`): once it is set they raise :class:`~ddqn.errors.Interrupted` at
their next step (or frame) boundary.
"""
from __future__ import annotations

import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np

from ddqn.config import Config
from ddqn.dqn.qlearning import greedy_actions
from ddqn.errors import Interrupted
from ddqn.game import make_env
from ddqn.game.frames import FrameStack
from ddqn.net.qnet import QNetwork
from ddqn.stop import NEVER, Stoppable, sleep_unless


def greedy_episode_scores(q: QNetwork, cfg: Config, seed: int, render_mode: str = "rgb_array",
                          max_steps: int = 2_000, stop: Stoppable = NEVER) -> tuple[list, list[int]]:
    """Play one greedy episode; return (rendered frames — RGB arrays or text boards —, the score so far at each
    frame: apples eaten, one int per frame, starting at 0)."""
    env = make_env(cfg, q.spec.state_shape[1], render_mode=render_mode)
    stack = FrameStack(q.spec.state_shape[0])
    frame, info = env.reset(seed=seed)
    phi = stack.reset(frame)
    shots, scores = [env.render()], [int(info["score"])]
    for _ in range(max_steps):
        if stop.is_set():
            raise Interrupted("interrupted during the greedy episode")
        action = int(greedy_actions(q, phi[None])[0])
        frame, _, terminated, truncated, info = env.step(action)
        phi = stack.push(frame)
        shots.append(env.render())
        scores.append(int(info["score"]))
        if terminated or truncated:
            break
    return shots, scores


def greedy_episode(q: QNetwork, cfg: Config, seed: int, render_mode: str = "rgb_array",
                   max_steps: int = 2_000, stop: Stoppable = NEVER) -> tuple[list, int]:
    """Play one greedy episode; return (rendered frames — RGB arrays or text boards —, final score)."""
    shots, scores = greedy_episode_scores(q, cfg, seed, render_mode, max_steps, stop)
    return shots, scores[-1]


def write_gif(shots: list[np.ndarray], path: str | Path, fps: int = 8) -> Path:
    """Write RGB frames (H, W, 3) uint8 as a looping animated GIF."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, np.stack(shots), duration=1000 / fps, loop=0)
    return path


def play_terminal(q: QNetwork, cfg: Config, seed: int, fps: float = 8.0, stop: Stoppable = NEVER) -> int:
    """Animate a greedy episode in the terminal; return its score."""
    shots, score = greedy_episode(q, cfg, seed, render_mode="ansi", stop=stop)
    for i, board in enumerate(shots):
        sys.stdout.write("\x1b[H\x1b[2J" + board + f"\nstep {i}\n")
        sys.stdout.flush()
        if sleep_unless(stop, 1 / fps):
            raise Interrupted(f"interrupted at frame {i} of {len(shots)}")
    return score
