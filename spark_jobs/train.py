"""spark-submit entry point: distributed deep Q-learning, the Spark driver as parameter server.

    spark-submit spark_jobs/train.py [--config F] [--workers W] [--minutes M | --steps S] [--out DIR]
                                     [--sync] [--resume] [--set KEY=VALUE ...]

Without ``--master`` it runs on the embedded default ``local[*,4]`` (local mode that retries a failed task).
User errors print one line ``train.py: error: …`` and exit 2. Ctrl-C (SIGINT, which a terminal sends to
spark-submit's JVM and this Python driver alike) or SIGTERM sets a stop flag: the driver stops its workers,
writes a final snapshot, frees its port and exits 130. A second signal exits at once (one within 1 s of the first
is the same stop: wrappers such as GNU timeout forward SIGINT to the process group again).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ddqn.cli import positive
from ddqn.stop import StopFlag


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="train.py", description=__doc__.splitlines()[0])
    ap.add_argument("--config", help="YAML config file or a named config (paper, small, ...)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    ap.add_argument("--workers", type=int, help="worker tasks (overrides the config's 'workers')")
    budget = ap.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=positive(float), default=10.0, help="wall-clock budget (default 10)")
    budget.add_argument("--steps", type=positive(int), help="env steps over all workers")
    ap.add_argument("--out", default="runs/distributed", help="output directory (default runs/distributed)")
    ap.add_argument("--sync", action="store_true", help="synchronous rounds (the baseline) instead of async")
    ap.add_argument("--resume", action="store_true", help="continue from the last snapshot in --out")
    ap.add_argument("--gif", default=None, help="GIF of a greedy episode at the end (default OUT/agent.gif)")
    ap.add_argument("--quiet", action="store_true", help="no progress lines")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    # No thread names in log records (the format has none): py4j closes a finished thread's connection from the
    # thread's teardown and logs it, where current_thread() makes a dummy Thread that Python 3.13 then fails to
    # remove at exit ("Exception ignored in _DeleteDummyThreadOnDel.__del__", CPython gh-130522).
    logging.logThreads = False
    from ddqn.errors import run_command  # noqa: PLC0415 - after argparse, so --help is fast

    with StopFlag("interrupted: stopping workers, then a final snapshot") as stop:
        return run_command("train.py", lambda: train(args, stop))


def train(args: argparse.Namespace, stop: StopFlag) -> None:
    """Run the job and print where the snapshot, metrics and GIF went."""
    from ddqn.config import load_config  # noqa: PLC0415
    from ddqn.distributed.driver import Driver  # noqa: PLC0415
    from ddqn.dqn.evaluation import policy_name  # noqa: PLC0415
    from ddqn.dqn.play import gif_fps, greedy_episode, write_gif  # noqa: PLC0415

    overrides = list(args.set) + ([f"workers={args.workers}"] if args.workers is not None else [])
    cfg = load_config(args.config or ("paper" if not args.resume else str(Path(args.out) / "config.yaml")), overrides)
    driver = Driver(cfg, args.out, sync=args.sync, resume=args.resume, progress=not args.quiet)
    summary = driver.run(minutes=args.minutes if args.steps is None else None, steps=args.steps, stop=stop)
    shots, score = greedy_episode(driver.q, cfg, seed=cfg.seed, stop=stop)
    gif = write_gif(shots, args.gif or Path(args.out) / "agent.gif", gif_fps(cfg))
    workers = "; ".join(
        f"{p}: {w['pushes']} pushes, {w['pushes'] / (60 * summary['minutes']):.1f} grads/s, "
        f"communication {100 * w['comm_s'] / max(w['comm_s'] + w['compute_s'], 1e-9):.0f}% of its time"
        + (f", {w['rejoins']} rejoin(s)" if w["rejoins"] else "") for p, w in sorted(summary["workers"].items()))
    print(f"{policy_name(cfg)} score mean {summary['greedy_score_mean']:.2f} "
          f"(median {summary['greedy_score_median']:.1f}, "
          f"max {summary['greedy_score_max']}) vs random {summary['random_score_mean']:.2f}")
    print(f"{summary['updates']} server updates in {summary['minutes']:.1f} min ({summary['updates_per_s']:.1f}/s), "
          f"staleness p50/p95 {summary['staleness_p50']:.0f}/{summary['staleness_p95']:.0f}")
    print(f"workers: {workers}")
    print(f"snapshot: {summary['model']}\nmetrics:  {args.out}/train.csv, {args.out}/eval.csv, {args.out}/tb\n"
          f"gif:      {gif} (score {score})")


if __name__ == "__main__":
    sys.exit(main())
