"""The driver's side of a sharded parameter server (``ps_shards: S > 1``).

:class:`ShardGroup` starts S shards, each over its slice of θ (``shards.slices.bounds``), where ``ps_placement`` says
(:func:`launcher`): ``driver``, S processes on the driver's host (``shards.process``, driven over pipes by
``shards.control.ShardProcess``); ``executors``, S long-running Spark tasks (``shards.task``, driven over the
authenticated control channel by ``shards.links.ShardLink``). Both handles have one interface, so everything below is
the same for both. The group checks their registration (HMAC under the shard key), and stands in for the
:class:`~ddqn.distributed.store.ParameterStore` where the driver reads one: ``version``, ``published()`` (θ for
evaluations) and ``copy()`` (a snapshot), so the checkpointer and the driver's loop are the same as with one server.

**A snapshot is a consistent cut** (:meth:`ShardGroup.copy`): every shard holds new PUSHes (COMMITs go on); the driver
waits (at most ``DRAIN_S``) until every push id pending on some shard is held on another (such a push cannot be
committed before the cut ends) — so no commit is half-applied; then each shard writes its slice, θ⁻ slice, solver
history and counts, and the holds are released. The driver assembles the whole θ, θ⁻ and solver, written as one
server's snapshot (``--resume`` and ``ddqn eval`` read it as before, for any S). A cut is *consistent* when every
shard's version is the same: the log says so when it is not (a worker that committed to only some shards).

**A shard dies** (:meth:`ShardGroup.supervise`, every driver poll): its process is started again on the same ports
from the last cut (``driver``), or Spark reruns its task, whose new attempt registers and gets the last cut's slice
(``executors``), and every live shard rolls back to that cut, so θ stays one consistent state. Lost: every update
since the last snapshot, on every shard. The version counters do not go back (they continue past the highest any
shard had reached), so every worker fetches the restored θ; its pushes in flight are voted invalid meanwhile. The
shards' addresses carry a version (:meth:`ShardGroup.where`, named in the coordinator's WELCOME), bumped when a
restarted shard's address changed: a worker that cannot reach a shard asks the driver again.

Every wait is bounded (``CONTROL_S`` per command, ``REGISTER_S`` per start); :meth:`ShardGroup.close` ends every
shard process by its pid and so frees its ports (``executors``: tells every shard task to exit, then waits a bounded
time for their Spark job, which it cancels if it has not ended).
"""
from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ddqn.distributed.server import ServerOptions
from ddqn.distributed.shards.control import ShardDied, ShardProcess
from ddqn.distributed.shards.files import SliceState, read_slice, write_slice
from ddqn.distributed.shards.links import ExecutorShards
from ddqn.distributed.shards.slices import bounds
from ddqn.distributed.stats import StatsView
from ddqn.distributed.store import ParameterStore, StoreCopy
from ddqn.errors import DDQNError
from ddqn.net.netspec import NetSpec
from ddqn.solvers.flat import SolverSpec, make_solver

log = logging.getLogger("ddqn.distributed.shards.group")
REGISTER_S = 60.0  # bound on a shard process's start (imports, loading its slice, binding) and registration
DRAIN_S = 2.0  # bound on a cut's wait for commits in flight
MAX_RESTARTS = 5  # shard deaths a run survives


