"""The benchmarks' statistics (``ddqn.bench.stats``) and what keeps a comparison honest (``ddqn.bench.runs``, with
``ddqn.bench.common``'s machine record and config values): when a run reaches a score, intervals over seeds, the
reuse check (config values, evaluation grid, CPU), the machine record, and the report's goals."""
from __future__ import annotations

import ctypes
import json
import math
from fnmatch import fnmatch
from pathlib import Path

import numpy as np
import pytest

from ddqn.bench import report
from ddqn.bench.common import cpu_differences, cpu_label, machine
from ddqn.bench.report import learning, network, phrases
from ddqn.bench.runs import CONFIRM_SEED, RECORD, finished_run, grid_overrides, record_run, same_grid
from ddqn.bench.stats import (
    TRAILING_K,
    best_trailing_mean,
    format_interval,
    mean_if_all,
    reach,
    reach_levels,
    seed_interval,
    seed_speedup,
    speedup,
    split_test,
    standard_error,
    t975,
    trailing_at,
    trailing_means,
)
from ddqn.config import config_values, load_config, save_config
from ddqn.game.seeds import game_seeds

ROOT = Path(__file__).resolve().parents[1]

# bench-scaling-60's seed 0 (async-2, tuned): minutes and greedy means of evaluations 30-40 (results/scaling_60.json,
# retired with bench-scaling-60 and kept in git history)
AUDIT = [(37.7, 8.62), (38.9, 8.80), (40.0, 8.68), (41.3, 9.86), (42.5, 9.34), (43.6, 10.32), (44.7, 9.32),
         (45.8, 9.98), (47.0, 10.12), (48.2, 10.82), (49.5, 9.82)]


def curve_of(points: list[tuple[float, float]], every: int = 5000) -> list[dict]:
    """Curve rows (minutes, env steps, updates, greedy mean) from (minutes, greedy mean) pairs."""
    return [{"minutes": m, "env_steps": every * (i + 1), "updates": 2500 * (i + 1), "greedy_mean": g}
            for i, (m, g) in enumerate(points)]


# -- when a run reaches a level -----------------------------------------------------------------------------

def test_trailing_k_is_the_audits_five() -> None:
    assert TRAILING_K == 5


def test_the_audits_curve_reaches_10_at_48_minutes_not_at_its_lucky_point() -> None:
    curve = curve_of(AUDIT)
    assert next(r["minutes"] for r in curve if r["greedy_mean"] >= 10) == 43.6  # the old single-point rule
    r = reach(curve, 10)
    assert r is not None and r["minutes"] == 48.2 and r["k"] == 5
    assert r["env_steps"] == 50_000 and r["updates"] == 25_000  # the same evaluation's other clocks
    assert r["trailing_mean"] == pytest.approx((10.32 + 9.32 + 9.98 + 10.12 + 10.82) / 5)  # 10.112


def test_a_lucky_point_followed_by_points_below_never_reaches() -> None:
    lucky = curve_of([(m, g) for m, g in enumerate([9.0, 9.1, 8.9, 9.2, 10.6, 9.4, 9.5, 9.3, 9.6, 9.4, 9.5])])
    assert max(r["greedy_mean"] for r in lucky) >= 10
    assert reach(lucky, 10) is None
    assert reach(lucky, 9.3) == {"minutes": 4, "env_steps": 25_000, "updates": 12_500, "trailing_mean":
                                 pytest.approx(9.36), "k": 5}  # (9.0 + 9.1 + 8.9 + 9.2 + 10.6) / 5


def test_a_step_curve_reaches_when_the_window_is_full_of_the_new_level() -> None:
    steps = curve_of([(i, 8.0 if i < 5 else 10.0) for i in range(12)])
    assert [m if m is None else round(m, 6) for m in trailing_means([r["greedy_mean"] for r in steps])][3:10] == [
        None, 8.0, 8.4, 8.8, 9.2, 9.6, 10.0]
    assert reach(steps, 10)["minutes"] == 9  # 10.0 exactly counts (float sum tolerance)
    assert reach(steps, 9)["minutes"] == 7
    assert reach(steps, 10.01) is None


