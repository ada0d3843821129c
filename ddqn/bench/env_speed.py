"""Snake env steps/s under random actions: SnakeEnv (direct and via gymnasium.make) and SnakeBatch K=1, K=256.

``python -m ddqn.bench.env_speed [--seconds S]``; a batch step of K games counts as K env steps.
Writes results/env_speed.json.
"""
from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import gymnasium
import numpy as np

from ddqn.bench.common import write_result
from ddqn.game.snake import ENV_ID, SnakeBatch, SnakeEnv

SIZE, FRAME = 10, 16


def timed(step: Callable[[int], int], seconds: float) -> float:
    """Call ``step(t)`` (returns env steps done) until ``seconds`` pass; env steps per second."""
    steps, t, start = 0, 0, time.perf_counter()
    while True:
        for _ in range(64):
            steps += step(t)
            t += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return steps / elapsed


def single_env(env: gymnasium.Env, seconds: float) -> float:
    """Steps/s of one env through reset/step, resetting when an episode ends."""
    actions = np.random.default_rng(0).integers(0, 4, 1 << 16).tolist()
    env.reset(seed=0)

    def step(t: int) -> int:
        _, _, terminated, truncated, _ = env.step(actions[t & 0xFFFF])
        if terminated or truncated:
            env.reset()
        return 1
    return timed(step, seconds)


def batch_env(num_envs: int, seconds: float) -> float:
    """Steps/s of SnakeBatch(num_envs) (autoreset inside step), counting num_envs per call."""
    batch = SnakeBatch(num_envs, size=SIZE, frame_size=FRAME)
    batch.reset(seed=0)
    actions = np.random.default_rng(0).integers(0, 4, (256, num_envs))

    def step(t: int) -> int:
        batch.step(actions[t & 255])
        return num_envs
    return timed(step, seconds)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time per variant (default 3)")
    parser.add_argument("--out", default="results", help="results directory")
    args = parser.parse_args(argv)
    figures = {
        "SnakeEnv": single_env(SnakeEnv(size=SIZE, frame_size=FRAME), args.seconds),
        "gymnasium.make": single_env(gymnasium.make(ENV_ID, size=SIZE, frame_size=FRAME), args.seconds),
        "SnakeBatch_K1": batch_env(1, args.seconds),
        "SnakeBatch_K256": batch_env(256, args.seconds),
    }
    print(f"env steps/s, random actions, board {SIZE}x{SIZE}, frame {FRAME}x{FRAME}, {args.seconds:g} s each")
    for name, rate in figures.items():
        print(f"  {name:<16} {rate:>12,.0f}")
    print(f"  K=256 / K=1 speed-up: {figures['SnakeBatch_K256'] / figures['SnakeBatch_K1']:.1f}x")
    write_result("env_speed", {"size": SIZE, "frame_size": FRAME, "seconds": args.seconds,
                               "steps_per_s": {k: round(v, 1) for k, v in figures.items()}}, args.out)


if __name__ == "__main__":
    main()