class ShardGroup:
    """S shard processes on this host, standing in for the parameter store (see the module docstring).

    Args:
        store: the whole starting state (fresh, or restored by ``--resume``); cut into the S slices.
        spec, solver_spec: the net (its layout) and the solver; ``actions`` the net's outputs.
        shards: S.
        out_dir: the run directory; the cuts go to ``out_dir/shards/``.
        store_args: ``target_update``, ``max_staleness``, ``staleness_lr``, ``dc_lambda`` (as for one store).
    """

    def __init__(self, store: ParameterStore, spec: NetSpec, solver_spec: SolverSpec, actions: int, shards: int,
                 out_dir: Path, placement: str = "driver", **store_args) -> None:
        if solver_spec.clip_gradients >= 0:
            raise DDQNError(f"{solver_spec.source}: clip_gradients needs the whole gradient's norm, so it cannot be "
                            f"used with ps_shards > 1 (got ps_shards {shards})")
        self.spec, self.solver_spec, self.actions, self.store_args = spec, solver_spec, actions, store_args
        self.num_params, self.shards = store.num_params, shards
        self.bounds = bounds(store.num_params, shards)
        self.version, self.target_version = store.version, store.target_version
        self.dir = Path(out_dir).resolve() / "shards"  # absolute: the shard processes run in it
        self._first = store
        self._procs: list[ShardProcess] = []
        self._init: dict = {}
        self._cut_dir: Path | None = None
        self._cuts = 0
        self._dropped_before: dict[str, int] = {}  # drops counted by shard processes that died
        self._status: list[dict] = []
        self.restarts = 0
        self.placement = placement
        self._launcher: LocalShards | ExecutorShards = LocalShards()
        self._where: tuple[tuple[str, ...], int] = ((), 0)  # the shards' addresses and their version
        self.key = os.urandom(32)
        self.started = self.closed = False

    # -- start and stop ---------------------------------------------------------------------------------------
    def start(self, secret: bytes, options: ServerOptions, sc=None) -> tuple[str, ...]:
        """Write the starting cut, start the S shards (``driver``: bound to ``options.host``; ``executors``: Spark
        tasks on ``sc``, each bound to its executor's address), wait for their registrations; returns their
        addresses (join ports), in shard order."""
        s = self._first.copy()
        self._cut_dir = self._write_cut(s.theta, s.target, s.solver.history, s.version, s.target_version, s.solver.iter)
        opts = {k: v for k, v in vars(options).items() if k != "shards"}
        self._init = {"net_text": self.spec.text, "net_source": self.spec.source, "actions": self.actions,
                      "solver_text": self.solver_spec.text, "solver_source": self.solver_spec.source,
                      "shards": self.shards, "secret_hex": secret.hex(), "key_hex": self.key.hex(),
                      "options": {**opts, "port": 0, "session_port": 0}, **self.store_args}
        try:
            self._launcher = launcher(self.placement, sc, self.key, options.host, self.bounds,
                                      len(s.solver.history), self._init)
            self._procs = [self._spawn(k, self.version, self.target_version) for k in range(self.shards)]
            deadline = time.monotonic() + REGISTER_S
            for p in self._procs:
                record = p.registered(deadline)
                log.info("shard %d of %d: pid %d at %s (θ[%d:%d])", p.shard, self.shards, p.pid, record["address"],
                         *self.bounds[p.shard])
        except BaseException:
            self.close()
            raise
        self._status = [{} for _ in self._procs]
        self.started = True
        self._where = (self.addresses(), 1)
        return self.addresses()

    def addresses(self) -> tuple[str, ...]:
        return tuple(p.record["address"] for p in self._procs)

    def where(self) -> tuple[tuple[str, ...], int]:
        """The shards' addresses as workers may use them, and their version (bumped when one moved); read by the
        coordinator's server thread for each WELCOME."""
        return self._where

    def pids(self) -> list[int]:
        return [p.pid for p in self._procs]

    def records(self) -> list[dict]:
        """Each shard's registration (pid, port, session_port, address), in shard order."""
        return [dict(p.record) for p in self._procs]

    def versions(self) -> list[int]:
        """Each shard's θ version as :meth:`supervise` last read it (-1: not read since it started)."""
        return [s.get("version", -1) for s in self._status]

    def _spawn(self, k: int, version: int, target_version: int, ports: tuple[int, int] = (0, 0)) -> ShardProcess:
        lo, hi = self.bounds[k]
        init = {**self._init, "shard": k, "lo": lo, "hi": hi, "state": str(self._cut_dir / f"shard-{k}"),
                "version": version, "target_version": target_version}
        init["options"] = {**init["options"], "port": ports[0], "session_port": ports[1]}
        return self._launcher.spawn(k, init, self.key, self.dir)

    def close(self) -> None:
        """End every shard process (by pid) and free its ports; closing again does nothing."""
        procs, self._procs, self.closed = self._procs, [], True
        for p in procs:  # all at once, then each waited for
            p.tell_exit()
        for p in procs:
            p.end()
        self._launcher.close()

    def request_stop(self) -> None:
        """Every shard tells its workers to stop in its next reply."""
        for p in self._procs:
            try:
                p.call({"cmd": "stop"})
            except ShardDied:
                pass

    # -- what the driver reads --------------------------------------------------------------------------------
    def supervise(self) -> None:
        """Restart dead shards (rolling every shard back to the last cut), then read every shard's counts."""
        if not self.started or self.closed:
            return
        if (why := self._launcher.failed()) is not None:
            raise DDQNError(f"ps_placement: {self.placement}: the shards' Spark job failed: {why}")
        if not all(p.alive() for p in self._procs):
            self._recover()
        try:
            self._status = [p.call({"cmd": "status"}) for p in self._procs]
        except ShardDied:
            self._recover()
            return
        self.version = min(s["version"] for s in self._status)
        self.target_version = min(s["target_version"] for s in self._status)

    def dropped(self) -> dict[str, int]:
        """Messages dropped by the shards, by reason, summed over shards (and over processes of a restarted one)."""
        total = dict(self._dropped_before)
        for s in self._status:
            for reason, n in s.get("dropped", {}).items():
                total[reason] = total.get(reason, 0) + n
        return total

    def pushes(self) -> dict[str, int]:
        """Gradients applied per partition (shard 0's count; with every commit reaching every shard, each's)."""
        return dict(self._status[0].get("pushes", {})) if self._status else {}

    def statuses(self) -> list[dict]:
        """Each shard's status as :meth:`supervise` last read it (``ShardServer.status``), in shard order."""
        return [dict(s) for s in self._status]

    def staleness(self) -> tuple[int, ...]:
        """The staleness of the last gradients applied (shard 0's; every commit reaches every shard)."""
        return tuple(self._status[0].get("staleness", ())) if self._status else ()

    def counted(self, view: StatsView) -> StatsView:
        """The driver's counters with what the shards count, since they apply the gradients: the staleness, each
        worker's pushes (gradients applied) and the drops, the shards' added to the driver's by reason."""
        pushes, dropped = self.pushes(), dict(view.dropped)
        for reason, n in self.dropped().items():
            dropped[reason] = dropped.get(reason, 0) + n
        workers = {p: replace(w, pushes=pushes.get(str(p), 0)) for p, w in view.workers.items()}
        return replace(view, staleness=self.staleness(), dropped=dropped, workers=workers)

    def summary(self) -> dict[str, Any]:
        """What a sharded run's summary.json adds: S and how many times a shard was restarted."""
        summary = {"ps_shards": self.shards, "ps_placement": self.placement, "shard_restarts": self.restarts}
        if (dropped := self._launcher.dropped()) is not None:  # control messages the driver dropped, by reason
            summary["control_dropped"] = dropped
        return summary

    def published(self) -> tuple[int, np.ndarray]:
        """(version, θ): each shard's current slice, put together (not a cut: for evaluations)."""
        return self._retry(self._published)

    def copy(self) -> StoreCopy:
        """A snapshot: the consistent cut of the module docstring, assembled into one store's copy (before the
        shards start: the starting state)."""
        if not self.started and not self.closed:
            return self._first.copy()
        return self._retry(self._cut)

    def _retry(self, op):
        if self.closed:
            raise DDQNError("ps_shards: the shards have ended")
        for _ in range(2):
            try:
                return op()
            except ShardDied as exc:
                log.warning("%s", exc)
                self._recover()
        return op()

    def _published(self) -> tuple[int, np.ndarray]:
        theta, version = np.empty(self.num_params, np.float32), []
        self.dir.mkdir(parents=True, exist_ok=True)
        for p, (lo, hi) in zip(self._procs, self.bounds):
            path = self.dir / f"eval-{p.shard}.f32"
            version.append(p.call({"cmd": "publish", "path": str(path)})["version"])
            theta[lo:hi] = _read_f32(path, hi - lo)
        return min(version), theta

    def _cut(self) -> StoreCopy:
        held = [p.call({"cmd": "hold"}) for p in self._procs]
        try:
            end = time.monotonic() + DRAIN_S
            while True:
                waiting = {tuple(x) for s in held for x in s["pending"]} - {tuple(x) for s in held for x in s["held"]}
                if not waiting or time.monotonic() > end:
                    break
                time.sleep(0.002)
                held = [p.call({"cmd": "status"}) for p in self._procs]
            self._cuts += 1
            cut = self.dir / f"cut-{self._cuts}"
            shutil.rmtree(cut, ignore_errors=True)
            try:
                done = [p.call({"cmd": "dump", "dir": str(cut / f"shard-{p.shard}"), "lo": lo, "hi": hi})
                        for p, (lo, hi) in zip(self._procs, self.bounds)]
            except BaseException:
                shutil.rmtree(cut, ignore_errors=True)  # not a cut: the last one stays the one to restart from
                raise
        finally:
            for p in self._procs:
                try:
                    p.call({"cmd": "release"})
                except ShardDied:
                    pass
        versions = [d["version"] for d in done]
        if len(set(versions)) > 1 or len({d["iter"] for d in done}) > 1:
            log.warning("snapshot cut %s: shard versions differ (%s): some commit reached only some shards",
                        cut, versions)
        old, self._cut_dir = self._cut_dir, cut
        if old is not None and old != cut:
            shutil.rmtree(old, ignore_errors=True)
        return self._assemble(cut)

    def _assemble(self, cut: Path) -> StoreCopy:
        parts = [read_slice(cut / f"shard-{k}") for k in range(self.shards)]
        solver = make_solver(self.solver_spec, self.spec.params)
        for i, h in enumerate(solver.history):
            h[...] = np.concatenate([s.history[i] for s in parts])
        solver.iter = min(s.iter for s in parts)
        return StoreCopy(np.concatenate([s.theta for s in parts]), np.concatenate([s.target for s in parts]), solver,
                         min(s.version for s in parts), min(s.target_version for s in parts))

    def _write_cut(self, theta: np.ndarray, target: np.ndarray, history: list[np.ndarray], version: int,
                   target_version: int, iteration: int) -> Path:
        cut = self.dir / f"cut-{self._cuts}"
        shutil.rmtree(cut, ignore_errors=True)
        for k, (lo, hi) in enumerate(self.bounds):
            write_slice(cut / f"shard-{k}", SliceState(lo, hi, theta[lo:hi], target[lo:hi],
                                                       [h[lo:hi] for h in history], version, target_version,
                                                       iteration))
        return cut

    # -- a shard died -----------------------------------------------------------------------------------------
    def _recover(self) -> None:
        """Start each dead shard again on its ports from the last cut and roll every live one back to it; the
        version counters continue past the highest any shard reported."""
        self.restarts += 1
        if self.restarts > MAX_RESTARTS:
            raise DDQNError(f"ps_shards: shards died {self.restarts} times: giving up")
        for k, p in enumerate(self._procs):  # the live shards' versions: the counters go on past them
            if p.alive():
                try:
                    self._status[k] = p.call({"cmd": "status"})
                except ShardDied:
                    pass
        known = [s for s in self._status if s]
        version = max([self.version, *(s["version"] for s in known)]) + 1
        target_version = max([self.target_version, *(s["target_version"] for s in known)]) + 1
        for k, p in enumerate(self._procs):
            if p.alive():
                try:
                    p.call({"cmd": "load", "dir": str(self._cut_dir / f"shard-{k}"), "version": version,
                            "target_version": target_version})
                    continue
                except ShardDied:
                    pass
            log.warning("shard %d (pid %d) died (exit code %s): restarted from the last snapshot's cut %s; every "
                        "shard rolled back to it", k, p.pid, p.exit_code(), self._cut_dir)
            for reason, n in (self._status[k].get("dropped", {}) if k < len(self._status) else {}).items():
                self._dropped_before[reason] = self._dropped_before.get(reason, 0) + n
            p.end()
            fresh = self._spawn(k, version, target_version, (p.record["port"], p.record["session_port"]))
            self._procs[k] = fresh
            try:
                fresh.registered(time.monotonic() + REGISTER_S)
            except ShardDied:
                fresh.end()
                raise
            log.info("shard %d restarted: pid %d at %s", k, fresh.pid, fresh.record["address"])
            if k < len(self._status):
                self._status[k] = {}
        self.version, self.target_version = version, target_version
        if self.addresses() != self._where[0]:
            self._where = (self.addresses(), self._where[1] + 1)


