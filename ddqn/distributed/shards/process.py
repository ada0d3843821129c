"""A shard's process (placement ``driver``): ``python -m ddqn.distributed.shards.process``, started by the driver.

The driver writes one JSON line to its stdin (the init: slice bounds, net and solver text, server options, the run
secret and the shard key, the state directory to start from and the version counters to continue at). The shard
loads its slice, starts a :class:`~ddqn.distributed.shards.server.ShardServer` and registers: one JSON line on its
control output with its pid and ports, tagged with HMAC-SHA256 under the shard key (:func:`registration_tag`), so the
same record can travel over a network channel. Then it answers the driver's commands, one JSON line each way:

* ``status``: versions, drops, pending and held push ids;
* ``hold`` / ``release``: a snapshot's cut (PUSHes wait meanwhile; COMMITs go on);
* ``dump {dir}``: write its state at its current version (``ddqn.distributed.shards.files``);
* ``load {dir, version, target_version}``: roll back to a cut (another shard died);
* ``publish {path}``: write θ's slice (for the driver's evaluations);
* ``stop``: tell the workers to stop in their next reply; ``exit``: close the ports and end.

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

from ddqn.distributed.server import ServerOptions
from ddqn.distributed.shards.files import SliceState, read_slice, write_slice
from ddqn.distributed.shards.server import ShardServer
from ddqn.distributed.shards.slices import shard_solver
from ddqn.distributed.store import ParameterStore
from ddqn.errors import DDQNError
from ddqn.net.netspec import parse_netspec
from ddqn.solvers.flat import parse_solver_spec


def registration_tag(key: bytes, record: dict) -> str:
    """HMAC-SHA256 (hex) under the shard key of a registration record (its JSON, keys sorted, without the tag)."""
    body = json.dumps({k: v for k, v in record.items() if k != "tag"}, sort_keys=True).encode()
    return hmac.new(key, b"ddqn-shard-register" + body, hashlib.sha256).hexdigest()


def build(init: dict) -> ShardServer:
    """The shard's store and server from the driver's init record (not started)."""
    spec = parse_netspec(init["net_text"], init["net_source"], init["actions"])
    solver = shard_solver(parse_solver_spec(init["solver_text"], init["solver_source"]), spec.params,
                          init["lo"], init["hi"])
    state = read_slice(Path(init["state"]))
    if (state.lo, state.hi) != (init["lo"], init["hi"]):
        raise ValueError(f"{init['state']}: slice [{state.lo}, {state.hi}) is not this shard's")
    store = ParameterStore(solver, state.theta.copy(), state.target.copy(), init["target_update"],
                           init["max_staleness"], init["staleness_lr"], init["dc_lambda"])
    store.load(state.theta, state.target, state.history, state.iter, init["version"], init["target_version"])
    options = ServerOptions(**{k: v for k, v in init["options"].items() if k != "shards"})
    return ShardServer(store, bytes.fromhex(init["secret_hex"]), options, shard=init["shard"],
                       shards=init["shards"], vote_key=bytes.fromhex(init["key_hex"]))


def handle(server: ShardServer, cmd: dict) -> dict:
    """One control command's reply (see the module docstring)."""
    store, op = server.store, cmd.get("cmd")
    if op == "status":
        return server.status()
    if op == "hold":
        server.holding.set()
        return server.status()
    if op == "release":
        server.holding.clear()
        return {}
    if op == "dump":
        copy = store.copy()
        lo, hi = cmd["lo"], cmd["hi"]
        write_slice(Path(cmd["dir"]), SliceState(lo, hi, copy.theta, copy.target, copy.solver.history, copy.version,
                                                 copy.target_version, copy.solver.iter))
        return {"version": copy.version, "target_version": copy.target_version, "iter": copy.solver.iter}
    if op == "load":
        state = read_slice(Path(cmd["dir"]))
        server.rolling_back(cmd["version"])
        store.load(state.theta, state.target, state.history, state.iter, cmd["version"], cmd["target_version"])
        server.holding.clear()
        return {"version": store.version}
    if op == "publish":
        version, theta = store.published()
        np.ascontiguousarray(theta, "<f4").tofile(cmd["path"])
        return {"version": version}
    if op == "stop":
        server.request_stop()
        return {}
    raise ValueError(f"unknown command {op!r}")


def main() -> int:
    control = os.fdopen(os.dup(1), "w", buffering=1)  # the driver reads this; fd 1 now goes to stderr
    os.dup2(2, 1)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="shard %(name)s: %(message)s")
    init = json.loads(sys.stdin.readline())
    server = build(init).start()
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
                reply = {"ok": True, **handle(server, cmd)}
            except (OSError, ValueError, KeyError, TypeError, DDQNError) as exc:
                reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            control.write(json.dumps(reply) + "\n")
    finally:
        server.close(grace=1.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
