"""The slides' "Dumb snake" and "Smart snake": greedy episodes of untrained and trained weights, side by side.

``python -m ddqn.bench.gifs [--weights W.caffemodel] [--config paper]`` plays one greedy episode with the
network's initial (random) weights and one with ``W`` (default: the latest snapshot of ``runs/train``), and
writes results/dumb_snake.gif, results/smart_snake.gif and results/snakes.gif (both, side by side). Each
side is captioned with what it is and its running score.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ddqn.bench.common import write_result
from ddqn.config import config_values, load_config
from ddqn.dqn.play import greedy_episode_scores, write_gif
from ddqn.errors import DDQNError, run_command
from ddqn.game import game_actions
from ddqn.net.netspec import load_netspec
from ddqn.net.qnet import QNetwork
from ddqn.net.snapshot import load_caffemodel

BACKGROUND, INK = (255, 255, 255), (0, 0, 0)  # caption strip and the gap between the sides: white; text: black


def latest_weights(run: Path) -> Path:
    """The snapshot a run's state file names (server_state.json or trainer_state.json)."""
    for name in ("server_state.json", "trainer_state.json"):
        if (run / name).exists():
            return run / json.loads((run / name).read_text())["model"]
    raise DDQNError(f"{run}: no snapshot record (run `make train` first, or pass --weights)")


def caption_font() -> ImageFont.ImageFont:
    """Pillow's built-in bitmap font (6 px wide per character, 11 px tall); no font file needed."""
    return getattr(ImageFont, "load_default_imagefont", ImageFont.load_default)()  # Pillow < 10.1: the latter


def captioned(shots: list[np.ndarray], scores: list[int], label: list[str], pad: int = 4) -> list[np.ndarray]:
    """Each frame (H, W, 3) uint8 below a caption strip: the ``label`` lines, then "score N", that frame's running
    score. Returns frames (strip + H, max(W, widest line + 2·pad), 3) uint8, the game centred horizontally."""
    font = caption_font()
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    widest = max(measure.textlength(t, font=font) for t in [*label, f"score {max(scores)}"])
    line_h = measure.textbbox((0, 0), "Ayg(|", font=font)[3] + 2
    (h, w), width = shots[0].shape[:2], max(shots[0].shape[1], int(np.ceil(widest)) + 2 * pad)
    strip_h = 2 * pad + (len(label) + 1) * line_h

    def strip(score: int) -> np.ndarray:
        img = Image.new("RGB", (width, strip_h), BACKGROUND)
        pen = ImageDraw.Draw(img)
        for i, text in enumerate([*label, f"score {score}"]):
            pen.text((pad, pad + i * line_h), text, fill=INK, font=font)
        return np.asarray(img)

    strips, x0 = {s: strip(s) for s in set(scores)}, (width - w) // 2
    out = []
    for shot, score in zip(shots, scores, strict=True):
        panel = np.full((strip_h + h, width, 3), BACKGROUND, np.uint8)
        panel[:strip_h], panel[strip_h:, x0:x0 + w] = strips[score], shot
        out.append(panel)
    return out


def side_by_side(a: list[np.ndarray], b: list[np.ndarray], gap: int = 8) -> list[np.ndarray]:
    """Frames (H, Wa, 3) and (H, Wb, 3) of two episodes next to each other, ``gap`` px apart; the shorter one
    holds its last frame."""
    n = max(len(a), len(b))
    pad = np.full((a[0].shape[0], gap, 3), BACKGROUND, np.uint8)
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
        spec = load_netspec(cfg.path("net"), game_actions(cfg))
        weights = Path(args.weights) if args.weights else latest_weights(Path(args.run))
        dumb, smart = QNetwork(spec, seed=cfg.seed), QNetwork(spec)
        smart.set_params(load_caffemodel(weights, spec))
        dumb_shots, dumb_scores = greedy_episode_scores(dumb, cfg, args.seed, max_steps=300)
        smart_shots, smart_scores = greedy_episode_scores(smart, cfg, args.seed, max_steps=1000)
        dumb_score, smart_score = dumb_scores[-1], smart_scores[-1]
        dumb_shots = captioned(dumb_shots, dumb_scores, ["dumb snake", "(initial weights)"])
        smart_shots = captioned(smart_shots, smart_scores, ["smart snake", f"({weights.name})"])
        out = Path(args.out)
        paths = {"dumb": write_gif(dumb_shots, out / "dumb_snake.gif"),
                 "smart": write_gif(smart_shots, out / "smart_snake.gif"),
                 "both": write_gif(side_by_side(dumb_shots, smart_shots), out / "snakes.gif")}
        print(f"dumb snake (initial weights): score {dumb_score}, {len(dumb_shots)} frames -> {paths['dumb']}")
        print(f"smart snake ({weights}): score {smart_score}, {len(smart_shots)} frames -> {paths['smart']}")
        write_result("gifs", {"config": args.config, "config_values": config_values(args.config),
                              "weights": str(weights), "dumb_score": dumb_score, "smart_score": smart_score,
                              "gifs": {k: str(v) for k, v in paths.items()}}, out)

    return run_command("gifs", body)


if __name__ == "__main__":
    raise SystemExit(main())
