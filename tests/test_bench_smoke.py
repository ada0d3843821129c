"""Benchmarks are not tests: here each runs once in a tiny smoke mode, to prove it still works end to end.

Only the shape of what they write is checked (JSON with the headline fields, the figure, the GIFs' captions);
never a speed. Plus the benchmarks' own structure: they share only :data:`SHARED`.
"""
from __future__ import annotations

import ast
import itertools
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from ddqn.bench.common import cpu_differences, cpu_label, cpu_tag, figure, machine
from ddqn.bench.gifs import captioned
from ddqn.bench.hostile import goal
from ddqn.bench.report import learning, network, scale_out, speed
from ddqn.bench.runs import CONFIRM_SEED, RECORD, confirm_best, read_curve
from ddqn.bench.scaling import MODES, parse_plan
from ddqn.bench.stats import TRAILING_K, seed_speedup
from ddqn.bench.suite_time import main as suite_time_main
from ddqn.bench.tuning import SEARCH, VARIANTS, keyed, row_key, variant_config
from ddqn.bench.tuning import main as tuning_main
from ddqn.config import config_values, load_config, save_config
from ddqn.distributed.cluster import spark_submit_env, spark_submit_path
from ddqn.dqn.play import greedy_episode, greedy_episode_scores
from ddqn.game import game_actions
from ddqn.net.caffe_build import build_dir, build_key
from ddqn.net.netspec import load_netspec
from ddqn.net.qnet import QNetwork
from ddqn.solvers.flat import load_solver_spec

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "ddqn" / "bench"
SHARED = ("ddqn.bench.common", "ddqn.bench.runs", "ddqn.bench.stats", "ddqn.bench.sim_runs")  # what any benchmark may import from ddqn.bench
SMOKE = {
    "caffe_speed": ["--rounds", "2", "--nets", "snake_small", "--candidate",  # the twin where .venv-torch exists
                    f"built={build_dir(build_key('openblas')) / 'src' / 'python'}"],  # a candidate: the same build
    "env_speed": ["--seconds", "0.2"],
    "replay_speed": ["--frames", "2000", "--seconds", "0.2", "--steps", "100"],
    "ps_speed": ["--repeats", "5", "--seconds", "0.5", "--clients", "1", "--vectors", "small", "1M",
                 "--service-nets", "small", "--service-solvers", "adagrad", "--service-messages", "5",
                 "--cycle-repeats", "1"],
    "atari": ["--no-learning", "--ale-steps", "300", "--repeats", "1"],
    "worker_speed": ["--members", "small", "paper", "--repeats", "1", "--config", "small", "--seconds", "3",
                     "--set", "replay_warmup=200", "--rounds", "1", "--prescott", "--candidate",  # children
                     f"built={build_dir(build_key('openblas')) / 'src' / 'python'}"],
    "capacity": ["--clients", "1", "2", "--seconds", "0.5"],
    "hostile": ["--floods", "4", "--idle", "50", "--seconds", "1", "--warmup", "0.3", "--procs", "2", "--auth",
                "message", "--ramp", "5", "--join-timeout", "5"],  # one auth mode, no 512 flood: the goal unmeasured
    "shard_cost": ["--config", "small", "--shards", "1", "2", "--updates", "5", "--rounds", "1"],
}
FIELDS = {"caffe_speed": "nets", "env_speed": "steps_per_s", "replay_speed": "identical_batches",
          "ps_speed": "max_ratio", "atari": "nets", "worker_speed": "fits", "capacity": "workers_worth",
          "hostile": "goal", "shard_cost": "rows"}


def bench(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", f"ddqn.bench.{name}", *args], capture_output=True, text=True,
                          timeout=300, check=False)


@pytest.mark.parametrize("name", sorted(SMOKE))
def test_benchmark_smoke(name: str, tmp_path: Path) -> None:
    res = bench(name, *SMOKE[name], "--out", str(tmp_path))
    assert res.returncode == 0, res.stderr[-2000:]
    data = json.loads((tmp_path / f"{name}.json").read_text())
    assert data["name"] == name and data["machine"]["cores"] >= 1 and FIELDS[name] in data
    if name in ("worker_speed", "capacity"):
        assert (tmp_path / f"{name}.png").stat().st_size > 1000
    if name == "caffe_speed":
        check_caffe_speed(data, res.stdout)
    if name == "worker_speed":  # each child imported its build, with its BLAS core, and timed a real worker
        built, prescott, other = data["breakdowns"]
        assert [b["build"] for b in data["breakdowns"]] == ["as built", "as built, OPENBLAS_CORETYPE=Prescott", "built"]
        assert prescott["blas_core"] == "Prescott" != built["blas_core"] and other["caffe_dir"].endswith("src/python")
        for split in data["breakdowns"]:
            assert split["blas_loaded"].startswith("libopenblas") and split["config"] == "small", split
            assert split["gradients"] > 0 and sum(split["phases_ms"].values()) == pytest.approx(split["ms_per_gradient"])
        assert "small: gradients/s as built ÷ built: " in res.stdout
    if name == "ps_speed":  # the server thread's time by message kind and part, beside each service row
        for row in data["service"]:
            assert {"push", "fetch", "fetch_both", "stats"} <= row["parts_us"].keys(), row["parts_us"]
            assert row["parts_us"]["push"]["apply"] > 0 and row["parts_us"]["fetch"]["publish"] > 0
    if name == "hostile":  # every phase measured and recorded; no rate is asserted
        phases = data["modes"]["message"]["phases"]
        assert [(p["phase"], p["connections"]) for p in phases] == [("unloaded", 0), ("token flood", 4), ("idle", 50)]
        assert all(p["honest"]["requests"] > 0 and p["server"]["busy_pct"] >= 0 for p in phases), phases
        assert phases[1]["attackers"]["messages"] > 0 and phases[1]["server"]["dropped"], phases[1]
        idle = phases[2]
        assert {"method", "written", "error", "seconds"} <= set(idle["snapshot"]), idle
        assert {"joined", "fetched", "error", "seconds"} <= set(idle["join"]), idle
        assert idle["held"]["ramped_open"] > 0 and data["modes"]["message"]["server_nofile"]["hard"] != 0
        assert data["goal"]["met"] is None and data["goal"]["share_by_auth"] == {"message": None}
        text = "\n".join(network.hostile(data))  # the REPORT's section
        assert "| token flood | 4 |" in text and "Idle connections: " in text and "auth message: not measured" in text


def test_grad_norms_smoke(tmp_path: Path) -> None:
    res = bench("grad_norms", "--configs", "small", "--steps", "120", "--bin", "50", "--set", "replay_warmup=200",
                "--no-progress", "--out", str(tmp_path))
    assert res.returncode == 0, res.stderr[-2000:]
    data = json.loads((tmp_path / "grad_norms.json").read_text())
    assert data["name"] == "grad_norms" and data["overrides"] == ["replay_warmup=200"]
    r = data["configs"]["small"]
    assert r["updates"] == 120 and r["nonfinite"] == 0 and r["warmup_transitions"] >= 200
    assert np.isfinite(r["max"]) and r["max"] > 0
    assert r["max"] >= r["p99_9"] >= r["p99"] >= r["p50"] > 0
    assert [b["updates"] for b in r["bins"]] == [[0, 50], [50, 100], [100, 120]]
    assert max(b["max"] for b in r["bins"]) == r["max"]
    assert len(r["head"]) == 20 and r["top"][0] == {"update": r["argmax_update"], "norm": r["max"]}
    assert data["largest_max"] == {"config": "small", "max": r["max"]}


