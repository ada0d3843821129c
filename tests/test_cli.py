"""The ``ddqn`` command: eval/play find the config a snapshot was trained with; ``train --mode distributed``."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import pytest

from ddqn.cli import build_parser, distributed_command, spark_job_file

QUICK = ["--set", "replay_warmup=300", "--set", "eval_episodes=5", "--set", "log_every=100",
         "--set", "eval_every=100000", "--no-progress"]


def ddqn(*args: str, cwd: Path | None = None, env: dict | None = None,
         timeout: float = 240) -> subprocess.CompletedProcess:
    """Run the ``ddqn`` command in a fresh interpreter."""
    return subprocess.run([sys.executable, "-m", "ddqn.cli", *args], check=False, capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=timeout)


def one_line_error(res: subprocess.CompletedProcess, *words: str) -> str:
    """Exit code 2 and exactly one ``ddqn: error:`` line on stderr holding ``words``; returns the line."""
    assert res.returncode == 2, (res.returncode, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ddqn: error:"), res.stderr
    assert "Traceback" not in res.stderr
    assert all(w in lines[0] for w in words), lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny serial run with the small config (6x6 board, 8x8-input net): (run directory, its snapshot)."""
    out = tmp_path_factory.mktemp("cli") / "run"
    res = ddqn("train", "--config", "small", *QUICK, "--steps", "50", "--out", str(out))
    assert res.returncode == 0, res.stderr
    state = json.loads((out / "trainer_state.json").read_text())
    weights = out / state["model"]
    assert weights.parent == out / "snapshots" and weights.suffix == ".caffemodel"
    return out, weights


def test_eval_uses_the_config_of_the_weights_run(small_run: tuple[Path, Path]) -> None:
    out, weights = small_run
    res = ddqn("eval", "--weights", str(weights), "--episodes", "5")
    assert res.returncode == 0, res.stderr
    assert "on 6x6" in res.stdout, res.stdout  # the default config would be 10x10 (and the paper's net)
    assert "random: mean" in res.stdout
    config_lines = [line for line in res.stderr.splitlines() if line.startswith("config:")]
    assert len(config_lines) == 1, res.stderr
    assert config_lines[0].startswith(f"config: {(out / 'config.yaml').resolve()} "), config_lines[0]

    # relative weights path from inside the snapshots directory finds the run's config too
    res = ddqn("eval", "--weights", weights.name, "--episodes", "2", cwd=weights.parent)
    assert res.returncode == 0 and "on 6x6" in res.stdout, res.stderr
    assert f"config: {(out / 'config.yaml').resolve()} (the run directory" in res.stderr, res.stderr

    # --set applies over the found config; an explicit --config always wins
    res = ddqn("eval", "--weights", str(weights), "--episodes", "2", "--set", "board_size=7")
    assert res.returncode == 0 and "on 7x7" in res.stdout, res.stderr
    res = ddqn("eval", "--config", "small", "--set", "board_size=8", "--weights", str(weights), "--episodes", "2")
    assert res.returncode == 0 and "on 8x8" in res.stdout, res.stderr
    assert "config:" not in res.stderr
    one_line_error(ddqn("eval", "--config", "paper", "--weights", str(weights), "--episodes", "2"),
                   "another architecture")


def test_config_beside_the_weights_is_preferred(small_run: tuple[Path, Path], tmp_path: Path) -> None:
    _, weights = small_run
    lone = tmp_path / "w.caffemodel"
    shutil.copy(weights, lone)
    (tmp_path / "config.yaml").write_text("board_size: 5\nnet: prototxt/snake_small.prototxt\n")
    res = ddqn("eval", "--weights", str(lone), "--episodes", "2")
    assert res.returncode == 0 and "on 5x5" in res.stdout, res.stderr
    assert "beside the weights" in res.stderr


