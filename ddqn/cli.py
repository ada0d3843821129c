"""The ``ddqn`` command. User errors print one line ``ddqn: error: …`` and exit 2, never a traceback."""
from __future__ import annotations

import argparse
import sys

from .errors import DDQNError


def _net_info(args: argparse.Namespace) -> None:
    """Validate a network (and optionally a solver) prototxt and print its flat parameter layout."""
    from .netspec import load_netspec  # noqa: PLC0415 - keep `ddqn --help` fast
    from .solvers import load_solver_spec  # noqa: PLC0415

    spec = load_netspec(args.net, args.actions)
    print(f"{spec.source}: net '{spec.name}', state {spec.state_shape}, batch {spec.batch_size}, "
          f"{spec.num_actions} actions, {spec.num_params:,} parameters")
    for p in spec.params:
        print(f"  {p.layer:>8s}[{p.index}] {str(p.shape):>18s} offset {p.offset:>9,d} "
              f"lr_mult {p.lr_mult:g} decay_mult {p.decay_mult:g}")
    if args.solver:
        s = load_solver_spec(args.solver)
        print(f"{s.source}: {s.type}, base_lr {s.base_lr:g}, lr_policy {s.lr_policy}")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every ``ddqn`` subcommand."""
    ap = argparse.ArgumentParser(prog="ddqn", description="Distributed deep Q-learning on Spark and Caffe.")
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("net-info", help="validate a Q-network prototxt and print its parameter layout")
    p.add_argument("--net", required=True, help="network prototxt (e.g. prototxt/snake_paper.prototxt)")
    p.add_argument("--solver", help="solver prototxt to validate too")
    p.add_argument("--actions", type=int, default=4, help="number of actions the game has (default 4)")
    p.set_defaults(func=_net_info)
    return ap


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ddqn`` console script."""
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except DDQNError as exc:
        print(f"ddqn: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ddqn: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