def check_caffe_speed(data: dict, stdout: str) -> None:
    """bench-caffe's run of snake_small: Caffe timed and the FLOPs counted; a candidate build (the OpenBLAS one, in a
    process of its own with its directory first on the path) checked and timed beside it; the PyTorch twin checked
    against Caffe, timed and its build recorded, or the run said why the twin is absent (no .venv-torch: make test
    never installs torch)."""
    row = data["nets"]["snake_small"]
    assert row["ms"]["caffe"]["forward_backward"] > 0 and row["gflop"]["forward_backward"] > row["gflop"]["forward"]
    assert data["peak"]["gflops"] > 0 and 0 < row["floor_share"]["caffe"]["forward"]
    assert row["ms"]["built"]["forward"] > 0 and row["checks"]["built"]["q_rel_err"] <= data["tolerance"]["q_rtol"]
    assert data["candidates"]["built"] in data["implementations"]["built"]["module"]
    if "absent" in data["twin"]:
        assert f"no PyTorch twin: {data['twin']['absent']}" in stdout and "over_torch" not in row
        return
    assert data["twin"]["torch"] == "2.13.0+cpu" and data["twin"]["threads"] == 1
    assert "PyTorch built with" in data["twin"]["config"]
    assert row["ms"]["torch"]["forward"] > 0 and set(row["over_torch"]) == {"caffe", "built"}
    assert row["checks"]["torch"]["q_rel_err"] <= data["tolerance"]["q_rtol"]


def test_caffe_speed_counts_flops_and_names_the_net_a_twin_gets_wrong(tmp_path: Path) -> None:
    """The paper net's FLOPs from its layer shapes (../shared/FACTS.md: ≈ 1 GFLOP per forward+backward at batch 32);
    a peer whose Q-values are off beyond the tolerance is a one-line error naming the net."""
    from ddqn.bench.caffe_speed import check, prepare

    gflop = prepare("snake_paper", tmp_path)["gflop"]
    assert gflop["forward"] == pytest.approx(2 * 32 * 5_605_376 / 1e9)  # conv1..3, ip1, q: multiply-adds per image
    assert gflop["forward_backward"] == pytest.approx(2 * 32 * (3 * 5_605_376 - 1_605_632) / 1e9)  # no conv1 dx
    g = {"g/ip/0": np.ones((2, 3), np.float32)}
    np.savez(tmp_path / "n.caffe.npz", q=np.ones((2, 4), np.float32), loss=np.float32(1), **g)
    np.savez(tmp_path / "n.torch.npz", q=np.full((2, 4), 1.001, np.float32), loss=np.float32(1), **g)
    with pytest.raises(SystemExit, match=r"^bench-caffe: error: n: torch does not compute Caffe's net on the fixed "
                       r"input \(Q-values off by 1\.0e-03 > 0\.0001\)$"):
        check("n", "torch", tmp_path)


def test_caffe_report_shows_each_caffe_over_torch() -> None:
    """The REPORT's bench-caffe section: a row per net with each implementation's ms, each Caffe ÷ torch (a candidate
    build too) and shares of the floor; issue 29's goal for the paper net, met or missed; the notes name each Caffe
    build and the twin's check."""
    impls = {"caffe": (40.0, 20.0), "dnn": (30.0, 12.0), "torch": (20.0, 10.0)}
    row = {"params": 228_132, "frames": 4, "input": 16, "batch": 32, "gflop": {"forward_backward": 0.97},
           "floor_ms": {"forward_backward": 10.0}, "checks": {k: {"q_rel_err": 1e-6, "loss_rel_err": 2e-7,
                                                                 "grad_rel_err": 3e-5} for k in ("dnn", "torch")},
           "ms": {k: {"forward_backward": fb, "forward": f} for k, (fb, f) in impls.items()},
           "floor_share": {k: {"forward_backward": 10.0 / fb} for k, (fb, _) in impls.items()},
           "over_torch": {k: {"forward_backward": fb / 20.0, "forward": f / 10.0} for k, (fb, f) in impls.items()
                          if k != "torch"}}
    caffe = {"blas": "libopenblasp-r0.3.21.so", "openblas_core": "SkylakeX"}
    data = {"nets": {"snake_paper": row}, "rounds": 40, "candidates": {"dnn": "/b/src/python"},
            "implementations": {"caffe": caffe, "dnn": {**caffe, "openblas_core": None}},
            "twin": {"torch": "2.13.0+cpu", "threads": 1, "mkldnn": True},
            "tolerance": {"q_rtol": 1e-4, "loss_rtol": 1e-4, "grad_rtol": 1e-3},
            "peak": {"gflops": 97.0, "sgemm_gflops": {"caffe": 85.0, "torch": 97.0}, "sgemm_n": 1024}}
    text = "\n".join(speed.caffe(data))
    assert ("| snake_paper | 228,132 | 4×16×16 | 0.97 | 10.0 | 40.0 | 30.0 | 20.0 | **2.00×** | **1.50×** | 20.0 | "
            "12.0 | 10.0 | **2.00×** | **1.20×** | 25 % | 33 % | 50 % |") in text
    assert "`caffe` as built (libopenblasp-r0.3.21.so, OpenBLAS core SkylakeX); `dnn` from /b/src/python" in text
    assert "Caffe's within 1e-06, 2e-07 and 3e-05" in text and "one core's peak, 97.0 GFLOP/s" in text
    assert "Caffe as built ÷ torch: **2.00×** (goal ≤ 0.9×: missed)." in text
    row["over_torch"]["caffe"]["forward_backward"] = 0.8
    assert "Caffe as built ÷ torch: **0.80×** (goal ≤ 0.9×: met)." in "\n".join(speed.caffe(data))


def distinct_colours(img: np.ndarray) -> int:
    """Number of distinct pixel values of an (H, W, C) image."""
    return len(np.unique(img.reshape(-1, img.shape[-1]), axis=0))


