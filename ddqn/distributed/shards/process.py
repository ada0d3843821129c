"""A shard's process (placement ``driver``): ``python -m ddqn.distributed.shards.process``, started by the driver.

The driver writes one JSON line to its stdin (the init: slice bounds, net and solver text, server options, the run
secret and the shard key, the state directory to start from and the version counters to continue at). The shard
loads its slice, starts a :class:`~ddqn.distributed.shards.server.ShardServer` (``shards.host``, which a shard task on
an executor shares) and registers: one JSON line on its control output with its pid and ports, tagged with HMAC-SHA256
under the shard key (:func:`registration_tag`). Then it answers the driver's commands (``shards.host.handle``), one
JSON line each way; the slices of ``dump``, ``load`` and ``publish`` are files in the driver's run directory (``dir``,
``path``), since this process runs on the driver's host. ``exit`` closes the ports and ends it.

Its stdin is a pipe only the driver holds: when the driver ends for any reason, the shard reads end-of-file, closes its
ports and exits. Everything it logs goes to stderr; the control output is a private copy of fd 1.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import sys
from pathlib import Path

import numpy as np

from ddqn.distributed.shards.files import read_slice, write_slice
from ddqn.distributed.shards.host import build, handle
from ddqn.distributed.shards.server import ShardServer
from ddqn.errors import DDQNError


def registration_tag(key: bytes, record: dict) -> str:
    """HMAC-SHA256 (hex) under the shard key of a registration record (its JSON, keys sorted, without the tag)."""
    body = json.dumps({k: v for k, v in record.items() if k != "tag"}, sort_keys=True).encode()
    return hmac.new(key, b"ddqn-shard-register" + body, hashlib.sha256).hexdigest()


def command(server: ShardServer, cmd: dict) -> dict:
    """One control command's reply, its slices read from and written to the files the command names."""
    op = cmd.get("cmd")
    reply, out = handle(server, cmd, read_slice(Path(cmd["dir"])) if op == "load" else None)
    if op == "dump":
        write_slice(Path(cmd["dir"]), out)
    elif op == "publish":
        np.ascontiguousarray(out, "<f4").tofile(cmd["path"])
    return reply


def main() -> int:
    control = os.fdopen(os.dup(1), "w", buffering=1)  # the driver reads this; fd 1 now goes to stderr
    os.dup2(2, 1)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="shard %(name)s: %(message)s")
    init = json.loads(sys.stdin.readline())
    server = build(init, read_slice(Path(init["state"]))).start()
    try:
        record = {"shard": init["shard"], "pid": os.getpid(), "port": server.port,
                  "session_port": server.session_port, "address": server.address}
        record["tag"] = registration_tag(bytes.fromhex(init["key_hex"]), record)
        control.write(json.dumps(record) + "\n")
        for line in sys.stdin:  # end of file: the driver is gone
            cmd = json.loads(line)
            if cmd.get("cmd") == "exit":
                break
            try:
                reply = {"ok": True, **command(server, cmd)}
            except (OSError, ValueError, KeyError, TypeError, DDQNError) as exc:
                reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            control.write(json.dumps(reply) + "\n")
    finally:
        server.close(grace=1.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