class LocalShards:
    """The ``driver`` placement: each shard a process on the driver's host (``shards.control.ShardProcess``)."""

    @staticmethod
    def spawn(shard: int, init: dict, key: bytes, cwd: Path) -> ShardProcess:
        return ShardProcess(shard, init, key, cwd)

    @staticmethod
    def failed() -> None:
        """Processes are watched one by one (``alive``): there is no job to fail."""
        return None

    @staticmethod
    def dropped() -> None:
        """Pipes only the driver holds: nothing to drop."""
        return None

    def close(self) -> None:
        """Each process was ended by its handle."""


def launcher(placement: str, sc, key: bytes, host: str, slices: list[tuple[int, int]], histories: int,
             init: dict) -> LocalShards | ExecutorShards:
    """Where the shards run: ``driver`` (processes on this host) or ``executors`` (a Spark job of S tasks on ``sc``,
    driven over a control port on ``host``)."""
    if placement == "executors":
        if sc is None:
            raise DDQNError("ps_placement: executors needs a SparkContext")
        return ExecutorShards(sc, key, host, slices, histories, init)
    return LocalShards()


def _read_f32(path: Path, n: int) -> np.ndarray:
    a = np.fromfile(path, "<f4")
    if a.size != n:
        raise DDQNError(f"{path}: {a.size} floats, expected {n}")
    return a
