"""The driver's side of shards on executors (``ps_placement: executors``): the control port and one link per shard.

:class:`ControlPort` binds the driver's control port (``shards.channel`` has the wire format and its guarantees) and
reads it only from the thread that calls it (the driver's): registrations are checked and kept, one per shard (the
newest attempt), until that shard's :class:`ShardLink` takes it; replies go to the link that waits for them. Every
message that fails a check is dropped and counted (:attr:`ControlPort.dropped`).

:class:`ShardLink` has the interface of ``shards.control.ShardProcess`` (``registered``, ``call``, ``alive``,
``tell_exit``, ``end``, ``pid``, ``record``), so ``shards.group.ShardGroup`` drives shards on executors as it drives
shard processes on its own host. The commands' slices are files in the driver's run directory on the group's side
(the cut it writes, the slice it reads back), as with shard processes; the link sends and receives them inside its
messages, so the executors share no directory with the driver.

:class:`ExecutorShards` is the placement: the control port and the Spark job of S long-running shard tasks
(``shards.task``, job group ``ddqn-shards``), started beside the workers' job.
"""
from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zmq

from ddqn.distributed.shards import channel as C
from ddqn.distributed.shards.control import CONTROL_S, ShardDied
from ddqn.distributed.shards.files import read_slice, write_slice
from ddqn.distributed.zap import JOIN_DOMAIN, Tickets, ZapHandler, plain_server
from ddqn.errors import DDQNError

log = logging.getLogger("ddqn.distributed.shards.links")
POLL_MS = 50  # the longest one wait on the control port lasts before the caller's deadline is looked at again
MAX_NONCES = 65_536  # registration nonces remembered (a run sees S × attempts of them)
JOIN_S = 15.0  # after the shards were told to exit, how long their Spark job gets to end before it is cancelled


@dataclass(frozen=True)
class Registration:
    """A checked registration, waiting for its shard's link to accept it."""

    ident: bytes
    shard: int
    attempt: int
    pid: int
    host: str
    nonce: bytes


