"""Atari through the same system: ALE's speed, the DQN papers' nets beside the Snake net, and a Breakout run.

``python -m ddqn.bench.atari [--minutes 60] [--seeds 0 1 …] [--config breakout] [--every N] [--no-learning]``

1. ALE agent steps/s on one core: the config's game and preprocessing (frame skip, max-pool, 84×84 grayscale),
   random actions.
2. Forward+backward and forward ms at batch 32 on one thread: the NIPS-2013 and Nature DQN nets and the
   paper's Snake net, in one process.
3. Learning, one run per seed, one after another: the config trained by ``spark-submit spark_jobs/train.py
   --workers 2`` for ``--minutes`` of wall clock, a snapshot every ``--every`` env steps (summed over workers), in
   ``runs/atari-<config>-s<seed>-<minutes>min`` (a finished run with the same config values and grid, on this CPU, is
   reused). Afterwards every snapshot is evaluated under the papers' protocol (ε = ``eval_epsilon``, whole games, raw
   scores, ``max_episode_steps`` cap; ``eval_episodes`` games, seed 10,000 + seed) against the minute it was taken,
   the best snapshot again over ``--final-episodes`` fresh games (seed 20,000 + seed), and the uniform random policy
   under the same protocol (seed 10,000 + seed). The goal: every seed's best snapshot scores at least 5× the random
   policy on the fresh games; beside it, the minute the trailing mean of ``stats.TRAILING_K`` evaluations first
   reached 5× random (``ddqn.bench.stats.reach``; null if it did not), and both over the seeds (mean, 95 % t
   interval). Seeds of an earlier atari.json with the same config values, grid, budget and CPU are kept, so seeds
   can be run in parts.

Writes results/atari.json, results/atari.png and results/<config>.gif (one greedy game of the best seed's best
snapshot, on its fresh games' seed). Two workers and the driver share this machine's cores: the minutes are
wall-clock minutes on this machine.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ddqn.bench.common import add_restart, figure, kept_or_restart, made_elsewhere, time_net, write_result
from ddqn.bench.runs import CONFIRM_SEED, snapshot_net, snapshot_scores, train_or_reuse
from ddqn.bench.stats import RULE, reach, seed_interval, standard_error
from ddqn.config import PROTOTXT_DIR, Config, config_values, load_config
from ddqn.dqn.evaluation import evaluate_greedy, random_score
from ddqn.dqn.play import gif_fps, greedy_episode, write_gif
from ddqn.game import make_env
from ddqn.net.netspec import load_netspec

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


def run_dir(out: Path, config: str, seed: int, minutes: float) -> Path:
    """The learning run of ``seed``: ``<out>/runs/atari-<config>-s<seed>-<minutes>min``."""
    return out / "runs" / f"atari-{Path(config).stem}-s{seed}-{minutes:g}min"


def train(config: str, minutes: float, every: int, seed: int, run: Path) -> None:
    """The learning run of ``seed``: 2 asynchronous workers via spark-submit on :func:`grid`; a finished run with the
    config's values (grid included) on this CPU is reused (``runs.finished_run``; else a one-line error)."""
    values = config_values(config, grid(every))
    if train_or_reuse(config, minutes, run, ["--workers", "2"], values, [*grid(every), f"seed={seed}"]):
        sys.exit(f"bench-atari: the training run failed (see {run})")


def evaluate_snapshots(cfg: Config, out: Path) -> list[dict[str, float]]:
    """Mean and standard error of each snapshot's evaluation score (papers' protocol; ``cfg``: the run's, with its
    seed), against its minute."""
    curve = []
    for row, scores in snapshot_scores(out, cfg):
        curve.append({**row, **_stats(scores)})
        print(f"  {row['minutes']:5.1f} min, {row['env_steps']:>9,d} env steps: {curve[-1]['mean']:.2f} ± "
              f"{curve[-1]['se']:.2f}", flush=True)
    return curve


def best_gif(config: str, seeds: dict[str, dict[str, Any]], out: Path) -> dict[str, Any] | None:
    """One greedy game (ε = ``eval_epsilon``, fresh seed 20,000 + seed) of the best snapshot of the seed whose fresh
    games scored highest, as ``<out>/<config name>.gif``; None (said in a line) when that run is gone."""
    seed, x = max(seeds.items(), key=lambda kv: kv[1]["best_reevaluated"]["mean"])
    run = out / "runs" / x["run"]
    if not (run / x["best"]["model"]).is_file():
        print(f"bench-atari: {run / x['best']['model']} is gone: no GIF", flush=True)
        return None
    cfg = load_config(config, [f"seed={seed}"])
    shots, score = greedy_episode(snapshot_net(run, cfg, x["best"]["model"]), cfg, CONFIRM_SEED + int(seed))
    path = write_gif(shots, out / f"{Path(config).stem}.gif", gif_fps(cfg))
    print(f"{path}: seed {seed}'s best snapshot, one game of score {score} ({len(shots)} frames)", flush=True)
    return {"file": path.name, "seed": int(seed), "model": x["best"]["model"], "score": float(score)}


