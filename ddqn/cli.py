"""The ``ddqn`` command. User errors print one line ``ddqn: error: …`` and exit 2, never a traceback."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from ddqn.errors import DDQNError, run_command


def _net_info(args: argparse.Namespace) -> None:
    """Validate a network (and optionally a solver) prototxt and print its flat parameter layout."""
    from ddqn.net.netspec import load_netspec  # noqa: PLC0415 - keep `ddqn --help` fast
    from ddqn.solvers.flat import load_solver_spec  # noqa: PLC0415

    spec = load_netspec(args.net, args.actions)
    print(f"{spec.source}: net '{spec.name}', state {spec.state_shape}, batch {spec.batch_size}, "
          f"{spec.num_actions} actions, {spec.num_params:,} parameters")
    for p in spec.params:
        print(f"  {p.layer:>8s}[{p.index}] {str(p.shape):>18s} offset {p.offset:>9,d} "
              f"lr_mult {p.lr_mult:g} decay_mult {p.decay_mult:g}")
    if args.solver:
        s = load_solver_spec(args.solver)
        print(f"{s.source}: {s.type}, base_lr {s.base_lr:g}, lr_policy {s.lr_policy}")


def _load_agent(args: argparse.Namespace):
    """(config, Q-network with the weights of ``--weights``) for eval/play."""
    from ddqn.config import load_config  # noqa: PLC0415
    from ddqn.net.netspec import load_netspec  # noqa: PLC0415
    from ddqn.net.qnet import QNetwork  # noqa: PLC0415
    from ddqn.net.snapshot import load_caffemodel  # noqa: PLC0415

    cfg = load_config(args.config, args.set)
    spec = load_netspec(cfg.path("net"))
    q = QNetwork(spec)
    q.set_params(load_caffemodel(args.weights, spec))
    return cfg, q


def _train(args: argparse.Namespace) -> None:
    """Train an agent; print where the snapshot and metrics went."""
    from ddqn.config import load_config  # noqa: PLC0415
    from ddqn.dqn.serial import STATE_FILE, SerialTrainer  # noqa: PLC0415

    out = Path(args.resume or args.out)
    config = args.config
    if args.resume:
        if not (out / STATE_FILE).exists():
            raise DDQNError(f"{out}: nothing to resume (no {STATE_FILE})")
        config = config or str(out / "config.yaml")
    cfg = load_config(config, args.set)
    trainer = SerialTrainer(cfg, out, resume=bool(args.resume), progress=not args.no_progress)
    summary = trainer.train(steps=args.steps, minutes=args.minutes)
    print(f"greedy score mean {summary['greedy_score_mean']:.2f} (median {summary['greedy_score_median']:.1f}, "
          f"max {summary['greedy_score_max']}) vs random policy {summary['random_score_mean']:.2f} "
          f"after {summary['env_steps']} env steps, {summary['train_minutes']:.1f} min")
    print(f"snapshot: {summary['model']}\nmetrics:  {out}/train.csv, {out}/eval.csv, {out}/tb")


def _eval(args: argparse.Namespace) -> None:
    """Greedy score statistics of a weights file, beside the random policy's."""
    from ddqn.dqn.evaluation import evaluate_greedy, random_score  # noqa: PLC0415

    cfg, q = _load_agent(args)
    scores = evaluate_greedy(q, cfg, args.episodes, args.seed)
    rand = random_score(cfg, q.spec.state_shape[1], args.episodes, args.seed)
    print(f"greedy: mean {scores.mean():.2f}  median {np.median(scores):.1f}  max {scores.max()}  "
          f"over {args.episodes} episodes on {cfg.board_size}x{cfg.board_size}")
    print(f"random: mean {rand:.2f}")


def _play(args: argparse.Namespace) -> None:
    """A greedy episode as a GIF, or animated in the terminal."""
    from ddqn.dqn.play import greedy_episode, play_terminal, write_gif  # noqa: PLC0415

    cfg, q = _load_agent(args)
    if args.gif:
        shots, score = greedy_episode(q, cfg, args.seed)
        print(f"score {score}, {len(shots)} frames: {write_gif(shots, args.gif)}")
    else:
        print(f"score {play_terminal(q, cfg, args.seed)}")


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML config file or a named config (paper, tuned, ...)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key (repeatable), e.g. --set gamma=0.9")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every ``ddqn`` subcommand."""
    ap = argparse.ArgumentParser(prog="ddqn", description="Distributed deep Q-learning on Spark and Caffe.")
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("net-info", help="validate a Q-network prototxt and print its parameter layout")
    p.add_argument("--net", required=True, help="network prototxt (e.g. prototxt/snake_paper.prototxt)")
    p.add_argument("--solver", help="solver prototxt to validate too")
    p.add_argument("--actions", type=int, default=4, help="number of actions the game has (default 4)")
    p.set_defaults(func=_net_info)

    p = sub.add_parser("train", help="train an agent (serial deep Q-learning)")
    p.add_argument("--mode", choices=["serial"], default="serial", help="serial: the slides' serial algorithm")
    _config_args(p)
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=positive(float), help="wall-clock budget")
    budget.add_argument("--steps", type=positive(int), help="learning env steps (after the random warm-up)")
    p.add_argument("--out", default="runs/serial", help="output directory (default runs/serial)")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last snapshot")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_train)

    for name, func, text in (("eval", _eval, "greedy score of a weights file vs the random policy"),
                             ("play", _play, "watch a greedy episode (GIF or terminal)")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--weights", required=True, help="a .caffemodel written by ddqn train")
        _config_args(p)
        p.add_argument("--seed", type=int, default=12345)
        if name == "eval":
            p.add_argument("--episodes", type=positive(int), default=100)
        else:
            p.add_argument("--gif", help="write an animated GIF here instead of playing in the terminal")
        p.set_defaults(func=func)
    return ap


def positive(kind: type):
    """An argparse type: a number of ``kind`` that is > 0."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value
    return parse


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ddqn`` console script."""
    args = build_parser().parse_args(argv)
    return run_command("ddqn", lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
