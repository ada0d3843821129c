"""A worker's connection to the parameter server: HELLO, then FETCH / PUSH / STATS, every wait bounded.

One request is outstanding at a time (ZeroMQ DEALER → the server's ROUTER). A reply that does not come
within ``timeout`` seconds means the server is gone: :class:`ServerGone` is raised and the worker exits.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import numpy as np
import zmq

from ddqn.distributed import protocol as P
from ddqn.distributed.zap import plain_client


class ServerGone(RuntimeError):
    """The parameter server did not answer in time (or answered with something unverifiable)."""


@dataclass(frozen=True)
class Params:
    """A FETCH reply: θ and/or θ⁻ when they changed (else None), their versions, and the stop flag."""

    version: int
    target_version: int
    theta: np.ndarray | None
    target: np.ndarray | None
    stop: bool


class ServerClient:
    """The worker end of the protocol for partition ``worker`` (Spark task attempt ``attempt``)."""

    def __init__(self, address: str, secret: bytes, worker: int, attempt: int, num_params: int,
                 timeout: float = 60.0, auth: str = "message") -> None:
        self.worker, self.attempt, self.num_params, self.auth = worker, attempt, num_params, auth
        self.timeout_ms = int(timeout * 1000)
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.SNDTIMEO, self.timeout_ms)
        self._sock.setsockopt(zmq.MAXMSGSIZE, 2 * num_params * 4 + 4096)
        plain_client(self._sock, P.connection_token(secret))  # the server's ZAP handler admits this connection
        self._sock.connect(address)
        self.prior_env_steps = 0  # env steps this partition played before (earlier attempts, resumed runs)
        try:
            self._session = self._hello(secret)
        except BaseException:  # no session: free the socket and context now, not in a garbage collector's thread
            self._sock.close(linger=0)
            self._ctx.term()
            raise

    def _recv(self) -> list:
        if not self._sock.poll(self.timeout_ms, zmq.POLLIN):
            raise ServerGone(f"no reply from the parameter server in {self.timeout_ms / 1000:g} s")
        return self._sock.recv_multipart(copy=False)

    def _hello(self, secret: bytes) -> P.Session:
        nonce = os.urandom(P.NONCE_BYTES)
        meta = P.encode_json({"num_params": self.num_params, "pid": os.getpid(), "host": socket.gethostname(),
                              "auth": self.auth})
        self._sock.send_multipart(P.seal_handshake(secret, P.HELLO, self.worker, self.attempt, nonce + meta))
        try:
            _, payload = P.open_handshake(secret, [f.bytes for f in self._recv()], P.WELCOME)
            played = P.decode_json(payload[P.NONCE_BYTES:]).get("env_steps", 0)
        except P.ProtocolError as exc:
            raise ServerGone(f"bad WELCOME from the parameter server: {exc}") from exc
        if not isinstance(played, int) or isinstance(played, bool) or played < 0:
            raise ServerGone("bad WELCOME from the parameter server: env_steps must be an integer >= 0")
        self.prior_env_steps = played
        return P.Session(P.session_key(secret, nonce, payload[:P.NONCE_BYTES]), outbound=0, auth=self.auth)

    def _request(self, kind: int, version: int = 0, aux: int = 0, payload: bytes | np.ndarray = b""
                 ) -> tuple[P.Header, memoryview]:
        try:
            self._sock.send_multipart(self._session.seal(kind, self.worker, self.attempt, version, aux, payload),
                                      copy=False)
            return self._session.open(self._recv())
        except zmq.Again as exc:
            raise ServerGone("could not send to the parameter server") from exc
        except P.ProtocolError as exc:
            raise ServerGone(f"unverifiable reply from the parameter server: {exc}") from exc

    def fetch(self, have_version: int = P.NO_VERSION, have_target: int = P.NO_VERSION) -> Params:
        """θ (if newer than ``have_version``) and θ⁻ (if its version differs from ``have_target``)."""
        h, payload = self._request(P.FETCH, have_version, have_target)
        arrays = np.frombuffer(payload, np.float32)
        n = bool(h.flags & P.F_THETA) + bool(h.flags & P.F_TARGET)
        if arrays.size != n * self.num_params:
            raise ServerGone("PARAMS reply of the wrong size")
        theta = arrays[:self.num_params] if h.flags & P.F_THETA else None
        target = arrays[-self.num_params:] if h.flags & P.F_TARGET else None
        return Params(h.version, h.target_version, theta, target, bool(h.flags & P.F_STOP))

    def push(self, grad: np.ndarray, base_version: int, count: int = 1) -> tuple[int, bool]:
        """Send a gradient (sum of ``count`` minibatch gradients) computed on θ of ``base_version``.

        Returns (server version, stop flag).
        """
        h, _ = self._request(P.PUSH, base_version, count, grad)
        return h.version, bool(h.flags & P.F_STOP)

    def stats(self, scores: list[int], env_steps: int, compute_s: float, comm_s: float) -> bool:
        """Report finished episodes' scores and time split since the last report; returns the stop flag."""
        body = P.encode_json({"scores": scores, "env_steps": env_steps, "compute_s": compute_s, "comm_s": comm_s})
        h, _ = self._request(P.STATS, payload=body)
        return bool(h.flags & P.F_STOP)

    def close(self) -> None:
        """Say BYE (best effort) and free the socket."""
        try:
            self._sock.send_multipart(self._session.seal(P.BYE, self.worker, self.attempt), copy=False,
                                      flags=zmq.NOBLOCK)
        except zmq.ZMQError:
            pass
        self._sock.close(linger=0)
        self._ctx.term()
