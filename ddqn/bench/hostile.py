"""Floods measured, not timed in tests: an honest worker's request rate while peers flood the parameter server.

``python -m ddqn.bench.hostile [--floods 64 512] [--idle 20000] [--seconds S] [--auth message connection]``
(issue 28). In one run, for each ``auth`` mode, one parameter server (``--net``, AdaGrad, ``common.start_server``) in
a process of its own meets, one phase after another:

1. **unloaded**: the honest worker alone;
2. **token flood**, once per ``--floods`` count N: N connections that hold the connection token
   (``protocol.connection_token``, ZeroMQ PLAIN) but not the secret, each looping :func:`flood_message` — a
   HELLO-shaped header, ``protocol.MAX_JSON`` bytes (the most a HELLO may carry, so each one reaches the HMAC check)
   and a 16-byte tag no secret made — as fast as ZeroMQ takes them; the server drops each (``unauthenticated``);
3. **idle**: ``--idle`` TCP connections that never send a byte, held (one the server closes is opened again) while
   the server's process writes a snapshot (``Checkpointer.try_snapshot`` where it exists, else ``snapshot``; an
   OSError is recorded by its errno) and a second worker joins (``ServerClient``: HELLO/WELCOME, then one FETCH).

In every phase the honest worker (its own process, ``ServerClient``, partition 0) does PUSH/FETCH round trips for
``--seconds`` after ``--warmup`` seconds not counted: requests/s (a request is one round trip), p50/p99/max latency
(ms), and its rate as a share of the unloaded one. The attackers are ``--procs`` processes of their own; their
messages/s is what ZeroMQ took from them during that window. The server's busy % is its thread's CPU time
(``time.pthread_getcpuclockid``) ÷ wall time over the window; beside it, the thread's time handling messages
(``ServerStats.busy_s``), and the server process's CPU in all and in its ZeroMQ I/O threads (/proc). Every process
the bench starts raises its soft RLIMIT_NOFILE to its hard limit (the soft limit before and both after are recorded,
beside the bench's own), so the connections achieved (attackers' open ones; the server process's descriptors) show
where the limits are. Nothing is asserted: the goal — the honest worker keeps ≥ :data:`GOAL_PERCENT` % of its
unloaded requests/s under the :data:`GOAL_CONNECTIONS`-connection token flood, in every auth mode of one run — is
marked met or missed (None when that flood was not run).
Writes results/hostile.json.
"""
from __future__ import annotations

import argparse
import errno
import multiprocessing as mp
import os
import resource
import select
import socket
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import zmq

from ddqn.bench.common import net_spec, start_server, write_result
from ddqn.distributed import protocol
from ddqn.distributed.checkpointer import Checkpointer
from ddqn.distributed.client import ServerClient, ServerGone
from ddqn.distributed.server import raise_fd_limit
from ddqn.distributed.zap import plain_client

GOAL_CONNECTIONS = 512  # the token flood the goal is judged under (issue 28)
GOAL_PERCENT = 50  # of its unloaded requests/s, what the honest worker must keep under that flood
SERVER_THREAD = "ddqn-parameter-server"  # the name of ParameterServer's thread
ZMQ_IO_THREADS = "ZMQbg/IO"  # how libzmq names its I/O threads (/proc/<pid>/task/<tid>/comm)
SNDHWM = 4  # flood messages one attacker connection queues before ZeroMQ takes no more (no client-side pile-up)
HONEST_TIMEOUT_S = 30.0  # a request of the honest worker unanswered this long: the server is gone
START_S = 120.0  # bound on a child process starting (imports) and answering
CONNECT_TIMEOUT_S = 1.0  # one idle connection's TCP connect (a full accept backlog makes it wait)
STALLS = 3  # consecutive failed connects that end an idle attacker's ramp
REOPEN_BATCH = 256  # connections an idle attacker reopens per turn of its loop (it answers the bench in between)
CLK_TCK = os.sysconf("SC_CLK_TCK")  # /proc's CPU time unit, per second
NO_DESCRIPTORS = ("EMFILE", "ENFILE")  # this process's limit, the system's


# -- the processes -------------------------------------------------------------------------------------------