def test_too_short_or_never_reached_is_none_never_the_budget() -> None:
    short = curve_of([(1, 20.0), (2, 20.0), (3, 20.0), (4, 20.0)])  # 4 evaluations < k
    assert reach(short, 10) is None and best_trailing_mean(short) == 0.0
    assert reach(short, 10, k=4)["minutes"] == 4
    assert reach_levels(curve_of(AUDIT), [5, 10, 11]) == {"5": pytest.approx(reach(curve_of(AUDIT), 5)),
                                                          "10": pytest.approx(reach(curve_of(AUDIT), 10)),
                                                          "11": None}
    assert reach([], 1) is None
    with pytest.raises(ValueError):
        trailing_means([1.0], 0)


def test_a_noisy_curve_crosses_late_and_causally() -> None:
    rng = np.random.default_rng(3)
    scores = 0.25 * np.arange(60) + rng.normal(0, 0.7, 60)  # one evaluation's noise at score ≈ 10
    curve = curve_of([(1.2 * i, float(s)) for i, s in enumerate(scores)])
    r = reach(curve, 10)
    i = next(j for j, row in enumerate(curve) if row["minutes"] == r["minutes"])
    windows = [scores[j - 4:j + 1].mean() for j in range(4, len(scores))]
    assert scores[i - 4:i + 1].mean() >= 10 and all(w < 10 for w in windows[:i - 4])
    first_single = next(j for j, s in enumerate(scores) if s >= 10)
    assert first_single < i  # the noise put one evaluation above 10 before the curve got there
    later_changed = [*curve[:i + 1], *({**row, "greedy_mean": 0.0} for row in curve[i + 1:])]
    assert reach(later_changed, 10) == r  # no peeking at later evaluations
    assert best_trailing_mean(curve) == pytest.approx(max(windows))


def test_trailing_at_is_where_the_curve_stood_by_then() -> None:
    """The shape table's value at a time: the trailing mean of the last k evaluations taken by then, causal."""
    curve = curve_of(AUDIT)
    assert trailing_at(curve, 42.5) == pytest.approx((8.62 + 8.80 + 8.68 + 9.86 + 9.34) / 5)
    assert trailing_at(curve, 43.0) == trailing_at(curve, 42.5)  # no evaluation between: the same point
    assert trailing_at(curve, 49.5) == pytest.approx(sum(g for _, g in AUDIT[-5:]) / 5)
    assert trailing_at(curve, 41.3) is None  # 4 evaluations by then < k
    assert trailing_at(curve, 99.0) == trailing_at(curve, 49.5)


def test_speedup_needs_both_to_reach() -> None:
    assert speedup({"minutes": 20.0}, {"minutes": 8.0}) == 2.5
    assert speedup(None, {"minutes": 8.0}) is None and speedup({"minutes": 20.0}, None) is None


# -- one evaluation's standard error and intervals over seeds ---------------------------------------------------

def test_seed_speedups_range_over_seeds_and_never_count_the_budget() -> None:
    """W = 1's mean over W's mean; the worst and best seed against W = 1's mean; a seed that did not reach the level
    leaves the mean and the worst "not reached"; a figure above W is flagged as noise."""
    got = seed_speedup([12.0, 8.0], [2.0, 1.0, 2.0], 16)
    assert got["speedup"] == pytest.approx(10 / (5 / 3)) and got["worst"] == 5.0 and got["best"] == 10.0
    assert (got["reached"], got["n"], got["noise"]) == (3, 3, [])
    assert seed_speedup([12.0, 8.0], [0.5, 1.0], 16)["noise"] == ["best"]  # 20× with 16 workers: noise
    missing = seed_speedup([12.0, 8.0], [2.0, None], 16)
    assert missing["speedup"] is None and missing["worst"] is None and missing["best"] == 5.0
    assert missing["reached"] == 1 and seed_speedup([12.0, None], [2.0], 16)["speedup"] is None


