"""ε per actor among W workers (ddqn.dqn.exploration): the per-worker anneal, a global anneal over the server's
update count, Ape-X's ladder, and both; the simulator's workers follow the server's count, not their own."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from ddqn.config import make_config
from ddqn.dqn.exploration import Exploration, exploration
from ddqn.dqn.qlearning import LinearSchedule
from ddqn.errors import ConfigError
from ddqn.sim.run import SimOptions, Simulation
from ddqn.sim.timing import FIXED_SERVICE, FixedCycle


def test_the_per_worker_anneal_is_todays_schedule_and_ignores_the_run() -> None:
    e, linear = Exploration("worker", 1.0, 0.1, 1000), LinearSchedule(1.0, 0.1, 1000)
    assert [e(t, 10**9) for t in (0, 500, 1000, 5000)] == [linear(t) for t in (0, 500, 1000, 5000)]


def test_the_global_anneal_follows_the_runs_steps_only() -> None:
    e = Exploration("global", 1.0, 0.1, 1000, worker=3, workers=4)
    assert e(10**9, 0) == 1.0 and e(0, 500) == pytest.approx(0.55) and e(0, 2000) == pytest.approx(0.1)


def test_the_ladder_is_ape_xs() -> None:
    rungs = [Exploration("ladder", 1.0, 0.1, 1000, i, 8)(0, 0) for i in range(8)]
    assert rungs[0] == pytest.approx(0.4) and rungs[-1] == pytest.approx(0.4 ** 8)
    assert rungs == sorted(rungs, reverse=True)
    assert rungs[3] == pytest.approx(0.4 ** (1 + 7 * 3 / 7))
    assert Exploration("ladder", 1.0, 0.1, 1000, 0, 1)(0, 0) == 0.4  # one worker: the most exploring rung


def test_the_global_ladder_anneals_each_worker_to_its_rung() -> None:
    last = Exploration("global-ladder", 1.0, 0.1, 1000, 7, 8)
    assert last(0, 0) == 1.0 and last(0, 10**6) == pytest.approx(0.4 ** 8)


def test_bad_schedules_are_one_line_errors() -> None:
    for key, value, why in (("eps_schedule", "apex", "eps_schedule: must be 'worker', 'global'"),
                            ("eps_ladder_base", 0.0, "eps_ladder_base: must be in (0, 1]"),
                            ("eps_ladder_alpha", -1.0, "eps_ladder_alpha: must be >= 0")):
        with pytest.raises(ConfigError, match=re.escape(why)):
            make_config({key: value}, "test")


@pytest.mark.parametrize("schedule", ["worker", "global"])
def test_simulated_workers_anneal_over_their_own_steps_or_the_servers_count(tiny_net_file: Path, tmp_path: Path,
                                                                        schedule: str) -> None:
    """Four simulated workers: with ``global`` each one's ε is where the server's update count (× train_every ×
    push_every) puts it, four times further along than its own steps would; with ``worker``, its own steps."""
    cfg = make_config({"board_size": 6, "starve_steps": 30, "net": str(tiny_net_file), "replay_capacity": 400,
                       "replay_warmup": 60, "eps_decay_steps": 2000, "eps_schedule": schedule, "eval_every": 10**6,
                       "eval_episodes": 1, "log_every": 50, "train_every": 2, "seed": 3}, "test")
    sim = Simulation(cfg, tmp_path, FIXED_SERVICE, SimOptions(4, updates=200, fixed=FixedCycle(warmup_s=0.0)))
    sim.run()
    for w in sim.workers:
        want = exploration(cfg, w.partition, 4)
        own = w.loop.env_steps
        eps = w.loop.current_epsilon
        if schedule == "worker":
            assert eps == want(own, 0)
        else:
            assert w.loop.run_steps >= 2 * (sim.store.version - 4)  # the last ACK's count, each update 2 env steps
            assert eps == want(0, w.loop.run_steps) < want(own, 0)  # further along than its own steps
