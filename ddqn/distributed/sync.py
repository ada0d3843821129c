"""The synchronous-round policy (the baseline): one gradient per live worker, all on the same θ, averaged.

A round collects gradients computed on the current version; when every expected worker has pushed (until
all joined), or every live one (after), their average is applied, and the FETCHes held meanwhile are
answered with the new θ.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ddqn.distributed.sessions import Session


class SyncRounds:
    """Round state for ``num_params`` floats and ``expected_workers`` workers.

    Args:
        num_params: gradient length.
        expected_workers: workers the job starts (a round waits for all of them to join).
    """

    def __init__(self, num_params: int, expected_workers: int) -> None:
        self.expected_workers = expected_workers
        self._sum = np.zeros(num_params, np.float32)
        self._mean = np.empty(num_params, np.float32)
        self._count = 0
        self.waiting: list[tuple[bytes, Session, int]] = []  # (ident, session, have target version) held FETCHes

    def holds_fetch(self, session: Session, version: int) -> bool:
        """Whether a FETCH of ``session`` must wait: it already pushed for the current round."""
        return session.pushed_round == version

    def add(self, session: Session, base_version: int, version: int, grad: np.ndarray) -> bool:
        """Count ``grad`` (computed on ``base_version``) into the round of ``version``; False if it belongs to
        another round or this session already pushed for it (dropped)."""
        if base_version != version or session.pushed_round == version:
            return False
        session.pushed_round = version
        self._sum += grad
        self._count += 1
        return True

    def complete(self, joined: int, live: int) -> bool:
        """Whether the round has every gradient it waits for (``joined`` workers so far, ``live`` sessions)."""
        size = self.expected_workers if joined < self.expected_workers else live
        return self._count > 0 and self._count >= size

    def finish(self, apply: Callable[[np.ndarray], int]) -> list[tuple[bytes, Session, int]]:
        """Apply the round's mean with ``apply``, start the next round; return the held FETCHes to answer."""
        if self._count:
            apply(np.multiply(self._sum, np.float32(1 / self._count), out=self._mean))
        self._sum[:] = 0
        self._count = 0
        waiting, self.waiting = self.waiting, []
        return waiting
