"""What a simulated worker sends to the simulated server: the protocol's FETCH, PUSH and STATS, as data."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

FETCH, PUSH, STATS = "fetch", "push", "stats"


@dataclass
class Message:
    """One request; the fields a real message's header and payload carry for its kind.

    FETCH: ``version``/``target_version`` the worker holds. PUSH: ``version`` its gradient was computed on,
    ``grad`` (num_params float32, the sum of ``summed`` minibatch gradients). STATS: ``report`` (scores, env steps,
    compute and communicate seconds since the last one). ``fetch``: a PUSH whose reply should carry θ (a sharded
    server's does, ``ddqn.sim.shards``; one server's never does).
    """

    kind: str
    partition: int
    sent_at: float  # simulated seconds
    version: int = -1
    target_version: int = -1
    grad: np.ndarray | None = None
    summed: int = 1
    report: dict = field(default_factory=dict)
    fetch: bool = False