def test_gifs_and_report(tmp_path: Path) -> None:
    run = tmp_path / "run"
    res = subprocess.run([sys.executable, "-m", "ddqn.cli", "train", "--config", "small", "--steps", "50", "--out",
                          str(run), "--set", "replay_warmup=200", "--set", "eval_episodes=3", "--no-progress"],
                         capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, res.stderr
    res = bench("gifs", "--run", str(run), "--config", "small", "--out", str(tmp_path))
    assert res.returncode == 0, res.stderr
    # each side: a caption strip (text, so not one colour) above the rendered board (16 px per cell)
    board = 16 * load_config("small").board_size
    sides = {k: iio.imread(tmp_path / f"{k}_snake.gif", index=None)[..., :3] for k in ("dumb", "smart")}
    for frames in sides.values():
        strip = frames.shape[1] - board
        assert strip > 0 and frames.shape[2] >= board
        assert all(distinct_colours(f[:strip]) > 1 for f in frames)
    both = iio.imread(tmp_path / "snakes.gif", index=None)[..., :3]
    wd = sides["dumb"].shape[2]
    assert both.shape[1] == sides["dumb"].shape[1] and both.shape[2] == wd + 8 + sides["smart"].shape[2]
    np.testing.assert_array_equal(both[0, :, :wd], sides["dumb"][0])
    np.testing.assert_array_equal(both[0, :, -sides["smart"].shape[2]:], sides["smart"][0])
    res = bench("caffe_speed", "--rounds", "1", "--nets", "snake_small", "--torch-python", str(tmp_path / "none"),
                "--out", str(tmp_path))
    assert res.returncode == 0 and f"no PyTorch twin: {tmp_path / 'none'} not found" in res.stdout, res.stderr
    res = bench("report", "--results", str(tmp_path))
    assert res.returncode == 0, res.stderr
    report = (tmp_path / "REPORT.md").read_text()
    assert "## Q-network speed: real Caffe beside a PyTorch twin" in report and "## Example game play" in report
    assert "make bench-scaling" in report  # listed as not yet measured
    assert f"No PyTorch twin in this run: {tmp_path / 'none'} not found" in report


def test_caption_shows_label_and_running_score() -> None:
    rng = np.random.default_rng(0)
    shots = [rng.integers(0, 256, (96, 96, 3), dtype=np.uint8) for _ in range(3)]
    out = captioned(shots, [0, 0, 3], ["dumb snake", "(initial weights)"])
    strip = out[0].shape[0] - 96
    assert strip > 0 and all(f.shape == out[0].shape for f in out)
    width = out[0].shape[1]  # "(initial weights)" is wider than 96 px: the game is centred under it
    assert width > 96
    x0 = (width - 96) // 2
    for shot, frame in zip(shots, out):
        np.testing.assert_array_equal(frame[strip:, x0:x0 + 96], shot)
        assert distinct_colours(frame[:strip]) > 1
    np.testing.assert_array_equal(out[0][:strip], out[1][:strip])  # same score, same caption
    rows = np.flatnonzero((out[0][:strip] != out[2][:strip]).any(axis=(1, 2)))
    assert rows.size and rows.min() > 2 * strip // 3  # only the last line (the score) changed


def test_greedy_episode_scores() -> None:
    cfg = load_config("small")
    q = QNetwork(load_netspec(cfg.path("net")), seed=0)
    shots, scores = greedy_episode_scores(q, cfg, seed=3, max_steps=40)
    assert len(shots) == len(scores) and scores[0] == 0 and all(isinstance(s, int) for s in scores)
    assert all(b - a in (0, 1) for a, b in itertools.pairwise(scores))
    assert greedy_episode(q, cfg, seed=3, max_steps=40)[1] == scores[-1]


def import_violations(source: str, module: str, bench_modules: set[str]) -> list[str]:
    """Imports of ``module`` (ddqn.bench.<name>, or a part ddqn.bench.<name>.<part> of a bench that is a package)
    that reach into another bench than the shared modules (:data:`SHARED`) or its own package, or take a private
    (underscore) name from ddqn, including ``alias._name`` on a name imported from ddqn."""
    bad, ddqn_aliases = [], set()
    package = module.rsplit(".", 1)[0]
    bench = ".".join(module.split(".")[:3])  # ddqn.bench.<name>: the bench this module is, or is a part of
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            pairs = [(a.name, None, a.asname or a.name.split(".")[0]) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join([*parts[:len(parts) - node.level + 1], *([base] if base else [])])
            pairs = [(base, a.name, a.asname or a.name) for a in node.names]
        else:
            continue
        for mod, name, alias in pairs:
            if mod.split(".")[0] != "ddqn":
                continue
            ddqn_aliases.add(alias)
            target = f"{mod}.{name}" if mod == "ddqn.bench" and name in bench_modules else mod
            if target.startswith("ddqn.bench.") and target not in (*SHARED, bench) and not target.startswith(
                    f"{bench}."):  # a package's parts (report.learning → report.phrases) are not another bench
                bad.append(f"{module} imports {target}")
            if name and name.startswith("_"):
                bad.append(f"{module} imports the private {mod}.{name}")
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in ddqn_aliases
                and node.attr.startswith("_") and not node.attr.startswith("__")):
            bad.append(f"{module} uses the private {node.value.id}.{node.attr}")
    return bad


def test_shard_cost_alone_keeps_the_other_rows_and_fits_a_plus_b_over_s(tmp_path: Path) -> None:
    """``--alone``: one shard per S with its client (PUSH, COMMIT with S votes, two of them forged, FETCH; or a COMMIT
    answered with θ), CPU per message by kind; written under ``alone`` beside the rows already in shard_cost.json; the
    REPORT shows it."""
    from ddqn.bench.stats import fit_a_b

    assert fit_a_b({1: 30.0, 2: 20.0, 4: 15.0}) == pytest.approx({"a_us": 10.0, "b_us": 20.0, "rms_us": 0.0})
    assert fit_a_b({2: 1.0}) is None
    (tmp_path / "shard_cost.json").write_text(json.dumps({"name": "shard_cost", "rows": {"1": "kept"}}))
    res = bench("shard_cost", "--alone", "--config", "small", "--shards", "1", "3", "--updates", "5", "--rounds", "1",
                "--out", str(tmp_path))
    assert res.returncode == 0, res.stderr[-2000:]
    data = json.loads((tmp_path / "shard_cost.json").read_text())
    assert data["rows"] == {"1": "kept"} and set(data["alone"]["rows"]) == {"1", "3"}
    for row in data["alone"]["rows"].values():
        assert all(row["kinds"][k]["cpu_us"] > 0 for k in ("push", "commit", "fetch", "commit_fetch")), row
        assert row["kinds"]["commit"]["parts_us"]["apply"] > 0 and row["kinds"]["fetch"]["parts_us"]["publish"] > 0
        theta = row["kinds"]["commit_fetch"]["parts_us"]
        assert theta["apply"] > 0 and theta["publish"] > 0  # a COMMIT answered with θ applies, then publishes
        assert row["cpu_us_theta"] == pytest.approx(row["kinds"]["push"]["cpu_us"]
                                                    + row["kinds"]["commit_fetch"]["cpu_us"])
    assert data["alone"]["fit"]["total"]["a_us"] is not None and "fit total: a = " in res.stdout
    assert "fit total_theta: a = " in res.stdout
    data.pop("rows")
    assert "**Measured alone**" in "\n".join(network.shard_cost(data))


def test_shard_projection_reads_the_alone_fit_or_falls_back_and_says_so(tmp_path: Path) -> None:
    """The projection bench in-process on a small grid (timing-only: no Caffe): with an ``alone`` fit whose costs
    all scale with the slice, four shards on executors double two's server-bound rate; without it, the shared-cores
    rows are used and the source says FALLBACK; S = 1 is one server's own service times (ps_speed's, or measured
    now), not a shard's; the goal line and the REPORT section name the best S (when all saturate: the S that carries
    the most updates/s); a worker_speed.json that measured the config as it is no longer is refused."""
    from ddqn.bench.shard_projection import main as projection

    shutil.copy(ROOT / "results" / "ps_speed.json", tmp_path)
    speed = {"machine": {"model_name": "cpu"}, "config_values": {"tuned": config_values("tuned")},
             "breakdowns": [{"config": "tuned", "build": "as built", "ms_per_gradient": 20.0}]}
    (tmp_path / "worker_speed.json").write_text(json.dumps(speed))
    fit = {"push": {"a_us": 0.0, "b_us": 3000.0}, "commit": {"a_us": 0.0, "b_us": 0.0},
           "fetch": {"a_us": 0.0, "b_us": 1000.0}, "total": {"a_us": 0.0, "b_us": 4000.0}}
    rows = {"1": {"busiest_cpu_us": 4000.0}, "2": {"busiest_cpu_us": 4000.0}}
    alone = {"machine": {"model_name": "cpu"}, "config": {"config": "tuned"}, "fit": fit}
    (tmp_path / "shard_cost.json").write_text(json.dumps({"rows": rows, "alone": alone}))
    # 2 env steps per gradient, the message mix the fit's costs are chosen for: with more, the FETCHes of an update
    # make the transport legs, which S does not divide, weigh in
    args = ["--out", str(tmp_path), "--workers", "1", "64", "--shards", "1", "2", "4", "--gbit", "10",
            "--set", "train_every=2"]
    projection(args)
    data = json.loads((tmp_path / "shard_projection.json").read_text())
    got = {(r["shards"], r["placement"], r["workers"]): r for r in data["rows"]}
    assert len(got) == 10 and data["shard_source"].startswith("measured alone") and data["one_server_source"]
    two, four = got[2, "executors", 64], got[4, "executors", 64]
    assert two["busiest_server"] > 0.97 and four["updates_per_s"] == pytest.approx(2 * two["updates_per_s"], rel=0.1)
    loads = {r["shards"]: max(r["busiest_server"], r["busiest_card"]) for r in data["rows"]
             if r["workers"] == 64 and r["placement"] == "executors"}
    assert min(loads.values()) > 0.97 and data["goal"]["shards"] == 4  # both saturate: the one carrying more
    assert data["goal"]["workers"] == 64 and data["goal"]["met"] is False
    assert "charged as COMMIT + FETCH" in data["shard_source"]  # this fit has no COMMIT answered with θ
    assert "**missed**" in "\n".join(network.shard_projection(data))
    (tmp_path / "shard_cost.json").write_text(json.dumps({"rows": rows}))
    projection(args)
    data = json.loads((tmp_path / "shard_projection.json").read_text())
    assert data["shard_source"].startswith("FALLBACK") and "b = 0" in data["shard_source"]
    got = {(r["shards"], r["placement"], r["workers"]): r for r in data["rows"]}
    assert got[4, "executors", 64]["updates_per_s"] == pytest.approx(got[2, "executors", 64]["updates_per_s"],
                                                                     rel=0.1)  # a cost per message: no gain
    stale = {**speed, "config_values": {"tuned": config_values("tuned", ["train_every=3"])}}
    (tmp_path / "worker_speed.json").write_text(json.dumps(stale))
    with pytest.raises(SystemExit, match=r"measured tuned as it is no longer \(train_every 3 ≠ \d+\)"):
        projection(args)


def test_bench_modules_share_only_the_shared_modules() -> None:
    files = sorted(BENCH.rglob("*.py"))
    modules = {p: ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__") for p in files}
    names = {m.split(".")[2] for m in modules.values() if m.count(".") >= 2}
    assert {"common", "stats", "report"} <= names and "ddqn.bench.report.learning" in modules.values()
    bad = [v for p, m in modules.items() for v in import_violations(p.read_text(), m, names)]
    assert bad == []
    sample = ("from ddqn.bench.ps_speed import server_rate\nfrom ..bench import gifs\nimport ddqn.bench.scaling\n"
              "from ddqn.replay.memory import _ReplayBase\nfrom ddqn.replay import memory\nmemory._ReplayBase\n"
              "from .common import write_result\nfrom ddqn.bench import common\nfrom ddqn.bench.stats import reach\n"
              "from ddqn.bench.report.phrases import fmt\n")
    assert len(import_violations(sample, "ddqn.bench.capacity", names)) == 6
    assert import_violations("from ddqn.bench.report.phrases import fmt\n", "ddqn.bench.report.speed", names) == []


def makefile_var(prefix: str, subst: dict[str, str] | None = None) -> list[str]:
    """The words after ``prefix`` on the Makefile line that starts with it, each make expression in ``subst``
    replaced by its value first."""
    line = next(x for x in (ROOT / "Makefile").read_text().splitlines() if x.startswith(prefix))[len(prefix):]
    for expr, value in (subst or {}).items():
        line = line.replace(expr, value)
    return line.split()


def test_spark_env_and_scaling_defaults_match_makefile() -> None:
    words = makefile_var("SPARK_ENV :=", {"$(abspath $(PY))": "/venv/bin/python"})
    make = dict(w.split("=", 1) for w in words)
    assert spark_submit_env("/venv/bin/python") == make
    assert spark_submit_path().name == "spark-submit" and spark_submit_path().exists()
    assert makefile_var("bench-scaling: MODES ?=") == list(MODES)
    assert makefile_var("bench-scaling: CONFIG ?=") == ["paper"]
    assert makefile_var("bench-tuning: VARIANTS ?=") == list(VARIANTS)
    # issue 30's table: async-2 on seeds 3 (named before any run), 0 and 1, serial on 0 and 1, every run planned
    plan = makefile_var("SCALING_120_PLAN :=")
    assert parse_plan(plan) == {"async-2": [3, 0, 1], "serial": [0, 1]}
    assert makefile_var("bench-scaling-120: RUNS ?=") == ["$(SCALING_120_PLAN)"]


def test_tuning_variants_and_a_real_run(tmp_path: Path) -> None:
    """Every variant's config and solver load as a run loads them, the search's starting point's values beneath
    its own; `train-every-8` is `tuned` as shipped, and `base` and `train-every-4` are not; one variant with its own solver prototxt
    (lr_policy step) trains for real and is evaluated from its snapshots; once the run's --set changes, the kept
    tuning.json is refused (a one-line error; ``--restart`` begins it anew), and its finished run is not reused (a
    one-line error), and tuning.json stays as it was."""
    for name in VARIANTS:
        cfg = load_config(str(variant_config(name, tmp_path / name, 3)))
        spec = load_solver_spec(cfg.path("solver"))
        assert cfg.seed == 3 and all(getattr(cfg, k) == v for k, v in {**SEARCH, **VARIANTS[name].config}.items())
        assert all(getattr(spec, k) == pytest.approx(v) for k, v in VARIANTS[name].solver_fields.items()
                   if k != "lr_policy")
    assert config_values(str(tmp_path / "train-every-8" / "variant.yaml")) == config_values("tuned", ["seed=3"])
    for older in ("base", "train-every-4"):
        assert config_values(str(tmp_path / older / "variant.yaml")) != config_values("tuned", ["seed=3"])
    assert load_solver_spec(load_config(str(variant_config("lr-step", tmp_path / "s", 0))).path("solver")).lr_policy \
        == "step"
    batch = load_config(str(variant_config("batch-64", tmp_path / "b", 0)))
    assert load_netspec(batch.path("net"), game_actions(batch)).batch_size == 64
    def tuning(episodes: int, *extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "ddqn.bench.tuning", "--variants", "lr-step", "--minutes", "0.25",
                               "--every", "100", "--confirm-episodes", "7", "--set", "replay_warmup=200", "--set",
                               f"eval_episodes={episodes}", "--out", str(tmp_path / "results"), *extra],
                              capture_output=True, text=True, timeout=300, env={**os.environ, **spark_submit_env(
                                  sys.executable)})

    res = tuning(3)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    data = json.loads((tmp_path / "results" / "tuning.json").read_text())
    row = data["variants"][f"lr-step 0.25 min s0 on {cpu_tag(machine())}"]  # one row per variant, budget, seed, CPU
    assert cpu_differences(row["machine"], machine()) == []
    tag = cpu_tag(machine())  # one figure of curves per CPU
    assert data["png"] == {tag: f"tuning-{tag}.png"} and (tmp_path / "results" / data["png"][tag]).stat().st_size
    assert data["common"] == ["replay_warmup=200", "eval_episodes=3"] and row["curve"], row
    assert row["best"]["greedy_se"] >= 0 and row["updates_per_s"] > 0
    assert row["confirmed"]["model"] == row["best"]["model"] and row["confirmed"]["episodes"] == 7
    ends = row["confirmed"]["endings"]  # how the 7 fresh games ended: Snake's endings only, each game once
    assert set(ends) <= {"wall", "body", "starved", "win"} and sum(e["games"] for e in ends.values()) == 7
    assert sum(e["games"] * e["mean_score"] for e in ends.values()) == pytest.approx(7 * row["confirmed"]["greedy_mean"])
    p10, p50, p90 = row["confirmed"]["percentiles"]
    assert 0 <= p10 <= p50 <= p90
    assert data["every"] == 100 and data["reach_rule"]["k"] == TRAILING_K
    assert row["config_values"]["eval_every"] == row["config_values"]["snapshot_every"] == 100
    assert bench("report", "--results", str(tmp_path / "results")).returncode == 0
    report = (tmp_path / "results" / "REPORT.md").read_text()
    assert "## What buys score per minute (variants of tuned)" in report and "| lr-step | 0 | Adam 2.5e-4 halved" in report
    assert "How the best snapshot's fresh games end" in report and "| lr-step, 0.25 min, seed 0 | 7 | " in report
    before, run = (tmp_path / "results" / "tuning.json").read_text(), tmp_path / "results" / "runs" / "tuning-lr-step-s0-0.25min"
    res = tuning(4)
    assert res.returncode == 1 and res.stderr.strip() == (
        f"{tmp_path / 'results' / 'tuning.json'}: its 1 row, made with --set ['replay_warmup=200', "
        "'eval_episodes=3'] ≠ ['replay_warmup=200', 'eval_episodes=4']: move it aside to keep it, or --restart "
        "(make: RESTART=1)"), res.stdout[-2000:] + res.stderr[-2000:]
    res = tuning(4, "--restart")
    assert res.returncode == 1 and res.stderr.strip() == (f"{run}: trained with other values than "
                                                          f"{run / 'config' / 'variant.yaml'} has now (eval_episodes 3 ≠ 4); "
                                                          "move it away to rerun"), res.stdout[-2000:] + res.stderr[-2000:]
    assert (tmp_path / "results" / "tuning.json").read_text() == before


def test_tuning_rows_are_keyed_by_variant_budget_seed_and_cpu() -> None:
    """A row written before keys named the budget, seed and CPU is re-keyed from its own fields and the file's
    machine, and a row of the starting point written as `tuned` is `base`'s; two budgets of one variant stay two
    rows, and so do two CPUs; the report compares a variant only with `base` (or the variant it names) on its own
    CPU, in one table per CPU and budget."""
    zen4 = {**machine(), "vendor": "AuthenticAMD", "family": 25, "model": 17, "openblas_core": "Cooperlake",
            "model_name": "AMD EPYC", "date": "2026-12-05 10:52:16 UTC"}
    zen3 = {**zen4, "model": 1, "openblas_core": "Zen", "date": "2026-12-07 05:00:00 UTC"}
    old = {"tuned": {"minutes_budget": 30.0, "seed": 0, "what": "a"},
           "tuned 60 min s0": {"variant": "tuned", "minutes_budget": 60.0, "seed": 0, "what": "c"},
           "dueling 60 min s1": {"variant": "dueling", "minutes_budget": 60.0, "seed": 1, "what": "b"}}
    rows = keyed(old, zen4)
    assert list(rows) == [f"{v} on AuthenticAMD-25-17-Cooperlake" for v in ("base 30 min s0", "base 60 min s0",
                                                                           "dueling 60 min s1")]
    key = "base 30 min s0 on AuthenticAMD-25-17-Cooperlake"
    assert rows[key]["variant"] == "base" and rows[key]["machine"] == zen4
    assert keyed(rows, zen3) == rows and row_key("base", 60, 1, zen4) not in rows
    assert row_key("base", 30, 0, zen3) != key and row_key("base", 30, 0, None).endswith(" on cpu-not-recorded")

    def row(variant: str, m: dict, mean: float, against: str = "base") -> dict:
        k = {"greedy_mean": mean, "greedy_se": 0.2, "episodes": 500, "percentiles": [5, 10, 15],
             "endings": {"body": {"games": 500, "mean_score": mean}}}
        return {"variant": variant, "minutes_budget": 30.0, "seed": 0, "what": variant, "updates_per_s": 90.0,
                "best": {**k, "minutes": 20.0}, "final": k, "confirmed": k, "reach": {"5.0": None},
                "config_values": {}, "machine": m, "against": against}

    both = {"variants": keyed({"a": row("tuned", zen4, 12.0), "b": row("per", zen4, 10.0),
                               "c": row("tuned", zen3, 9.0), "d": row("batch-64", zen3, 9.1),
                               "e": row("train-every-4", zen3, 11.0),
                               "f": row("train-every-8", zen3, 10.0, "train-every-4")}, None),
            "base": "tuned", "workers": 2, "levels": [5.0], "png": "tuning.png", "machine": zen3}
    report = "\n".join(learning.tuning(both))
    assert f"**30-minute runs on {cpu_label(zen4)}**" in report and f"**30-minute runs on {cpu_label(zen3)}**" in report
    assert "| per | 0 | per | 90.0 | 10.00 ± 0.20 | 20.0 | " in report and "-2.00 ± 0.28 (worse)" in report
    assert "+0.10 ± 0.28 (a tie) |" in report  # batch-64 against base on its own CPU (9.0), not the other's (12.0)
    assert "-1.00 ± 0.28 (worse) against `train-every-4` |" in report  # the variant it names, not base (+1.00)
    assert "![tuning on AuthenticAMD-25-1-Zen](tuning.png)" in report  # a file written before figures were per CPU
    assert "Run recorded 2026-12-07 05:00:00 UTC." in report and "| per, 30 min, seed 0, AuthenticAMD-25-17-Cooperlake |" in report
    with pytest.raises(SystemExit) as exc:  # issue 30's reporting seed: refused before anything runs
        tuning_main(["--seed", "3", "--variants", "base"])
    assert exc.value.code == 2


def test_scaling_runs_seeds_and_reuses_finished_runs(tmp_path: Path) -> None:
    """bench-scaling names a run by config, mode, seed and budget; a second call with another seed keeps the first
    curve and trains only the new run, and a third call reuses both finished runs instead of training again. Each
    run plays its own seed's fresh games; a kept curve recorded before that (on the config's seed's games) is dropped
    unless its seed is the config's. Once the config's values or the evaluation grid change, the kept result is
    refused with a one-line error (its curves are not dropped unless ``--restart``), and so is a finished run, not
    reused; nothing is lost."""
    config = tmp_path / "tiny.yaml"
    save_config(load_config("small", ["replay_warmup=200", "eval_episodes=3"]), config)
    common = ["--config", str(config), "--minutes", "0.15", "--confirm-episodes", "4",
              "--modes", "async-1", "--result", "s60", "--out", str(tmp_path / "results")]

    def scaling(*seeds: str, code: int = 0, every: str = "100", extra: tuple[str, ...] = ()) -> str:
        res = subprocess.run([sys.executable, "-m", "ddqn.bench.scaling", *common, "--every", every, *extra,
                              "--seeds", *seeds],
                             capture_output=True, text=True, timeout=300,
                             env={**os.environ, **spark_submit_env(sys.executable)})
        assert res.returncode == code, res.stdout[-2000:] + res.stderr[-2000:]
        return res.stdout if code == 0 else res.stderr

    assert "reusing" not in scaling("0")
    out = scaling("1")
    assert "reusing" not in out and "async-1 s1" in out
    assert scaling("0", "1").count("reusing") == 2
    data = json.loads((tmp_path / "results" / "s60.json").read_text())
    assert list(data["curves"]) == ["async-1", "async-1 s1"] and all(data["curves"].values())
    runs = sorted(p.name for p in (tmp_path / "results" / "runs").iterdir())
    assert runs == ["scaling-tiny-async-1-s0-0.15min", "scaling-tiny-async-1-s1-0.15min"]
    seeds = {load_config(str(tmp_path / "results" / "runs" / r / "config.yaml")).seed for r in runs}
    assert seeds == {0, 1} and (tmp_path / "results" / "s60.png").stat().st_size > 1000
    assert data["reach_rule"]["k"] == TRAILING_K and data["every"] == 100 and data["runs_machine"]["family"]
    assert "date" not in data["runs_machine"] and all(st["trained"].endswith(" UTC") for st in data["runs"].values())
    assert data["over_seeds"]["async-1"]["seeds"] == 2
    assert [k["seed"] for k in data["confirmed"].values()] == [CONFIRM_SEED, CONFIRM_SEED + 1]
    for k in data["confirmed"].values():  # as a result recorded before each run played its own seed's games
        del k["seed"]
    (tmp_path / "results" / "s60.json").write_text(json.dumps(data))
    out = scaling("0")
    assert f"{tmp_path / 'results' / 's60.json'}: async-1 s1 played another seed's games than its own: dropped" in out
    data = json.loads((tmp_path / "results" / "s60.json").read_text())
    assert list(data["curves"]) == ["async-1"] and data["confirmed"]["async-1"]["seed"] == CONFIRM_SEED
    for r in runs:  # what the bench recorded beside each run it trained
        rec = json.loads((tmp_path / "results" / "runs" / r / RECORD).read_text())
        assert rec["config_values"]["eval_every"] == 100 and "model_name" in rec["machine"]
    before = (tmp_path / "results" / "s60.json").read_text()
    err = scaling("0", code=1, every="200")  # the kept result first: its curves are not dropped unasked
    assert err.strip() == (f"{tmp_path / 'results' / 's60.json'}: its 1 run, made with other values (eval_every "
                           "100 ≠ 200, snapshot_every 100 ≠ 200): move it aside to keep it, or --restart (make: "
                           "RESTART=1)"), err
    err = scaling("0", code=1, every="200", extra=("--restart",))
    assert err.strip() == (f"{tmp_path / 'results' / 'runs' / runs[0]}: trained with other values than {config} "
                           "has now (eval_every 100 ≠ 200, snapshot_every 100 ≠ 200); move it away to rerun"), err
    save_config(load_config(str(config), ["gamma=0.9"]), config)
    err = scaling("0", code=1, extra=("--restart",))
    assert err.strip() == (f"{tmp_path / 'results' / 'runs' / runs[0]}: trained with other values than {config} "
                           "has now (gamma 0.95 ≠ 0.9); move it away to rerun"), err
    assert (tmp_path / "results" / "s60.json").read_text() == before


def test_serial_run_names_its_snapshots_and_is_confirmed(tmp_path: Path) -> None:
    """A serial run's eval.csv rows point at the snapshots taken at their updates, so bench-scaling re-plays serial's
    best on fresh games as it does a distributed run's."""
    out = tmp_path / "run"
    res = subprocess.run([sys.executable, "-m", "ddqn.cli", "train", "--mode", "serial", "--no-progress", "--config",
                          "small", "--steps", "300", "--out", str(out), "--set", "replay_warmup=100", "--set",
                          "eval_episodes=3", "--set", "eval_every=100", "--set", "snapshot_every=100"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    curve = read_curve(out / "eval.csv")
    assert [r["updates"] for r in curve] == [100, 200, 300]  # one update per learning step (warm-up not counted)
    assert all((out / r["model"]).is_file() for r in curve)
    best = confirm_best(out, load_config("small"), curve, 4)
    assert best["episodes"] == 4 and best["model"] in {r["model"] for r in curve} and best["seed"] == CONFIRM_SEED
    assert confirm_best(out, load_config("small", ["seed=2"]), curve, 4)["seed"] == CONFIRM_SEED + 2


def test_blas_candidates_run_the_same_caffe(tmp_path: Path) -> None:
    """bench-blas swaps a BLAS in by preloading it: Caffe's own link and PyPI's prefixed OpenBLAS (through the
    compiled trampoline library) both time the nets, each in its own process."""
    from ddqn.bench import blas

    base = blas.time_candidate({}, 1)
    shim = blas._scipy_openblas_shim(tmp_path)
    swapped = blas.time_candidate({"LD_PRELOAD": str(shim)}, 1)
    for t in (base, swapped):
        assert set(t) == {"paper", "large"} and all(t[n]["forward_backward_ms"] > 0 for n in t)
    assert "scipy_openblas" in subprocess.run(["ldd", str(shim)], capture_output=True, text=True).stdout


def test_scale_out_report_names_the_machine_of_each_config() -> None:
    """Configs of bench-scale-out measured on different machines each say which (the file's machine is the last)."""
    new = {"date": "D3", "cores": 2, "cpu": "AMD EPYC 9R14", "model_name": "AMD EPYC 9R14", "isa": "AVX-512",
           "vendor": "AuthenticAMD", "family": 25, "model": 17, "openblas_core": "Zen", "openblas_coretype": None}
    data = {"statement": "simulated", "saturation": [],
            "configs": {"small": {"config": "small", "machine": {"date": "D1", "cores": 2, "cpu": "Xeon"}},
                        "tuned": {"config": "tuned",
                                  "machine": {"date": "D2", "cores": 2, "cpu": "EPYC", "isa": "AVX2"}},
                        "paper": {"config": "paper", "machine": new}}}
    text = "\n".join(scale_out.section(data))
    assert "### Config `small`\n\nMeasured D1 on 2 cores (Xeon; family and model not recorded)." in text
    assert "### Config `tuned`\n\nMeasured D2 on 2 cores (EPYC, AVX2; family and model not recorded)." in text
    assert ("### Config `paper`\n\nMeasured D3 on 2 cores (AMD EPYC 9R14, AVX-512; AuthenticAMD family 25 model 17; "
            "OpenBLAS core Zen).") in text


def test_hostile_goal_is_met_missed_or_not_measured() -> None:
    """bench-hostile's goal, from the 512-connection flood's share of the unloaded rate in every auth mode: met,
    missed (also when that phase failed: nothing shows the rate was kept), or not measured (the flood did not run in
    every mode); the REPORT's section says which, and a failed phase is a row with its error."""
    def phase(name: str, n: int, share: float) -> dict:
        return {"phase": name, "connections": n, "share_of_unloaded": share,
                "honest": {"requests": 10, "requests_per_s": 100 * share, "p50_ms": 1.0, "p99_ms": 2.0},
                "server": {"busy_pct": 90.0, "process_cpu_pct": 120.0, "zmq_io_cpu_pct": 10.0},
                **({"attackers": {"messages_per_s": 5000.0}} if n else {})}

    def mode(*rows: dict) -> dict:
        return {"phases": [phase("unloaded", 0, 1.0), *rows], "server_nofile": {"soft_before": 1024, "soft": 4096,
                                                                                "hard": 4096}}

    failed = {"phase": "token flood", "connections": 512, "error": "the parameter server did not answer"}
    assert goal({"message": mode(phase("token flood", 512, 0.6)), "connection": mode(phase("token flood", 512, 0.5))}
                )["met"] is True
    assert goal({"message": mode(phase("token flood", 512, 0.6)), "connection": mode(phase("token flood", 512, 0.1))}
                )["met"] is False
    assert goal({"message": mode(phase("token flood", 64, 0.6)), "connection": mode(phase("token flood", 512, 0.9))}
                )["met"] is None
    modes = {"message": mode(phase("token flood", 512, 0.05)), "connection": mode(failed)}
    g = goal(modes)
    assert g["met"] is False and g["errors"] == {"connection": failed["error"]}
    assert g["share_by_auth"] == {"message": 0.05, "connection": None}
    config = {"net": "paper", "idle": 20_000, "seconds": 10.0, "warmup_s": 1.0, "procs": 4,
              "flood_message_bytes": [48, 65536, 16]}
    text = "\n".join(network.hostile({"config": config, "modes": modes, "goal": g}))
    assert "| token flood | 512 | 5,000 | 90 % | 120 % | 10 % | 5.0 | 5 % | 1.0 / 2.0 |" in text
    assert "| token flood | 512 | the parameter server did not answer |" in text
    assert ("auth message: **5 %** (goal ≥ 50 %: missed); auth connection: **missed** (the phase failed: the "
            "parameter server did not answer)") in text


def test_suite_time_sums_a_junit_file_per_test_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """bench-suite's reading of pytest's JUnit XML: seconds and tests per file (a class's tests with its module),
    failures counted, slowest first; an XML without test cases is refused."""
    junit = tmp_path / "junit.xml"
    junit.write_text("""<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest">
      <testcase classname="tests.test_a" name="test_one" time="1.25"/>
      <testcase classname="tests.test_a.TestGroup" name="test_two" time="2.5"><failure message="x"/></testcase>
      <testcase classname="tests.test_b" name="test_three[p]" time="10.0"/>
    </testsuite></testsuites>""")
    suite_time_main([str(junit), "--wall", "20", "--out", str(tmp_path / "results")])
    data = json.loads((tmp_path / "results" / "suite_time.json").read_text())
    assert data["files"] == {"test_b.py": {"tests": 1, "seconds": 10.0}, "test_a.py": {"tests": 2, "seconds": 3.8}}
    assert list(data["files"]) == ["test_b.py", "test_a.py"] and data["failed"] == 1
    assert data["total_s"] == 13.8 and data["wall_s"] == 20 and data["machine"]["cores"]
    assert data["slowest"][0] == {"test": "tests/test_b.py::test_three[p]", "seconds": 10.0}
    assert data["goal_wall_s"] == 720 and data["goal_met"] is True
    out = capsys.readouterr().out
    assert "13.8 s     3 tests" in out and "goal: make test within 720 s wall: met" in out
    suite_time_main([str(junit), "--wall", "721", "--out", str(tmp_path / "results")])
    assert json.loads((tmp_path / "results" / "suite_time.json").read_text())["goal_met"] is False
    assert "missed" in capsys.readouterr().out
    (tmp_path / "empty.xml").write_text("<testsuites><testsuite/></testsuites>")
    with pytest.raises(SystemExit, match="no test cases"):
        suite_time_main([str(tmp_path / "empty.xml"), "--out", str(tmp_path / "results")])


def test_a_candidate_build_is_checked_before_and_after_its_child_imports_caffe(tmp_path: Path) -> None:
    """--candidate LABEL=DIR (bench-caffe, bench-worker): a reserved or empty label or a missing DIR is a one-line
    exit; a child whose ``caffe`` is not from DIR is refused, naming both."""
    from ddqn.bench.common import candidate_builds, check_caffe_from
    assert candidate_builds([f"mine={tmp_path}"], "bench-x", ("as built",)) == {"mine": str(tmp_path)}
    for bad in (f"as built={tmp_path}", f"={tmp_path}", f"mine={tmp_path / 'absent'}"):
        with pytest.raises(SystemExit, match=r"^bench-x: error: --candidate .*: a LABEL other than as built"):
            candidate_builds([bad], "bench-x", ("as built",))
    (tmp_path / "caffe").mkdir()
    check_caffe_from(str(tmp_path / "caffe" / "__init__.py"), str(tmp_path), "mine", "bench-x")
    with pytest.raises(SystemExit, match=r"^bench-x: error: candidate mine imported Caffe from /elsewhere/caffe/"):
        check_caffe_from("/elsewhere/caffe/__init__.py", str(tmp_path), "mine", "bench-x")


def test_scale_projection_runs_every_seed_and_reports_ranges(tmp_path: Path, tiny_net_file: Path) -> None:
    """``scale_projection`` on the tiny net (fixed compute times): two schedules × W = 1, 2 with two seeds and W = 4 with one, λ tuned on a
    seed of its own, the staleness options at W = 2; a level every run reaches (at its 5th evaluation: it stops
    there) and one none reaches (never the budget, no speedup); one service-times file for every run; the REPORT
    section and the figure. A run is reused, not rerun, when the bench is run again."""
    from ddqn.bench.report.projection import section

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(json.dumps({"board_size": 6, "starve_steps": 30, "net": str(tiny_net_file),
                               "solver": str(ROOT / "ddqn" / "prototxt" / "solver_rmsprop.prototxt"),
                               "replay_capacity": 400, "replay_warmup": 60, "eps_decay_steps": 500,
                               "target_update": 25, "eval_every": 20, "eval_episodes": 2, "log_every": 50}))
    shutil.copy(ROOT / "results" / "shard_cost.json", tmp_path)
    common = ["--config", str(cfg), "--seeds", "0", "1", "--workers", "1", "2",
              "--one-seed", "4", "--levels", "-1", "1000", "--updates", "1200", "--shards", "2", "--gbps", "10",
              "--at-updates", "100", "--fixed-cycle", "--tune-seeds", "5", "--tune-workers", "2", "--lambdas", "0.5", "1",
              "--staleness-workers", "2", "--out", str(tmp_path)]
    res = bench("scale_projection", "--screen", "--schedules", "ladder", "worker", "--screen-workers", "2", *common)
    assert res.returncode == 0, res.stderr[-3000:]
    sc = json.loads((tmp_path / "scale_projection.json").read_text())["screen"]
    assert sc["seeds"] == [7] and set(sc["table"]) == {"worker", "ladder"} and set(sc["table"]["ladder"]) == {"2"}
    assert sc["best"] == "ladder" and sc["projected"] == ["worker", "ladder"] and sorted(sc["ranked"]) == [
        "ladder", "worker"]  # neither reaches 1000: ranked by best trailing mean; worker is projected either way
    res = bench("scale_projection", "--project", "--tune-dc", "--staleness", *common)  # the screen's two schedules
    assert res.returncode == 0, res.stderr[-3000:]
    data = json.loads((tmp_path / "scale_projection.json").read_text())
    p = data["projection"]
    assert p["schedules"] == ["worker", "ladder"] and data["screen"] == sc
    assert set(p["table"]) == {"worker", "ladder"} and set(p["table"]["worker"]) == {"1", "2", "4"}
    one, four = p["table"]["worker"]["1"], p["table"]["worker"]["4"]
    assert one["seeds"] == [0, 1] and four["seeds"] == [0]
    assert one["interval"]["-1.0"]["reached"] == 2 and one["interval"]["1000.0"]["reached"] == 0
    assert one["speedup"]["1000.0"] is None  # no W = 1 reached it: no baseline, no speedup
    two = p["table"]["worker"]["2"]["speedup"]["-1.0"]
    assert two["reached"] == 2 and two["best"] is not None and p["baseline"]["-1.0"]["schedule"] in ("worker", "ladder")
    assert all(len(c["at_updates"]) == len(c["seeds"]) for t in p["table"].values() for c in t.values())
    assert any(x is not None for t in p["table"].values() for c in t.values() for x in c["at_updates"])
    runs = Path(data["runs"])
    service = json.loads((runs / "service.json").read_text())
    assert len(service["service"]) == 1 and service["machine"]["cores"] >= 1
    assert data["tune_dc"]["lambda"] in (0.5, 1.0) and set(data["tune_dc"]["rows"]) == {"0.5", "1"}
    assert set(data["staleness"]["table"]["2"]) == {"none", "max_staleness", "staleness_lr", "dc_lambda"}
    assert (runs / f"{data['staleness']['schedule']}-w2-s1-dc_lambda" / "summary.json").is_file()
    assert (tmp_path / "scale_projection.png").stat().st_size > 1000
    assert p["goal"] is None  # level 5 is not in this table
    text = "\n".join(section(data))
    assert "**Projection**" in text and "not reached (0 of 2)" in text and "**Staleness options**" in text
    assert "**Screen** (seeds 7, which no other table reports; W = 2;" in text and "| `ladder` | 2 | 7 | " in text
    again = bench("scale_projection", "--project", *common)
    assert again.returncode == 0 and "running:" not in again.stdout and again.stdout.count("reusing") == 10


def test_the_projection_charges_shard_costs_measured_on_this_cpu(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 32's one CPU, one clock: results/shard_cost.json's ``alone`` block serves the projection only when this CPU
    model measured it for the config; otherwise bench-shard-cost-alone measures once into the runs' directory."""
    from ddqn.bench import scale_projection as sp
    from ddqn.bench.common import machine

    calls: list[list[str]] = []

    def measure(cmd: list[str], **_: object) -> None:
        calls.append(cmd)
        (root / "shard_cost.json").write_text(json.dumps({"alone": {"machine": machine()}}))

    monkeypatch.setattr(sp.subprocess, "run", measure)
    args, root = sp.parse(["--screen", "--out", str(tmp_path)]), tmp_path / "runs" / "x"
    other = {**machine(), "family": -1}
    for m, config, measured in ((other, "tuned", True), (machine(), "paper", True), (machine(), "tuned", False)):
        calls.clear()
        shutil.rmtree(root, ignore_errors=True)
        (tmp_path / "shard_cost.json").write_text(json.dumps({"alone": {"machine": m, "config": {"config": config}}}))
        got = sp.shard_cost_file(args, root)
        assert got == (root / "shard_cost.json" if measured else tmp_path / "shard_cost.json")
        assert len(calls) == measured and (not calls or calls[0][calls[0].index("--out") + 1] == str(root))
        if measured:  # measured once: the next run reuses it
            assert sp.shard_cost_file(args, root) == root / "shard_cost.json" and len(calls) == 1


def test_the_screen_ranks_by_runs_reaching_then_minutes_then_best_and_keeps_its_seeds_apart() -> None:
    """The screen's rule, fixed before its runs: more runs reaching the top level, then fewer mean minutes (only when
    every run reached it), then a higher mean best trailing mean; a seed that chose something is in no table."""
    from ddqn.bench.scale_projection import parse, screen_rank

    def runs(*got: tuple[float | None, float]) -> dict[int, dict[int, dict]]:
        return {16 + i: {7: {"reach": {"5.0": m}, "best": b}} for i, (m, b) in enumerate(got)}

    both_slow, both_fast = runs((30.0, 5.0), (20.0, 5.0)), runs((10.0, 5.0), (12.0, 5.0))
    one, one_better = runs((5.0, 5.0), (None, 3.0)), runs((50.0, 5.0), (None, 4.0))
    ranked = sorted({"a": both_slow, "b": both_fast, "c": one, "d": one_better}.items(),
                    key=lambda kv: screen_rank(kv[1], "5.0"))
    assert [k for k, _ in ranked] == ["b", "a", "d", "c"]
    assert screen_rank(one, "5.0") == (-1.0, math.inf, -4.0)
    for clash in (["--screen-seeds", "0"], ["--tune-seeds", "7"]):
        with pytest.raises(SystemExit) as e:
            parse(["--screen", *clash])
        assert e.value.code == 2


def test_the_best_schedule_is_decided_at_the_largest_w_then_lower_levels_then_smaller_w() -> None:
    """DC-ASGD's λ and the staleness table use the projection's best schedule: soonest to the highest level every seed
    of the largest W reached, else a lower level, else the same at a smaller W; never the list's order by a tie."""
    from ddqn.bench.scale_projection import best_schedule

    def cell(minutes: list[float | None], best: list[float]) -> dict:  # summarise's fields that it reads
        return {"minutes": {"3.0": minutes, "5.0": minutes}, "best": best}

    def proj(**table: dict) -> dict:
        return {"projection": {"levels": [3.0, 5.0], "workers": [1, 16, 64], "schedules": list(table),
                               "table": table}}

    none, slow16, fast16 = cell([None, None], [1.0, 2.0]), cell([0.9, 0.8], [5.2, 5.3]), cell([0.5, 0.4], [5.5, 5.6])
    # nothing at W = 64 by either: W = 16 decides, whichever comes first in the list
    assert best_schedule(proj(worker={"64": none, "16": slow16}, ladder={"64": none, "16": fast16})) == "ladder"
    assert best_schedule(proj(ladder={"64": none, "16": fast16}, worker={"64": none, "16": slow16})) == "ladder"
    # every seed at W = 64 beats any W = 16; one seed of two at W = 64 is not reached
    assert best_schedule(proj(worker={"64": cell([0.3, 0.3], [5.0, 5.0]), "16": slow16},
                              ladder={"64": cell([0.1, None], [5.0, 1.0]), "16": fast16})) == "worker"
    # nothing anywhere: the higher best trailing mean at W = 64
    assert best_schedule(proj(worker={"64": none, "16": none}, ladder={"64": cell([None, None], [3.0, 2.0]),
                                                                       "16": none})) == "ladder"


def test_a_speedup_cell_gives_the_range_only_when_every_seed_reached() -> None:
    """REPORT cells of the projection: mean (worst–best) when all seeds reached; else how many did and the best seed's
    figure, never a range that starts at "not reached"; noise above W is marked."""
    from ddqn.bench.report.projection import _speedup

    def cell(base: list[float | None], runs: list[float | None], w: int) -> str:
        return _speedup(seed_speedup(base, runs, w))

    assert cell([12.0, 8.0], [1.0, 0.8], 16) == "11.11× (10.00–12.50)"
    assert cell([12.0, 8.0], [0.5, None], 64) == "1 of 2 reached: best seed 20.00×"
    assert cell([12.0, 8.0], [None, None], 64) == "not reached (0 of 2)"
    assert cell([12.0, 8.0], [0.5, 0.5], 16).endswith("**noise: above W**")


def test_the_scale_goal_takes_each_ws_best_schedule_by_its_worst_seed() -> None:
    """Issue 32's goal at W = 16 (≥ 12×) and 64 (≥ 32×) on the worst seed's speedup to 5, for the schedule whose
    worst seed comes closest; a speedup above W is noise and meets nothing; no level 5 in the table: no goal."""
    from ddqn.bench.scale_projection import goal

    table = {"worker": {"16": {"speedup": {"5.0": {"worst": 13.0}}}, "64": {"speedup": {"5.0": {"worst": 20.0}}}},
             "ladder": {"16": {"speedup": {"5.0": {"worst": 11.0}}}, "64": {"speedup": {"5.0": None}}}}
    got = goal(table, [3.0, 4.0, 5.0])
    assert (got["16"]["schedule"], got["16"]["worst"], got["16"]["met"]) == ("worker", 13.0, True)
    assert (got["64"]["schedule"], got["64"]["want"], got["64"]["met"]) == ("worker", 32.0, False)
    table["worker"]["16"]["speedup"]["5.0"]["worst"] = 17.0  # more than 16 workers can give: noise
    assert goal(table, [5.0])["16"]["met"] is False and goal(table, [3.0, 4.0]) is None


def test_scale_validation_compares_three_and_three_curves_on_the_real_update_grid(
        tmp_path: Path, tiny_net_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--validate``'s plumbing on the tiny net, in-process, with its real runs REPLACED by simulations of other
    seeds (a Spark job per seed would take minutes here; the real path is ``sim_runs.real_run``, which
    ``make bench-scale-validate`` uses): each simulation runs to its "real" run's update count; the split test gets
    3 + 3 curves on the first real seed's evaluation points; the REPORT section gives its verdict."""
    from ddqn.bench import scale_projection
    from ddqn.bench.report.projection import section
    from ddqn.bench.sim_runs import eval_curve, simulate

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(json.dumps({"board_size": 6, "starve_steps": 30, "net": str(tiny_net_file),
                               "solver": str(ROOT / "ddqn" / "prototxt" / "solver_rmsprop.prototxt"),
                               "replay_capacity": 400, "replay_warmup": 60, "eps_decay_steps": 500,
                               "target_update": 25, "eval_every": 40, "eval_episodes": 2, "log_every": 50}))
    fake = []

    def not_real(config: Path, workers: int, minutes: float, out: Path) -> Path:
        fake.append(out.name)
        return simulate(config, workers, out, None, 800, [f"seed={100 + len(fake)}"], ["--fixed-cycle"])

    monkeypatch.setattr(scale_projection, "real_run", not_real)
    scale_projection.main(["--validate", "--config", str(cfg), "--seeds", "0", "1", "2", "--fixed-cycle",
                           "--out", str(tmp_path)])
    v = json.loads((tmp_path / "scale_projection.json").read_text())["validation"]
    assert fake == ["real-w2-s0", "real-w2-s1", "real-w2-s2"] and v["seeds"] == [0, 1, 2]
    runs = tmp_path / "runs" / "scale-projection-tiny"
    for s in (0, 1, 2):
        assert eval_curve(runs / f"sim-w2-s{s}")[-1]["updates"] == eval_curve(runs / f"real-w2-s{s}")[-1]["updates"]
    t = v["test"]
    assert t["splits"] == 20 and t["pass_chance"] == pytest.approx(0.9) and t["grid_points"] == len(v["grid_updates"])
    assert t["grid_points"] >= 3 and isinstance(t["pass"], bool)
    assert "**Validation at W = 2**" in "\n".join(section(json.loads((tmp_path / "scale_projection.json").read_text())))
    with figure(tmp_path / "validation.png") as (_, ax):  # the figure's panel: a real and a simulated curve per seed
        scale_projection.plot_validation(ax, v)
        assert len(ax.get_lines()) == 6 and "split test p = " in ax.get_title()