def test_mean_minutes_over_seeds_are_infinite_unless_every_seed_reached() -> None:
    """The rule the screen, the baseline W = 1, the best schedule and DC-ASGD's λ rank by: a seed that never
    reached a level makes the mean ∞, never its budget; so does an empty list."""
    assert mean_if_all([2.0, 4.0, 6.0]) == 4.0
    assert mean_if_all([2.0, None]) == math.inf and mean_if_all([None, None]) == math.inf
    assert mean_if_all([]) == math.inf and mean_if_all([0.0]) == 0.0


def test_the_split_test_passes_exchangeable_curves_nine_times_in_ten() -> None:
    """3 simulated and 3 real curves: a perfect simulator (all six drawn alike) passes with probability 9/10,
    exactly by exchangeability; measured over 3,000 draws it is within 3 standard errors of 0.9. A simulator whose
    curves sit 5 standard deviations of a curve's level off almost never passes. The observed split furthest apart of
    all is a fail."""
    rng = np.random.default_rng(0)
    draws = [rng.normal(0.0, 1.0, (6, 8)) + rng.normal(0.0, 1.0, (6, 1)) for _ in range(3000)]
    rate = np.mean([split_test(c[:3], c[3:])["pass"] for c in draws])
    assert split_test(draws[0][:3], draws[0][3:])["pass_chance"] == pytest.approx(0.9)
    assert abs(rate - 0.9) < 3 * math.sqrt(0.9 * 0.1 / 3000), rate
    off = np.mean([split_test(c[:3] + 5.0, c[3:])["pass"] for c in draws[:500]])
    assert off < 0.02, off
    far = split_test([[5.0, 5.0], [5.1, 5.0], [4.9, 5.0]], [[0.0, 0.0], [0.1, 0.0], [-0.1, 0.0]])
    assert not far["pass"] and far["p"] == pytest.approx(2 / 20) and far["splits"] == 20
    assert split_test([[1.0]], [[1.0], [2.0]])["pass_chance"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="split_test"):
        split_test([[1.0, 2.0]], [[1.0]])


def test_standard_error_of_one_evaluation() -> None:
    assert standard_error([1, 2, 3, 4]) == pytest.approx(math.sqrt(5 / 3) / 2)  # s = 1.2910, n = 4
    assert standard_error([7, 7, 7]) == 0.0
    assert math.isnan(standard_error([5]))


def test_t_quantiles_match_closed_forms_and_tables() -> None:
    assert t975(1) == pytest.approx(math.tan(0.475 * math.pi), abs=1e-4)  # Cauchy: 12.7062
    assert t975(2) == pytest.approx(0.95 * math.sqrt(2 / (4 * 0.975 * 0.025)), abs=1e-4)  # 4.3027
    for df, t in ((4, 2.776), (9, 2.262), (30, 2.042), (31, 2.040), (40, 2.021), (60, 2.000), (120, 1.980)):
        assert t975(df) == pytest.approx(t, abs=6e-4), df
    assert t975(10_000) == pytest.approx(1.960, abs=1e-3)
    with pytest.raises(ValueError):
        t975(0)


def test_seed_interval_against_hand_computed_values() -> None:
    iv = seed_interval([10.0, 12.0, 14.0])  # s = 2, se = 2/√3, t(2) = 4.3027: half width 4.9683
    assert (iv.mean, iv.n, iv.reached) == (12.0, 3, 3)
    assert iv.low == pytest.approx(7.0317, abs=1e-3) and iv.high == pytest.approx(16.9683, abs=1e-3)
    two = seed_interval([43.6, None, 42.8])  # the seed that did not reach is counted, not averaged in
    assert (two.n, two.reached) == (3, 2) and two.mean == pytest.approx(43.2)
    assert two.high - two.mean == pytest.approx(12.7062 * 0.4, abs=1e-3)  # s = 0.5657, se = 0.4
    one = seed_interval([None, 9.0])
    assert (one.mean, one.low, one.high, one.n, one.reached) == (9.0, None, None, 2, 1)
    none = seed_interval([None, None])
    assert (none.mean, none.reached, none.n) == (None, 0, 2)
    assert format_interval(iv) == "12.0 [7.0, 17.0] (3 of 3)"
    assert format_interval(one) == "9.0 (1 of 2; no interval)" and format_interval(none) == "not reached (0 of 2)"
    assert iv.to_dict()["reached"] == 3


