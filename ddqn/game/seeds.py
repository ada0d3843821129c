"""Per-game seeds of a batch of K games, shared by every game family."""
from __future__ import annotations

import numpy as np


def game_seeds(seed: int | None, num_envs: int) -> list[int]:
    """Per-game seeds of a batch: game i of a batch reset with ``seed`` behaves like one game reset with ``[i]``."""
    return [int(s) for s in np.random.SeedSequence(seed).generate_state(num_envs, np.uint64)]
