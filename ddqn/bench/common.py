"""What the benchmarks share, so that no benchmark imports another.

Result files and figures, with the machine (CPU model and OpenBLAS core) each was measured on; the shipped
prototxts (``ddqn/prototxt``); the parameter server under synthetic load (``ps_speed``, ``capacity``); one real
worker's update times (``worker_speed``, ``capacity``). The learning benches' training runs and their reuse are
in ``ddqn.bench.runs``, statistics in ``ddqn.bench.stats``, and the config values a result or a run was made with
in ``ddqn.config`` (``config_values``).
"""
from __future__ import annotations

import argparse
import ctypes
import json
import multiprocessing as mp
import os
import platform
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ddqn.config import PROTOTXT_DIR, value_differences
from ddqn.distributed import protocol
from ddqn.distributed.client import ServerClient
from ddqn.distributed.server import ParameterServer, ServerOptions
from ddqn.distributed.store import ParameterStore
from ddqn.dqn.qlearning import dqn_gradient
from ddqn.net import caffe_build
from ddqn.net.netspec import NetSpec, load_netspec
from ddqn.net.qnet import QNetwork
from ddqn.replay.memory import Batch
from ddqn.solvers.flat import SolverSpec, load_solver_spec, make_solver

SERVER_SOLVER = "adagrad"  # the solver of every parameter server the benchmarks start


# -- results -------------------------------------------------------------------------------------------------
ROOT = Path(__file__).resolve().parents[2]  # the checkout


def cpu_fields() -> dict[str, str]:
    """The first processor's ``key: value`` lines of /proc/cpuinfo (empty where there is none)."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if not line.strip():
                if fields:
                    break
                continue
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def openblas_core() -> str | None:
    """The kernel family libopenblas.so.0 (Debian's OpenBLAS, what Caffe links) picked for this CPU, e.g. SkylakeX,
    Zen, or Prescott (its silent fallback for a CPU it does not know); None when the library does not load. Loaded
    as every ddqn process loads it: after :mod:`ddqn.net.blas_core` has chosen the core (``ddqn.net.caffe_env``)."""
    from ddqn.net import caffe_env  # noqa: PLC0415, F401 - sets OPENBLAS_CORETYPE before the library loads
    from ddqn.net.blas_core import LIBRARY  # noqa: PLC0415

    try:
        get = ctypes.CDLL(LIBRARY).openblas_get_corename
    except (OSError, AttributeError):
        return None
    get.restype = ctypes.c_char_p
    name = get()
    return name.decode(errors="replace").strip() if name else None


def loaded_blas_path() -> Path | None:
    """The BLAS library this process has mapped (libmkl_rt, libopenblas or libblis; after Caffe loaded), or None."""
    paths = {Path(line.split()[-1]) for line in Path("/proc/self/maps").read_text().splitlines() if "/" in line}
    return next((p for p in sorted(paths) if p.name.startswith(("libmkl_rt", "libopenblas", "libblis"))), None)


def _int(text: str | None) -> int | None:
    return int(text) if text and text.isdigit() else None


def machine() -> dict[str, Any]:
    """Cores; the CPU (``vendor``, ``family``, ``model``, ``model_name`` from /proc/cpuinfo; ``cpu``, the model
    name, kept for older readers), its widest vector ISA (AVX-512, AVX2, …), the OpenBLAS core
    (:func:`openblas_core`) and ``OPENBLAS_CORETYPE`` (None when unset); Python version and date of this run."""
    info = cpu_fields()
    flags = set(info.get("flags", "").split())
    isa = next((name for flag, name in (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX")) if flag in flags),
               "SSE")
    model_name = info.get("model name") or platform.processor()
    return {"cores": os.cpu_count(), "cpu": model_name, "isa": isa, "vendor": info.get("vendor_id"),
            "family": _int(info.get("cpu family")), "model": _int(info.get("model")), "model_name": model_name,
            "openblas_core": openblas_core(), "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE"),
            "python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


CPU_KEYS = ("vendor", "family", "model", "model_name", "openblas_core")  # what one comparison must share


def cpu_differences(a: dict[str, Any] | None, b: dict[str, Any] | None) -> list[str] | None:
    """The :data:`CPU_KEYS` in which two :func:`machine` records differ, as ``key a ≠ b``; None when either record
    predates them (no ``family``: the CPU cannot be told apart, so it is unknown whether they differ)."""
    if not a or not b or "family" not in a or "family" not in b:
        return None
    return [f"{k} {a.get(k)} ≠ {b.get(k)}" for k in CPU_KEYS if a.get(k) != b.get(k)]


def made_elsewhere(values: dict[str, Any] | None, m: dict[str, Any] | None, now: dict[str, Any]) -> list[str]:
    """Why a kept result is not this bench's to extend: it was made with other config ``values`` than ``now``
    (``value_differences``) or on another CPU model than this one (``m``, its machine record; one that predates
    the CPU keys counts as another, as do values not recorded); empty when neither. At most ``SHOWN`` differing
    values are named, so the reason stays one line."""
    diff = value_differences(values, now) if values is not None else []
    named = ", ".join(diff[:SHOWN]) + (f" and {len(diff) - SHOWN} more" if len(diff) > SHOWN else "")
    return (["config values not recorded"] if values is None else [f"other values ({named})"] if diff else []) + (
        made_on_another_cpu(m))


def made_on_another_cpu(m: dict[str, Any] | None) -> list[str]:
    """Why measurements recorded with machine record ``m`` are not this CPU model's (one that predates the CPU keys
    counts as another); empty when they are."""
    cpu = cpu_differences(m, machine())
    return [] if cpu == [] else [f"another CPU ({', '.join(cpu)})" if cpu else "a CPU not recorded"]


SHOWN = 4  # differing config values named in a refusal


def add_restart(ap: argparse.ArgumentParser, made_with: str) -> None:
    """The ``--restart`` option of a bench that adds to a kept result (:func:`kept_or_restart`); ``made_with``: what
    makes the kept result another's, e.g. "another config, budget, grid or CPU model"."""
    ap.add_argument("--restart", action="store_true",
                    help=f"begin the kept result anew when it was made with {made_with} (without it: a one-line "
                    "error before anything is measured; make: RESTART=1)")


