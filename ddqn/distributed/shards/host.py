"""One shard's server and its control commands, whatever carries them: a pipe (placement ``driver``,
``shards.process``) or the authenticated control channel of a Spark task (placement ``executors``, ``shards.task``).

:func:`build` makes a shard's store and :class:`~ddqn.distributed.shards.server.ShardServer` from its init record and
its starting slice; :func:`handle` answers one command. Slices go in and out as :class:`SliceState` and arrays: the
pipe's shard reads and writes them as files in the driver's run directory, the task's travel inside its messages.

* ``status``: versions, drops, pending and held push ids;
* ``hold`` / ``release``: a snapshot's cut (PUSHes wait meanwhile; COMMITs go on);
* ``dump``: its state at its current version (a :class:`SliceState`);
* ``load`` (with a :class:`SliceState`, ``version``, ``target_version``): roll back to a cut (another shard died);
* ``publish``: θ's slice (for the driver's evaluations);
* ``stop``: tell the workers to stop in their next reply.
"""
from __future__ import annotations

import numpy as np

from ddqn.distributed.server import ServerOptions
from ddqn.distributed.shards.files import SliceState
from ddqn.distributed.shards.server import ShardServer
from ddqn.distributed.shards.slices import shard_solver
from ddqn.distributed.store import ParameterStore
from ddqn.net.netspec import parse_netspec
from ddqn.solvers.flat import parse_solver_spec


def build(init: dict, state: SliceState) -> ShardServer:
    """The shard's store and server (not started) from the driver's init record and its starting slice ``state``.

    ``init``: net and solver text, ``actions``, ``shard``, ``shards``, ``lo``, ``hi``, the server ``options``, the run
    secret and the shard key (hex), ``version``/``target_version`` to continue at, and the store's arguments.
    """
    spec = parse_netspec(init["net_text"], init["net_source"], init["actions"])
    solver = shard_solver(parse_solver_spec(init["solver_text"], init["solver_source"]), spec.params,
                          init["lo"], init["hi"])
    if (state.lo, state.hi) != (init["lo"], init["hi"]):
        raise ValueError(f"slice [{state.lo}, {state.hi}) is not shard {init['shard']}'s [{init['lo']}, {init['hi']})")
    store = ParameterStore(solver, state.theta.copy(), state.target.copy(), init["target_update"],
                           init["max_staleness"], init["staleness_lr"], init["dc_lambda"])
    store.load(state.theta, state.target, state.history, state.iter, init["version"], init["target_version"])
    options = ServerOptions(**{k: v for k, v in init["options"].items() if k != "shards"})
    server = ShardServer(store, bytes.fromhex(init["secret_hex"]), options, shard=init["shard"],
                         shards=init["shards"], vote_key=bytes.fromhex(init["key_hex"]))
    server.bounds = (init["lo"], init["hi"])
    return server


def handle(server: ShardServer, cmd: dict, state: SliceState | None = None
           ) -> tuple[dict, SliceState | np.ndarray | None]:
    """One control command's reply, and the slice it returns (``dump``: a SliceState; ``publish``: θ's slice).
    ``state`` is the slice a ``load`` rolls back to."""
    store, op = server.store, cmd.get("cmd")
    if op == "status":
        return server.status(), None
    if op == "hold":
        server.holding.set()
        return server.status(), None
    if op == "release":
        server.holding.clear()
        return {}, None
    if op == "dump":
        copy = store.copy()
        lo, hi = server.bounds
        return ({"version": copy.version, "target_version": copy.target_version, "iter": copy.solver.iter},
                SliceState(lo, hi, copy.theta, copy.target, copy.solver.history, copy.version, copy.target_version,
                           copy.solver.iter))
    if op == "load":
        if state is None or (state.lo, state.hi) != server.bounds:
            raise ValueError("load: no slice, or another shard's")
        version, target_version = int(cmd["version"]), int(cmd["target_version"])
        server.rolling_back(version)
        store.load(state.theta, state.target, state.history, state.iter, version, target_version)
        server.holding.clear()
        return {"version": store.version}, None
    if op == "publish":
        version, theta = store.published()
        return {"version": version}, theta
    if op == "stop":
        server.request_stop()
        return {}, None
    raise ValueError(f"unknown command {op!r}")
