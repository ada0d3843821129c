"""The slides' "Dumb snake" and "Smart snake": greedy episodes of untrained and trained weights, side by side.

``python -m ddqn.bench.gifs [--weights W.caffemodel] [--config paper]`` plays one greedy episode with the
network's initial (random) weights and one with ``W`` (default: the latest snapshot of ``runs/train``), and
writes results/dumb_snake.gif, results/smart_snake.gif and results/snakes.gif (both, side by side).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ddqn.config import load_config
from ddqn.errors import DDQNError, run_command
from ddqn.net.netspec import load_netspec
from ddqn.dqn.play import greedy_episode, write_gif
from ddqn.net.qnet import QNetwork
from ddqn.net.snapshot import load_caffemodel
from ddqn.bench import write_result


def latest_weights(run: Path) -> Path:
    """The snapshot a run's state file names (server_state.json or trainer_state.json)."""
    for name in ("server_state.json", "trainer_state.json"):
        if (run / name).exists():
            return run / json.loads((run / name).read_text())["model"]
    raise DDQNError(f"{run}: no snapshot record (run `make train` first, or pass --weights)")


def side_by_side(a: list[np.ndarray], b: list[np.ndarray], gap: int = 8) -> list[np.ndarray]:
    """Frames of two episodes next to each other; the shorter one holds its last frame."""
    n = max(len(a), len(b))
    pad = np.full((a[0].shape[0], gap, 3), 255, np.uint8)
    return [np.concatenate([a[min(i, len(a) - 1)], pad, b[min(i, len(b) - 1)]], axis=1) for i in range(n)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", help="trained .caffemodel (default: latest snapshot in --run)")
    ap.add_argument("--run", default="runs/train", help="run directory to take the latest snapshot from")
    ap.add_argument("--config", default="paper")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", default="results")
    args = ap.parse_args(argv)

    def body() -> None:
        cfg = load_config(args.config)
        spec = load_netspec(cfg.path("net"))
        weights = Path(args.weights) if args.weights else latest_weights(Path(args.run))
        dumb, smart = QNetwork(spec, seed=cfg.seed), QNetwork(spec)
        smart.set_params(load_caffemodel(weights, spec))
        dumb_shots, dumb_score = greedy_episode(dumb, cfg, args.seed, max_steps=300)
        smart_shots, smart_score = greedy_episode(smart, cfg, args.seed, max_steps=1000)
        out = Path(args.out)
        paths = {"dumb": write_gif(dumb_shots, out / "dumb_snake.gif"),
                 "smart": write_gif(smart_shots, out / "smart_snake.gif"),
                 "both": write_gif(side_by_side(dumb_shots, smart_shots), out / "snakes.gif")}
        print(f"dumb snake (initial weights): score {dumb_score}, {len(dumb_shots)} frames -> {paths['dumb']}")
        print(f"smart snake ({weights}): score {smart_score}, {len(smart_shots)} frames -> {paths['smart']}")
        write_result("gifs", {"weights": str(weights), "dumb_score": dumb_score, "smart_score": smart_score,
                              "gifs": {k: str(v) for k, v in paths.items()}}, out)

    return run_command("gifs", body)


if __name__ == "__main__":
    raise SystemExit(main())