# -- the reuse check: config values, grid, CPU -----------------------------------------------------------------

def fake_run(out: Path, overrides: list[str]) -> Path:
    """A finished run directory of ``small`` with ``overrides`` (its config.yaml and a summary.json)."""
    out.mkdir(parents=True)
    save_config(load_config("small", overrides), out / "config.yaml")
    (out / "summary.json").write_text("{}")
    return out


def test_a_run_on_another_grid_is_refused_naming_run_and_key(tmp_path: Path) -> None:
    run = fake_run(tmp_path / "run", grid_overrides(10_000))
    with pytest.raises(SystemExit) as e:
        finished_run(run, "small", config_values("small", grid_overrides(5000)))
    assert str(e.value) == (f"{run}: trained with other values than small has now (eval_every 10000 ≠ 5000, "
                            "snapshot_every 10000 ≠ 5000); move it away to rerun")
    assert finished_run(run, "small", config_values("small", grid_overrides(10_000)))
    assert not finished_run(tmp_path / "nothing", "small", config_values("small"))
    assert "eval_every" in config_values("small") and "seed" not in config_values("small")


def test_a_comparison_refuses_runs_on_two_grids(tmp_path: Path) -> None:
    a = fake_run(tmp_path / "a", grid_overrides(5000))
    b = fake_run(tmp_path / "b", ["eval_every=5000", "snapshot_every=10000"])
    assert same_grid([a, fake_run(tmp_path / "a2", [*grid_overrides(5000), "seed=3"])]) == {
        "eval_every": 5000, "snapshot_every": 5000}
    with pytest.raises(SystemExit) as e:
        same_grid([a, b])
    assert str(e.value) == f"{b}: another evaluation grid than {a} (snapshot_every 10000 ≠ 5000); a comparison uses one grid"


def test_a_stale_config_is_refused(tmp_path: Path) -> None:
    run = fake_run(tmp_path / "run", ["gamma=0.9"])
    with pytest.raises(SystemExit, match=r"run: trained with other values than small has now \(gamma 0.9 ≠ 0.95\)"):
        finished_run(run, "small", config_values("small"))
    # what the bench recorded at training time wins over config.yaml: a solver prototxt changed since is stale
    fresh = fake_run(tmp_path / "fresh", [])
    values = config_values("small")
    record_run(fresh, {**values, "solver_sha256": "0" * 16})
    with pytest.raises(SystemExit, match=r"solver_sha256 0{16} ≠ [0-9a-f]{16} \(prototxt/solver_rmsprop.prototxt "
                                         r"changed\)"):
        finished_run(fresh, "small", values)
    record_run(fresh, values)
    assert finished_run(fresh, "small", values)


def test_a_key_added_after_a_run_is_its_default_there(tmp_path: Path) -> None:
    """A run recorded before a config key existed ran with the behaviour the key's default keeps: reused while the
    config has the default, refused (naming the key) once it has another value."""
    run = fake_run(tmp_path / "run", [])
    values = config_values("small")
    record_run(run, {k: v for k, v in values.items() if k != "replay_alpha"})
    assert values["replay_alpha"] == 0.0 and finished_run(run, "small", values)
    with pytest.raises(SystemExit, match=r"run: trained with other values than small has now \(replay_alpha None ≠ "
                                         r"0.6\)"):
        finished_run(run, "small", config_values("small", ["replay_alpha=0.6"]))


def test_a_run_on_another_cpu_is_refused_and_an_unrecorded_one_said(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture) -> None:
    run = fake_run(tmp_path / "run", [])
    values = config_values("small")
    assert finished_run(run, "small", values)  # trained before benches recorded the CPU
    assert "its CPU was not recorded" in capsys.readouterr().out
    record_run(run, values)
    rec = json.loads((run / RECORD).read_text())
    assert rec["machine"]["family"] == machine()["family"]
    rec["machine"]["model"] = (rec["machine"]["model"] or 0) + 1
    (run / RECORD).write_text(json.dumps(rec))
    with pytest.raises(SystemExit, match=r"trained on another CPU than this one \(model \d+ ≠ \d+\); a comparison "
                                         "does not mix CPUs"):
        finished_run(run, "small", values)


