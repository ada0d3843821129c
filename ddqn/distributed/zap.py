"""Connection-level authentication: a ZAP handler that admits a connection by what it presents at login.

ZeroMQ hands a multipart message to the server whole, so no per-message check can bound what a peer makes
ZeroMQ buffer before the server sees it. Instead every connection must log in with ZeroMQ's PLAIN mechanism, and this
handler (RFC 27, ZAP) refuses any other during the handshake, before a single message of it is read:

* on the server's join socket (domain :data:`JOIN_DOMAIN`), the run's
  :func:`~ddqn.distributed.protocol.connection_token` (derived from the secret);
* on its session socket (:data:`SESSION_DOMAIN`), a session id and that session's ticket
  (:func:`~ddqn.distributed.protocol.session_ticket`), each ticket admitted once (:class:`Tickets`). The handler names
  the session as the connection's ZAP user id, which ZeroMQ attaches to each of its messages (``User-Id``).

The server counts each failed handshake (a refusal here, or a peer that does not even speak PLAIN) as
``"unauthenticated connection"``.
"""
from __future__ import annotations

import hmac
import threading
import time
from collections import OrderedDict

import zmq

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
USERNAME = b"ddqn"
JOIN_DOMAIN = b"ddqn"  # the join socket: HELLOs, with the connection token
SESSION_DOMAIN = b"ddqn-session"  # the session socket: one connection per session, with its ticket
POLL_MS = 100


class Tickets:
    """Session tickets not yet used, shared by the server thread (:meth:`issue`) and the ZAP thread (:meth:`admit`).

    A ticket admits one connection: it is gone once used. At most ``most`` are kept (the oldest goes first), each for
    ``ttl_s`` seconds (an honest worker connects right after its WELCOME).
    """

    def __init__(self, most: int, ttl_s: float) -> None:
        self.most, self.ttl_s = most, ttl_s
        self._lock = threading.Lock()
        self._tickets: OrderedDict[bytes, tuple[bytes, float]] = OrderedDict()  # session id → (ticket, issued at)

    def issue(self, sid: bytes, ticket: bytes) -> None:
        with self._lock:
            self._tickets[sid] = (ticket, time.monotonic())
            while len(self._tickets) > self.most:
                self._tickets.popitem(last=False)

    def admit(self, sid: bytes, ticket: bytes) -> bool:
        """Whether ``ticket`` is the unused, unexpired ticket of session ``sid``; if so it is used up. A wrong one
        uses up nothing (a peer that read a session id cannot spend its ticket)."""
        with self._lock:
            issued = self._tickets.get(sid)
            if issued is None or not hmac.compare_digest(issued[0], ticket):
                return False
            del self._tickets[sid]
            return time.monotonic() - issued[1] <= self.ttl_s

    def __len__(self) -> int:
        return len(self._tickets)


class ZapHandler:
    """A thread answering ZAP requests on ``ctx``: 200 for PLAIN ``ddqn``/``token`` on the join domain or a session id
    and its unused ticket on the session domain, 400 for anything else.

    Args:
        ctx: the context of the server's sockets (ZAP is per context).
        token: the password a join connection must present.
        tickets: the session tickets not yet used.
    """

    def __init__(self, ctx: zmq.Context, token: bytes, tickets: Tickets) -> None:
        self._token, self.tickets = token, tickets
        self._sock = ctx.socket(zmq.REP)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.bind(ZAP_ENDPOINT)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="ddqn-zap", daemon=True)

    def start(self) -> ZapHandler:
        self._thread.start()
        return self

    def _user(self, request: list[bytes]) -> bytes | None:
        """The user id a request logs in as (the session id on the session domain), or None: refused."""
        # version, request id, domain, address, identity, mechanism, credentials...
        if len(request) != 8 or request[0] != b"1.0" or request[5] != b"PLAIN":
            return None
        domain, username, password = request[2], request[6], request[7]
        if domain == JOIN_DOMAIN:
            ok = hmac.compare_digest(username, USERNAME) and hmac.compare_digest(password, self._token)
            return USERNAME if ok else None
        if domain == SESSION_DOMAIN and self.tickets.admit(username, password):
            return username
        return None

    def _serve(self) -> None:
        while not self._stop.is_set():
            if not self._sock.poll(POLL_MS):
                continue
            request = self._sock.recv_multipart()
            user = self._user(request)
            request_id = request[1] if len(request) > 1 else b""
            self._sock.send_multipart([b"1.0", request_id, b"400" if user is None else b"200",
                                       b"refused" if user is None else b"OK", user or b"", b""])

    def close(self) -> None:
        """Stop the thread (within one poll interval) and close its socket."""
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close(linger=0)


def plain_server(sock: zmq.Socket, domain: bytes = JOIN_DOMAIN) -> None:
    """Make ``sock`` require a PLAIN login checked by the context's ZAP handler for ``domain``."""
    sock.setsockopt(zmq.PLAIN_SERVER, 1)
    sock.setsockopt(zmq.ZAP_DOMAIN, domain)


def plain_client(sock: zmq.Socket, token: bytes, username: bytes = USERNAME) -> None:
    """Make ``sock`` log in with the run's connection token (or a session's id and ticket); set before connecting."""
    sock.setsockopt(zmq.PLAIN_USERNAME, username)
    sock.setsockopt(zmq.PLAIN_PASSWORD, token)
