"""Watch an agent: an episode of the evaluation policy as an animated GIF or in the terminal.

The policy is evaluation's (:mod:`ddqn.dqn.evaluation`): ε-greedy with ε = ``cfg.eval_epsilon`` (0, Snake's
default: greedy), its random choices seeded by ``seed``. A GIF shows what the game renders — Snake's board, an
Atari game's real 210×160 screen, a user's env's raw observation enlarged — at the game's pace. An episode ends
at game over, the game's own cut, or after ``max_steps`` (default :func:`episode_cap`: 2,000 for Snake; for the
other games their ``max_episode_steps`` cut, at most 5,000 steps). Terminal play is Snake's only.

Both loops take ``stop`` (:mod:`ddqn.stop`): once it is set they raise :class:`~ddqn.errors.Interrupted` at
their next step (or frame) boundary.
"""
from __future__ import annotations

import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np

from ddqn.config import Config
from ddqn.dqn.qlearning import epsilon_greedy
from ddqn.errors import DDQNError, Interrupted
from ddqn.game import is_snake, make_env
from ddqn.game.frames import FrameStack
from ddqn.net.qnet import QNetwork
from ddqn.stop import NEVER, Stoppable, sleep_unless

SNAKE_MAX_STEPS = 2_000  # a Snake episode shown (Snake's own cut is starving, which a looping snake never hits)
# an Atari (or a user's) episode shown: a whole game of a trained agent (it lasts thousands of steps), but a GIF
# holds every 210×160 RGB screen (100 KB): 5,000 of them are 0.5 GB and 5.5 minutes at 15 fps; a full 27,000-step
# cap 2.7 GB
ATARI_MAX_STEPS = 5_000
# GIF frames per second: Snake's pace; Atari's real time (60 Hz / frame skip 4), also a user's env's
SNAKE_FPS, ATARI_FPS = 8, 15


def episode_cap(cfg: Config) -> int:
    """Default step bound of a shown episode: 2,000 for Snake; for the other games their own cut, at most 5,000."""
    return SNAKE_MAX_STEPS if is_snake(cfg) else min(cfg.max_episode_steps, ATARI_MAX_STEPS)


def gif_fps(cfg: Config) -> int:
    """Frames per second of the config's game in a GIF."""
    return SNAKE_FPS if is_snake(cfg) else ATARI_FPS


def greedy_episode_scores(q: QNetwork, cfg: Config, seed: int, render_mode: str = "rgb_array",
                          max_steps: int | None = None, stop: Stoppable = NEVER) -> tuple[list, list[int]]:
    """Play one episode of the evaluation policy; return (rendered frames — RGB arrays or text boards —, the score
    so far at each frame: one int per frame, starting at 0). ``max_steps`` None: :func:`episode_cap`."""
    env = make_env(cfg, q.spec.state_shape[1], render_mode=render_mode)
    stack = FrameStack(q.spec.state_shape[0])
    rng = np.random.default_rng([seed, 3])  # the ε draws, as evaluation's
    frame, info = env.reset(seed=seed)
    phi = stack.reset(frame)
    shots, scores = [env.render()], [int(info["score"])]
    for _ in range(episode_cap(cfg) if max_steps is None else max_steps):
        if stop.is_set():
            raise Interrupted("interrupted during the greedy episode")
        action = epsilon_greedy(q, phi, cfg.eval_epsilon, rng)
        frame, _, terminated, truncated, info = env.step(action)
        phi = stack.push(frame)
        shots.append(env.render())
        scores.append(int(info["score"]))
        if terminated or truncated:
            break
    return shots, scores


def greedy_episode(q: QNetwork, cfg: Config, seed: int, render_mode: str = "rgb_array",
                   max_steps: int | None = None, stop: Stoppable = NEVER) -> tuple[list, int]:
    """Play one episode of the evaluation policy; return (rendered frames — RGB arrays or text boards —, final
    score)."""
    shots, scores = greedy_episode_scores(q, cfg, seed, render_mode, max_steps, stop)
    return shots, scores[-1]


def write_gif(shots: list[np.ndarray], path: str | Path, fps: int = SNAKE_FPS) -> Path:
    """Write RGB frames (H, W, 3) uint8 as a looping animated GIF."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, np.stack(shots), duration=1000 / fps, loop=0)
    return path


def play_terminal(q: QNetwork, cfg: Config, seed: int, fps: float = 8.0, stop: Stoppable = NEVER) -> int:
    """Animate a greedy episode in the terminal; return its score. Snake only (the other games render no text)."""
    if not is_snake(cfg):
        raise DDQNError(f"game {cfg.game}: only Snake can be played in the terminal; write a GIF with --gif")
    shots, score = greedy_episode(q, cfg, seed, render_mode="ansi", stop=stop)
    for i, board in enumerate(shots):
        sys.stdout.write("\x1b[H\x1b[2J" + board + f"\nstep {i}\n")
        sys.stdout.flush()
        if sleep_unless(stop, 1 / fps):
            raise Interrupted(f"interrupted at frame {i} of {len(shots)}")
    return score