# -- the machine record -----------------------------------------------------------------------------------------

def test_machine_records_the_cpu_and_the_openblas_core(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    m = machine()
    for key in ("cores", "cpu", "isa", "python", "date"):  # what older results have
        assert m[key], key
    assert m["cpu"] == m["model_name"] and m["isa"] in ("AVX-512", "AVX2", "AVX", "SSE")
    assert m["openblas_coretype"] == "Haswell"
    if Path("/proc/cpuinfo").is_file():
        assert m["vendor"] and isinstance(m["family"], int) and isinstance(m["model"], int)
    try:
        ctypes.CDLL("libopenblas.so.0")
    except OSError:
        assert m["openblas_core"] is None
    else:
        assert isinstance(m["openblas_core"], str) and m["openblas_core"]
    monkeypatch.delenv("OPENBLAS_CORETYPE")
    assert machine()["openblas_coretype"] is None


def test_cpus_are_compared_by_family_model_and_openblas_core() -> None:
    a = {"vendor": "AuthenticAMD", "family": 25, "model": 17, "model_name": "AMD EPYC", "openblas_core": "Zen"}
    assert cpu_differences(a, dict(a)) == []
    assert cpu_differences(a, {**a, "model": 1}) == ["model 17 ≠ 1"]  # Zen 4 vs Zen 3: one name, two CPUs
    assert cpu_differences(a, {**a, "openblas_core": "Prescott"}) == ["openblas_core Zen ≠ Prescott"]
    assert cpu_differences({"cpu": "AMD EPYC"}, a) is None and cpu_differences(None, a) is None
    assert cpu_label({"cpu": "Intel(R) Xeon(R) Processor", "isa": "AVX-512"}) == (
        "Intel(R) Xeon(R) Processor, AVX-512; family and model not recorded")
    assert cpu_label({**a, "isa": "AVX-512", "openblas_coretype": None}) == (
        "AMD EPYC, AVX-512; AuthenticAMD family 25 model 17; OpenBLAS core Zen")


# -- the report: goals and old results -------------------------------------------------------------------------

def test_a_missed_goal_says_missed() -> None:
    assert phrases.versus_goal(3.5528, 3, True, unit="×") == "3.55× (goal ≤ 3×: missed)"
    assert phrases.versus_goal(2986.4, 3000, False, ",.0f", "/s") == "2,986/s (goal ≥ 3,000/s: missed)"
    assert phrases.versus_goal(2.66, 3, True, unit="×", mark="**") == "**2.66×** (goal ≤ 3×: met)"
    assert phrases.versus_goal(3000, 3000, False, ",.0f", "/s") == "3,000/s (goal ≥ 3,000/s: met)"


def test_report_marks_goals_and_labels_old_machines(tmp_path: Path) -> None:
    old = {"cores": 2, "cpu": "Intel(R) Xeon(R) Processor", "python": "3.11.2", "date": "D"}
    ps = {"name": "ps_speed", "machine": old, "threads": 2, "max_ratio": 3.55, "max_ratio_threads": 3.57,
          "applies": [{"vector": "small", "solver": "AdaGrad", "floats": 1, "memcpy_us": 1.0, "apply_us": 3.55,
                       "ratio": 3.55, "apply_threads_us": 3.57, "ratio_threads": 3.57}],
          "loopback": [{"auth": "connection", "clients": 2, "updates_per_s": 2986.0}]}
    (tmp_path / "ps_speed.json").write_text(json.dumps(ps))
    report.main(["--results", str(tmp_path)])
    text = (tmp_path / "REPORT.md").read_text()
    assert "(Intel(R) Xeon(R) Processor; family and model not recorded)" in text
    assert "Largest ratio: **3.55×** (goal ≤ 3×: missed) on one core" in text
    assert "**3.55×** (goal ≤ 3×: missed), at small" in text and "**2,986/s** (goal ≥ 3,000/s: missed)" in text


def test_the_recorded_results_still_render(tmp_path: Path) -> None:
    """results/*.json as recorded (without the new fields) render, each section with its machine."""
    names = [name for name, *_ in report.SECTIONS]  # a per-CPU section's name is a pattern, <name>-*
    recorded = sorted(p for p in (ROOT / "results").glob("*.json") if any(fnmatch(p.stem, n) for n in names))
    assert recorded, "results/ holds no recorded JSON: the README's figures would have no source"
    for path in recorded:
        (tmp_path / path.name).write_text(path.read_text())
    report.main(["--results", str(tmp_path)])
    text = (tmp_path / "REPORT.md").read_text()
    assert text.count("— measured ") == len(recorded)


@pytest.mark.parametrize("seed", [0, 1, 3])
def test_confirmation_games_are_not_the_games_that_picked_the_snapshot(seed: int) -> None:
    """The best snapshot is picked on the training-time evaluation's games (seed 10,000 + seed) and confirmed on
    fresh ones (CONFIRM_SEED + seed): no game seed is shared, whatever the two counts, and the games differ from
    their first moves (their random streams differ)."""
    picked = game_seeds(10_000 + seed, 50)
    fresh = game_seeds(CONFIRM_SEED + seed, 500)
    assert CONFIRM_SEED + seed != 10_000 + seed and not set(picked) & set(fresh)
    first = {tuple(np.random.default_rng(s).integers(0, 2**31, 4)) for s in picked}
    assert not first & {tuple(np.random.default_rng(s).integers(0, 2**31, 4)) for s in fresh}


def test_the_report_says_whether_a_results_config_is_todays() -> None:
    values = config_values("small")
    assert phrases.config_today("small", values) == "Config values as recorded are today's `small`."
    stale = phrases.config_today("small", {**values, "gamma": 0.9})
    assert stale.startswith("**Stale**: `small` has changed since (gamma 0.9 ≠ 0.95)"), stale
    assert phrases.config_today("small", None).startswith("**Config values not recorded**")
    grid = config_values("small", grid_overrides(100))
    assert "today's" in phrases.config_today("small", grid, grid_overrides(100))
    assert phrases.config_today("small", grid).startswith("**Stale**")  # another grid than the config's own


def test_the_links_shards_section_names_the_busiest_host_and_the_ratio() -> None:
    worker = {"compute_s": 3.0, "comm_s": 1.0, "pushes": 10, "comm_share": 0.25}
    row = {"link_gbit": 0.25, "updates": 100, "steady_updates_per_s": 30.0, "workers": {"0": worker}}
    r = {"config": {"config": "paper", "workers": 2, "placement": "executors", "minutes": 2.0}, "rows": [
        {**row, "shards": 1, "host_bytes": {"driver": {"rx": 9e7, "tx": 9e7}, "worker-0": {"rx": 1e6, "tx": 1e6}}},
        {**row, "shards": 2, "of_one_server": 1.5, "steady_updates_per_s": 45.0,
         "host_bytes": {"driver": {"rx": 1e6, "tx": 1e6}, "worker-2": {"rx": 5e7, "tx": 4e7}}}]}
    text = "\n".join(network.links_shards(r))
    assert "| 0.25 | 1 | 30.0 | – | driver | 1.80 | 25 % |" in text, text
    assert "| 0.25 | 2 | 45.0 | 1.50× | worker-2 | 0.90 | 25 % |" in text, text


def test_a_variant_beats_the_base_only_beyond_twice_the_differences_standard_error() -> None:
    base = {"greedy_mean": 13.0, "greedy_se": 0.3}
    se = math.hypot(0.3, 0.4)  # 0.5
    assert learning.versus_base({"greedy_mean": 14.1, "greedy_se": 0.4}, base) == "+1.10 ± 0.50 (better)"
    assert learning.versus_base({"greedy_mean": 13.0 + 1.9 * se, "greedy_se": 0.4}, base) == "+0.95 ± 0.50 (a tie)"
    assert learning.versus_base({"greedy_mean": 13.0 - 1.9 * se, "greedy_se": 0.4}, base) == "-0.95 ± 0.50 (a tie)"
    assert learning.versus_base({"greedy_mean": 11.9, "greedy_se": 0.4}, base) == "-1.10 ± 0.50 (worse)"
