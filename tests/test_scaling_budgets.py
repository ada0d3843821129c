"""bench-scaling's shorter budgets read from the same runs (``--budgets``), its goals (``--goal``) and their report:
a 120-minute comparison also answers the 60-minute one, without training anything twice."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from ddqn.bench import ps_speed, report, scale_out, scale_projection, scaling
from ddqn.bench.common import SHOWN, cpu_tag, machine, made_elsewhere
from ddqn.bench.report import learning, still_to_run
from ddqn.bench.runs import CONFIRM_SEED, grid_overrides, other_games, run_parts
from ddqn.bench.stats import format_goal, reach, within_budget
from ddqn.config import config_values


def curve_of(points: list[tuple[float, float]]) -> list[dict]:
    """Snapshot curve rows (minutes, env steps, updates, greedy mean, model) from (minutes, greedy mean) pairs."""
    return [{"minutes": m, "env_steps": 5000 * (i + 1), "updates": 2500 * (i + 1), "greedy_mean": g,
             "model": f"snapshots/server_iter_{2500 * (i + 1)}.caffemodel"} for i, (m, g) in enumerate(points)]


RISING = curve_of([(10.0 * (i + 1), 2.0 * (i + 1)) for i in range(12)])  # 10 … 120 min, score 2 … 24


def fresh(curve: list[dict], budget: float, shift: float = -0.5) -> dict:
    """A made-up fresh-game confirmation of the best snapshot up to ``budget``."""
    best = max(within_budget(curve, budget), key=lambda r: r["greedy_mean"])
    return {"model": best["model"], "episodes": 500, "greedy_mean": best["greedy_mean"] + shift, "greedy_se": 0.2,
            "minutes": best["minutes"], "curve_mean": best["greedy_mean"]}


def test_a_cut_curve_keeps_what_the_budget_had_and_reaches_at_the_same_row() -> None:
    cut = within_budget(RISING, 60.0)
    assert [r["minutes"] for r in cut] == [10.0, 20.0, 30.0, 40.0, 50.0, 60.0]
    assert within_budget(RISING, 59.99) == cut[:-1] and within_budget(RISING, 5.0) == []
    for level in (4.0, 6.0, 8.0):  # reached by 60 min: the same evaluation in the cut curve and in the whole one
        assert reach(cut, level) == reach(RISING, level) is not None
    assert reach(cut, 10.0) is None and reach(RISING, 10.0)["minutes"] == 70.0  # not reached in 60 min: None


def test_a_kept_curve_must_have_played_its_own_seeds_games() -> None:
    """Runs are named ``<mode>`` (seed 0) or ``<mode> s<seed>``; a confirmation recorded without its games' seed
    played the config's (seed 0 for tuned), which is right only for a seed-0 run."""
    assert run_parts("async-2 s3") == ("async-2", 3) and run_parts("sync-2") == ("sync-2", 0)
    assert scaling.mode_of("serial s1") == "serial" and scaling.run_name("serial", 1) == "serial s1"
    confirmed = {"async-2": {"greedy_mean": 1.0}, "async-2 s3": {"greedy_mean": 1.0},
                 "serial s1": {"seed": CONFIRM_SEED + 1}, "serial s2": {"seed": CONFIRM_SEED}, "sync-2 s4": None}
    assert other_games("tuned", confirmed) == ["async-2 s3", "serial s2"]
    assert scaling.run_config("tuned", 3).seed == 3


def test_goals_need_every_seed_and_say_worst_and_mean() -> None:
    confirmed = {"async-2": {"greedy_mean": 16.0}, "async-2 s1": {"greedy_mean": 14.9}, "serial": None}
    got = scaling.goal_check(confirmed, 15.0)
    assert got["async-2"] == {"score": 15.0, "met": False, "worst": 14.9, "mean": pytest.approx(15.45), "seeds": 2}
    assert got["serial"]["met"] is False and got["serial"]["worst"] == 0.0  # no snapshot: not reached
    assert scaling.goal_check({"async-2": {"greedy_mean": 15.0}}, 15.0)["async-2"]["met"] is True
    assert scaling.parse_goals(["60=15", "120=20.5"]) == {"60": 15.0, "120": 20.5}
    with pytest.raises(SystemExit, match="--goal 60: expected MINUTES=SCORE"):
        scaling.parse_goals(["60"])