class Child:
    """A spawned (daemon) process and the bench's end of a pipe to it; every wait is bounded."""

    def __init__(self, what: str, target: Callable[..., None], *args: Any) -> None:
        ctx = mp.get_context("spawn")
        self.what = what
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=target, args=(child, *args), daemon=True)
        self.proc.start()
        child.close()

    def recv(self, timeout: float) -> Any:
        """The child's next answer; RuntimeError when none comes within ``timeout`` seconds or it ended."""
        try:
            if self.conn.poll(timeout):
                return self.conn.recv()
        except (EOFError, OSError):
            pass
        raise RuntimeError(f"{self.what} did not answer within {timeout:g} s (alive: {self.proc.is_alive()})")

    def ask(self, message: tuple, timeout: float) -> Any:
        """Send ``message``, return the answer (:meth:`recv`)."""
        self.conn.send(message)
        return self.recv(timeout)

    def close(self) -> None:
        """Tell it to end; kill it (its pid) if it has not within 10 s."""
        try:
            self.conn.send(("end",))
        except OSError:
            pass
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(10)
        self.conn.close()


def _errno_name(exc: OSError) -> str:
    """EMFILE, ECONNREFUSED, … or the exception's type (TimeoutError: a connect that timed out)."""
    return errno.errorcode.get(exc.errno, type(exc).__name__) if exc.errno else type(exc).__name__


def _server(conn: Connection, member: str, auth: str, max_s: float) -> None:
    """The parameter server's process: serves until told to end (at most ``max_s``); its main thread answers
    ("usage",) and ("snapshot",) while the server thread serves."""
    nofile = raise_fd_limit()
    spec = net_spec(member)
    secret = protocol.new_secret()
    server = start_server(spec, np.zeros(spec.num_params, np.float32), secret, auth)
    thread = next((t for t in threading.enumerate() if t.name == SERVER_THREAD), None)
    if thread is None or thread.ident is None:
        raise RuntimeError(f"no thread named {SERVER_THREAD}")
    clock = time.pthread_getcpuclockid(thread.ident)
    end = time.monotonic() + max_s
    try:
        with tempfile.TemporaryDirectory(prefix="ddqn-hostile-") as tmp:
            checkpointer = Checkpointer(Path(tmp), spec, server.store, server.stats)
            conn.send({"address": server.address, "secret": secret, "pid": os.getpid(),
                       "num_params": spec.num_params, "nofile": nofile})
            while conn.poll(max(0.0, end - time.monotonic())):
                command = conn.recv()[0]
                if command == "usage":
                    view = server.stats.view()
                    conn.send({"t": time.monotonic(), "thread_cpu_s": time.clock_gettime(clock), "busy_s": view.busy_s,
                               "dropped": dict(view.dropped), "version": server.store.version})
                elif command == "snapshot":
                    conn.send(_snapshot(checkpointer))
                else:
                    break
    except EOFError:  # the bench is gone
        pass
    finally:
        server.close()


def _snapshot(checkpointer: Checkpointer) -> dict[str, Any]:
    """One snapshot, timed: ``try_snapshot`` where the checkpointer has it (None: no free descriptor), else
    ``snapshot``; an OSError is recorded by its errno name, never raised."""
    method = "try_snapshot" if hasattr(checkpointer, "try_snapshot") else "snapshot"
    t = time.perf_counter()
    try:
        written = getattr(checkpointer, method)() is not None
        error = None if written else "no free descriptor (try_snapshot returned None)"
    except OSError as exc:
        written, error = False, f"{_errno_name(exc)}: {exc.strerror or exc}"
    return {"method": method, "written": written, "error": error, "seconds": time.perf_counter() - t}