def test_weights_without_a_config_are_a_user_error(small_run: tuple[Path, Path], tmp_path: Path) -> None:
    _, weights = small_run
    empty = tmp_path / "empty"
    empty.mkdir()
    lone = empty / "lone.caffemodel"
    shutil.copy(weights, lone)
    for command in ("eval", "play"):
        one_line_error(ddqn(command, "--weights", str(lone)), str(lone), "--config")
    # with --config the same file works
    res = ddqn("eval", "--config", "small", "--weights", str(lone), "--episodes", "2")
    assert res.returncode == 0 and "on 6x6" in res.stdout, res.stderr


def test_missing_weights_file_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "none.caffemodel"
    one_line_error(ddqn("eval", "--weights", str(missing)), str(missing), "no such file")
    one_line_error(ddqn("play", "--config", "small", "--weights", str(missing)), str(missing), "no such file")
    one_line_error(ddqn("eval", "--weights", str(tmp_path)), "not a file")


def test_play_gif_uses_the_config_of_the_weights_run(small_run: tuple[Path, Path], tmp_path: Path) -> None:
    _, weights = small_run
    gif = tmp_path / "out.gif"
    res = ddqn("play", "--weights", str(weights), "--gif", str(gif))
    assert res.returncode == 0, res.stderr
    assert "config.yaml" in res.stderr and str(gif) in res.stdout
    frames = iio.imread(gif)
    assert frames.ndim == 4 and len(frames) >= 2


def test_distributed_command_line(tmp_path: Path) -> None:
    """The spark-submit command ``ddqn train --mode distributed`` runs (built, not run)."""
    parse = build_parser().parse_args
    cmd = distributed_command(parse(["train", "--mode", "distributed", "--resume", str(tmp_path), "--steps", "10",
                                     "--set", "gamma=0.9", "--config", "small", "--workers", "3", "--no-progress"]))
    assert cmd[0].endswith("/bin/spark-submit") and Path(cmd[0]).is_file()
    assert cmd[1] == str(spark_job_file()) and cmd[1].endswith("spark_jobs/train.py")
    assert cmd[2:] == ["--config", "small", "--set", "gamma=0.9", "--workers", "3", "--steps", "10",
                       "--out", str(tmp_path), "--resume", "--quiet"]
    cmd = distributed_command(parse(["train", "--mode", "distributed", "--minutes", "0.5"]))
    assert cmd[2:] == ["--minutes", "0.5", "--out", "runs/distributed"]


def test_workers_is_for_distributed_only(tmp_path: Path) -> None:
    one_line_error(ddqn("train", "--config", "small", "--workers", "2", "--steps", "10", "--out", str(tmp_path)),
                   "--workers", "distributed")


def test_train_distributed_runs_the_spark_job(tmp_path: Path) -> None:
    out = tmp_path / "dist"
    env = {k: v for k, v in os.environ.items()  # ddqn sets these itself
           if k not in ("PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON", "SPARK_LOCAL_IP")}
    res = ddqn("train", "--mode", "distributed", "--config", "small", "--steps", "300", "--workers", "2",
               "--out", str(out), "--set", "replay_warmup=500", "--set", "eval_episodes=5", "--no-progress",
               env=env, timeout=400)
    assert res.returncode == 0, res.stdout + res.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["workers"]) == 2 and summary["env_steps"] >= 300, summary
    assert "server updates" in res.stdout and "snapshot:" in res.stdout
    assert (out / "config.yaml").is_file() and list((out / "snapshots").glob("server_iter_*.caffemodel"))

    # its snapshot evaluates without --config too
    res = ddqn("eval", "--weights", summary["model"], "--episodes", "2")
    assert res.returncode == 0 and "on 6x6" in res.stdout, res.stderr

    # the job's own user errors come back as its exit code
    res = ddqn("train", "--mode", "distributed", "--resume", str(tmp_path / "nothing"), "--steps", "10",
               env=env, timeout=400)
    assert res.returncode == 2, res.stdout + res.stderr
