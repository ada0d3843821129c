"""bench-atari's learning part on the real Spark job, ALE and Caffe with tiny budgets: one run per seed, each judged
on its own seed's games, finished runs reused, earlier seeds kept, and the REPORT's section over the seeds."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ddqn.bench.report import learning
from ddqn.bench.runs import CONFIRM_SEED
from ddqn.config import load_config, save_config
from ddqn.distributed.cluster import spark_submit_env

TINY = ["replay_warmup=500", "replay_capacity=4000", "eval_episodes=2", "max_episode_steps=300", "log_every=100"]


@pytest.mark.timeout(900)
def test_bench_atari_runs_each_seed_reuses_finished_runs_and_keeps_earlier_seeds(tmp_path: Path) -> None:
    config = tmp_path / "tiny_breakout.yaml"
    save_config(load_config("breakout", TINY), config)
    out = tmp_path / "results"
    common = ["--config", str(config), "--minutes", "0.25", "--every", "2000", "--final-episodes", "2",
              "--random-episodes", "8", "--ale-steps", "50", "--repeats", "1", "--out", str(out)]

    def atari(*seeds: str) -> str:
        res = subprocess.run([sys.executable, "-m", "ddqn.bench.atari", *common, "--seeds", *seeds],
                             capture_output=True, text=True, timeout=400,
                             env={**os.environ, **spark_submit_env(sys.executable)})
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
        return res.stdout

    first = atari("0", "1")
    assert "reusing" not in first and "goal: >= 5x random on fresh games, every seed: " in first
    learn = json.loads((out / "atari.json").read_text())["learning"]
    assert list(learn["seeds"]) == ["0", "1"] and learn["over_seeds"]["seeds"] == 2
    for seed, x in learn["seeds"].items():  # each run trained and judged with its own seed
        run = out / "runs" / x["run"]
        assert x["run"] == f"atari-tiny_breakout-s{seed}-0.25min" and load_config(str(run / "config.yaml")).seed == int(seed)
        assert x["fresh_seed"] == CONFIRM_SEED + int(seed) and x["best_reevaluated"]["episodes"] == 2
        assert x["curve"] and x["best"] in x["curve"] and x["ratio_to_random"] >= 0
    assert learn["over_seeds"]["met"] == all(x["reached"] for x in learn["seeds"].values())
    assert (out / "atari.png").stat().st_size > 1000
    gif = learn["gif"]  # the seed whose fresh games scored highest, its best snapshot, one game
    best = max(learn["seeds"].values(), key=lambda x: x["best_reevaluated"]["mean"])
    assert gif["file"] == "tiny_breakout.gif" and gif["model"] == best["best"]["model"] and gif["score"] >= 0
    assert (out / "tiny_breakout.gif").read_bytes()[:6] == b"GIF89a"

    second = atari("1")  # seed 1 again: its finished run reused, seed 0 kept from the earlier result
    assert second.count("reusing") == 1
    again = json.loads((out / "atari.json").read_text())
    assert list(again["learning"]["seeds"]) == ["0", "1"] and again["learning"]["seeds"]["0"] == learn["seeds"]["0"]
    assert again["learning"]["seeds"]["1"]["curve"] == learn["seeds"]["1"]["curve"]  # same snapshots, same games

    text = "\n".join(learning.atari(again))
    assert f"Config values as recorded are today's `{config}`." in text and "| 1 | " in text
    assert "Over 2 seeds, mean [95 % t interval]" in text and "Goal: every seed's best snapshot ≥ 5× random" in text
    assert "![tiny_breakout.gif](tiny_breakout.gif)" in text


def test_seeds_of_another_budget_grid_config_or_cpu_are_refused_not_dropped(tmp_path: Path,
                                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """An earlier result's seeds (an hour's run each) made with another budget, grid, config values or CPU model stop
    the bench with one line naming what differs; ``--restart`` drops them, said in a line; the same are kept."""
    from ddqn.bench.atari import grid, kept_seeds
    from ddqn.bench.common import machine
    from ddqn.config import config_values

    learning = {"minutes": 60.0, "every": 50_000, "config_values": config_values("breakout", grid(50_000))}
    path = tmp_path / "atari.json"
    path.write_text(json.dumps({"machine": machine(), "learning": {**learning, "seeds": {"0": {}, "1": {}}}}))
    assert kept_seeds(path, learning) == {"0": {}, "1": {}}
    for change, why in (({"minutes": 30.0}, "minutes 60.0 ≠ 30.0"), ({"every": 10_000}, "every 50000 ≠ 10000"),
                        ({"config_values": config_values("breakout", [*grid(50_000), "gamma=0.5"])},
                         r"other values \(gamma 0.99 ≠ 0.5\)")):
        with pytest.raises(SystemExit, match=f"atari.json: its seeds 0, 1, made with {why}: move it aside to "
                                             "keep it, or --restart"):
            kept_seeds(path, {**learning, **change})
        assert kept_seeds(path, {**learning, **change}, restart=True) == {}
        out = capsys.readouterr().out
        assert "atari.json: its seeds 0, 1, made with " in out and out.endswith(": not kept (--restart)\n"), out
    path.write_text(json.dumps({"machine": {**machine(), "model": -1},
                                "learning": {**learning, "seeds": {"0": {}}}}))
    with pytest.raises(SystemExit, match=r"its seeds 0, made with another CPU \("):
        kept_seeds(path, learning)



def test_a_speeds_only_run_keeps_the_learning_part_with_its_own_machine(tmp_path: Path) -> None:
    """`bench-atari --no-learning` measures the speeds again and keeps the recorded learning part (hours of runs)
    with the machine and date it was measured on, which the report names."""
    from ddqn.bench import atari

    recorded = json.loads((Path(__file__).resolve().parents[1] / "results" / "atari.json").read_text())
    (tmp_path / "atari.json").write_text(json.dumps(recorded))
    atari.main(["--no-learning", "--ale-steps", "50", "--repeats", "1", "--out", str(tmp_path)])
    now = json.loads((tmp_path / "atari.json").read_text())
    assert now["machine"]["date"] != recorded["machine"]["date"]  # the speeds are this run's
    assert now["learning"] == {**recorded["learning"], "machine": recorded["machine"]}
    text = "\n".join(learning.atari(now))
    assert f"Learning (measured {recorded['machine']['date']} on " in text and "before the speeds above)" in text
    assert "Learning (measured" not in "\n".join(learning.atari(recorded))  # measured with its speeds: not said
