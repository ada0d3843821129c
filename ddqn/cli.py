"""The ``ddqn`` command. User errors print one line ``ddqn: error: …`` and exit 2, never a traceback.

Ctrl-C or SIGTERM sets a stop flag (:class:`ddqn.stop.StopFlag`, installed by :func:`main` before anything
heavy is imported); training, evaluation and play stop at their next step boundary, finish cleanly (training:
a final snapshot) and exit 130. A second signal exits at once (one within 1 s of the first is the same stop).
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

from ddqn.errors import DDQNError, run_command
from ddqn.stop import StopFlag, Stoppable, sleep_unless

JOB_STOP_S = 120.0  # after Ctrl-C, how long `ddqn train --mode distributed` waits for spark-submit to end


def _net_info(args: argparse.Namespace, stop: Stoppable) -> None:
    """Validate a network (and optionally a solver) prototxt and print its flat parameter layout."""
    from ddqn.net.netspec import load_netspec  # noqa: PLC0415 - keep `ddqn --help` fast
    from ddqn.solvers.flat import load_solver_spec  # noqa: PLC0415

    spec = load_netspec(args.net, args.actions)
    print(f"{spec.source}: net '{spec.name}', state {spec.state_shape}, batch {spec.batch_size}, "
          f"{spec.num_actions} actions, {spec.num_params:,} parameters")
    width = max(8, *(len(p.layer) for p in spec.params))
    for p in spec.params:
        print(f"  {p.layer:>{width}s}[{p.index}] {str(p.shape):>18s} offset {p.offset:>9,d} "
              f"lr_mult {p.lr_mult:g} decay_mult {p.decay_mult:g}")
    if args.solver:
        s = load_solver_spec(args.solver)
        print(f"{s.source}: {s.type}, base_lr {s.base_lr:g}, lr_policy {s.lr_policy}")


def _check_weights(weights: Path) -> None:
    """A missing weights file is one error line (before any config is looked for)."""
    if not weights.exists():
        raise DDQNError(f"{weights}: cannot read weights file (no such file)")
    if not weights.is_file():
        raise DDQNError(f"{weights}: cannot read weights file (not a file)")


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it, else absolute."""
    try:
        return str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def run_config(weights: Path) -> Path:
    """The ``config.yaml`` a weights file was trained with: beside it, else in its run directory (the parent of
    ``<run>/snapshots/``). Prints which one to stderr; a user error when there is none."""
    here = weights.resolve().parent
    for place, where in ((here, "beside the weights"), (here.parent, "the run directory of the weights")):
        path = place / "config.yaml"
        if path.is_file():
            print(f"config: {_shown(path)} ({where})", file=sys.stderr, flush=True)
            return path
    raise DDQNError(f"{weights}: no config.yaml beside it or in its run directory; "
                    "pass --config (the config it was trained with)")


def _load_agent(args: argparse.Namespace):
    """(config, Q-network with the weights of ``--weights``) for eval/play. Without ``--config``, the config is the
    ``config.yaml`` of the run the weights belong to (:func:`run_config`)."""
    from ddqn.config import load_config  # noqa: PLC0415
    from ddqn.game import game_actions  # noqa: PLC0415
    from ddqn.net.netspec import load_netspec  # noqa: PLC0415
    from ddqn.net.qnet import QNetwork  # noqa: PLC0415
    from ddqn.net.snapshot import load_caffemodel  # noqa: PLC0415

    weights = Path(args.weights)
    _check_weights(weights)
    config = args.config or str(run_config(weights))
    cfg = load_config(config, args.set)
    spec = load_netspec(cfg.path("net"), game_actions(cfg))
    q = QNetwork(spec)
    q.set_params(load_caffemodel(weights, spec))
    return cfg, q