class ControlPort:
    """The driver's control port for S shard tasks (see the module docstring).

    Args:
        key: the shard key.
        host: the driver's address (the port is bound to it only); ``port`` 0: any free port.
        bounds: each shard's slice ``[lo, hi)``; ``histories``: the solver's history vectors (the largest message).
    """

    def __init__(self, key: bytes, host: str, bounds: list[tuple[int, int]], histories: int, port: int = 0) -> None:
        self.key, self.bounds, self.histories = key, bounds, histories
        self.dropped: Counter[str] = Counter()
        self.pending: dict[int, Registration] = {}  # shard → its newest registration not yet accepted
        self.linked: dict[int, int] = {}  # shard → the attempt last accepted
        self._links: dict[bytes, ShardLink] = {}  # routing id → its link
        self._retired: dict[bytes, None] = {}  # routing ids of links ended (a late message from one: unexpected)
        self._nonces: dict[bytes, None] = {}
        largest = max(hi - lo for lo, hi in bounds) * 4
        self.max_bytes = (2 + histories) * largest
        self._ctx = zmq.Context()
        self._zap = ZapHandler(self._ctx, C.control_token(key), Tickets(1, 1.0)).start()
        self._sock = self._ctx.socket(zmq.ROUTER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.MAXMSGSIZE, max(largest, C.MAX_HEADER) + 64)  # one frame; a larger one: cut off
        self._sock.setsockopt(zmq.ROUTER_MANDATORY, 1)  # a command to a peer that is gone raises, not vanishes
        plain_server(self._sock, JOIN_DOMAIN)
        if port:
            self._sock.bind(f"tcp://{host}:{port}")
            self.port = port
        else:
            self.port = self._sock.bind_to_random_port(f"tcp://{host}")
        self.address = f"tcp://{host}:{self.port}"

    # -- reading ----------------------------------------------------------------------------------------------
    def pump(self, deadline: float, done) -> bool:
        """Read and dispatch messages until ``done()`` or ``deadline``; True if done."""
        while not done():
            wait = deadline - time.monotonic()
            if wait <= 0:
                return False
            if self._sock.poll(min(POLL_MS, max(1, int(wait * 1000)))):
                self._dispatch(self._sock.recv_multipart(copy=False))
        return True

    def _dispatch(self, frames: list) -> None:
        ident, body = bytes(frames[0]), frames[1:]
        try:
            link = self._links.get(ident)
            if link is not None:
                link.receive(body)
            elif ident in self._retired:
                raise C.Dropped("unexpected", "from a link that was ended")
            else:
                self._register(ident, body)
        except C.Dropped as exc:
            self.dropped[exc.reason] += 1
            log.debug("control message dropped: %s", exc)

    def _register(self, ident: bytes, body: list) -> None:
        """A registration, checked (sizes, tag under the shard key, fields, fresh nonce and attempt) and kept."""
        header, _ = C.open_frames(self.key, C.TO_DRIVER, body, 0, 0)
        if header.get("kind") != "register":
            raise C.Dropped("unexpected", f"{header.get('kind')!r} from a peer without a link")
        shard = C.integer(header, "shard", 0, len(self.bounds))
        attempt, pid = C.integer(header, "attempt", 0, 2**16), C.integer(header, "pid", 0, 2**31)
        host, nonce = header.get("host"), C.nonce_of(header, "nonce")
        if not (isinstance(host, str) and len(host) <= 255):
            raise C.Dropped("malformed", "host")
        if nonce in self._nonces:
            raise C.Dropped("replayed", "a registration's nonce seen before")
        if attempt <= max(self.linked.get(shard, -1), getattr(self.pending.get(shard), "attempt", -1)):
            raise C.Dropped("stale attempt", f"shard {shard} attempt {attempt}")
        self._nonces[nonce] = None
        while len(self._nonces) > MAX_NONCES:
            del self._nonces[next(iter(self._nonces))]
        self.pending[shard] = Registration(ident, shard, attempt, pid, host, nonce)

    # -- the links' side --------------------------------------------------------------------------------------
    def take(self, link: ShardLink, registration: Registration) -> None:
        """``link`` accepts ``registration``: from now on the messages of its routing id are the link's."""
        del self.pending[registration.shard]
        self.linked[registration.shard] = registration.attempt
        self._links[registration.ident] = link

    def forget(self, ident: bytes) -> None:
        if self._links.pop(ident, None) is not None:
            self._retired[ident] = None
            while len(self._retired) > MAX_NONCES:
                del self._retired[next(iter(self._retired))]

    def send(self, ident: bytes, frames: list) -> None:
        try:
            self._sock.send_multipart([ident, *frames], copy=False, flags=zmq.NOBLOCK)
        except zmq.ZMQError as exc:  # the peer is gone (ROUTER_MANDATORY) or its queue is full
            raise ShardDied(f"control message not sent: {exc}") from exc

    def close(self) -> None:
        self._sock.close(linger=0)
        self._zap.close()
        self._ctx.term()


