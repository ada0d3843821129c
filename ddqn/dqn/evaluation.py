"""Evaluation of Q and the random-policy baseline, on K games at once, and the rows every mode logs.

The protocol (the DQN papers' for Atari; for Snake, greedy as the slides): each evaluation episode is a whole
game — every life, a lost life is no terminal here and φ runs on across it — until game over or the game's own
cut (Snake starving, Atari ``max_episode_steps``); the policy is ε-greedy with ε = ``cfg.eval_epsilon`` (0:
greedy; Atari configs 0.05), its random choices drawn from a generator seeded by the evaluation seed, so an
evaluation is repeatable; the score is the game's raw score ``info["score"]`` (unclipped). The random baseline
plays the uniform random policy under the same protocol.

Shapes: frames (K, H, W) uint8; stacked states φ (K, C, H, W) uint8 with C = history.

Each episode loop takes ``stop`` (:mod:`ddqn.stop`): once it is set, the loop raises
:class:`~ddqn.errors.Interrupted` at its next step boundary instead of returning partial scores.
"""
from __future__ import annotations

import numpy as np

from ddqn.config import Config
from ddqn.dqn.qlearning import greedy_actions
from ddqn.errors import Interrupted
from ddqn.game import make_batch
from ddqn.net.qnet import QNetwork
from ddqn.stop import NEVER, Stoppable


def policy_name(cfg: Config) -> str:
    """How the evaluation policy is named in messages: "greedy", or "ε=0.05-greedy" with ``eval_epsilon``."""
    return "greedy" if cfg.eval_epsilon == 0 else f"ε={cfg.eval_epsilon:g}-greedy"


def random_score(cfg: Config, frame_size: int, episodes: int, seed: int | None, num_envs: int = 64,
                 stop: Stoppable = NEVER) -> float:
    """Mean score per episode of the uniform random policy on the config's game (every evaluation's baseline).

    Each of K = min(num_envs, episodes) games contributes a fixed number of its first episodes, so short
    episodes are not over-represented.
    """
    if not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"episodes must be an int >= 1, got {episodes!r}")
    k = min(num_envs, episodes)
    quota = np.full(k, episodes // k)
    quota[: episodes % k] += 1
    batch = make_batch(cfg, frame_size, k)
    batch.reset(seed=seed)
    rng = np.random.default_rng(None if seed is None else [seed, 1])
    finished, total = np.zeros(k, np.int64), 0
    while (finished < quota).any():
        _check(stop, "the random-policy baseline")
        _, _, terminated, truncated, info = batch.step(rng.integers(0, batch.num_actions, k))
        counted = (terminated | truncated) & (finished < quota)
        total += int(info["score"][counted].sum())
        finished += counted
    return total / episodes


ENDINGS = ("wall", "body", "starved", "win", "game over", "step cap")  # how a game ended: index = ending code


def ending_codes(terminated: np.ndarray, truncated: np.ndarray, info: dict) -> np.ndarray:
    """How each game that ended this step ended, (K,) int8 indices into :data:`ENDINGS` (meaningless for games
    that did not end). Snake's info tells a death into a wall from one into the body, starving and a win; any
    other game's ending is "game over" (terminated) or "step cap" (truncated)."""
    no = np.zeros(terminated.shape, bool)
    death, wall = info.get("death", no), info.get("wall", no)
    first = {"win": info.get("win", no), "starved": info.get("starved", no), "wall": death & wall, "body": death,
             "game over": terminated}  # the first that holds names the ending; none: "step cap"
    return np.select(list(first.values()), [ENDINGS.index(e) for e in first],
                     default=ENDINGS.index("step cap")).astype(np.int8)


def endings_summary(scores: np.ndarray, codes: np.ndarray) -> dict[str, dict[str, float]]:
    """Per ending that happened (:data:`ENDINGS` order): its games and their mean score, from scores (N,) and
    ending codes (N,) of N games."""
    return {name: {"games": int((codes == i).sum()), "mean_score": float(scores[codes == i].mean())}
            for i, name in enumerate(ENDINGS) if (codes == i).any()}


def evaluate_greedy(q: QNetwork, cfg: Config, episodes: int, seed: int, stop: Stoppable = NEVER) -> np.ndarray:
    """Raw scores of ``episodes`` whole games of the ε-greedy policy (ε = ``cfg.eval_epsilon``; 0: greedy), played
    side by side; (episodes,) int64. The same ``seed`` gives the same games and the same random choices."""
    return play_greedy(q, cfg, episodes, seed, stop)[0]


def play_greedy(q: QNetwork, cfg: Config, episodes: int, seed: int,
                stop: Stoppable = NEVER) -> tuple[np.ndarray, np.ndarray]:
    """:func:`evaluate_greedy`'s games: their raw scores (episodes,) int64 and how each ended (episodes,) int8
    (:func:`ending_codes`)."""
    history, frame_size = q.spec.state_shape[0], q.spec.state_shape[1]
    batch = make_batch(cfg, frame_size, episodes)
    rng = np.random.default_rng([seed, 3])  # the ε draws (none when ε = 0: greedy play is unchanged)
    frames = batch.reset(seed)
    states = np.repeat(frames[:, None], history, axis=1)
    scores = np.zeros(episodes, np.int64)
    endings = np.zeros(episodes, np.int8)
    done = np.zeros(episodes, bool)
    actions = np.zeros(episodes, np.int64)
    while not done.all():
        _check(stop, "the greedy evaluation")
        live = np.flatnonzero(~done)
        actions[live] = greedy_actions(q, states[live])
        if cfg.eval_epsilon > 0:
            explore = live[rng.random(live.size) < cfg.eval_epsilon]
            actions[explore] = rng.integers(0, batch.num_actions, explore.size)
        frames, _, terminated, truncated, info = batch.step(actions)
        ended = (terminated | truncated) & ~done
        scores[ended] = info["score"][ended]
        if ended.any():
            endings[ended] = ending_codes(terminated, truncated, info)[ended]
        done |= ended
        states[:, :-1] = states[:, 1:]
        states[:, -1] = frames
        restarted = np.flatnonzero(terminated | truncated)
        states[restarted] = frames[restarted, None]
    return scores, endings


def evaluate(q: QNetwork, cfg: Config, stop: Stoppable = NEVER) -> np.ndarray:
    """The training-time evaluation every mode runs: ``cfg.eval_episodes`` episodes, seed 10,000 + seed."""
    return evaluate_greedy(q, cfg, cfg.eval_episodes, seed=10_000 + cfg.seed, stop=stop)


def _check(stop: Stoppable, what: str) -> None:
    """The step boundary of an episode loop: raise :class:`Interrupted` once a stop was requested."""
    if stop.is_set():
        raise Interrupted(f"interrupted during {what}")


def eval_row(scores: np.ndarray, random_score: float, updates: int) -> dict[str, float]:
    """The ``eval`` metrics row (eval.csv and TensorBoard) for greedy ``scores`` after ``updates`` updates."""
    return {"eval/greedy_score_mean": float(scores.mean()), "eval/greedy_score_median": float(np.median(scores)),
            "eval/greedy_score_max": float(scores.max()), "eval/random_score_mean": random_score,
            "eval/updates": updates}


def score_summary(scores: np.ndarray, random_score: float) -> dict[str, float]:
    """The greedy-score part of ``summary.json``."""
    return {"greedy_score_mean": float(scores.mean()), "greedy_score_median": float(np.median(scores)),
            "greedy_score_max": int(scores.max()), "random_score_mean": random_score}