def _train(args: argparse.Namespace, stop: Stoppable) -> int | None:
    """Train an agent; print where the snapshot and metrics went. Distributed: the exit code of the Spark job."""
    if args.mode == "distributed":
        return _train_distributed(args, stop)
    if args.workers is not None:
        raise DDQNError("--workers is for --mode distributed (serial training is one process)")
    from ddqn.config import load_config  # noqa: PLC0415
    from ddqn.dqn.evaluation import policy_name  # noqa: PLC0415
    from ddqn.dqn.serial import STATE_FILE, SerialTrainer  # noqa: PLC0415

    out = Path(args.resume or args.out or "runs/serial")
    config = args.config
    if args.resume:
        if not (out / STATE_FILE).exists():
            raise DDQNError(f"{out}: nothing to resume (no {STATE_FILE})")
        config = config or str(out / "config.yaml")
    cfg = load_config(config, args.set)
    trainer = SerialTrainer(cfg, out, resume=bool(args.resume), progress=not args.no_progress)
    summary = trainer.train(steps=args.steps, minutes=args.minutes, stop=stop)  # Interrupted once stopped
    print(f"{policy_name(cfg)} score mean {summary['greedy_score_mean']:.2f} "
          f"(median {summary['greedy_score_median']:.1f}, "
          f"max {summary['greedy_score_max']}) vs random policy {summary['random_score_mean']:.2f} "
          f"after {summary['env_steps']} env steps, {summary['train_minutes']:.1f} min")
    print(f"snapshot: {summary['model']}\nmetrics:  {out}/train.csv, {out}/eval.csv, {out}/tb")
    return None


def spark_job_file() -> Path:
    """``spark_jobs/train.py`` of the repository ddqn runs from (an editable install)."""
    import ddqn  # noqa: PLC0415

    job = Path(ddqn.__file__).resolve().parents[1] / "spark_jobs" / "train.py"
    if not job.is_file():
        raise DDQNError(f"{job}: not found: --mode distributed runs the repository's spark_jobs/train.py "
                        "(install ddqn from its repository with pip install -e .)")
    return job


def distributed_command(args: argparse.Namespace) -> list[str]:
    """The ``spark-submit spark_jobs/train.py …`` command line equivalent to ``ddqn train --mode distributed``:
    ``--resume DIR`` becomes ``--out DIR --resume``, ``--no-progress`` becomes ``--quiet``."""
    from ddqn.distributed.cluster import spark_submit_path  # noqa: PLC0415 - pyspark is imported on demand

    try:
        submit = spark_submit_path()
    except ImportError as exc:
        raise DDQNError(f"--mode distributed needs pyspark ({exc})") from exc
    if not submit.is_file():
        raise DDQNError(f"{submit}: not found (pyspark installed without its bin/?)")
    cmd = [str(submit), str(spark_job_file())]
    if args.config:
        cmd += ["--config", args.config]
    for item in args.set:
        cmd += ["--set", item]
    if args.workers is not None:
        cmd += ["--workers", str(args.workers)]
    if args.minutes is not None:
        cmd += ["--minutes", str(args.minutes)]
    if args.steps is not None:
        cmd += ["--steps", str(args.steps)]
    cmd += ["--out", args.resume or args.out or "runs/distributed"]
    if args.resume:
        cmd.append("--resume")
    if args.no_progress:
        cmd.append("--quiet")
    return cmd


def _train_distributed(args: argparse.Namespace, stop: Stoppable) -> int:
    """Run the Spark job in the foreground and return its exit code.

    Ctrl-C reaches the job directly (same foreground process group), so this process only waits on while the job
    stops by itself (``subprocess.run`` would kill the job 0.25 s after the interrupt) — up to ``JOB_STOP_S``
    seconds, then it terminates the job, and kills it 10 s later.
    """
    cmd = distributed_command(args)
    from ddqn.distributed.cluster import spark_submit_env  # noqa: PLC0415

    env = {**spark_submit_env(sys.executable), **os.environ}  # what the user set wins
    print("running: spark-submit " + " ".join(cmd[1:]), file=sys.stderr, flush=True)
    try:
        proc = subprocess.Popen(cmd, env=env)
    except OSError as exc:
        raise DDQNError(f"{cmd[0]}: cannot run ({exc.strerror})") from exc
    while proc.poll() is None and not sleep_unless(stop, 1.0):
        pass  # the job runs for its budget (--minutes/--steps)
    if proc.poll() is None:  # stopped
        if getattr(stop, "signum", signal.SIGINT) != signal.SIGINT:
            proc.send_signal(signal.SIGINT)  # as a terminal's Ctrl-C, which reaches the job by itself, would
        code = _stop_job(proc)
    else:
        code = proc.returncode
    return code if code >= 0 else 128 - code  # killed by signal N: 128 + N, as a shell reports it


def _stop_job(proc: subprocess.Popen) -> int:
    """Wait up to ``JOB_STOP_S`` for a stopping job; then SIGTERM, and SIGKILL 10 s later. Its exit code."""
    try:
        return proc.wait(timeout=JOB_STOP_S)
    except subprocess.TimeoutExpired:
        proc.terminate()
    try:
        return proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
    try:
        return proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        raise DDQNError(f"spark-submit (pid {proc.pid}) did not end after SIGKILL") from None


