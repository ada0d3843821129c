"""The parameter server's session table: sessions a HELLO offered, and the live ones that proved the key.

A HELLO only *offers* a session: it is pending until the first sealed message from its connection
verifies under the derived key, which only a holder of the secret can produce. Only then does it replace
the partition's older session. A HELLO whose nonce the server has seen before is a replay and is refused
outright (no WELCOME); one the server no longer remembers can at most add a pending entry, never evict an honest
worker's session.

Pending offers are kept one per connection (a connection's new HELLO replaces its own offer), never evicted by
another connection's HELLO unless :attr:`SessionTable.MAX_OFFERS` are pending (then the oldest goes), and dropped
when unproven for :attr:`SessionTable.OFFER_S`. So an insider streaming HELLOs for a partition, however many,
cannot push out a retry's offer before it proves its key (one round trip after its WELCOME): the server reads a
connection's messages in turn with every other's, so that would take over MAX_OFFERS connections each with a HELLO
read between the retry's WELCOME and its first sealed message.

Attempt numbers never go back down for a partition: once an attempt has proven its key, a HELLO or session of
an earlier attempt is stale (Spark numbers a task's attempts 0, 1, … in the order it starts them).

A session is known by its id (the server's nonce, hex), which its one connection to the session port presents with
its ticket (``ddqn.distributed.zap``); ZeroMQ tags each of that connection's messages with it. A pending offer is also
known by the join connection its HELLO came on (for the one-offer-per-connection rule above).

A worker whose connection was reset says HELLO again, naming the same random client id: its new session replaces the
old one like any other, keeping its place in the sync rounds. The table remembers, per partition, the client id and
sequence number of the last PUSH or STATS the server answered (a client's sessions share one numbering), so one
re-sent after the reset is recognised as taken (:meth:`SessionTable.taken`).
"""
from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass

from ddqn.distributed import protocol as P


@dataclass
class Session:
    """One worker session after an authentic HELLO: its keys, its worker, and its one connection's session id."""

    crypto: P.Session
    partition: int
    attempt: int
    pid: int
    host: str
    last_seen: float
    peer: str = ""  # the connection's IP address as ZeroMQ saw it ("" when the transport has none)
    proven: bool = False  # a sealed message verified under the session key
    pushed_round: int = -1  # sync mode: the version this session last pushed for
    in_rounds: bool = True  # sync mode: a member of the rounds (False once one closed without its push)
    client_id: str = ""  # the worker client's random id, the same in each of its sessions ("": none)
    reconnected: bool = False  # replaced a live session of the same client (its connection was reset)
    sid: bytes = b""  # the session's id, presented by its connection to the session port
    hello_from: bytes = b""  # the join connection its HELLO came on


