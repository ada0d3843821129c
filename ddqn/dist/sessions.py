"""The parameter server's session table: one authenticated session per live worker connection."""
from __future__ import annotations

import time
from dataclasses import dataclass

from ddqn.dist import protocol as P


@dataclass
class Session:
    """One worker connection (ZeroMQ identity) after a verified HELLO."""

    crypto: P.Session
    partition: int
    attempt: int
    last_seen: float
    pushed_round: int = -1  # sync mode: the version this session last pushed for


class SessionTable:
    """Sessions by ZeroMQ identity; a session silent for ``timeout`` seconds expires.

    Only the server thread uses it.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._by_ident: dict[bytes, Session] = {}

    def get(self, ident: bytes) -> Session | None:
        return self._by_ident.get(ident)

    def open(self, ident: bytes, crypto: P.Session, partition: int, attempt: int) -> Session:
        """Install a session for ``ident``; an earlier attempt of the same partition is dead: forget it
        (so a synchronous round no longer waits for it)."""
        for other, s in list(self._by_ident.items()):
            if s.partition == partition and other != ident:
                del self._by_ident[other]
        session = self._by_ident[ident] = Session(crypto, partition, attempt, time.monotonic())
        return session

    def close(self, ident: bytes) -> None:
        self._by_ident.pop(ident, None)

    def expire(self) -> None:
        """Drop every session silent for longer than the timeout."""
        now = time.monotonic()
        for ident, s in list(self._by_ident.items()):
            if now - s.last_seen > self.timeout:
                del self._by_ident[ident]

    def live(self) -> int:
        """Sessions heard from within the timeout."""
        now = time.monotonic()
        return sum(now - s.last_seen < self.timeout for s in self._by_ident.values())

    def __contains__(self, ident: bytes) -> bool:
        return ident in self._by_ident