def _eval(args: argparse.Namespace, stop: Stoppable) -> None:
    """Greedy score statistics of a weights file, beside the random policy's."""
    import numpy as np  # noqa: PLC0415 - keep the time before main() installs its signal handlers short

    from ddqn.dqn.evaluation import evaluate_greedy, policy_name, random_score  # noqa: PLC0415

    cfg, q = _load_agent(args)
    scores = evaluate_greedy(q, cfg, args.episodes, args.seed, stop=stop)  # Interrupted once stopped
    rand = random_score(cfg, q.spec.state_shape[1], args.episodes, args.seed, stop=stop)
    game = cfg.game if cfg.game != "snake" else f"{cfg.board_size}x{cfg.board_size} Snake"
    print(f"{policy_name(cfg)}: mean {scores.mean():.2f}  median {np.median(scores):.1f}  max {scores.max()}  "
          f"over {args.episodes} episodes on {game}")
    print(f"random: mean {rand:.2f}")


def _play(args: argparse.Namespace, stop: Stoppable) -> None:
    """A greedy episode as a GIF, or animated in the terminal."""
    from ddqn.dqn.play import gif_fps, greedy_episode, play_terminal, write_gif  # noqa: PLC0415

    cfg, q = _load_agent(args)
    if args.gif:
        shots, score = greedy_episode(q, cfg, args.seed, stop=stop)  # Interrupted once stopped
        print(f"score {score}, {len(shots)} frames: {write_gif(shots, args.gif, gif_fps(cfg))}")
    else:
        print(f"score {play_terminal(q, cfg, args.seed, stop=stop)}")


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

    p = sub.add_parser("train", help="train an agent (serial, or distributed on Spark)")
    p.add_argument("--mode", choices=["serial", "distributed"], default="serial",
                   help="serial: the slides' serial algorithm (default); distributed: the Spark job "
                        "spark_jobs/train.py, run by pyspark's spark-submit")
    _config_args(p)
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=positive(float), help="wall-clock budget")
    budget.add_argument("--steps", type=positive(int), help="learning env steps (after the random warm-up)")
    p.add_argument("--out", help="output directory (default runs/serial, or runs/distributed)")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last snapshot")
    p.add_argument("--workers", type=positive(int), help="worker tasks (--mode distributed only; default: config)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_train)

    for name, func, text in (("eval", _eval, "evaluation score of a weights file vs the random policy"),
                             ("play", _play, "watch a greedy episode (GIF or terminal)")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--weights", required=True, help="a .caffemodel written by ddqn train (its run's "
                       "config.yaml is used unless --config is given)")
        _config_args(p)
        p.add_argument("--seed", type=int, default=12345)
        if name == "eval":
            p.add_argument("--episodes", type=positive(int), default=100)
        else:
            p.add_argument("--gif", help="write an animated GIF here instead of playing in the terminal")
        p.set_defaults(func=func)

    # listed here for `ddqn --help`; main() hands its arguments to ddqn.sim.cli whole
    sub.add_parser("simulate", add_help=False, help="simulate W asynchronous workers and one parameter server "
                   "with real Caffe gradients (`ddqn simulate --help`; the same as python -m ddqn.sim)")
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


def _stop_message(args: argparse.Namespace) -> str:
    """The line the first Ctrl-C (or SIGTERM) prints, for this command."""
    if args.command != "train":
        return "interrupted: stopping"
    if args.mode == "distributed":
        return "interrupted: the Spark job stops its workers and writes a final snapshot"
    return "interrupted: finishing this step, then a final snapshot"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ddqn`` console script."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["simulate"]:
        from ddqn.sim.cli import main as simulate  # noqa: PLC0415 - keep `ddqn --help` fast

        return run_command("ddqn simulate", lambda: simulate(argv[1:], prog="ddqn simulate"))
    args = build_parser().parse_args(argv)
    codes: list[int] = []  # a command may return an exit code (the Spark job's)
    with StopFlag(_stop_message(args)) as stop:
        status = run_command("ddqn", lambda: codes.append(args.func(args, stop) or 0))
    return status or (codes[0] if codes else 0)


if __name__ == "__main__":
    sys.exit(main())