def kept_or_restart(path: Path, what: str, why: list[str], restart: bool) -> bool:
    """Whether the parts of a kept result (``path``; ``what``, e.g. "its 2 runs") may be extended by this run:
    True when ``why`` (how they differ from it, :func:`made_elsewhere`) is empty. Otherwise hours of measurements
    are not dropped unasked: a one-line error (SystemExit) before anything is measured, or with ``restart`` a line
    saying they are not kept, and False."""
    if not why:
        return True
    if not restart:
        raise SystemExit(f"{path}: {what}, made with {'; '.join(why)}: move it aside to keep it, or --restart "
                         "(make: RESTART=1)")
    print(f"{path}: {what}, made with {'; '.join(why)}: not kept (--restart)", flush=True)
    return False


def cpu_tag(m: dict[str, Any] | None) -> str:
    """A machine record's CPU (its :data:`CPU_KEYS` but the model name) as a short name for keys:
    ``<vendor>-<family>-<model>-<OpenBLAS core>``, e.g. ``AuthenticAMD-25-1-Zen`` (no ``/``, which separates keys in
    docs/figures.yaml); ``cpu-not-recorded`` for a record made before family and model were."""
    if not m or "family" not in m:
        return "cpu-not-recorded"
    return f"{m['vendor']}-{m['family']}-{m['model']}-{m.get('openblas_core') or 'unknown'}"


def measured_here(block: dict[str, Any] | None) -> bool:
    """Whether a results block (with its ``machine``) was measured on this CPU model (the same :data:`CPU_KEYS`)."""
    return bool(block) and cpu_differences(block.get("machine"), machine()) == []


def cpu_label(m: dict[str, Any] | None) -> str:
    """A machine record's CPU for a report: model name, ISA, vendor/family/model and OpenBLAS core; a record made
    before they were recorded is shown as recorded, and says so."""
    if not m:
        return "machine not recorded"
    isa = f", {m['isa']}" if m.get("isa") else ""
    if "family" not in m:
        return f"{m.get('cpu', '?')}{isa}; family and model not recorded"
    forced = f", OPENBLAS_CORETYPE={m['openblas_coretype']}" if m.get("openblas_coretype") else ""
    return (f"{m.get('model_name', '?')}{isa}; {m.get('vendor', '?')} family {m.get('family', '?')} model "
            f"{m.get('model', '?')}; OpenBLAS core {m.get('openblas_core') or 'unknown'}{forced}")


def baseline_label(patches: tuple[str, ...]) -> str:
    """A build without ``patches`` as benches label it: (``0002-onednn-convolution.patch``,
    ``0003-maxpool-forward.patch``) -> ``no-onednn+maxpool``."""
    def short(patch: str) -> str:
        words = patch.removesuffix(".patch").split("-")
        return words[1] if len(words) > 1 and words[0].isdigit() else words[0]
    return "no-" + "+".join(short(p) for p in patches)