class ShardLink:
    """One shard task seen from the driver (the interface of ``shards.control.ShardProcess``).

    ``init`` is what the group would give a shard process: ``state`` (the cut directory to start from), ``version``
    and ``target_version``; :meth:`registered` waits for the task's registration, accepts it with that slice and
    waits for the task's ready.
    """

    def __init__(self, port: ControlPort, shard: int, init: dict, failed=lambda: None) -> None:
        self.port, self.shard, self.init, self._failed = port, shard, init, failed
        self.lo, self.hi = port.bounds[shard]
        self.record: dict = {}
        self._ident = b""
        self._key = b""
        self._seq = 0  # the last command's number (0: the accept)
        self._attempt = -1  # the Spark attempt of the registration it accepted
        self._reply: tuple[dict, list[np.ndarray]] | None = None
        self._gone = ""  # why it is known to be gone

    @property
    def pid(self) -> int:
        return self.record.get("pid", 0)

    def exit_code(self) -> None:
        """A task on an executor has no exit code the driver can read."""
        return None

    # -- registration -----------------------------------------------------------------------------------------
    def registered(self, deadline: float) -> dict:
        """Wait for the shard task's registration, send it its slice, wait for its ready; its record (shard,
        attempt, pid, host, port, session_port, address). ShardDied if none by ``deadline``, DDQNError if the
        shards' Spark job failed."""
        port = self.port
        port.pump(deadline, lambda: self.shard in port.pending or self._failed() is not None)
        self._check_job()
        reg = port.pending.get(self.shard)
        if reg is None:
            raise ShardDied(f"shard {self.shard}: no shard task registered in time")
        state = read_slice(Path(self.init["state"]))
        driver_nonce = os.urandom(C.NONCE)
        self._ident, self._key = reg.ident, C.link_key(port.key, reg.shard, reg.attempt, reg.nonce, driver_nonce)
        port.take(self, reg)
        self._seq, self._reply, self._attempt = 0, None, reg.attempt
        header = {"kind": "accept", "shard": self.shard, "attempt": reg.attempt, "nonce": driver_nonce.hex(),
                  "shard_nonce": reg.nonce.hex(), "seq": 0, "lo": self.lo, "hi": self.hi,
                  "version": self.init["version"], "target_version": self.init["target_version"], "iter": state.iter}
        port.send(self._ident, C.seal(self._key, C.TO_SHARD, header, C.slice_arrays(state)))
        ready, _ = self._wait(deadline)
        if ready.get("kind") != "ready":
            raise ShardDied(f"shard {self.shard}: no ready after its accept")
        address = ready.get("address")
        with self._malformed():
            if not (isinstance(address, str) and address.startswith("tcp://") and len(address) <= 300):
                raise C.Dropped("malformed", "its ready names no address")
            ports = C.integer(ready, "port", 1, 65536), C.integer(ready, "session_port", 1, 65536)
        self.record = {"shard": self.shard, "attempt": reg.attempt, "pid": reg.pid, "host": reg.host,
                       "port": ports[0], "session_port": ports[1], "address": address}
        return self.record

    @contextmanager
    def _malformed(self):
        """A reply that verified but does not hold what its command returns: counted, and the shard is gone."""
        try:
            yield
        except C.Dropped as exc:
            self.port.dropped[exc.reason] += 1
            self._gone = f"its reply was {exc}"
            raise ShardDied(f"shard {self.shard} (pid {self.pid}): {self._gone}") from exc

    # -- commands ---------------------------------------------------------------------------------------------
    def call(self, cmd: dict, timeout: float = CONTROL_S) -> dict:
        """Send one command and return its reply (the slices of ``load``, ``dump`` and ``publish`` read from and
        written to the files they name, on the driver's side); ShardDied if the task is gone or silent."""
        if not self.alive():
            raise ShardDied(f"shard {self.shard} (pid {self.pid}) is gone: {self._gone}")
        op, arrays = cmd.get("cmd"), []
        wire = {k: v for k, v in cmd.items() if k not in ("dir", "path")}
        if op == "load":
            state = read_slice(Path(cmd["dir"]))
            wire.update(iter=state.iter)
            arrays = C.slice_arrays(state)
        self._seq += 1
        self._reply = None
        self.port.send(self._ident, C.seal(self._key, C.TO_SHARD, {"kind": "cmd", "seq": self._seq, "cmd": wire},
                                           arrays))
        header, out = self._wait(time.monotonic() + timeout)
        reply = header.get("reply")
        if header.get("kind") != "reply" or not isinstance(reply, dict):
            raise ShardDied(f"shard {self.shard}: a reply that is not one")
        if not reply.get("ok"):
            raise DDQNError(f"shard {self.shard}: {op}: {reply.get('error')}")
        with self._malformed():
            if op == "dump":
                write_slice(Path(cmd["dir"]), C.slice_of(out, self.lo, self.hi, reply, self.port.histories))
            elif op == "publish":
                if len(out) != 1 or out[0].size != self.hi - self.lo:
                    raise C.Dropped("malformed", "a published slice of the wrong size")
                np.ascontiguousarray(out[0], "<f4").tofile(cmd["path"])
        return reply

    def receive(self, body: list) -> None:
        """A message from this link's task (called by the port): checked, kept if it answers the command waited
        for."""
        header, arrays = C.open_frames(self._key, C.TO_DRIVER, body, 2 + C.MAX_HISTORIES, self.port.max_bytes)
        seq = C.integer(header, "seq")
        if seq < self._seq or (seq == self._seq and self._reply is not None):
            raise C.Dropped("replayed", f"seq {seq}")
        if seq != self._seq:
            raise C.Dropped("unexpected", f"seq {seq} answers no command")
        self._reply = (header, arrays)

    def _wait(self, deadline: float) -> tuple[dict, list[np.ndarray]]:
        self.port.pump(deadline, lambda: self._reply is not None or not self.alive())
        if self._reply is None:
            self._check_job()
            # silent, not known dead: the group tries it again (a load), then waits for Spark's rerun
            raise ShardDied(f"shard {self.shard} (pid {self.pid}): {self._gone or 'no reply in time'}")
        return self._reply

    def _check_job(self) -> None:
        if (error := self._failed()) is not None:
            raise DDQNError(f"ps_placement: executors: the shards' Spark job failed: {error}")

    # -- life -------------------------------------------------------------------------------------------------
    def alive(self) -> bool:
        """False once Spark has rerun the task (a newer attempt of this shard registered), or it was ended."""
        newer = self.port.pending.get(self.shard)
        if not self._gone and newer is not None and self._attempt >= 0:  # pending ones are newer than the linked
            self._gone = f"attempt {newer.attempt} registered"
        return not self._gone

    def tell_exit(self) -> None:
        """Ask the task to exit (no wait: its Spark job ends with it); once."""
        if self._ident and self.alive():
            self._gone = "told to exit"
            self._seq += 1
            try:
                self.port.send(self._ident, C.seal(self._key, C.TO_SHARD,
                                                   {"kind": "cmd", "seq": self._seq, "cmd": {"cmd": "exit"}}))
            except ShardDied:
                pass

    def end(self) -> None:
        """Tell it to exit and forget it (a task that does not exit ends with the shards' job: cancelled)."""
        self.tell_exit()
        self._gone = self._gone or "ended"
        self.port.forget(self._ident)