def learn_seed(config: str, seed: int, run: Path, final_episodes: int, random_episodes: int) -> dict[str, Any]:
    """One seed's learning run judged: its snapshots' curve (seed 10,000 + ``seed``), the best snapshot again on
    ``final_episodes`` fresh games (``CONFIRM_SEED`` + ``seed``), the random policy on ``random_episodes`` (seed
    10,000 + ``seed``), their ratio and when the curve's trailing mean reached :data:`TARGET_RATIO` × random."""
    cfg = load_config(config, [f"seed={seed}"])
    print(f"evaluating the snapshots of seed {seed}", flush=True)
    curve = evaluate_snapshots(cfg, run)
    if not curve:
        sys.exit(f"bench-atari: {run} has no snapshots to evaluate")
    best = max(curve, key=lambda r: r["mean"])
    q = snapshot_net(run, cfg, best["model"])
    final = _stats(evaluate_greedy(q, cfg, final_episodes, seed=CONFIRM_SEED + seed))
    rand = random_score(cfg, 84, random_episodes, seed=10_000 + seed)
    ratio = final["mean"] / rand if rand > 0 else float("inf")
    return {"seed": seed, "run": run.name, "curve": curve, "best": best, "best_reevaluated": final,
            "fresh_seed": CONFIRM_SEED + seed, "random_mean": rand, "ratio_to_random": ratio,
            "reach_target": reach(curve, TARGET_RATIO * rand, key="mean"), "reached": ratio >= TARGET_RATIO}