def test_a_goal_of_a_comparison_run_in_parts_is_open_until_every_planned_seed_has_run() -> None:
    """With ``--plan`` a goal is met only when every planned seed has run and scored it, missed as soon as one did
    not, and open in between, saying which seeds are still to run."""
    plan = scaling.parse_plan(["async-2:3", "async-2:0", "async-2:1", "serial:0"])
    assert plan == {"async-2": [3, 0, 1], "serial": [0]}
    one = scaling.goal_check({"async-2 s3": {"greedy_mean": 16.1}}, 15.0, plan)
    assert one["async-2"] == {"score": 15.0, "met": None, "worst": 16.1, "mean": 16.1, "seeds": 1, "to_run": [0, 1]}
    assert one["serial"] == {"score": 15.0, "met": None, "worst": None, "mean": None, "seeds": 0, "to_run": [0]}
    assert format_goal(one["async-2"]) == "open (worst seed 16.10, mean 16.10 over 1 seed; seeds 0, 1 still to run)"
    assert format_goal(one["serial"]) == "open (no seed run yet; seed 0 still to run)"
    low = scaling.goal_check({"async-2 s3": {"greedy_mean": 14.0}}, 15.0, plan)["async-2"]
    assert low["met"] is False and format_goal(low).startswith("missed (worst seed 14.00")  # one seed short: final
    every = {"async-2": {"greedy_mean": 15.2}, "async-2 s1": {"greedy_mean": 17.0}, "async-2 s3": {"greedy_mean": 16.1}}
    assert scaling.goal_check(every, 15.0, plan)["async-2"]["met"] is True
    for bad in ("async-2", "async-9:1", "serial:x"):
        with pytest.raises(SystemExit, match=f"--plan {bad}: expected MODE:SEED"):
            scaling.parse_plan([bad])