def _honest(conn: Connection, address: str, secret: bytes, num_params: int, auth: str, max_s: float) -> None:
    """The honest worker's process (partition 0): joins, then on each ("run", seconds) does PUSH/FETCH round trips
    for that long and answers with :func:`_rates`; a server that stops answering ends the run, and the next run
    joins again."""
    grad = np.full(num_params, 1e-3, np.float32)
    client: ServerClient | None = None
    end = time.monotonic() + max_s

    def join() -> tuple[ServerClient, int, int]:
        c = ServerClient(address, secret, 0, 0, num_params, timeout=HONEST_TIMEOUT_S, auth=auth)
        p = c.fetch()
        return c, p.version, p.target_version

    try:
        client, version, target = join()
        conn.send("joined")
        while conn.poll(max(0.0, end - time.monotonic())):
            command, *args = conn.recv()
            if command != "run":
                break
            latencies, error, t = [], None, time.perf_counter()
            try:
                if client is None:
                    client, version, target = join()
                stop = t + args[0]
                while time.perf_counter() < stop:
                    t0 = time.perf_counter()
                    client.push(grad, version)  # a gradient computed on θ of `version`
                    t1 = time.perf_counter()
                    p = client.fetch(version, target)  # the θ that push made (θ⁻ only if it changed)
                    latencies += [t1 - t0, time.perf_counter() - t1]
                    version, target = p.version, p.target_version
            except ServerGone as exc:
                error = str(exc)
                if client is not None:
                    client.close()
                client = None
            conn.send(_rates(latencies, time.perf_counter() - t, error))
    except EOFError:  # the bench is gone
        pass
    finally:
        if client is not None:
            client.close()


def _rates(latencies: list[float], seconds: float, error: str | None) -> dict[str, Any]:
    """Requests (round trips), requests/s over ``seconds`` and latency percentiles in ms (None without requests)."""
    ms = 1e3 * np.asarray(latencies)
    p50, p99, top = (float(x) for x in np.percentile(ms, [50, 99, 100])) if ms.size else (None, None, None)
    return {"requests": len(latencies), "seconds": seconds, "requests_per_s": len(latencies) / seconds,
            "p50_ms": p50, "p99_ms": p99, "max_ms": top, "error": error}


def flood_message() -> list[bytes]:
    """What a token flood loops: a HELLO-shaped header, ``MAX_JSON`` bytes and a tag no secret made."""
    payload = os.urandom(protocol.MAX_JSON)
    header = protocol.Header(protocol.HELLO, 0, 0, 0, 0, 0, 0, len(payload)).pack()
    return [header, payload, os.urandom(protocol.TAG_BYTES)]


def _attacker(conn: Connection, max_s: float) -> None:
    """An attacker's process, at most ``max_s``: ("flood", address, token, n) and ("idle", address, n, ramp_s) run
    until ("done",); ("count",) during either answers how far it got; ("end",) ends the process."""
    nofile = raise_fd_limit()
    ctx = zmq.Context()
    end = time.monotonic() + max_s
    try:
        conn.send({"pid": os.getpid(), "nofile": nofile})
        while conn.poll(max(0.0, end - time.monotonic())):
            command, *args = conn.recv()
            if command == "flood":
                _flood(conn, ctx, end, *args)
            elif command == "idle":
                _hold_idle(conn, end, *args)
            else:
                break
    except EOFError:  # the bench is gone
        pass
    finally:
        ctx.destroy(linger=0)


def _answered(conn: Connection, status: Callable[[], dict]) -> bool:
    """Answer a waiting command with ``status()``; True when it was not ("count",), i.e. the activity ends."""
    if not conn.poll(0):
        return False
    command = conn.recv()[0]
    conn.send(status())
    return command != "count"


def _flood(conn: Connection, ctx: zmq.Context, end: float, address: str, token: bytes, n: int) -> None:
    """``n`` token-holding connections sending :func:`flood_message` whenever ZeroMQ takes one."""
    socks = []
    for _ in range(n):
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, SNDHWM)
        plain_client(sock, token)
        sock.connect(address)
        socks.append(sock)
    poller = zmq.Poller()
    for sock in socks:
        poller.register(sock, zmq.POLLOUT)
    frames, sent = flood_message(), 0

    def status() -> dict:
        return {"connections": n, "sent": sent, "t": time.monotonic()}

    try:
        conn.send(status())
        while time.monotonic() < end and not _answered(conn, status):
            for sock, _ in poller.poll(50):
                try:
                    sock.send_multipart(frames, zmq.NOBLOCK)
                    sent += 1
                except zmq.Again:
                    pass
    finally:
        for sock in socks:
            sock.close(linger=0)


