"""The driver's control channel to one shard process (placement ``driver``): a pipe each way, one JSON line per command.

The driver starts ``python -m ddqn.distributed.shards.process`` with its stdin and stdout as pipes only the driver
holds, writes the init record, and reads the shard's registration (checked: HMAC under the shard key, its shard
number and pid), then its replies. Every read is bounded (``select`` with a deadline); a process that ended or stays
silent raises :class:`ShardDied`. The process runs in a session of its own (a terminal's Ctrl-C is the driver's to
handle) and is ended by its pid (:meth:`ShardProcess.end`).
"""
from __future__ import annotations

import hmac
import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

from ddqn.distributed.shards.process import registration_tag
from ddqn.errors import DDQNError

CONTROL_S = 10.0  # bound on one control command's reply
EXIT_S = 5.0  # a shard told to exit gets this long before SIGKILL


class ShardDied(DDQNError):
    """A shard process ended, or did not answer a command in time."""


class ShardProcess:
    """One shard's process and its control pipes (JSON lines)."""

    def __init__(self, shard: int, init: dict, key: bytes, cwd: Path) -> None:
        self.shard, self.key = shard, key
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (_repo_root(), os.environ.get("PYTHONPATH"))
                                                           if p)}
        self.proc = subprocess.Popen([sys.executable, "-m", "ddqn.distributed.shards.process"], cwd=cwd, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     start_new_session=True)  # a terminal's Ctrl-C is the driver's to handle
        self._buf = b""
        self.proc.stdin.write((json.dumps(init) + "\n").encode())
        self.proc.stdin.flush()
        self.record: dict = {}

    @property
    def pid(self) -> int:
        return self.proc.pid

    def registered(self, deadline: float) -> dict:
        """The shard's registration, checked (its tag, shard number and pid); ShardDied if none by ``deadline``."""
        record = self._json(deadline)
        tag = record.get("tag", "")
        if not (isinstance(tag, str) and hmac.compare_digest(tag, registration_tag(self.key, record))):
            raise ShardDied(f"shard {self.shard}: registration does not verify")
        if record.get("shard") != self.shard or record.get("pid") != self.pid:
            raise ShardDied(f"shard {self.shard}: registration names another shard or process")
        self.record = record
        return record

    def call(self, cmd: dict, timeout: float = CONTROL_S) -> dict:
        """Send one command and return its reply; ShardDied if the process is gone or silent for ``timeout``."""
        try:
            self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError, OSError) as exc:
            raise ShardDied(f"shard {self.shard} (pid {self.pid}) is gone") from exc
        reply = self._json(time.monotonic() + timeout)
        if not reply.get("ok"):
            raise DDQNError(f"shard {self.shard}: {cmd.get('cmd')}: {reply.get('error')}")
        return reply

    def _json(self, deadline: float) -> dict:
        """The next line from the shard, a JSON object; ShardDied if it is anything else."""
        try:
            obj = json.loads(self._line(deadline))
        except ValueError as exc:
            raise ShardDied(f"shard {self.shard} (pid {self.pid}) wrote something that is not JSON") from exc
        if not isinstance(obj, dict):
            raise ShardDied(f"shard {self.shard} (pid {self.pid}) wrote something that is not a JSON object")
        return obj

    def _line(self, deadline: float) -> bytes:
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            wait = deadline - time.monotonic()
            if wait <= 0 or not select.select([fd], [], [], wait)[0]:
                raise ShardDied(f"shard {self.shard} (pid {self.pid}) did not answer in time")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise ShardDied(f"shard {self.shard} (pid {self.pid}) ended (exit code {self.proc.poll()})")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line

    def alive(self) -> bool:
        return self.proc.poll() is None

    def exit_code(self) -> int | None:
        return self.proc.poll()

    def tell_exit(self) -> None:
        """Ask it to exit (without waiting: :meth:`end` waits)."""
        if self.alive():
            try:
                self.proc.stdin.write(b'{"cmd": "exit"}\n')
                self.proc.stdin.flush()
            except (BrokenPipeError, ValueError, OSError):
                pass

    def end(self) -> None:
        """Tell it to exit; SIGKILL its pid after EXIT_S; reap it (its ports are free once it has ended)."""
        if self.alive():
            self.tell_exit()
            try:
                self.proc.wait(timeout=EXIT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass


def _repo_root() -> str:
    """The directory the ``ddqn`` package was imported from (the shard process imports the same one)."""
    import ddqn  # noqa: PLC0415

    return str(Path(ddqn.__file__).resolve().parents[1])
