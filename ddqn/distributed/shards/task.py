"""A shard of a sharded parameter server as a long-running Spark task (``ps_placement: executors``, issue 31).

:func:`run_shard` is the task's entry point (``spark.ShardJob``): it connects to the driver's control port
(``shards.channel``; the shard key came in the job's broadcast spec, as the run secret does for workers), registers
(shard, Spark attempt, pid, host, a fresh nonce, tagged under the shard key), receives its starting slice and version
counters in the driver's accept, builds its :class:`~ddqn.distributed.shards.server.ShardServer` over it
(``shards.host``, as a shard process on the driver's host does) bound to this executor's own address, says ready with
its ports, and answers the driver's commands until told to exit.

Its address is the one this host reaches the driver from (the route's source address), which is where the workers,
on the same cluster network, reach it. It exits when its control connection ends (the driver is gone) or stays silent
for ``SILENT_S``; Spark reruns it if its process dies, and the new attempt registers again.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import time

import numpy as np
import zmq

from ddqn.distributed.shards import channel as C
from ddqn.distributed.shards.host import build, handle
from ddqn.distributed.shards.server import ShardServer
from ddqn.distributed.zap import plain_client
from ddqn.errors import DDQNError

log = logging.getLogger("ddqn.distributed.shards.task")
ACCEPT_S = 120.0  # bound on the wait for the driver's accept (it accepts when it starts or restores the shards)
SILENT_S = 600.0  # no command for this long: the driver is gone (it asks for status every 0.5 s while it runs)
HEARTBEAT_MS = 1000  # ZMTP heartbeats on the control connection: a dead driver's connection ends within seconds
GONE = zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_FAILED_AUTH  # what ends the control connection for the task


def own_address(control: str) -> str:
    """This host's address as seen on the route to ``control`` (``tcp://host:port``): where the workers reach it."""
    host, port = control.removeprefix("tcp://").rsplit(":", 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:  # no packet is sent: the kernel picks the route
        s.connect((host, int(port)))
        return s.getsockname()[0]


class ShardTask:
    """One shard task's control connection and server (see the module docstring)."""

    def __init__(self, spec: dict, shard: int, attempt: int) -> None:
        self.spec, self.shard, self.attempt = spec, shard, attempt
        self.key = bytes.fromhex(spec["key_hex"])
        self.lo, self.hi = spec["bounds"][shard]
        self.histories = int(spec["histories"])
        self.max_bytes = (2 + self.histories) * (self.hi - self.lo) * 4
        self.dropped: dict[str, int] = {}
        self.server: ShardServer | None = None
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 1000)
        self._sock.setsockopt(zmq.MAXMSGSIZE, max(self.max_bytes // (2 + self.histories), C.MAX_HEADER) + 64)
        self._sock.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_MS)
        self._sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 10 * HEARTBEAT_MS)
        self._sock.setsockopt(zmq.RECONNECT_IVL, -1)  # one connection: once it ends, the driver is gone
        plain_client(self._sock, C.control_token(self.key))
        self._gone = self._sock.get_monitor_socket(GONE)
        self._sock.connect(spec["control"])
        self._key = b""  # the link key, once accepted
        self._seq = 0  # the last command's number

    def _drop(self, exc: C.Dropped) -> None:
        self.dropped[exc.reason] = self.dropped.get(exc.reason, 0) + 1
        log.warning("shard %d: control message dropped: %s", self.shard, exc)

    def _recv(self, deadline: float) -> list | None:
        """The next message from the driver, or None when the connection ended or ``deadline`` passed."""
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        poller.register(self._gone, zmq.POLLIN)
        wait = deadline - time.monotonic()
        ready = dict(poller.poll(max(0, int(wait * 1000)))) if wait > 0 else {}
        if self._sock in ready:
            return self._sock.recv_multipart(copy=False)
        return None

    def register(self) -> None:
        """Register, take the driver's accept (the starting slice), start the server and say ready."""
        nonce = os.urandom(C.NONCE)
        address = own_address(self.spec["control"])
        self._sock.send_multipart(C.seal(self.key, C.TO_DRIVER, {
            "kind": "register", "shard": self.shard, "attempt": self.attempt, "pid": os.getpid(),
            "host": socket.gethostname()[:255], "nonce": nonce.hex()}))
        deadline = time.monotonic() + ACCEPT_S
        while True:
            frames = self._recv(deadline)
            if frames is None:
                raise DDQNError(f"shard {self.shard}: no accept from the driver at {self.spec['control']}")
            try:
                C.check_sizes(frames, 2 + self.histories, self.max_bytes)
                header = C.header_of(frames[0])  # names the driver's nonce, which the link key needs
                driver_nonce = C.nonce_of(header, "nonce")
                key = C.link_key(self.key, self.shard, self.attempt, nonce, driver_nonce)
                header, arrays = C.open_frames(key, C.TO_SHARD, frames, 2 + self.histories, self.max_bytes, header)
                if header.get("kind") != "accept" or C.nonce_of(header, "shard_nonce") != nonce or \
                        C.integer(header, "seq") != 0:
                    raise C.Dropped("unexpected", "not the accept of this registration")
                state = C.slice_of(arrays, self.lo, self.hi, header, self.histories)
                break
            except C.Dropped as exc:
                self._drop(exc)
        self._key = key
        init = {**self.spec, "shard": self.shard, "lo": self.lo, "hi": self.hi, "version": state.version,
                "target_version": state.target_version,
                "options": {**self.spec["options"], "host": address, "port": 0, "session_port": 0}}
        self.server = build(init, state).start()
        self._send({"kind": "ready", "seq": 0, "port": self.server.port, "session_port": self.server.session_port,
                    "address": self.server.address})

    def _send(self, header: dict, arrays: list[np.ndarray] = ()) -> None:
        self._sock.send_multipart(C.seal(self._key, C.TO_DRIVER, header, arrays), copy=False)

    def serve(self) -> None:
        """Answer the driver's commands until ``exit``, the end of the control connection or SILENT_S of silence."""
        while True:
            frames = self._recv(time.monotonic() + SILENT_S)
            if frames is None:
                return
            try:
                header, arrays = C.open_frames(self._key, C.TO_SHARD, frames, 2 + self.histories, self.max_bytes)
                seq = C.integer(header, "seq")
                if seq <= self._seq:
                    raise C.Dropped("replayed", f"seq {seq}")
                cmd = header.get("cmd")
                if header.get("kind") != "cmd" or not isinstance(cmd, dict):
                    raise C.Dropped("malformed", "not a command")
            except C.Dropped as exc:
                self._drop(exc)
                continue
            self._seq = seq
            if cmd.get("cmd") == "exit":
                return
            out: list[np.ndarray] = []
            try:
                state = C.slice_of(arrays, self.lo, self.hi, cmd, self.histories) \
                    if cmd.get("cmd") == "load" else None
                reply, result = handle(self.server, cmd, state)
                if isinstance(result, np.ndarray):
                    out = [result]
                elif result is not None:
                    out = C.slice_arrays(result)
                reply = {"ok": True, **reply}
            except (ValueError, KeyError, TypeError, DDQNError) as exc:
                reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            try:
                self._send({"kind": "reply", "seq": seq, "reply": reply}, out)
            except ValueError as exc:  # a header over MAX_HEADER: the driver gets the error, not a silence
                self._send({"kind": "reply", "seq": seq, "reply": {"ok": False, "error": str(exc)[:200]}})

    def close(self) -> None:
        if self.server is not None:
            self.server.close(grace=1.0)
        self._sock.disable_monitor()
        self._gone.close(linger=0)
        self._sock.close()
        self._ctx.term()


def run_shard(job_json: str, shard: int, attempt: int) -> dict:
    """Entry point of a Spark task: shard ``shard`` (task attempt ``attempt``) until the driver says exit."""
    task = ShardTask(json.loads(job_json), shard, attempt)
    try:
        task.register()
        task.serve()
    finally:
        task.close()
    return {"shard": shard, "attempt": attempt, "pid": os.getpid(), "dropped": task.dropped}