def test_summarize_reads_the_60_minute_figures_from_120_minute_runs(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """--summarize (no training) with budgets kept in the result: per budget, each run's reach, its best snapshot up
    to then, the interval over seeds and the goals, printed, written and rendered in the report."""
    lagging = curve_of([(10.0 * (i + 1), 1.5 * (i + 1)) for i in range(12)])
    curves = {"async-2": RISING, "async-2 s1": lagging}
    data = {"config": "tuned", "config_values": {}, "budget_minutes": 120, "cores": 2, "every": 10000,
            "machine": {"date": "D", "cores": 2, "cpu": "X"}, "runs_machine": {"date": "D", "cores": 2, "cpu": "X"},
            "levels": [5.0, 10.0, 15.0, 20.0], "curves": curves,
            "confirmed": {n: fresh(c, 120.0) for n, c in curves.items()},
            "budgets": {"60": {"confirmed": {n: fresh(c, 60.0) for n, c in curves.items()}}},
            "runs": {"async-2": {"trained": "2026-12-04 10:00:00 UTC"}, "async-2 s1": {}}}
    (tmp_path / "s120.json").write_text(json.dumps(data))
    scaling.main(["--summarize", "--result", "s120", "--out", str(tmp_path), "--goal", "60=15", "--goal", "120=20"])
    out = capsys.readouterr().out
    got = json.loads((tmp_path / "s120.json").read_text())
    part = got["budgets"]["60"]
    # trailing means of 5: 2, 4, … 12 gives 6 at 50 min and 8 at 60; 1.5, 3, … 9 gives 4.5 at 50 and 6 at 60
    assert part["reach"]["async-2"]["5.0"]["minutes"] == 50.0 and part["reach"]["async-2"]["10.0"] is None
    assert part["reach"]["async-2 s1"]["5.0"]["minutes"] == 60.0
    assert got["reach"]["async-2"]["10.0"]["minutes"] == 70.0  # the whole run reaches 10 after the 60-minute cut
    assert part["confirmed"]["async-2"]["greedy_mean"] == 11.5 and part["over_seeds"]["async-2"]["seeds"] == 2
    assert got["goals"]["60"]["async-2"]["met"] is False and got["goals"]["120"]["async-2"]["worst"] == 17.5
    assert "within 60 min:  async-2: best greedy mean 12.00 (11.50 ± 0.20 on 500 fresh games)" in out
    assert "goal: async-2 >= 15 within 60 min on fresh games, every seed: missed (worst seed 8.50" in out
    assert got["levels"] == [5.0, 10.0, 15.0, 20.0] and list(got["reach"]["async-2"]) == ["5.0", "10.0", "15.0", "20.0"]
    text = "\n".join(learning.scaling(got))
    assert "Within 60 minutes (the same runs, each curve cut at 60 min" in text
    assert "\nTraining ended: async-2 2026-12-04 10:00:00 UTC.\n" in text  # each run's own date, when it was recorded
    assert "| async-2 | 11.50 ± 0.20 (500) | 50.0 | – | – | – |" in text
    assert "- Goal: `async-2` ≥ 20 within 120 minutes on fresh games, every seed: **missed** (worst seed 17.50" in text
    # the curves' shape: trailing means at each quarter (fewer than 5 evaluations by 30 min) and the second half's gain
    assert "| run | at 30 min | at 60 min | at 90 min | at 120 min | gain, second half |" in text
    assert "| async-2 | – | 8.00 | 14.00 | 20.00 | +12.00 |" in text and "| async-2 s1 | – | 6.00 | 10.50 | 15.00 | +9.00 |" in text
    assert "| async-2 (2 seeds) | – | 7.00 [" in text
    # these confirmations record no games' seed: made before each run played its own seed's, so s1 played seed 0's
    assert "**Not so for async-2 s1**: recorded before each run played its own seed's games" in text
    got["confirmed"]["async-2 s1"]["seed"] = CONFIRM_SEED + 1
    assert "Not so" not in "\n".join(learning.scaling(got))
    # the same runs as the first two of a plan of four: the 120-minute goal, met by both so far, stays open
    scaling.main(["--summarize", "--result", "s120", "--out", str(tmp_path), "--goal", "60=15", "--goal", "120=15",
                  "--plan", "async-2:0", "async-2:1", "async-2:3", "serial:0"])
    assert "goal: async-2 >= 15 within 120 min on fresh games, every seed: open (worst seed 17.50, mean 20.50 over 2 " \
           "seeds; seed 3 still to run)" in capsys.readouterr().out
    got = json.loads((tmp_path / "s120.json").read_text())
    assert got["plan"] == {"async-2": [0, 1, 3], "serial": [0]} and got["goals"]["60"]["async-2"]["met"] is False
    text = "\n".join(learning.scaling(got))
    assert "- Goal: `async-2` ≥ 15 within 120 minutes on fresh games, every seed: **open** (worst seed 17.50" in text
    assert "- Goal: `serial` ≥ 15 within 60 minutes on fresh games, every seed: **open** (no seed run yet; seed 0" in text
    assert still_to_run(got) == ["async-2 seed 3", "serial seed 0"]  # listed under the REPORT's "Not yet measured"


def test_a_budget_outside_the_run_or_a_run_outside_the_plan_is_a_usage_error(tmp_path: Path,
                                                                            capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        scaling.main(["--minutes", "60", "--budgets", "60", "--out", str(tmp_path)])
    assert e.value.code == 2 and not list(tmp_path.iterdir())
    with pytest.raises(SystemExit) as e:
        scaling.main(["--modes", "async-2", "--seeds", "3", "5", "--plan", "async-2:3", "--out", str(tmp_path)])
    assert e.value.code == 2 and not list(tmp_path.iterdir())
    assert "--plan: async-2:5 not in it" in capsys.readouterr().err


def test_a_kept_result_of_another_cpu_or_config_is_refused_not_emptied(tmp_path: Path) -> None:
    """Hours of runs in a result are not dropped by the next run because it trains on another CPU model or with
    other config values: a one-line error before anything trains, the result untouched (``--restart`` drops it)."""
    values = config_values("tuned", grid_overrides(10000))
    here = {k: v for k, v in machine().items() if k != "date"}
    kept = {"config": "tuned", "budget_minutes": 120, "config_values": values, "runs_machine": here,
            "curves": {"async-2 s3": RISING}}
    assert scaling.kept_differences(kept, "tuned", 120, values) == []
    args = ["--config", "tuned", "--minutes", "120", "--every", "10000", "--modes", "async-2", "--seeds", "0",
            "--result", "s120", "--out", str(tmp_path)]
    path = tmp_path / "s120.json"
    for change, why in (({"runs_machine": {**here, "model": -1}}, r"another CPU \(model -1 ≠ \d+\)"),
                        ({"config_values": config_values("tuned", [*grid_overrides(10000), "gamma=0.5"])},
                         r"other values \(gamma 0.5 ≠ [\d.]+\)"),
                        ({"budget_minutes": 60}, r"budget 60 ≠ 120 min")):
        path.write_text(text := json.dumps({**kept, **change}))
        with pytest.raises(SystemExit, match=f"s120.json: its 1 run, made with {why}: move it aside to keep "
                                             "it, or --restart"):
            scaling.main(args)
        assert path.read_text() == text and not (tmp_path / "runs").exists()


def test_per_cpu_results_are_one_table_per_cpu_model_each_its_own_report_section(tmp_path: Path) -> None:
    """--per-cpu reads and writes this CPU model's table, <result>-<CPU>.json, and leaves another model's alone; the
    report renders each table as a section titled with its CPU and lists each one's runs still to train."""
    here = cpu_tag(machine())
    curves = {"async-2 s3": RISING}
    data = {"config": "tuned", "config_values": {}, "budget_minutes": 120, "cores": 2, "every": 10000,
            "machine": {"date": "D", "cores": 2, "cpu": "X"}, "runs_machine": {"date": "D", "cores": 2, "cpu": "X"},
            "levels": [5.0, 10.0, 15.0, 20.0], "curves": curves,
            "confirmed": {n: fresh(c, 120.0) for n, c in curves.items()}, "runs": {"async-2 s3": {}}}
    (tmp_path / f"scaling_120-{here}.json").write_text(json.dumps(data))
    args = ["--summarize", "--per-cpu", "--result", "scaling_120", "--out", str(tmp_path), "--goal", "120=20",
            "--plan", "async-2:3", "async-2:0"]
    scaling.main(args)
    got = json.loads((tmp_path / f"scaling_120-{here}.json").read_text())
    (tmp_path / "scaling_120-Other-1-2-Zen.json").write_text(other := json.dumps({**got, "goals": {}}))
    scaling.main(args)
    assert got["goals"]["120"]["async-2"]["to_run"] == [0] and got["png"] == f"scaling_120-{here}.png"
    assert (tmp_path / "scaling_120-Other-1-2-Zen.json").read_text() == other
    assert not (tmp_path / "scaling_120.json").exists()
    report.main(["--results", str(tmp_path)])
    text = (tmp_path / "REPORT.md").read_text()
    assert text.count("## Serial vs distributed in 60 and 120 minutes (`tuned`, issue 30's table), on ") == 2
    assert f"issue 30's table), on {here}\n" in text and "issue 30's table), on Other-1-2-Zen\n" in text
    assert f"issue 30's table), on {here}): runs of its plan still to train: async-2 seed 0" in text


@pytest.mark.parametrize("bench", ["scale_out", "scale_projection", "ps_speed"])
def test_benches_that_add_parts_refuse_a_kept_result_of_another_cpu_or_config_before_running(
        bench: str, tmp_path: Path) -> None:
    """bench-scale-out, bench-scale-projection and ps_speed's --parts add parts to a result file: one measured on
    another CPU model, or with values not recorded, is refused in one line naming what differs, before anything
    runs, and left as it was."""
    here = {k: v for k, v in machine().items() if k != "date"}
    values = config_values("small")
    if bench == "scale_out":
        main, args = scale_out.main, ["--validate", "--config", "small", "--out", str(tmp_path)]
        kept = {"configs": {"small": {"config": "small", "machine": {**here, "model": -1}, "config_values": values,
                                      "validation": {}, "projection": {}}}}
        why = r"config small's validation, projection, made with another CPU \(model -1 ≠ \d+\)"
    elif bench == "scale_projection":
        main, args = scale_projection.main, ["--screen", "--config", "small", "--out", str(tmp_path)]
        kept = {"machine": here, "screen": {}}  # its values not recorded
        why = "its screen, made with config values not recorded"
    else:  # the service rows again beside applies and loopback of a CPU not recorded
        main, args = ps_speed.main, ["--parts", "service", "--out", str(tmp_path)]
        kept = {"machine": {"cpu": "X"}, "applies": [], "loopback": {}, "service": []}
        why = "its applies, loopback, made with a CPU not recorded"
    path = tmp_path / f"{bench}.json"
    path.write_text(text := json.dumps(kept))
    with pytest.raises(SystemExit, match=f"{bench}.json: {why}: move it aside to keep it, "
                                         "or --restart"):
        main(args)
    assert path.read_text() == text and sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_a_refusal_names_a_few_differing_values_on_one_line() -> None:
    """Many differing config values are named up to common.SHOWN, then counted."""
    now = config_values("small")
    old = {**now, **{k: "x" for k in list(now)[:SHOWN + 3]}}
    why = made_elsewhere(old, {k: v for k, v in machine().items() if k != "date"}, now)
    assert len(why) == 1 and why[0].startswith("other values (") and why[0].endswith(" and 3 more)"), why
    assert why[0].count("≠") == SHOWN


def test_tuning_refuses_a_kept_file_run_another_way_and_restart_begins_it_anew(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """bench-tuning's rows run with other workers, --set or grid are not dropped unasked: a one-line error naming
    what differs; with --restart, none is kept, said in a line."""
    from argparse import Namespace

    from ddqn.bench.tuning import kept_rows

    data = {"workers": 1, "common": [], "every": 5000, "variants": {"a": {}, "b": {}}}
    args = Namespace(workers=2, set=[], every=10000, restart=False)
    path = tmp_path / "tuning.json"
    with pytest.raises(SystemExit, match=r"tuning.json: its 2 rows, made with workers 1 ≠ 2; grid 5000 ≠ 10000: move "
                                         "it aside to keep it, or --restart"):
        kept_rows(data, args, [], path)
    assert kept_rows(data, Namespace(**{**vars(args), "restart": True}), [], path) == {}
    assert capsys.readouterr().out.endswith("not kept (--restart)\n")