def baseline_builds(without: list[str]) -> dict[str, str]:
    """For each comma-separated list of patches, today's Caffe without them (built now when not cached,
    ``caffe_build.ensure``; the interpreter keeps its own Caffe): label -> the directory holding its ``caffe``."""
    out = {}
    for spec in without:
        patches = tuple(p for p in spec.split(",") if p)
        try:
            root = caffe_build.ensure(without=patches, link=False)
        except caffe_build.BuildError as exc:
            sys.exit(f"bench: error: {exc}")
        out[baseline_label(patches)] = str(caffe_build.python_dir(root))
    return out


def candidate_builds(specs: list[str], tool: str, reserved: tuple[str, ...] = ()) -> dict[str, str]:
    """``--candidate LABEL=DIR`` values as label -> DIR (the directory holding that build's ``caffe``); a one-line
    exit when a LABEL is empty or ``reserved`` or a DIR is not a directory."""
    out = dict(c.partition("=")[::2] for c in specs)
    for label, d in out.items():
        if label in ("", *reserved) or not Path(d).is_dir():
            sys.exit(f"{tool}: error: --candidate {label}={d}: a LABEL other than {', '.join(reserved) or 'none'}, "
                     "DIR an existing directory")
    return out


def check_caffe_from(module: str, caffe_dir: str, label: str, tool: str) -> None:
    """A one-line exit unless ``module`` (a child process's ``caffe.__file__``) lies in ``caffe_dir``: a candidate
    build must be the Caffe the child imported, not the interpreter's own."""
    if not Path(module).resolve().is_relative_to(Path(caffe_dir).resolve()):
        sys.exit(f"{tool}: error: candidate {label} imported Caffe from {module}, not {caffe_dir}")


def write_result(name: str, data: dict[str, Any], out_dir: str | Path = "results") -> Path:
    """Write ``data`` plus the machine description to ``<out_dir>/<name>.json``; return the path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps({"name": name, "machine": machine(), **data}, indent=2) + "\n")
    print(f"wrote {path}")
    return path


@contextmanager
def figure(path: Path, ncols: int = 1, figsize: tuple[float, float] = (6.5, 4.5),
           width_ratios: list[float] | None = None) -> Iterator[tuple[Any, Any]]:
    """A matplotlib figure (Agg) with ``ncols`` axes (their relative widths ``width_ratios``, default equal), saved
    to ``path`` (PNG, 100 dpi) and closed on exit."""
    import matplotlib  # noqa: PLC0415 - only the benchmarks that draw pay for matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415 - after choosing the Agg backend

    fig, axes = plt.subplots(1, ncols, figsize=figsize, width_ratios=width_ratios)
    try:
        yield fig, axes
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)


# -- the shipped prototxts -----------------------------------------------------------------------------------

def net_spec(member: str) -> NetSpec:
    """The shipped Q-network ``prototxt/snake_<member>.prototxt`` (small, paper, large, x64, x128)."""
    return load_netspec(PROTOTXT_DIR / f"snake_{member}.prototxt")


def solver_spec(name: str) -> SolverSpec:
    """The shipped solver ``prototxt/solver_<name>.prototxt`` (adagrad, rmsprop, sgd, …)."""
    return load_solver_spec(PROTOTXT_DIR / f"solver_{name}.prototxt")


# -- the parameter server under load -------------------------------------------------------------------------

MAX_CLIENTS = 1024  # partitions (worker ids) the benchmark servers admit


def start_server(spec: NetSpec, theta: np.ndarray, secret: bytes, auth: str = "message") -> ParameterServer:
    """A running parameter server on 127.0.0.1 (any free port) serving θ = ``theta`` (num_params float32, owned
    by the server from now on) with the shipped AdaGrad solver; θ⁻ never changes."""
    store = ParameterStore(make_solver(solver_spec(SERVER_SOLVER), spec.params), theta, theta.copy(),
                           target_update=10**9)
    return ParameterServer(store, secret, ServerOptions(auth=auth, partitions=MAX_CLIENTS)).start()


def _client(address: str, secret: bytes, worker: int, n: int, seconds: float, auth: str, ready: Any,
            go: Any) -> None:
    """One synthetic client (child process): push a constant gradient of ``n`` floats for ``seconds``."""
    client = ServerClient(address, secret, worker, 0, n, timeout=30, auth=auth)
    p = client.fetch()
    grad = np.full(n, 1e-3, np.float32)
    ready.release()
    go.wait()
    end, version = time.monotonic() + seconds, p.version
    while time.monotonic() < end:
        version, stop = client.push(grad, version)
        if stop:
            break
    client.close()


def server_rate(spec: NetSpec, clients: int, seconds: float, auth: str = "message") -> dict[str, Any]:
    """Server updates/s with ``clients`` synthetic clients pushing as fast as they can (``auth``: protocol mode),
    and the server thread's own µs per update."""
    secret = protocol.new_secret()
    server = start_server(spec, np.zeros(spec.num_params, np.float32), secret, auth)
    ctx = mp.get_context("spawn")
    ready, go = ctx.Semaphore(0), ctx.Event()
    procs = [ctx.Process(target=_client, args=(server.address, secret, i, spec.num_params, seconds, auth, ready, go))
             for i in range(clients)]
    try:
        for p in procs:
            p.start()
        for _ in procs:
            if not ready.acquire(timeout=60):
                raise RuntimeError("a synthetic client did not connect")
        start_version, start_busy, t = server.store.version, server.stats.view().busy_s, time.monotonic()
        go.set()
        for p in procs:
            p.join(timeout=seconds + 60)
        elapsed = time.monotonic() - t
        stats, updates = server.stats.view(), server.store.version - start_version
        busy_us = 1e6 * (stats.busy_s - start_busy) / max(updates, 1)
        return {"clients": clients, "auth": auth, "updates": updates, "updates_per_s": updates / elapsed,
                "server_thread_us_per_update": busy_us, "server_bound_updates_per_s": 1e6 / busy_us,
                "dropped": sum(stats.dropped.values())}
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
        server.close()