def _hold_idle(conn: Connection, end: float, address: str, n: int, ramp_s: float) -> None:
    """``n`` TCP connections to ``address`` that never send: opened as fast as they connect (for at most ``ramp_s``,
    until :data:`STALLS` connects in a row fail or this process runs out of descriptors), then held: one the server
    closes is opened again."""
    url = urlparse(address)
    host, port = url.hostname, url.port
    socks: dict[int, socket.socket] = {}
    poller = select.poll()
    counts: Counter[str] = Counter()
    errors: Counter[str] = Counter()

    def open_one() -> bool:
        try:
            sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S)
        except OSError as exc:
            errors[_errno_name(exc)] += 1
            return False
        sock.setblocking(False)
        socks[sock.fileno()] = sock
        poller.register(sock.fileno(), select.POLLIN | select.POLLRDHUP)
        counts["opened"] += 1
        return True

    def status() -> dict:
        return {"open": len(socks), "opened": counts["opened"], "closed_by_server": counts["closed"],
                "errors": dict(errors)}

    try:
        stalls, stop = 0, min(end, time.monotonic() + ramp_s)
        while len(socks) < n and stalls < STALLS and time.monotonic() < stop:
            stalls = 0 if open_one() else stalls + 1
            if any(errors[e] for e in NO_DESCRIPTORS):
                break
        conn.send(status())
        while time.monotonic() < end and not _answered(conn, status):
            for fd, event in poller.poll(100):
                if not event & (select.POLLHUP | select.POLLRDHUP | select.POLLERR):
                    try:
                        if socks[fd].recv(4096):  # the server's ZMTP greeting: read, still open
                            continue
                    except BlockingIOError:
                        continue
                    except OSError:
                        pass
                poller.unregister(fd)
                socks.pop(fd).close()
                counts["closed"] += 1
            for _ in range(min(REOPEN_BATCH, n - len(socks))):
                if not open_one():
                    break
    finally:
        for sock in socks.values():
            sock.close()


# -- the bench -----------------------------------------------------------------------------------------------

def _cpu_s(pid: int) -> dict[str, float]:
    """CPU seconds of process ``pid`` from /proc: in all, and in its ZeroMQ I/O threads."""
    def seconds(stat: str) -> float:
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state, ppid, …; utime, stime are 14, 15
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    total, io = seconds(Path(f"/proc/{pid}/stat").read_text()), 0.0
    for task in os.scandir(f"/proc/{pid}/task"):
        try:
            stat = Path(task.path, "stat").read_text()
        except OSError:  # a thread that ended meanwhile
            continue
        if stat[stat.index("(") + 1:stat.rindex(")")].startswith(ZMQ_IO_THREADS):
            io += seconds(stat)
    return {"process": total, "zmq_io": io}


def _fds(pid: int) -> int | None:
    """Open descriptors of process ``pid`` (None when /proc cannot be read)."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def _usage(server: Child, pid: int) -> dict[str, Any]:
    """The server's counters and its thread's CPU seconds (asked of its process), with the process's CPU (/proc)."""
    return {**server.ask(("usage",), START_S), "cpu": _cpu_s(pid)}