def over_seeds(seeds: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The seeds' best snapshots on fresh games, their ratios to random and their minutes to :data:`TARGET_RATIO` ×
    random, each as ``stats.seed_interval``; the goal is met when every seed's ratio reaches it."""
    rows = list(seeds.values())
    ratios = [x["ratio_to_random"] for x in rows]
    return {"seeds": len(rows), "fresh_mean": seed_interval([x["best_reevaluated"]["mean"] for x in rows]).to_dict(),
            "ratio": seed_interval(ratios).to_dict(),
            "reach_minutes": seed_interval([(x["reach_target"] or {}).get("minutes") for x in rows]).to_dict(),
            "worst_ratio": min(ratios), "met": all(x["reached"] for x in rows)}


def _stats(scores: np.ndarray) -> dict[str, float]:
    """Mean, standard error, max and count of raw game scores."""
    return {"mean": float(scores.mean()), "se": standard_error(scores), "max": float(scores.max()),
            "episodes": len(scores)}


def plot(seeds: dict[str, dict[str, Any]], game: str, path: Path) -> Path:
    """Each seed's evaluation score (± 1 s.e.) against training minutes, beside the random policy (mean over the
    seeds) and the 5× bar."""
    rand = sum(x["random_mean"] for x in seeds.values()) / len(seeds)
    with figure(path) as (fig, ax):
        for seed, x in seeds.items():
            c = x["curve"]
            ax.errorbar([r["minutes"] for r in c], [r["mean"] for r in c], yerr=[r["se"] for r in c], marker=".",
                        capsize=2, label=f"2 async workers, seed {seed}")
        ax.axhline(rand, color="grey", ls="--", lw=1, label=f"random policy ({rand:.2f})")
        ax.axhline(TARGET_RATIO * rand, color="tab:red", ls=":", lw=1, label=f"{TARGET_RATIO:g}× random")
        ax.set_xlabel("training wall-clock minutes (2 workers + driver on this machine)")
        ax.set_ylabel("evaluation score (raw, ε = 0.05)")
        ax.set_title(game)
        ax.grid(alpha=0.3)
        ax.legend()
    return path


def earlier_learning(path: Path) -> dict[str, Any] | None:
    """An earlier result's learning part (hours of runs), with the machine it was measured on (the file's, for a
    part recorded without its own), so that a speeds-only run (``--no-learning``) keeps it; None without one."""
    old = json.loads(path.read_text()) if path.exists() else {}
    was = old.get("learning")
    return {**was, "machine": was.get("machine") or old.get("machine")} if was else None


def kept_seeds(path: Path, learning: dict[str, Any], restart: bool = False) -> dict[str, dict[str, Any]]:
    """The seeds of an earlier results/atari.json to keep beside this run's: those of the same config values, grid
    and budget, measured on this CPU. Seeds of another are an hour's run each: exits with a one-line error naming
    what differs, unless ``restart`` (then none are kept, said in a line)."""
    old = json.loads(path.read_text()) if path.exists() else {}
    was = old.get("learning") or {}
    if not was.get("seeds"):
        return {}
    why = [f"{k} {was.get(k)} ≠ {learning[k]}" for k in ("minutes", "every") if was.get(k) != learning[k]]
    why += made_elsewhere(was.get("config_values"), was.get("machine") or old.get("machine"), learning["config_values"])
    return was["seeds"] if kept_or_restart(path, f"its seeds {', '.join(was['seeds'])}", why, restart) else {}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="breakout")
    ap.add_argument("--minutes", type=float, default=60.0, help="wall-clock budget of each learning run (default 60)")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0], help="seeds of the learning runs (default 0)")
    ap.add_argument("--every", type=int, default=50_000, help="env steps (summed over workers) between snapshots")
    ap.add_argument("--final-episodes", type=int, default=100, help="fresh games for each best snapshot")
    ap.add_argument("--random-episodes", type=int, default=100, help="games of the random-policy baseline")
    ap.add_argument("--ale-steps", type=int, default=20_000)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--no-learning", action="store_true",
                    help="speeds only; an earlier result's learning part is kept as it was, with its own machine")
    add_restart(ap, "another config, grid, budget or CPU model")
    ap.add_argument("--out", default="results")
    args = ap.parse_args(argv)
    cfg = load_config(args.config)
    result: dict = {"config": args.config, "config_values": config_values(args.config), "game": cfg.game,
                    "cores": os.cpu_count()}
    out = Path(args.out)
    learning = {"minutes": args.minutes, "every": args.every, "overrides": grid(args.every),
                "config_values": config_values(args.config, grid(args.every)), "reach_rule": RULE,
                "target_ratio": TARGET_RATIO, "eval_epsilon": cfg.eval_epsilon, "eval_episodes": cfg.eval_episodes,
                "max_episode_steps": cfg.max_episode_steps, "final_episodes": args.final_episodes,
                "random_episodes": args.random_episodes}
    seeds = {} if args.no_learning else kept_seeds(out / "atari.json", learning, args.restart)  # before any run
    if args.no_learning and (was := earlier_learning(out / "atari.json")):
        result["learning"] = was
    result["ale"] = ale = ale_speed(cfg, args.ale_steps)
    print(f"ALE {cfg.game}: {ale['steps_per_s']:,.0f} agent steps/s ({ale['frames_per_s']:,.0f} frames/s) "
          "on one core, random actions", flush=True)
    result["nets"] = nets = net_speeds(args.repeats)
    for name, r in nets.items():
        print(f"{name:>13s}: {r['params']:>9,d} params, {r['input']}x{r['input']} input: forward+backward "
              f"{r['forward_backward_ms']:7.2f} ms, forward {r['forward_ms']:6.2f} ms (batch {r['batch']})", flush=True)
    if not args.no_learning:
        for seed in args.seeds:
            run = run_dir(out, args.config, seed, args.minutes)
            train(args.config, args.minutes, args.every, seed, run)
            seeds[str(seed)] = x = learn_seed(args.config, seed, run, args.final_episodes, args.random_episodes)
            b, f, t = x["best"], x["best_reevaluated"], x["reach_target"]
            print(f"seed {seed}: best snapshot ({b['model']}, {b['minutes']:.1f} min): {f['mean']:.2f} ± {f['se']:.2f} "
                  f"over {f['episodes']} fresh games; random policy {x['random_mean']:.2f}: "
                  f"{x['ratio_to_random']:.1f}x random; the trailing mean of evaluations reached {TARGET_RATIO:g}x "
                  + (f"random at {t['minutes']:.1f} min" if t else "random not at all"), flush=True)
        seeds = dict(sorted(seeds.items(), key=lambda kv: int(kv[0])))
        o = over_seeds(seeds)
        print(f"goal: >= {TARGET_RATIO:g}x random on fresh games, every seed: {'met' if o['met'] else 'missed'} "
              f"(worst seed {o['worst_ratio']:.1f}x over {o['seeds']} seed{'s' * (o['seeds'] != 1)})", flush=True)
        result["learning"] = {**learning, "seeds": seeds, "over_seeds": o,
                              "png": plot(seeds, cfg.game, out / "atari.png").name,
                              "gif": best_gif(args.config, seeds, out)}
    write_result("atari", result, args.out)


if __name__ == "__main__":
    main()