def worker_update_ms(member: str, repeats: int) -> dict[str, Any]:
    """Median ms per worker update for one family member: gradient compute (targets from Q̂ + forward and
    backward, minibatch of the prototxt) and communicate (FETCH of a new θ + PUSH) with a real server."""
    spec = net_spec(member)
    q, q_hat = QNetwork(spec, seed=0), QNetwork(spec, seed=1)
    rng = np.random.default_rng(0)
    b, shape = spec.batch_size, (spec.batch_size, *spec.state_shape)
    batch = Batch(rng.integers(0, 256, shape, dtype=np.uint8), rng.integers(0, 4, b),
                  rng.standard_normal(b).astype(np.float32), rng.integers(0, 256, shape, dtype=np.uint8),
                  rng.random(b) < 0.1, np.ones(b, np.int64))
    theta = q.get_params()
    secret = protocol.new_secret()
    server = start_server(spec, theta.copy(), secret)
    client = ServerClient(server.address, secret, 0, 0, spec.num_params, timeout=60)
    try:
        p = client.fetch()
        compute, communicate = [], []
        for _ in range(repeats + 1):
            t = time.perf_counter()
            _, grad = dqn_gradient(q, q_hat, batch, 0.95)
            t_compute = time.perf_counter() - t
            t = time.perf_counter()
            p = client.fetch(p.version - 1 if p.version else protocol.NO_VERSION, p.target_version)  # a new θ
            q.set_params(p.theta)
            client.push(grad, p.version)
            compute.append(t_compute)
            communicate.append(time.perf_counter() - t)
    finally:
        client.close()
        server.close()
    return {"member": member, "params": spec.num_params, "compute_ms": 1e3 * float(np.median(compute[1:])),
            "communicate_ms": 1e3 * float(np.median(communicate[1:]))}


def time_net(spec: NetSpec, repeats: int) -> dict[str, float]:
    """Median forward+backward and forward-only milliseconds of the net ``spec`` at its batch size, on random
    uint8 states and targets."""
    net = QNetwork(spec, seed=0)
    rng = np.random.default_rng(0)
    states = rng.integers(0, 256, (spec.batch_size, *spec.state_shape), dtype=np.uint8)
    actions = rng.integers(0, spec.num_actions, spec.batch_size)
    targets = rng.standard_normal(spec.batch_size).astype(np.float32)
    net.loss_and_grad(states, actions, targets)  # warm-up
    fb, fwd = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        net.loss_and_grad(states, actions, targets)
        fb.append(time.perf_counter() - t)
        t = time.perf_counter()
        net.q_values(states)
        fwd.append(time.perf_counter() - t)
    return {"params": spec.num_params, "input": spec.state_shape[1], "batch": spec.batch_size,
            "forward_backward_ms": 1e3 * float(np.median(fb)), "forward_ms": 1e3 * float(np.median(fwd))}
