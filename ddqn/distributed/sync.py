"""The synchronous-round policy (the baseline): one gradient per live worker, all on the same θ, averaged.

A round collects gradients computed on the current version; when every expected worker has pushed (until
all joined), or every member (after), their average is applied, and the FETCHes held meanwhile are answered with
the new θ. Every live session is a member of the rounds until a round closes without its push: a round closes at
the latest ``wait_s`` seconds after its first push (the driver sets half the workers' ``server_timeout``, so a
worker whose FETCH is held gets its reply before it gives the server up), and the members that did not push are
dropped from the rounds until they push again. So a worker that died without BYE (its session stays live until it
expires) or one that FETCHes but never pushes delays a round by ``wait_s`` once, not the others' training.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import numpy as np

from ddqn.distributed.sessions import Session


class SyncRounds:
    """Round state for ``num_params`` floats and ``expected_workers`` workers.

    Args:
        num_params: gradient length.
        expected_workers: workers the job starts (rounds wait for all of them to join, until one closes on its
            clock: a worker that has not joined by then is waited for only once it has joined).
        wait_s: seconds after its first push at which a round closes with the gradients it has.
    """

    def __init__(self, num_params: int, expected_workers: int, wait_s: float = 30.0) -> None:
        if not wait_s > 0:
            raise ValueError(f"wait_s must be > 0, got {wait_s}")
        self.expected_workers, self.wait_s = expected_workers, wait_s
        self._sum = np.zeros(num_params, np.float32)
        self._mean = np.empty(num_params, np.float32)
        self._count = 0
        self._opened = 0.0  # when the round's first gradient came (time.monotonic)
        self._joining = expected_workers > 0  # rounds wait for every expected worker until one closes on its clock
        self.waiting: list[tuple[bytes, Session, int]] = []  # (ident, session, have target version) held FETCHes

    def holds_fetch(self, session: Session, version: int) -> bool:
        """Whether a FETCH of ``session`` must wait: it already pushed for the current round."""
        return session.pushed_round == version

    def add(self, session: Session, base_version: int, version: int, grad: np.ndarray) -> bool:
        """Count ``grad`` (computed on ``base_version``) into the round of ``version``; False if it belongs to
        another round or this session already pushed for it (dropped). A session that pushes is a member."""
        if base_version != version or session.pushed_round == version:
            return False
        session.pushed_round, session.in_rounds = version, True
        if not self._count:
            self._opened = time.monotonic()
        self._sum += grad
        self._count += 1
        return True

    def complete(self, version: int, sessions: Iterable[Session], joined: int) -> bool:
        """Whether the round of ``version`` can close: it has a gradient and either ``wait_s`` passed since the
        first, or every expected worker pushed (``joined`` of them so far), or every member of ``sessions`` (the
        live ones, after all joined)."""
        if not self._count:
            return False
        if time.monotonic() - self._opened >= self.wait_s:
            self._joining = False  # a worker that has not joined by now is not waited for again
            return True
        if self._joining and joined < self.expected_workers:
            return self._count >= self.expected_workers
        return all(s.pushed_round == version for s in sessions if s.in_rounds)

    def finish(self, apply: Callable[[np.ndarray], int], version: int, sessions: Iterable[Session]
               ) -> tuple[list[tuple[bytes, Session, int]], list[Session]]:
        """Apply the round's mean with ``apply``, start the next round. Returns the held FETCHes to answer and the
        members of ``sessions`` dropped from the rounds (they did not push for the round of ``version``)."""
        dropped = [s for s in sessions if s.in_rounds and s.pushed_round != version]
        for s in dropped:
            s.in_rounds = False
        if self._count:
            apply(np.multiply(self._sum, np.float32(1 / self._count), out=self._mean))
        self._sum[:] = 0
        self._count = 0
        waiting, self.waiting = self.waiting, []
        return waiting, dropped
