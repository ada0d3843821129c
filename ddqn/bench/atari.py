"""Atari through the same system: ALE's speed, the DQN papers' nets beside the Snake net, and a Breakout run.

``python -m ddqn.bench.atari [--minutes 60] [--config breakout] [--every N] [--no-learning]``

1. ALE agent steps/s on one core: the config's game and preprocessing (frame skip, max-pool, 84×84 grayscale),
   random actions.
2. Forward+backward and forward ms at batch 32 on one thread: the NIPS-2013 and Nature DQN nets and the
   paper's Snake net, in one process.
3. Learning: the config trained by ``spark-submit spark_jobs/train.py --workers 2`` for ``--minutes`` of
   wall clock, a snapshot every ``--every`` env steps (summed over workers). Afterwards every snapshot is
   evaluated under the papers' protocol (ε = ``eval_epsilon``, whole games, raw scores, ``max_episode_steps``
   cap; ``eval_episodes`` games, seed 10,000) against the minute it was taken, the best snapshot again over
   ``--final-episodes`` games, and the uniform random policy under the same protocol. The verdict compares the
   best snapshot's mean with 5× the random policy's; beside it, the minute the trailing mean of
   ``stats.TRAILING_K`` evaluations first reached 5× random (``ddqn.bench.stats.reach``; null if it did not).

Writes results/atari.json and results/atari.png. Two workers and the driver share this machine's cores: the
minutes are wall-clock minutes on this machine.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from ddqn.bench.common import config_values, figure, snapshot_scores, time_net, train_run, write_result
from ddqn.bench.stats import RULE, reach, standard_error
from ddqn.config import PROTOTXT_DIR, Config, load_config
from ddqn.dqn.evaluation import evaluate_greedy, random_score
from ddqn.game import game_actions, make_env
from ddqn.net.netspec import load_netspec
from ddqn.net.qnet import QNetwork
from ddqn.net.snapshot import load_caffemodel

NETS = ("atari_nips", "atari_nature", "snake_paper")  # prototxt/<name>.prototxt, 4 actions each
TARGET_RATIO = 5.0  # the bar: evaluation score >= 5x the random policy's


def ale_speed(cfg: Config, steps: int, frame_size: int = 84) -> dict[str, float]:
    """Agent steps/s of one game on one core with uniform random actions (episodes restart as they end)."""
    env = make_env(cfg, frame_size)
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    t, episodes = time.perf_counter(), 0
    for a in rng.integers(0, env.action_space.n, steps):
        _, _, terminated, truncated, _ = env.step(int(a))
        if terminated or truncated:
            episodes += 1
            env.reset()
    seconds = time.perf_counter() - t
    env.close()
    return {"steps": steps, "steps_per_s": steps / seconds, "frames_per_s": steps * cfg.frame_skip / seconds,
            "episodes": episodes}


def net_speeds(repeats: int) -> dict[str, dict[str, float]]:
    """Forward+backward and forward ms (median of ``repeats``) of each net in :data:`NETS`."""
    return {name: time_net(load_netspec(PROTOTXT_DIR / f"{name}.prototxt"), repeats) for name in NETS}


def grid(every: int) -> list[str]:
    """The learning run's grid: snapshots every ``every`` env steps; the driver's own periodic evaluation off (it
    would compete with the workers for the cores): snapshots are evaluated afterwards."""
    return [f"snapshot_every={every}", "eval_every=1000000000"]


def train(config: str, minutes: float, every: int, out: Path) -> None:
    """The learning run: 2 asynchronous workers via spark-submit on :func:`grid`."""
    sets = [x for kv in grid(every) for x in ("--set", kv)]
    if train_run(config, minutes, out, ["--workers", "2", *sets], values=config_values(config, grid(every))):
        sys.exit(f"bench-atari: the training run failed (see {out})")


def evaluate_snapshots(cfg: Config, out: Path) -> list[dict[str, float]]:
    """Mean and standard error of each snapshot's evaluation score (papers' protocol), against its minute."""
    curve = []
    for row, scores in snapshot_scores(out, cfg):
        curve.append({**row, **_stats(scores)})
        print(f"  {row['minutes']:5.1f} min, {row['env_steps']:>9,d} env steps: {curve[-1]['mean']:.2f} ± "
              f"{curve[-1]['se']:.2f}", flush=True)
    return curve


def _stats(scores: np.ndarray) -> dict[str, float]:
    """Mean, standard error, max and count of raw game scores."""
    return {"mean": float(scores.mean()), "se": standard_error(scores), "max": float(scores.max()),
            "episodes": len(scores)}


def plot(curve: list[dict[str, float]], rand: float, game: str, path: Path) -> Path:
    """Evaluation score (± 1 s.e.) against training minutes, beside the random policy and the 5× bar."""
    with figure(path) as (fig, ax):
        x = [r["minutes"] for r in curve]
        ax.errorbar(x, [r["mean"] for r in curve], yerr=[r["se"] for r in curve], marker=".", capsize=2,
                    label="2 async workers")
        ax.axhline(rand, color="grey", ls="--", lw=1, label=f"random policy ({rand:.2f})")
        ax.axhline(TARGET_RATIO * rand, color="tab:red", ls=":", lw=1, label=f"{TARGET_RATIO:g}× random")
        ax.set_xlabel("training wall-clock minutes (2 workers + driver on this machine)")
        ax.set_ylabel("evaluation score (raw, ε = 0.05)")
        ax.set_title(game)
        ax.grid(alpha=0.3)
        ax.legend()
    return path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="breakout")
    ap.add_argument("--minutes", type=float, default=60.0, help="wall-clock budget of the learning run (default 60)")
    ap.add_argument("--every", type=int, default=50_000, help="env steps (summed over workers) between snapshots")
    ap.add_argument("--final-episodes", type=int, default=100, help="games for the best snapshot's evaluation")
    ap.add_argument("--random-episodes", type=int, default=100, help="games of the random-policy baseline")
    ap.add_argument("--ale-steps", type=int, default=20_000)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--no-learning", action="store_true", help="speeds only")
    ap.add_argument("--out", default="results")
    args = ap.parse_args(argv)
    cfg = load_config(args.config)
    result: dict = {"config": args.config, "config_values": config_values(args.config), "game": cfg.game,
                    "cores": os.cpu_count()}
    result["ale"] = ale = ale_speed(cfg, args.ale_steps)
    print(f"ALE {cfg.game}: {ale['steps_per_s']:,.0f} agent steps/s ({ale['frames_per_s']:,.0f} frames/s) "
          "on one core, random actions", flush=True)
    result["nets"] = nets = net_speeds(args.repeats)
    for name, r in nets.items():
        print(f"{name:>13s}: {r['params']:>9,d} params, {r['input']}x{r['input']} input: forward+backward "
              f"{r['forward_backward_ms']:7.2f} ms, forward {r['forward_ms']:6.2f} ms (batch {r['batch']})", flush=True)
    if not args.no_learning:
        run = Path(args.out) / "runs" / f"atari-{args.config}"
        train(args.config, args.minutes, args.every, run)
        print("evaluating the snapshots", flush=True)
        curve = evaluate_snapshots(cfg, run)
        best = max(curve, key=lambda r: r["mean"])
        q = QNetwork(load_netspec(cfg.path("net"), game_actions(cfg)))
        q.set_params(load_caffemodel(run / best["model"], q.spec))
        final = _stats(evaluate_greedy(q, cfg, args.final_episodes, seed=20_000 + cfg.seed))
        rand = random_score(cfg, 84, args.random_episodes, seed=10_000 + cfg.seed)
        ratio = final["mean"] / rand if rand > 0 else float("inf")
        target = reach(curve, TARGET_RATIO * rand, key="mean")
        result["learning"] = {"minutes": args.minutes, "every": args.every, "curve": curve, "best": best,
                              "config_values": config_values(args.config, grid(args.every)),
                              "reach_target": target, "reach_rule": RULE,
                              "best_reevaluated": final, "random_mean": rand, "ratio_to_random": ratio,
                              "target_ratio": TARGET_RATIO, "reached": ratio >= TARGET_RATIO,
                              "eval_epsilon": cfg.eval_epsilon, "max_episode_steps": cfg.max_episode_steps,
                              "png": plot(curve, rand, cfg.game, Path(args.out) / "atari.png").name}
        print(f"best snapshot ({best['model']}, {best['minutes']:.1f} min): {final['mean']:.2f} ± {final['se']:.2f} "
              f"over {final['episodes']} games (ε {cfg.eval_epsilon:g}, raw); random policy {rand:.2f} over "
              f"{args.random_episodes} games: {ratio:.1f}x random (target {TARGET_RATIO:g}x: "
              f"{'reached' if ratio >= TARGET_RATIO else 'not reached'}); the trailing mean of evaluations reached "
              + (f"{TARGET_RATIO:g}x random at {target['minutes']:.1f} min" if target else "it not at all"), flush=True)
    write_result("atari", result, args.out)


if __name__ == "__main__":
    main()