class SessionTable:
    """Pending and live sessions by session id; a session silent for ``timeout`` seconds expires.

    At most one pending session per connection and :attr:`MAX_OFFERS` in all are kept (the oldest goes first);
    one unproven for :attr:`OFFER_S` seconds (or the timeout, if shorter) expires. Only the server thread uses it.
    """

    MAX_OFFERS = 16_384  # pending sessions in all (about 0.5 kB each)
    OFFER_S = 10.0  # seconds an offer may wait for its proof (an honest worker sends it right after WELCOME)
    REMEMBERED_NONCES = 16_384  # HELLO nonces kept to refuse replays (authentic HELLOs only; oldest forgotten)

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._live: dict[bytes, Session] = {}  # by session id
        self._pending: dict[bytes, Session] = {}  # by session id, in arrival order
        self._offered_by: dict[bytes, bytes] = {}  # join connection → the session id of its pending offer
        self._nonces: OrderedDict[bytes, None] = OrderedDict()
        self._latest: dict[int, int] = {}  # partition → the latest attempt that proved its key
        self._taken: dict[int, tuple[str, int]] = {}  # partition → (client id, seq of its last PUSH/STATS answered)

    def stale(self, partition: int, attempt: int) -> bool:
        """Whether ``attempt`` is older than an attempt of ``partition`` that already proved its key."""
        return attempt < self._latest.get(partition, -1)

    def taken(self, session: Session, seq: int) -> bool:
        """Whether a PUSH/STATS numbered ``seq`` of ``session``'s client was answered before (sent again after a
        reset, on this or an earlier session of the client)."""
        client_id, last = self._taken.get(session.partition, ("", 0))
        return bool(client_id) and client_id == session.client_id and seq <= last

    def take(self, session: Session, seq: int) -> None:
        """Remember that the PUSH/STATS numbered ``seq`` of ``session``'s client is answered."""
        self._taken[session.partition] = (session.client_id, seq)

    def fresh(self, nonce: bytes) -> bool:
        """Whether an authentic HELLO's nonce is new (and remember it); False for a replay."""
        if nonce in self._nonces:
            return False
        self._nonces[nonce] = None
        if len(self._nonces) > self.REMEMBERED_NONCES:
            self._nonces.popitem(last=False)
        return True

    def get(self, sid: bytes) -> Session | None:
        """The live or pending session whose id is ``sid``."""
        return self._live.get(sid) or self._pending.get(sid)

    def offer(self, ident: bytes, crypto: P.Session, partition: int, attempt: int, pid: int, host: str,
              peer: str = "", client_id: str = "", sid: bytes = b"") -> None:
        """A pending session ``sid`` (default ``ident``) for an authentic HELLO read from join connection ``ident``;
        nothing live changes. It replaces only an earlier offer of the same connection (or, with MAX_OFFERS pending,
        the oldest one)."""
        sid = sid or ident
        self._withdraw(self._offered_by.get(ident, b""))
        if len(self._pending) >= self.MAX_OFFERS:
            self._withdraw(next(iter(self._pending)))  # in arrival order: the oldest
        self._pending[sid] = Session(crypto, partition, attempt, pid, host, time.monotonic(), peer,
                                     client_id=client_id, sid=sid, hello_from=ident)
        self._offered_by[ident] = sid

    def _withdraw(self, sid: bytes) -> Session | None:
        """Remove the pending offer ``sid`` (if any) and its join connection's note of it."""
        session = self._pending.pop(sid, None)
        if session is not None and self._offered_by.get(session.hello_from) == sid:
            del self._offered_by[session.hello_from]
        return session

    def promote(self, sid: bytes) -> Session:
        """Make the pending session ``sid`` live (its first sealed message verified): it replaces the
        partition's other sessions (an earlier attempt is dead; a sync round no longer waits for it).
        A session of the same client and attempt (a reconnect) takes over its round state. Raises ProtocolError("stale
        attempt") if a later attempt of the partition proved its key before, live or gone."""
        session = self._withdraw(sid)
        if self.stale(session.partition, session.attempt):
            raise P.ProtocolError("stale attempt", f"attempt {session.attempt} of partition {session.partition}")
        for i in [i for i, s in self._live.items() if s.partition == session.partition]:
            old = self._live.pop(i)
            if session.client_id and (old.client_id, old.attempt) == (session.client_id, session.attempt):
                session.pushed_round, session.in_rounds, session.reconnected = old.pushed_round, old.in_rounds, True
        session.proven = True
        self._live[sid] = session
        self._latest[session.partition] = session.attempt
        return session

    def close(self, sid: bytes) -> None:
        self._live.pop(sid, None)
        self._withdraw(sid)

    def expire(self) -> list[Session]:
        """Drop every session silent for longer than the timeout and every offer unproven for OFFER_S; returns the
        live ones dropped (pending offers go without a word: anyone holding a recorded HELLO can make those)."""
        now = time.monotonic()
        gone = []
        for table, limit in ((self._live, self.timeout), (self._pending, min(self.timeout, self.OFFER_S))):
            for sid, s in list(table.items()):
                if now - s.last_seen > limit:
                    if table is self._live:
                        del table[sid]
                        gone.append(s)
                    else:
                        self._withdraw(sid)
        return gone

    def live(self) -> int:
        """Live sessions heard from within the timeout."""
        now = time.monotonic()
        return sum(now - s.last_seen < self.timeout for s in self._live.values())

    def live_sessions(self) -> list[Session]:
        """The live sessions (proven, not expired)."""
        return list(self._live.values())

    def pending(self) -> int:
        return len(self._pending)

    def __contains__(self, sid: bytes) -> bool:
        """Whether ``sid`` is a live session."""
        return sid in self._live