class ExecutorShards:
    """The ``executors`` placement: the control port on the driver's address and the Spark job of S shard tasks.

    Args:
        sc: the SparkContext.
        key: the shard key; ``bounds``, ``histories`` as for :class:`ControlPort`.
        init: what every shard task needs (net and solver text, options, secret, store arguments: the group's init
            record), sent in the job's broadcast spec with the control port's address.
    """

    def __init__(self, sc, key: bytes, host: str, bounds: list[tuple[int, int]], histories: int, init: dict) -> None:
        from ddqn.distributed.spark import ShardJob  # noqa: PLC0415 - Spark's part

        self.port = ControlPort(key, host, bounds, histories)
        spec = {**init, "control": self.port.address, "bounds": bounds, "histories": histories}
        try:
            self.job = ShardJob(sc, json.dumps(spec), len(bounds)).start()
        except BaseException:
            self.port.close()
            raise
        log.info("shards on executors: %d Spark tasks, control port %s", len(bounds), self.port.address)

    def failed(self) -> str | None:
        """Why the shards' Spark job ended (failed, or ended while the group still needs it), or None."""
        if self.job.error is not None:
            return str(self.job.error).splitlines()[0][:300]
        return None if self.job.running() else "its tasks ended"

    def spawn(self, shard: int, init: dict, key: bytes, cwd: Path) -> ShardLink:
        return ShardLink(self.port, shard, init, self.failed)

    def dropped(self) -> dict[str, int]:
        """Control messages the driver dropped, by reason (``channel.CONTROL_DROPS``)."""
        return dict(self.port.dropped)

    def close(self) -> None:
        """Wait (bounded) for the shard tasks to end (they were told to exit), cancel them if not, close the port."""
        self.job.join(JOIN_S)
        self.job.cancel()
        self.port.close()
