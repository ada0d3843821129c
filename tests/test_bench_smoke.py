"""Benchmarks are not tests: here each runs once in a tiny smoke mode, to prove it still works end to end.

Only the shape of what they write is checked (JSON with the headline fields, the figure); never a speed.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SMOKE = {
    "caffe_speed": ["--repeats", "2", "--members", "small"],
    "env_speed": ["--seconds", "0.2"],
    "replay_speed": ["--frames", "2000", "--seconds", "0.2", "--steps", "100"],
    "ps_speed": ["--repeats", "5", "--seconds", "0.5", "--clients", "1", "--vectors", "small", "1M"],
    "worker_speed": ["--members", "small", "paper", "--repeats", "1"],
    "capacity": ["--clients", "1", "2", "--seconds", "0.5"],
}
FIELDS = {"caffe_speed": "members", "env_speed": "steps_per_s", "replay_speed": "identical_batches",
          "ps_speed": "max_ratio", "worker_speed": "fits", "capacity": "workers_worth"}


def bench(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", f"ddqn.bench.{name}", *args], capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("name", sorted(SMOKE))
def test_benchmark_smoke(name: str, tmp_path: Path) -> None:
    res = bench(name, *SMOKE[name], "--out", str(tmp_path))
    assert res.returncode == 0, res.stderr[-2000:]
    data = json.loads((tmp_path / f"{name}.json").read_text())
    assert data["name"] == name and data["machine"]["cores"] >= 1 and FIELDS[name] in data
    if name in ("worker_speed", "capacity"):
        assert (tmp_path / f"{name}.png").stat().st_size > 1000


def test_gifs_and_report(tmp_path: Path) -> None:
    run = tmp_path / "run"
    res = subprocess.run([sys.executable, "-m", "ddqn.cli", "train", "--config", "small", "--steps", "50", "--out",
                          str(run), "--set", "replay_warmup=200", "--set", "eval_episodes=3", "--no-progress"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    res = bench("gifs", "--run", str(run), "--config", "small", "--out", str(tmp_path))
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "snakes.gif").stat().st_size > 0
    assert bench("caffe_speed", "--repeats", "1", "--members", "small", "--out", str(tmp_path)).returncode == 0
    res = bench("report", "--results", str(tmp_path))
    assert res.returncode == 0, res.stderr
    report = (tmp_path / "REPORT.md").read_text()
    assert "## Q-network speed on real Caffe" in report and "## Example game play" in report
    assert "make bench-scaling" in report  # listed as not yet measured
