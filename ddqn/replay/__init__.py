"""Replay memory D: frames stored once, transitions sampled uniformly or by priority (RAM or LMDB), and the random
warm-up."""
from __future__ import annotations

from pathlib import Path

from ddqn.config import Config
from ddqn.replay.memory import Batch, LMDBReplayMemory, ReplayMemory

__all__ = ["Batch", "LMDBReplayMemory", "ReplayMemory", "make_replay"]


def make_replay(cfg: Config, frame_shape: tuple[int, int], history: int, seed: int,
                lmdb_dir: Path) -> ReplayMemory | LMDBReplayMemory:
    """The replay memory ``cfg.replay_backend`` names, of ``cfg.replay_capacity`` frames of ``frame_shape``
    (H, W) uint8, sampling by priority when ``cfg.replay_alpha`` > 0; an LMDB memory lives in ``lmdb_dir`` (a RAM
    memory ignores it)."""
    prio = (cfg.replay_alpha, cfg.replay_priority_eps)
    if cfg.replay_backend == "lmdb":
        return LMDBReplayMemory(lmdb_dir, cfg.replay_capacity, frame_shape, history, seed, *prio)
    return ReplayMemory(cfg.replay_capacity, frame_shape, history, seed, *prio)