def _window(server: Child, pid: int, honest: Child, floods: list[Child], args: argparse.Namespace,
            during: Callable[[], Callable[[], dict]] | None = None) -> dict[str, Any]:
    """The honest worker's window of ``args.seconds`` after ``args.warmup`` seconds of the same round trips (not
    counted: a flood's connections get through their handshakes, first copies are made), with the server's and the
    flooding attackers' usage over it. ``during`` runs at the window's start and returns what collects its results
    once the window's usage is read (so work that outlasts the window does not stretch it)."""
    seconds = args.seconds
    honest.ask(("run", args.warmup), args.warmup + 2 * HONEST_TIMEOUT_S + START_S)
    sent0 = [a.ask(("count",), START_S) for a in floods]
    u0 = _usage(server, pid)
    honest.conn.send(("run", seconds))
    rest = during() if during else dict
    rates = honest.recv(seconds + 2 * HONEST_TIMEOUT_S + START_S)
    u1 = _usage(server, pid)
    sent1 = [a.ask(("count",), START_S) for a in floods]
    extra = rest()
    wall = u1["t"] - u0["t"]
    dropped = {k: v - u0["dropped"].get(k, 0) for k, v in u1["dropped"].items() if v - u0["dropped"].get(k, 0)}
    row = {"honest": rates, **extra, "server": {
        "seconds": wall, "busy_pct": 100 * (u1["thread_cpu_s"] - u0["thread_cpu_s"]) / wall,
        "handling_pct": 100 * (u1["busy_s"] - u0["busy_s"]) / wall,
        "process_cpu_pct": 100 * (u1["cpu"]["process"] - u0["cpu"]["process"]) / wall,
        "zmq_io_cpu_pct": 100 * (u1["cpu"]["zmq_io"] - u0["cpu"]["zmq_io"]) / wall,
        "updates": u1["version"] - u0["version"], "dropped": dropped,
        "dropped_per_s": sum(dropped.values()) / wall}}
    if floods:
        row["attackers"] = {"messages": sum(b["sent"] - a["sent"] for a, b in zip(sent0, sent1)),
                            "messages_per_s": sum((b["sent"] - a["sent"]) / (b["t"] - a["t"])
                                                  for a, b in zip(sent0, sent1))}
    return row


