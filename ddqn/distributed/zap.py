"""Connection-level authentication: a ZAP handler that admits only connections presenting the run's token.

ZeroMQ hands a multipart message to the server whole, so no per-message check can bound what a peer makes
ZeroMQ buffer before the server sees it. Instead every connection must log in with ZeroMQ's PLAIN mechanism
using :func:`ddqn.distributed.protocol.connection_token` (derived from the run secret); this handler (RFC 27, ZAP)
refuses any other connection during the handshake, before a single message of it is read. The server counts
each failed handshake (a refusal here, or a peer that does not even speak PLAIN) as
``"unauthenticated connection"``.
"""
from __future__ import annotations

import hmac
import threading

import zmq

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
USERNAME = b"ddqn"
POLL_MS = 100


class ZapHandler:
    """A thread answering ZAP requests on ``ctx``: 200 for PLAIN ``ddqn``/``token``, 400 for anything else.

    Args:
        ctx: the context of the server's socket (ZAP is per context).
        token: the password a connection must present.
    """

    def __init__(self, ctx: zmq.Context, token: bytes) -> None:
        self._token = token
        self._sock = ctx.socket(zmq.REP)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.bind(ZAP_ENDPOINT)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="ddqn-zap", daemon=True)

    def start(self) -> ZapHandler:
        self._thread.start()
        return self

    def _allowed(self, request: list[bytes]) -> bool:
        # version, request id, domain, address, identity, mechanism, credentials...
        if len(request) != 8 or request[0] != b"1.0" or request[5] != b"PLAIN":
            return False
        return hmac.compare_digest(request[6], USERNAME) and hmac.compare_digest(request[7], self._token)

    def _serve(self) -> None:
        while not self._stop.is_set():
            if not self._sock.poll(POLL_MS):
                continue
            request = self._sock.recv_multipart()
            ok = self._allowed(request)
            request_id = request[1] if len(request) > 1 else b""
            self._sock.send_multipart([b"1.0", request_id, b"200" if ok else b"400",
                                       b"OK" if ok else b"no connection token", USERNAME if ok else b"", b""])

    def close(self) -> None:
        """Stop the thread (within one poll interval) and close its socket."""
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close(linger=0)


def plain_server(sock: zmq.Socket) -> None:
    """Make ``sock`` require a PLAIN login checked by the context's ZAP handler."""
    sock.setsockopt(zmq.PLAIN_SERVER, 1)
    sock.setsockopt(zmq.ZAP_DOMAIN, b"ddqn")


def plain_client(sock: zmq.Socket, token: bytes) -> None:
    """Make ``sock`` log in with the run's connection token (set before connecting)."""
    sock.setsockopt(zmq.PLAIN_USERNAME, USERNAME)
    sock.setsockopt(zmq.PLAIN_PASSWORD, token)
