"""Replay memory throughput, RAM vs LMDB: ``python -m ddqn.bench.replay_speed``.

Each variant is filled with ``--frames`` random (S, S) uint8 frames in episodes of random length
(half terminal, half truncated); then it measures add throughput (frames/s, LMDB including its
commits), sampling throughput (minibatches of ``--batch`` per second and transitions/s), and a DQN
step loop (one add + one minibatch per step). Writes results/replay_speed.json.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from ddqn.bench.common import write_result
from ddqn.replay.memory import LMDBReplayMemory, ReplayMemory

Memory = ReplayMemory | LMDBReplayMemory  # the two backends (same interface)


def make_episodes(n_frames: int, mean_len: int, seed: int) -> list[tuple[int, bool]]:
    """Episodes as (steps, ends terminal), with 1 + steps frames each, n_frames in total."""
    rng = np.random.default_rng(seed)
    episodes, total = [], 0
    while total < n_frames:
        steps = min(int(rng.integers(1, 2 * mean_len)), n_frames - total - 1)
        episodes.append((steps, bool(rng.random() < 0.5)))
        total += 1 + steps
    return episodes


def fill(mem: Memory, frames: np.ndarray, episodes: list[tuple[int, bool]]) -> int:
    """Play ``episodes`` into ``mem`` using ``frames`` (N, H, W) in order; return frames written."""
    g = 0
    for steps, terminal in episodes:
        mem.start_episode(frames[g])
        g += 1
        for k in range(steps):
            mem.add(g % 4, 1.0, frames[g], terminal and k == steps - 1)
            g += 1
    return g


def sampling_rate(mem: Memory, batch: int, seconds: float) -> float:
    """Minibatches of ``batch`` per second, sampled for about ``seconds``."""
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(20):
            mem.sample(batch)
        n += 20
    return n / elapsed


def step_rate(mem: Memory, frames: np.ndarray, batch: int, steps: int) -> float:
    """DQN loop steps per second: one add and one minibatch per step (one long episode)."""
    start = time.perf_counter()
    mem.start_episode(frames[0])
    for t in range(1, steps + 1):
        mem.add(t % 4, 0.0, frames[t % len(frames)], False)
        mem.sample(batch)
    return steps / (time.perf_counter() - start)


def measure(mem: Memory, frames: np.ndarray, episodes: list[tuple[int, bool]], args: argparse.Namespace) -> dict:
    """Fill ``mem`` with ``episodes``, then time sampling and the add+sample loop; the figures as a dict."""
    start = time.perf_counter()
    written = fill(mem, frames, episodes)
    if isinstance(mem, LMDBReplayMemory):
        mem.flush()
    add_s = time.perf_counter() - start
    batches = sampling_rate(mem, args.batch, args.seconds)
    return {"frames_written": written, "transitions_stored": len(mem), "add_seconds": round(add_s, 3),
            "add_frames_per_s": round(written / add_s), "sample_batches_per_s": round(batches),
            "sample_transitions_per_s": round(batches * args.batch),
            "dqn_steps_per_s": round(step_rate(mem, frames, args.batch, args.steps))}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=30_000, help="frames written (and the capacity)")
    p.add_argument("--size", type=int, default=16, help="frame side S (frames are S x S)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--history", type=int, default=4)
    p.add_argument("--mean-episode", type=int, default=50, help="mean steps per episode")
    p.add_argument("--seconds", type=float, default=3.0, help="sampling time per variant")
    p.add_argument("--steps", type=int, default=3000, help="steps of the add+sample loop")
    p.add_argument("--flush-every", type=int, default=1000, help="LMDB commit interval (frames)")
    p.add_argument("--out", default="results", help="results directory")
    args = p.parse_args(argv)
    shape = (args.size, args.size)
    frames = np.random.default_rng(0).integers(0, 256, (args.frames, *shape), dtype=np.uint8)
    episodes = make_episodes(args.frames, args.mean_episode, seed=1)

    ram = ReplayMemory(args.frames, shape, args.history, seed=0)
    results = {"ram": measure(ram, frames, episodes, args)}
    results["ram"]["ram_bytes"] = ram.nbytes
    with tempfile.TemporaryDirectory(prefix="ddqn-replay-bench-") as tmp:
        with LMDBReplayMemory(tmp, args.frames, shape, args.history, seed=0, flush_every=args.flush_every) as disk:
            results["lmdb"] = measure(disk, frames, episodes, args)
            results["lmdb"]["ram_bytes"] = disk.metadata_nbytes
        results["lmdb"]["disk_bytes"] = (Path(tmp) / "data.mdb").stat().st_size
    # same calls, same seed: the two variants must give the same minibatches
    ram2 = ReplayMemory(args.frames, shape, args.history, seed=5)
    fill(ram2, frames, episodes)
    with (tempfile.TemporaryDirectory(prefix="ddqn-replay-bench-") as tmp,
          LMDBReplayMemory(tmp, args.frames, shape, args.history, seed=5) as disk):
        fill(disk, frames, episodes)
        same = all(np.array_equal(a, b) for _ in range(10)
                   for a, b in zip(ram2.sample(args.batch), disk.sample(args.batch)))

    config = {"frames": args.frames, "capacity": args.frames, "frame_shape": list(shape), "history": args.history,
              "batch": args.batch, "mean_episode_steps": args.mean_episode, "episodes": len(episodes),
              "lmdb_flush_every": args.flush_every}
    for name, r in results.items():
        print(f"{name:5s} add {r['add_frames_per_s']:>9,} frames/s | sample {r['sample_batches_per_s']:>7,} "
              f"batches/s of {args.batch} = {r['sample_transitions_per_s']:>10,} transitions/s | "
              f"add+sample loop {r['dqn_steps_per_s']:>6,} steps/s | RAM {r['ram_bytes'] / 2**20:.1f} MiB")
    print(f"lmdb on disk {results['lmdb']['disk_bytes'] / 2**20:.1f} MiB; identical batches RAM vs LMDB: {same}")
    data = {"config": config, **results, "identical_batches": same}
    write_result("replay_speed", data, args.out)
    return data


if __name__ == "__main__":
    main()