def _split(n: int, parts: int) -> list[int]:
    """``n`` as ``parts`` near-equal counts."""
    return [n // parts + (i < n % parts) for i in range(parts)]


def _join(address: str, secret: bytes, num_params: int, auth: str, timeout: float) -> dict[str, Any]:
    """A second worker (partition 1) joins — HELLO/WELCOME, then one FETCH — within ``timeout`` s; timed."""
    t = time.perf_counter()
    try:
        client = ServerClient(address, secret, 1, 0, num_params, timeout=timeout, auth=auth)
    except (ServerGone, zmq.ZMQError) as exc:
        return {"joined": False, "fetched": False, "error": str(exc), "seconds": time.perf_counter() - t}
    try:
        client.fetch()
        fetched, error = True, None
    except (ServerGone, zmq.ZMQError) as exc:
        fetched, error = False, str(exc)
    finally:
        client.close()
    return {"joined": True, "fetched": fetched, "error": error, "seconds": time.perf_counter() - t}


def _print(auth: str, row: dict) -> None:
    """One phase's line on stdout."""
    h, s, a = row["honest"], row["server"], row.get("attackers")
    what = f"{row['phase']} × {row['connections']:,}" if row["connections"] else row["phase"]
    flood = f"attackers {a['messages_per_s']:,.0f} messages/s; " if a else ""
    lat = f"p50 {h['p50_ms']:.1f} ms, p99 {h['p99_ms']:.1f} ms" if h["requests"] else "no requests"
    print(f"auth {auth}, {what}: {flood}server thread {s['busy_pct']:.0f} % busy (process {s['process_cpu_pct']:.0f} "
          f"%, ZeroMQ I/O {s['zmq_io_cpu_pct']:.0f} %); honest worker {h['requests_per_s']:,.1f} requests/s = "
          f"{100 * (row['share_of_unloaded'] or 0):.0f} % of unloaded ({lat})"
          + (f"; error: {h['error']}" if h["error"] else ""), flush=True)
    if "snapshot" in row:
        snap, join, held = row["snapshot"], row["join"], row["held"]
        wrote = "written" if snap["written"] else f"not written ({snap['error']})"
        joined = "and FETCH ok" if join["fetched"] else f"failed ({join['error']})"
        took = "" if join["seconds"] is None else f" in {join['seconds']:.2f} s"
        print(f"auth {auth}, idle: {held['open_at_snapshot']:,} of {row['connections']:,} open at the snapshot "
              f"(server process: {held['server_fds_at_snapshot']} descriptors, soft limit "
              f"{row['server_nofile_soft']}); "
              f"snapshot {wrote} in {snap['seconds']:.2f} s; join {joined}{took}", flush=True)


def run_mode(auth: str, attackers: list[Child], args: argparse.Namespace, max_s: float) -> dict[str, Any]:
    """Every phase against one server in ``auth`` mode; a phase that fails is recorded with its error and ends the
    mode (the server may be gone)."""
    server = Child(f"the parameter server (auth {auth})", _server, args.net, auth, max_s)
    phases: list[dict[str, Any]] = []
    out: dict[str, Any] = {"phases": phases}
    honest = None
    try:
        info = server.recv(START_S)
        pid, address, secret = info["pid"], info["address"], info["secret"]
        out["server_nofile"] = info["nofile"]
        honest = Child(f"the honest worker (auth {auth})", _honest, address, secret, info["num_params"], auth, max_s)
        honest.recv(START_S)
        base = None
        idle = [("idle", args.idle)] if args.idle else []
        for phase, n in [("unloaded", 0), *(("token flood", n) for n in args.floods), *idle]:
            try:
                row = {"phase": phase, "connections": n}
                if phase == "unloaded":
                    row.update(_window(server, pid, honest, [], args))
                elif phase == "token flood":
                    row.update(_token_flood(server, pid, honest, attackers, address, secret, n, args))
                else:
                    row.update(_idle(server, pid, honest, attackers, info, auth, args))
            except (RuntimeError, OSError) as exc:
                phases.append({"phase": phase, "connections": n, "error": str(exc)})
                print(f"auth {auth}, {phase} × {n:,}: {exc}", flush=True)
                break
            rate = row["honest"]["requests_per_s"]
            base = rate if phase == "unloaded" else base
            row["share_of_unloaded"] = rate / base if base else None
            phases.append(row)
            _print(auth, row)
        out["server_alive"] = server.proc.is_alive()
    finally:
        if honest is not None:
            honest.close()
        server.close()
    return out


def _token_flood(server: Child, pid: int, honest: Child, attackers: list[Child], address: str, secret: bytes,
                 n: int, args: argparse.Namespace) -> dict[str, Any]:
    """A token flood from ``n`` connections, split among the attackers, over the honest worker's window."""
    active = [(a, k) for a, k in zip(attackers, _split(n, len(attackers))) if k]
    token = protocol.connection_token(secret)
    try:
        for a, k in active:
            a.conn.send(("flood", address, token, k))
        for a, _ in active:
            a.recv(START_S)
        return _window(server, pid, honest, [a for a, _ in active], args)
    finally:
        for a, _ in active:
            a.ask(("done",), START_S)


def _idle(server: Child, pid: int, honest: Child, attackers: list[Child], info: dict, auth: str,
          args: argparse.Namespace) -> dict[str, Any]:
    """The idle flood: connections held while a snapshot is written and a worker joins, inside the window."""
    active = [(a, k) for a, k in zip(attackers, _split(args.idle, len(attackers))) if k]
    fds_before = _fds(pid)
    try:
        for a, k in active:
            a.conn.send(("idle", info["address"], k, args.ramp))
        ramped = [a.recv(args.ramp + START_S) for a, _ in active]

        def during() -> Callable[[], dict]:
            held = [a.ask(("count",), START_S) for a, _ in active]
            fds = _fds(pid)
            snapshot = server.ask(("snapshot",), START_S)
            join: dict[str, Any] = {}  # in a thread of its own: a join that waits out its timeout outlasts the window
            joiner = threading.Thread(target=lambda: join.update(_join(
                info["address"], info["secret"], info["num_params"], auth, args.join_timeout)), daemon=True)
            joiner.start()

            def rest() -> dict:
                joiner.join(2 * args.join_timeout + START_S)  # HELLO and FETCH, each waits at most join_timeout
                return {"snapshot": snapshot, "join": join or {
                    "joined": False, "fetched": False, "error": "still joining", "seconds": None}, "held": {
                    "ramped_open": sum(r["open"] for r in ramped), "open_at_snapshot": sum(h["open"] for h in held),
                    "server_fds_before": fds_before, "server_fds_at_snapshot": fds,
                    "server_fds_added_at_snapshot": None if fds is None or fds_before is None else fds - fds_before}}

            return rest

        row = _window(server, pid, honest, [], args, during)
    finally:
        final = [a.ask(("done",), START_S) for a, _ in active]
    row["held"].update({"opened": sum(f["opened"] for f in final),
                        "closed_by_server": sum(f["closed_by_server"] for f in final),
                        "errors": dict(sum((Counter(f["errors"]) for f in final), Counter()))})
    row["server_nofile_soft"] = info["nofile"]["soft"]
    return row


def goal(modes: dict[str, dict]) -> dict[str, Any]:
    """The honest worker's share of its unloaded rate under the GOAL_CONNECTIONS flood, per auth mode. ``met``: every
    mode kept ≥ GOAL_PERCENT %; False as well when that phase failed in a mode (its error is kept: nothing shows the
    worker kept its rate); None when the flood did not run in every mode."""
    shares, errors = {}, {}
    for auth, m in modes.items():
        row = next((p for p in m["phases"] if p["phase"] == "token flood" and p["connections"] == GOAL_CONNECTIONS),
                   None)
        shares[auth] = row.get("share_of_unloaded") if row else None
        if row and "error" in row:
            errors[auth] = row["error"]
    got = [s for s in shares.values() if s is not None]
    met = None
    if errors:
        met = False
    elif got and len(got) == len(shares):
        met = all(100 * s >= GOAL_PERCENT for s in got)
    return {"connections": GOAL_CONNECTIONS, "percent": GOAL_PERCENT, "share_by_auth": shares, "errors": errors,
            "met": met}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="results", help="results directory")
    ap.add_argument("--net", default="paper", help="the server's net (prototxt/snake_<net>.prototxt)")
    ap.add_argument("--auth", nargs="+", default=["message", "connection"], choices=["message", "connection"],
                    help="protocol modes (ddqn.protocol), one server each")
    ap.add_argument("--floods", type=int, nargs="+", default=[64, GOAL_CONNECTIONS],
                    help="token-holding connections per token flood, one phase each")
    ap.add_argument("--idle", type=int, default=20_000, help="idle connections to hold (as many as the limits allow)")
    ap.add_argument("--seconds", type=float, default=10.0, help="the honest worker's window per phase")
    ap.add_argument("--warmup", type=float, default=1.0, help="seconds of round trips before each window, not counted")
    ap.add_argument("--procs", type=int, default=4, help="attacker processes (connections are split among them)")
    ap.add_argument("--ramp", type=float, default=60.0, help="seconds the idle connections may take to open")
    ap.add_argument("--join-timeout", type=float, default=30.0, help="seconds the joining worker waits for a reply")
    args = ap.parse_args(argv)
    phases = len(args.floods) + 2
    max_s = START_S + len(args.auth) * phases * (
        args.seconds + args.warmup + args.ramp + args.join_timeout + 2 * HONEST_TIMEOUT_S + START_S)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # what every process starts with (each raises its own)
    attackers = [Child(f"attacker {i}", _attacker, max_s) for i in range(args.procs)]
    try:
        started = [a.recv(START_S) for a in attackers]
        modes = {auth: run_mode(auth, attackers, args, max_s) for auth in args.auth}
    finally:
        for a in attackers:
            a.close()
    g = goal(modes)
    shares = ", ".join(f"auth {k}: " + ("not measured" if v is None else f"{100 * v:.0f} %")
                       for k, v in g["share_by_auth"].items())
    print(f"goal: the honest worker keeps >= {GOAL_PERCENT} % of its unloaded requests/s under the "
          f"{GOAL_CONNECTIONS}-connection token flood ({shares}): "
          + {True: "met", False: "missed", None: "not measured"}[g["met"]], flush=True)
    config = {"net": args.net, "auth": args.auth, "floods": args.floods, "idle": args.idle, "seconds": args.seconds,
              "warmup_s": args.warmup, "procs": args.procs, "ramp_s": args.ramp, "join_timeout_s": args.join_timeout,
              "flood_message_bytes": [len(f) for f in flood_message()], "sndhwm": SNDHWM,
              "connect_timeout_s": CONNECT_TIMEOUT_S}
    nofile = {"bench": {"soft": soft, "hard": hard}, "attackers": [s["nofile"] for s in started]}
    write_result("hostile", {"config": config, "nofile": nofile, "modes": modes, "goal": g}, args.out)


if __name__ == "__main__":
    main()
