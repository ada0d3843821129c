"""The scale-out simulator (ddqn.sim) and the server's staleness controls, at a tiny size (seconds each).

Every gradient is real Caffe on the tiny net; times come from a fixed table (``FixedCycle``), so runs are
deterministic for a seed.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pytest

from ddqn.config import Config, config_values, load_config, make_config
from ddqn.distributed import protocol as P
from ddqn.distributed.client import ServerClient
from ddqn.distributed.server import ParameterServer, ServerOptions
from ddqn.distributed.store import ParameterStore
from ddqn.errors import ConfigError
from ddqn.game import game_actions
from ddqn.net.netspec import load_netspec
from ddqn.net.qnet import QNetwork
from ddqn.sim.cli import main as sim_main
from ddqn.sim.network import SERVER, Network
from ddqn.sim.run import SimOptions, Simulation
from ddqn.sim.service import ServiceTimes
from ddqn.sim.timing import FIXED_SERVICE, FixedCycle
from ddqn.solvers.flat import load_solver_spec, make_solver

pytestmark = pytest.mark.timeout(180)

RMSPROP = "prototxt/solver_rmsprop.prototxt"
CYCLE = FixedCycle()  # 2 ms per env step, 20 ms per gradient, 1 s warm-up


def _cfg(net: Path, **kw) -> Config:
    """The tiny net on a 6×6 board, small replay, short evaluations; ``kw`` overrides."""
    values = {"board_size": 6, "starve_steps": 30, "net": str(net), "solver": RMSPROP, "replay_capacity": 400,
              "replay_warmup": 60, "eps_decay_steps": 500, "target_update": 25, "eval_every": 400,
              "eval_episodes": 2, "log_every": 50, "fetch_every": 1, "push_every": 1, "seed": 3, **kw}
    return make_config(values, "test")


def _simulate(cfg: Config, out: Path, workers: int, service: ServiceTimes = FIXED_SERVICE,
              fixed: FixedCycle = CYCLE, **opts) -> Simulation:
    sim = Simulation(cfg, out, service, SimOptions(workers, fixed=fixed, **opts))
    sim.run()
    return sim


def test_equal_cycles_give_staleness_w_minus_1(tiny_net_file: Path, tmp_path: Path) -> None:
    w = 4
    sim = _simulate(_cfg(tiny_net_file), tmp_path, w, updates=60)
    hist = sim.server.staleness
    assert sim.store.version == 60
    assert hist == {0: 1, 1: 1, 2: 1, 3: 57}, hist  # the first W gradients: 0 … W−1, then exactly W − 1
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["updates"] == 60 and summary["simulated"]["staleness_histogram"] == {"0": 1, "1": 1, "2": 1,
                                                                                        "3": 57}
    with open(tmp_path / "eval.csv", newline="") as f:
        assert list(csv.DictReader(f))[-1]["eval/updates"] == "60"


def test_every_w_is_evaluated_on_the_same_env_step_grid(tiny_net_file: Path, tmp_path: Path) -> None:
    """Evaluations come each ``eval_every`` env steps really played, whatever W: 16 workers play ≈ 1,450 env steps
    between two rounds of STATS reports (2 s), which must not coarsen the 400-step grid (issue 32's speedups)."""
    sim = _simulate(_cfg(tiny_net_file), tmp_path, 16, updates=2400)
    with open(tmp_path / "eval.csv", newline="") as f:
        steps = [int(r["step"]) for r in csv.DictReader(f)]
    played = sum(w.counts["env_steps"] for w in sim.workers)
    assert steps[:-1] == list(range(400, played + 1, 400)), (steps, played)  # the last: the final evaluation
    assert steps[-1] == played


def test_same_seed_same_theta(tiny_net_file: Path, tmp_path: Path) -> None:
    cfg = _cfg(tiny_net_file)
    a, b = (_simulate(cfg, tmp_path / name, 3, updates=40) for name in "ab")
    assert a.store.version == b.store.version == 40
    assert np.array_equal(a.store.theta, b.store.theta) and np.array_equal(a.store.target, b.store.target)
    assert all(np.array_equal(x, y) for x, y in zip(a.store.solver.history, b.store.solver.history))
    other = _simulate(dataclasses.replace(cfg, seed=4), tmp_path / "c", 3, updates=40)
    assert not np.array_equal(a.store.theta, other.store.theta)


def test_an_lmdb_config_simulates_in_ram_with_the_same_theta(tiny_net_file: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Simulated workers keep their replay in RAM whatever ``replay_backend`` says (they have no directory of their
    own; LMDB would sample the same batches): no LMDB appears in the working directory, and θ is the RAM run's."""
    monkeypatch.chdir(tmp_path)
    cfg = _cfg(tiny_net_file)
    ram = _simulate(cfg, tmp_path / "ram", 2, updates=20)
    lmdb = _simulate(dataclasses.replace(cfg, replay_backend="lmdb"), tmp_path / "lmdb", 2, updates=20)
    assert np.array_equal(ram.store.theta, lmdb.store.theta)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lmdb", "ram", tiny_net_file.name]


def test_a_slow_server_saturates(tiny_net_file: Path, tmp_path: Path) -> None:
    """PUSH service 10 ms > a worker's 1.5 ms cycle: the server is (almost) always busy, updates/s = busy share ÷
    service time → 100/s. FIFO keeps the workers in step: each round of W pushes is followed by their FETCHes and
    one compute gap, so the busy share is ≈ W·10 ms / (W·10 ms + 1.5 ms) — 99 % at W = 16."""
    service = dataclasses.replace(FIXED_SERVICE, push_s=0.010, fetch_s=0.0, fetch_both_s=0.0, stats_s=0.0)
    fixed = FixedCycle(step_s=0.0005, gradient_s=0.001, warmup_s=0.0)
    sim = _simulate(_cfg(tiny_net_file), tmp_path / "slow", 16, service, fixed, updates=1000)
    rate, busy = sim.store.version / sim.events.now, sim.server.busy_s / sim.events.now
    assert rate == pytest.approx(busy / 0.010, rel=1e-9) and busy > 0.98, (rate, busy)
    assert sim.server.max_queue == 15  # every other worker waits while one is served
    fast = _simulate(_cfg(tiny_net_file), tmp_path / "fast", 2, FIXED_SERVICE, fixed, updates=1000)
    assert fast.server.busy_s / fast.events.now < 0.5  # 2 workers, 0.3 ms of server per 2.3 ms cycle


def test_a_card_carries_one_message_at_a_time_in_each_direction() -> None:
    """Full-duplex cards, first come first served: two gradients handed over at once reach the server one card-time
    apart (they share its ingress); a θ the server sends meanwhile does not wait for them (its egress is free)."""
    net = Network(gbps=1.0, efficiency=1.0, overhead_bytes=0)
    one = net.seconds(1_000_000)
    assert one == pytest.approx(0.008)  # 1 MB at 1 Gbit/s
    assert net.transfer(0, SERVER, 0.0, 1_000_000) == pytest.approx(one)
    assert net.transfer(1, SERVER, 0.0, 1_000_000) == pytest.approx(2 * one)  # behind the first on the ingress
    assert net.transfer(SERVER, 0, 0.0, 1_000_000) == pytest.approx(one)  # the other direction
    assert net.transfer(0, SERVER, 0.0, 1_000_000) == pytest.approx(3 * one)  # its own egress was free at 1×
    assert net.use(SERVER, 3 * one) == pytest.approx({"egress": 1 / 3, "ingress": 1.0})
    with pytest.raises(ValueError, match="gbps > 0"):
        Network(gbps=0.0)


def test_a_one_packet_message_passes_a_large_transfer_and_delays_it_by_its_bytes() -> None:
    """A FETCH request handed over while a gradient crosses the server's ingress arrives after its own bytes, not
    after the gradient's; the gradient arrives that much later; and a thousand requests at once still take a
    thousand requests' time (the rate is never exceeded)."""
    net = Network(gbps=1.0, efficiency=1.0, overhead_bytes=256)
    big, small = net.seconds(1_000_000), net.seconds(0)
    assert net.transfer(0, SERVER, 0.0, 1_000_000) == pytest.approx(big)
    assert net.transfer(1, SERVER, 0.001, 0) == pytest.approx(0.001 + small)  # not big + small
    assert net.transfer(0, SERVER, big, 1_000_000) == pytest.approx(2 * big + small)  # the first ended `small` late
    many = Network(gbps=1.0, efficiency=1.0, overhead_bytes=256)
    assert max(many.transfer(p, SERVER, 0.0, 0) for p in range(1000)) == pytest.approx(1000 * small)


def test_a_token_bucket_sends_a_burst_at_once_after_an_idle_gap() -> None:
    """With tbf's bucket, an idle direction gathers up to ``burst_bytes`` of tokens: a message's first bytes up to
    them go at once and the rest at the rate; one sent right after it finds no tokens."""
    net = Network(gbps=1.0, efficiency=1.0, overhead_bytes=0, burst_bytes=125_000)
    rate = 1e9 / 8
    one = 875_000 / rate
    assert net.transfer(0, SERVER, 0.0, 1_000_000) == pytest.approx(one)  # buckets start full (as tbf's)
    assert net.transfer(0, SERVER, one, 1_000_000) == pytest.approx(one + 1_000_000 / rate)  # none left
    later = one + 1_000_000 / rate + 0.0005  # half a bucket gathered
    assert net.transfer(0, SERVER, later, 1_000_000) == pytest.approx(later + (1_000_000 - 62_500) / rate)
    assert net.transfer(0, SERVER, 10.0, 100_000) == pytest.approx(10.0)  # within the bucket: at once
    assert Network(gbps=1.0).transfer(0, SERVER, 5.0, 1_000_000) > 5.0 + 1_000_000 / rate  # no bucket: the rate
def test_workers_share_the_servers_card(tiny_net_file: Path, tmp_path: Path) -> None:
    """A link slow enough that one gradient takes 4× a worker's compute: the server's ingress carries every
    worker's gradients one after another and its egress every θ, so updates/s stops at the card's rate however many
    workers push, and the card is (almost) always busy. A per-message charge would have let 4 workers push 4 times
    as fast as one."""
    cfg = _cfg(tiny_net_file)
    fixed = FixedCycle(step_s=0.0005, gradient_s=0.001, warmup_s=0.0)
    payload = 4 * load_netspec(tiny_net_file).num_params
    gbps = (payload + Network(1.0).overhead_bytes) * 8 / 0.004 / 1e9 / Network(1.0).efficiency  # 4 ms a gradient
    rates = {}
    for w in (1, 4):
        sim = _simulate(cfg, tmp_path / f"w{w}", w, FIXED_SERVICE, fixed, updates=400, gbps=gbps)
        rates[w] = sim.store.version / sim.events.now
        if w == 4:
            use = json.loads((tmp_path / "w4" / "summary.json").read_text())["simulated"]["server_nic_use"]
            # θ down (and θ⁻ with it every C updates) is the busier direction: at the card's message-byte rate
            assert use["egress"] > 0.93 * Network(1.0).efficiency and use["ingress"] > 0.8, use
    assert rates[4] <= 1 / 0.004 * 1.001, rates  # the card's bound: 250 gradients/s
    assert rates[4] < 0.6 * 4 * rates[1], rates  # 4 workers alone on their links would make 4× one's rate


def test_max_staleness_drops_and_counts(tiny_net_file: Path, tmp_path: Path) -> None:
    sim = _simulate(_cfg(tiny_net_file), tmp_path, 4, minutes=0.05, max_staleness=1)
    dropped = sum(sim.server.too_stale.values())
    assert dropped > 0 and min(sim.server.too_stale) == 2
    assert max(sim.server.staleness) <= 1
    assert sim.stats.view().dropped == {"too stale": dropped}
    assert sim.store.version == sum(sim.server.staleness.values())  # only admitted gradients were applied
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["dropped"] == {"too stale": dropped}


def _tiny_store(net: Path, **kw) -> tuple[ParameterStore, object]:
    spec = load_netspec(net)
    theta = QNetwork(spec, seed=0).get_params()
    solver = make_solver(load_solver_spec(Config().path("solver").parent / "solver_rmsprop.prototxt"), spec.params)
    return ParameterStore(solver, theta, theta.copy(), 1000, **kw), spec


def _manual(store: ParameterStore, spec, grads: list[np.ndarray], divisors: list[int]) -> np.ndarray:
    """θ after applying ``grads`` with fresh solvers whose base_lr is the store's divided by each divisor
    (float32, as the solver does); the RMSProp history carries over, seeing each g unchanged."""
    base = store.solver.spec
    theta, history = store.theta.copy(), None
    for i, (g, d) in enumerate(zip(grads, divisors)):
        lr = float(np.float32(np.float32(base.base_lr) / np.float32(d)))
        solver = make_solver(dataclasses.replace(base, base_lr=lr), spec.params)
        solver.iter = i
        if history is not None:
            solver.history = history
        solver.apply(theta, g)
        history = solver.history
    return theta


def test_staleness_lr_divides_the_rate_not_the_gradient(tiny_net_file: Path) -> None:
    store, spec = _tiny_store(tiny_net_file, staleness_lr=True)
    rng = np.random.default_rng(0)
    grads = [rng.standard_normal(spec.num_params).astype(np.float32) * 1e-2 for _ in range(3)]
    want = _manual(store, spec, grads, [1, 4, 3])
    for g, tau in zip(grads, [0, 3, 2]):
        store.apply(g, tau)
    assert np.array_equal(store.theta, want)
    plain, _ = _tiny_store(tiny_net_file)
    for g, tau in zip(grads, [0, 3, 2]):
        plain.apply(g, tau)  # staleness_lr off: the staleness changes nothing
    assert np.array_equal(plain.theta, _manual(_tiny_store(tiny_net_file)[0], spec, grads, [1, 1, 1]))
    assert not np.array_equal(plain.theta, store.theta)


def test_real_server_drops_too_stale_gradients_and_scales_the_rate(tiny_net_file: Path) -> None:
    """The socket server: a gradient 2 versions old is dropped (counted, ACKed, θ untouched) with max_staleness 1;
    one 1 version old is applied at half the rate with staleness_lr."""
    store, spec = _tiny_store(tiny_net_file, max_staleness=1, staleness_lr=True)
    g = np.full(spec.num_params, 1e-3, np.float32)
    want = _manual(store, spec, [g, g], [1, 2])
    server = ParameterServer(store, P.new_secret(), ServerOptions(partitions=1)).start()
    client = ServerClient(server.address, server.secret, 0, 0, spec.num_params, timeout=10)
    try:
        base = client.fetch().version
        assert client.push(g, base) == (base + 1, False)  # staleness 0
        assert client.push(g, base) == (base + 2, False)  # staleness 1: rate / 2
        assert np.array_equal(store.theta, want)
        assert client.push(g, base) == (base + 2, False)  # staleness 2: dropped, but ACKed
        deadline = time.monotonic() + 5
        while not server.stats.view().dropped and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.stats.view().dropped == {"too stale": 1}
        assert np.array_equal(store.theta, want) and store.version == base + 2
    finally:
        client.close()
        server.close()


def test_delay_compensation_is_dc_asgds_formula(tiny_net_file: Path) -> None:
    """DC-ASGD: a gradient of staleness τ > 0 computed on θ_fetched is applied as g + λ·g⊙g⊙(θ − θ_fetched) (float32,
    then the solver); a fresh one, or one whose θ_fetched is unknown, as it is; λ = 0 changes nothing."""
    lam = 0.5
    store, spec = _tiny_store(tiny_net_file, dc_lambda=lam)
    ref, _ = _tiny_store(tiny_net_file)
    rng = np.random.default_rng(1)
    g1, g2 = (rng.standard_normal(spec.num_params).astype(np.float32) for _ in range(2))
    fetched = store.theta.copy()
    store.apply(g1, 0, fetched)
    ref.apply(g1, 0)
    assert np.array_equal(store.theta, ref.theta)  # staleness 0: θ = θ_fetched, nothing to compensate
    f32 = np.float32
    want = (g2 + f32(lam) * g2 * g2 * (store.theta - fetched)).astype(np.float32)
    store.apply(g2, 1, fetched)
    ref.apply(want, 1)
    assert np.array_equal(store.theta, ref.theta)
    plain, _ = _tiny_store(tiny_net_file)
    plain.apply(g1, 0, fetched)
    plain.apply(g2, 1, fetched)  # dc_lambda 0: off
    unknown, _ = _tiny_store(tiny_net_file, dc_lambda=lam)
    unknown.apply(g1, 0)
    unknown.apply(g2, 1)  # no θ_fetched: applied as it is
    assert np.array_equal(plain.theta, unknown.theta) and not np.array_equal(plain.theta, store.theta)


def test_real_server_compensates_a_stale_push_with_the_theta_it_sent(tiny_net_file: Path) -> None:
    """The socket server keeps the θ it last sent each partition (a published buffer, no copy) and compensates a
    stale PUSH computed on it: the same θ as the store's own formula applied to that θ."""
    store, spec = _tiny_store(tiny_net_file, dc_lambda=2.0)
    ref, _ = _tiny_store(tiny_net_file, dc_lambda=2.0)
    g = np.full(spec.num_params, 1e-2, np.float32)
    server = ParameterServer(store, P.new_secret(), ServerOptions(partitions=2)).start()
    a = ServerClient(server.address, server.secret, 0, 0, spec.num_params, timeout=10)
    b = ServerClient(server.address, server.secret, 1, 0, spec.num_params, timeout=10)
    try:
        base = a.fetch().version
        fetched = b.fetch().theta.copy()  # both hold θ of version `base`
        a.push(g, base)
        b.push(2 * g, base)  # staleness 1, computed on `fetched`
        ref.apply(g, 0, fetched)
        ref.apply(2 * g, 1, fetched)
        assert np.array_equal(store.theta, ref.theta)
        uncompensated, _ = _tiny_store(tiny_net_file)
        uncompensated.apply(g, 0)
        uncompensated.apply(2 * g, 1)
        assert not np.array_equal(store.theta, uncompensated.theta)
    finally:
        a.close()
        b.close()
        server.close()


def test_a_run_stops_once_its_trailing_mean_reaches_the_stop_score(tiny_net_file: Path, tmp_path: Path) -> None:
    """``stop_score``: the run ends at the evaluation where the trailing mean of TRAILING_K evaluations first reaches
    the level (``stats.reach``, the benches' rule), not at its budget; a level below any score stops it at the
    TRAILING_K-th evaluation."""
    from ddqn.bench.stats import TRAILING_K, reach

    cfg = _cfg(tiny_net_file, eval_every=100)
    sim = _simulate(cfg, tmp_path / "stop", 1, updates=10**6, stop_score=-1.0)
    with open(tmp_path / "stop" / "eval.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == TRAILING_K + 1  # the last: the final evaluation every run makes
    summary = json.loads((tmp_path / "stop" / "summary.json").read_text())
    assert summary["stopped_at_score"] == -1.0 and sim.store.version < 10**6
    curve = [{"minutes": 0.0, "greedy_mean": float(r["eval/greedy_score_mean"])} for r in rows[:-1]]
    assert reach(curve, -1.0) is not None and reach(curve[:-1], -1.0) is None
    high = _simulate(cfg, tmp_path / "high", 1, updates=60, stop_score=1e9)
    assert high.store.version == 60 and json.loads((tmp_path / "high" / "summary.json").read_text())[
        "stopped_at_score"] is None


def test_the_simulated_server_compensates_as_the_real_one(tiny_net_file: Path, tmp_path: Path) -> None:
    """The simulator's server keeps each worker's fetched θ too: with dc_lambda its stale gradients are compensated
    (θ differs from the same run without), and a run with λ is as deterministic as one without."""
    cfg = _cfg(tiny_net_file)
    runs = {lam: _simulate(cfg, tmp_path / f"dc{lam}", 4, updates=40, dc_lambda=lam) for lam in (0.0, 1.0)}
    again = _simulate(cfg, tmp_path / "dc-again", 4, updates=40, dc_lambda=1.0)
    assert all(r.store.version == 40 for r in runs.values())
    assert not np.array_equal(runs[0.0].store.theta, runs[1.0].store.theta)
    assert np.array_equal(again.store.theta, runs[1.0].store.theta)
    with pytest.raises(ConfigError, match="dc_lambda: must be >= 0"):
        make_config({"dc_lambda": -1.0}, "test")


def test_cli_writes_a_run_directory(tiny_net_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    summary = sim_main(["--config", "small", "--set", f"net={tiny_net_file}", "--set", "board_size=6",
                        "--set", "replay_warmup=60", "--set", "replay_capacity=400", "--set", "eval_episodes=2",
                        "--set", "log_every=20", "--workers", "2", "--minutes", "0.1", "--fixed-cycle",
                        "--out", str(out), "--no-progress"])
    for name in ("config.yaml", "train.csv", "eval.csv", "summary.json", "server_state.json"):
        assert (out / name).is_file(), name
    with open(out / "train.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and {"server/updates_per_s", "server/staleness_p50", "server/staleness_p95",
                     "server/utilisation"} <= set(rows[0])
    assert summary["simulated"]["service_source"] == "fixed" and summary["minutes"] == pytest.approx(0.1, abs=0.01)


def test_validation_score_measures() -> None:
    """The fixed criterion (share inside the real seeds' range) and the post-hoc RMS ratio on known curves."""
    from ddqn.bench.scale_out import noise_ratio, spread_share

    def curve(values: list[float]) -> list[dict[str, float]]:
        return [{"updates": 100 * i, "greedy_mean": v} for i, v in enumerate(values)]

    a, b = curve([0, 1, 2, 3, 2]), curve([1, 2, 1, 2, 4])
    assert spread_share(curve([0.5, 1.5, 1.5, 2.5, 3.0]), [a, b]) == 1.0
    assert spread_share(curve([5, 5, 5, 5, 5]), [a, b]) == 0.0
    assert noise_ratio(a, [a, b]) == pytest.approx({"rms_ratio": 0.5, "mean_diff": -0.2, "points": 5,
                                                    "rms_diff": np.sqrt(0.4), "real_rms_diff": np.sqrt(1.6)})
    assert noise_ratio(curve([0.5, 1.5, 1.5, 2.5, 3.0]), [a, b])["rms_ratio"] == 0.0
    shifted = noise_ratio(curve([3.5, 4.5, 4.5, 5.5, 6.0]), [a, b])
    assert shifted["mean_diff"] == pytest.approx(3.0) and shifted["rms_ratio"] > 2
    assert noise_ratio(a, [a]) is None and noise_ratio(a, [a, []]) is None


def test_projection_levels_are_reached_by_one_worker() -> None:
    """Default levels are ones W = 1 reaches (a speedup needs them); minutes and speedups come from the first
    crossing of a trailing 5-evaluation mean (ddqn.bench.stats), never from one lucky evaluation."""
    import argparse

    from ddqn.bench.scale_out import levels_for, reach_rows

    def curve(values: list[float]) -> list[dict[str, float]]:
        return [{"minutes": float(i + 1), "env_steps": 100 * i, "greedy_mean": v} for i, v in enumerate(values)]

    w1, w2 = curve([1.0, 2.0, 3.0, 4.0, 5.0, 5.0, 5.0, 5.0, 5.0]), curve([4.0, 5.0, 5.0, 5.0, 5.0, 5.0])
    paper, other = (argparse.Namespace(levels=None, config=f"{n}.yaml") for n in ("paper", "tuned"))
    assert levels_for(paper, w1) == [2.5, 3.0, 4.0, 4.5, 5.0]  # the paper's 3 and 5 (not 10), 50/75/90 % of 5.0
    assert levels_for(other, curve([6.0] * 5)) == [3.0, 4.5, 5.5]
    assert levels_for(argparse.Namespace(levels=[1.0], config="paper"), w1) == [1.0]
    rows = reach_rows({1: w1, 2: w2}, [3.0, 4.8, 6.0])
    assert rows[1]["reach"]["4.8"]["minutes"] == 8.0  # (4 + 4 × 5) / 5 at the 8th evaluation
    assert rows[1]["speedup"] == {"3.0": 1.0, "4.8": 1.0, "6.0": None}
    assert rows[2]["reach"]["4.8"]["minutes"] == 5.0 and rows[2]["reach"]["4.8"]["env_steps"] == 400
    assert rows[2]["speedup"] == {"3.0": 1.0, "4.8": 1.6, "6.0": None}
    assert reach_rows({1: curve([0.0, 0.0, 0.0, 0.0, 9.0])}, [3.0])[1]["reach"]["3.0"] is None  # one lucky point


# -- the simulator held to links with a rate (ddqn.bench.links_model) ------------------------------------------
def test_links_model_fits_the_efficiency_by_bisection_and_reads_compute_per_gradient(tmp_path: Path) -> None:
    from ddqn.bench.links_model import EFFICIENCY, compute_per_gradient, fit_efficiency
    from ddqn.bench.links_model import main as model_main
    calls: list[float] = []

    def rate(e: float) -> float:  # increasing in the efficiency, as a shared card's updates/s is
        calls.append(e)
        return 40 * e / (1 + e)

    e, got = fit_efficiency(rate(0.55), rate)
    assert abs(e - 0.55) < (EFFICIENCY[1] - EFFICIENCY[0]) / 2 ** 6 and abs(got - rate(0.55)) < 0.3, (e, got)
    assert fit_efficiency(99.0, rate)[0] == EFFICIENCY[1]  # faster than a perfect wire: the bracket's top, no search
    row = {"link_gbit": None, "workers": {"0": {"compute_s": 3.0, "pushes": 100}, "1": {"compute_s": 5.0,
                                                                                      "pushes": 60}}}
    assert compute_per_gradient(row) == pytest.approx(8.0 / 160)
    with pytest.raises(SystemExit, match="no such file"):
        model_main(["--links", str(tmp_path / "none.json")])
    links = tmp_path / "links.json"
    links.write_text(json.dumps({"config": {"config": "paper", "workers": 2}, "rows": [row]}))
    with pytest.raises(SystemExit, match="has no run at that rate"):
        model_main(["--links", str(links), "--calibrate", "none", "0.5"])
    with pytest.raises(SystemExit, match="needs a shaped rate"):
        model_main(["--links", str(links), "--calibrate", "none", "none"])


# -- timing-only mode and the sharded server (ddqn.sim.timing_only, ddqn.sim.shards): no Caffe ---------------------
def _no_caffe(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any QNetwork (any Caffe net) made from here on fails the test."""
    def refuse(*_a, **_k):
        raise AssertionError("a timing-only simulation made a Caffe net")

    for module in ("ddqn.sim.run", "ddqn.sim.worker", "ddqn.dqn.evaluation", "ddqn.net.qnet"):
        monkeypatch.setattr(f"{module}.QNetwork", refuse)


def _timing(cfg: Config, out: Path, workers: int, service: ServiceTimes = FIXED_SERVICE, fixed: FixedCycle = CYCLE,
            **opts):
    from ddqn.sim.timing_only import TimingSimulation

    sim = TimingSimulation(cfg, out, service, SimOptions(workers, fixed=fixed, timing_only=True, **opts))
    return sim, sim.run()


@pytest.mark.parametrize("gbps", [0.0, 0.05])
def test_timing_only_is_the_fixed_cycle_simulation_without_caffe(tiny_net_file: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch, gbps: float) -> None:
    """S = 1: the timing-only simulator (no Caffe, no replay, no gradients) keeps the learning simulator's clock on a
    fixed cycle: the same updates in the same simulated time, the same staleness, the same server busy time, the same
    card bytes (with or without a network), push_every 2 and STATS reports included."""
    cfg = _cfg(tiny_net_file, push_every=2, train_every=2)
    learning = _simulate(cfg, tmp_path / "learn", 3, updates=50, gbps=gbps)
    _no_caffe(monkeypatch)
    sim, summary = _timing(cfg, tmp_path / "timing", 3, updates=50, gbps=gbps, placement="executors")
    assert sim.version == learning.store.version == 50
    assert sim.events.now == pytest.approx(learning.events.now, rel=1e-12)
    assert sim.server.staleness == learning.server.staleness
    assert sim.server.busy_s == pytest.approx(learning.server.busy_s, rel=1e-12)
    assert summary["staleness_p50"] == json.loads((tmp_path / "learn" / "summary.json").read_text())["staleness_p50"]
    if gbps:
        assert sim.network.use(SERVER, 1.0) == learning.network.use(SERVER, 1.0)
    with pytest.raises(ValueError, match="TimingSimulation"):
        Simulation(cfg, tmp_path / "no", FIXED_SERVICE, SimOptions(2, updates=5, fixed=CYCLE, timing_only=True))


def _server_bound(a_push: float = 0.0) -> tuple[ServiceTimes, object]:
    """One server: 4 ms per PUSH, 2 ms per FETCH; shards: the same ÷ S per slice, plus ``a_push`` per PUSH."""
    from ddqn.sim.shards import ShardService

    service = dataclasses.replace(FIXED_SERVICE, push_s=0.004, fetch_s=0.002, fetch_both_s=0.003, stats_s=0.0)
    shard = ShardService({"push": a_push, "commit": 0.0, "commit_fetch": 0.0, "fetch": 0.0, "fetch_both": 0.0},
                         {"push": 0.004, "commit": 0.0, "commit_fetch": 0.002, "fetch": 0.002, "fetch_both": 0.003},
                         0.0)
    return service, shard


@pytest.mark.parametrize(("train_every", "fetch_every", "per_update_ms"),
                         [(2, 1, 1 + 2 + 0.5), (1, 1, 1 + 2), (1, 2, 1 + (2 + 10) / 2)])
def test_a_push_brings_theta_back_when_the_next_step_fetches(tiny_net_file: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch, train_every: int,
                                                              fetch_every: int, per_update_ms: float) -> None:
    """One worker on S = 2 shards, each message kind with a cost of its own (ms): PUSH 1, COMMIT 10, COMMIT answered
    with θ 2, FETCH of θ 4, FETCH answered with versions only 0.5. A push whose next step fetches asks for θ in its
    COMMITs and that step sends no FETCH: per update a shard serves PUSH + COMMIT with θ (+ the gradient step's
    FETCH, which with one worker finds θ unchanged, when ``train_every`` is 2); with ``fetch_every`` 2 every other
    push's next step fetches, so the other COMMITs are plain. The busy time per update says which messages came."""
    from ddqn.sim.shards import ShardService

    _no_caffe(monkeypatch)
    cfg = _cfg(tiny_net_file, target_update=10**6, train_every=train_every, fetch_every=fetch_every)
    ms = {"push": 1e-3, "commit": 10e-3, "commit_fetch": 2e-3, "fetch": 4e-3, "fetch_both": 4e-3}
    shard = ShardService(ms, dict.fromkeys(ms, 0.0), 0.5e-3)
    sim, _ = _timing(cfg, tmp_path / "s", 1, dataclasses.replace(FIXED_SERVICE, stats_s=0.0), updates=200, shards=2,
                     shard_service=shard)
    for s in sim.shards:
        first = 4e-3  # the first FETCH (θ and θ⁻)
        assert (s.busy_s - first) / s.store.version == pytest.approx(per_update_ms / 1e3, abs=0.02e-3), s.busy_s


def test_shards_scale_a_server_bound_run_s_fold_with_no_fixed_cost(tiny_net_file: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """16 workers whose 1 ms cycle keeps one server busy (6 ms per update: ≈ 167 updates/s). With a shard's cost b/S
    per update and a = 0, S shards make S× the updates (each shard busy); a fixed cost per message (a > 0) makes it
    less. Every shard applies every update, none is too stale, and no gradient is more than W − 1 updates old."""
    _no_caffe(monkeypatch)
    cfg = _cfg(tiny_net_file, target_update=10**6)  # no θ⁻ resets: every FETCH is of θ alone
    fixed = FixedCycle(step_s=0.0, gradient_s=0.001, warmup_s=0.0)
    service, shard = _server_bound()
    rates, busiest = {}, {}
    for s in (1, 2, 4):
        sim, summary = _timing(cfg, tmp_path / f"s{s}", 16, service, fixed, updates=1500, shards=s, shard_service=shard)
        rates[s], busiest[s] = summary["steady"]["updates_per_s"], summary["steady"]["busiest_server"]
        assert all(x.store.version >= 1500 for x in sim._servers())
        assert max(int(k) for k in summary["staleness_histogram"]) == 15 and not summary["too_stale_histogram"]
    assert rates[1] == pytest.approx(1 / 0.006, rel=0.02) and busiest[1] > 0.98, (rates, busiest)
    for s in (2, 4):
        assert rates[s] == pytest.approx(s * rates[1], rel=0.05), rates
        assert busiest[s] > 0.95, busiest
    _, fixed_cost = _server_bound(a_push=0.001)
    _, summary = _timing(cfg, tmp_path / "a", 16, service, fixed, updates=1500, shards=4, shard_service=fixed_cost)
    assert summary["steady"]["updates_per_s"] == pytest.approx(1 / (0.001 + 0.006 / 4), rel=0.05)  # 400, not 667
    assert summary["steady"]["updates_per_s"] < 0.7 * rates[4]
    with pytest.raises(ValueError, match="placement"):
        _timing(cfg, tmp_path / "bad", 2, updates=5, shards=2, placement="moon")


def test_executors_spread_the_bytes_over_s_cards_and_the_driver_does_not(tiny_net_file: Path, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The paper net's 0.91 MB (timing-only: no Caffe, so its size costs nothing), 2 workers at a 20 ms cycle on
    cards that carry it: with shards on executors each shard's card carries 1/S of the bytes, so the busiest card's
    use per update falls ≈ S-fold; with every shard on the driver's host its one card carries them all (a little
    more: S headers per message and the COMMIT's votes)."""
    _no_caffe(monkeypatch)
    cfg = _cfg(Config().path("net").parent / "snake_paper.prototxt")
    payload = 4 * load_netspec(cfg.path("net")).num_params
    gbps = 2 * 40 * payload * 8 / 0.3 / 1e9  # 2 workers × ≈ 40 updates/s × (gradient + θ): ≈ 30 % of a card's way
    runs = {}
    for s, placement in ((1, "driver"), (4, "executors"), (4, "driver")):
        _, summary = _timing(cfg, tmp_path / f"{s}{placement}", 2, updates=400, gbps=gbps, shards=s,
                             placement=placement)
        runs[s, placement] = summary
    per_update = {k: x["steady"]["busiest_card"] / x["steady"]["updates_per_s"] for k, x in runs.items()}
    one, spread, driver = per_update[1, "driver"], per_update[4, "executors"], per_update[4, "driver"]
    assert 0.2 < runs[1, "driver"]["steady"]["busiest_card"] < 0.45, runs[1, "driver"]["steady"]
    assert spread == pytest.approx(one / 4, rel=0.05), per_update
    assert driver == pytest.approx(one, rel=0.05), per_update
    assert set(runs[4, "executors"]["card_use"]) == {"-1", "-2", "-3", "-4", "-5"}
    assert set(runs[4, "driver"]["card_use"]) == {"-1"}
    for x in runs.values():  # the cards are not the bound: the cycle is
        assert x["steady"]["updates_per_s"] == pytest.approx(runs[1, "driver"]["steady"]["updates_per_s"], rel=0.1)


def test_cli_timing_only_with_shards(tiny_net_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--timing-only --shards 2 --placement executors --gradient-ms``: a summary without Caffe; --shards 0 and
    --gradient-ms without --timing-only are refused."""
    _no_caffe(monkeypatch)
    args = ["--config", "small", "--set", f"net={tiny_net_file}", "--set", "board_size=6", "--workers", "3",
            "--updates", "200", "--fixed-cycle", "--no-progress"]
    summary = sim_main([*args, "--timing-only", "--shards", "2", "--placement", "executors", "--gbps", "1",
                        "--gradient-ms", "5", "--out", str(tmp_path / "t")])
    assert summary["updates"] >= 200 and summary["shards"] == 2 and len(summary["server_utilisation"]) == 2
    assert summary["fixed_cycle"]["gradient_s"] == 0.005 and set(summary["card_use"]) == {"-1", "-2", "-3"}
    assert json.loads((tmp_path / "t" / "summary.json").read_text())["cycle"] == "5 ms per gradient (given)"
    for bad in (["--shards", "0"], ["--gradient-ms", "5"]):
        with pytest.raises(SystemExit):
            sim_main([*args, *bad, "--out", str(tmp_path / "no")])


def test_cli_timing_only_takes_the_cycle_measured_for_the_config_as_it_is(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """``--timing-only`` without ``--gradient-ms``: the cycle is results/worker_speed.json's for the config; a file
    that measured other values of the config, or none, is refused with one line naming it and both ways out."""
    _no_caffe(monkeypatch)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results").mkdir()
    cfg = load_config("tuned")
    service = {**FIXED_SERVICE.row(), "params": load_netspec(cfg.path("net"), game_actions(cfg)).num_params,
               "solver": load_solver_spec(cfg.path("solver")).type, "auth": cfg.auth}
    (tmp_path / "service.json").write_text(json.dumps({"service": [service]}))
    args = ["--config", "tuned", "--workers", "2", "--updates", "40", "--timing-only", "--no-progress",
            "--service", str(tmp_path / "service.json")]
    speed = {"machine": {"model_name": "cpu"}, "config_values": {"tuned": config_values("tuned")},
             "breakdowns": [{"config": "tuned", "build": "as built", "ms_per_gradient": 20.0}]}
    path = tmp_path / "results" / "worker_speed.json"
    path.write_text(json.dumps(speed))
    summary = sim_main([*args, "--out", "a"])
    assert summary["fixed_cycle"]["gradient_s"] == 0.02 and summary["cycle"].startswith("20.0 ms per gradient, make")
    path.write_text(json.dumps({**speed, "config_values": {"tuned": config_values("tuned", ["train_every=3"])}}))
    with pytest.raises(ConfigError, match=r"results/worker_speed.json measured tuned as it is no longer "
                                          r"\(train_every 3 ≠ \d+\): run make bench-worker first, or give --gradient-ms"):
        sim_main([*args, "--out", "b"])
    path.unlink()
    with pytest.raises(ConfigError, match="no such file .make bench-worker., or give --gradient-ms"):
        sim_main([*args, "--out", "c"])
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


def test_one_worker_on_four_shards_learns_the_theta_of_one_server(tiny_net_file: Path, tmp_path: Path) -> None:
    """A learning simulation with S = 4 shards (every gradient pushed as 4 slices, voted, committed to all): with one
    worker it reaches exactly the θ, θ⁻ and solver history of one server (the real sharded server's guarantee), its
    snapshot is one server's, only later in simulated time (a COMMIT round per update); with 3 workers every shard
    applies every update, and with ``dc_lambda`` each compensates its slice (deterministically)."""
    cfg = _cfg(tiny_net_file, target_update=7, push_every=2)
    one = _simulate(cfg, tmp_path / "one", 1, updates=30)
    four = _simulate(cfg, tmp_path / "four", 1, updates=30, shards=4, placement="executors", gbps=0.1)
    assert four.store.version == one.store.version == 30
    assert np.array_equal(four.store.theta, one.store.theta) and np.array_equal(four.store.target, one.store.target)
    assert all(np.array_equal(a, b) for a, b in zip(four.store.solver.history, one.store.solver.history))
    assert four.store.solver.iter == one.store.solver.iter == 30 and four.events.now > one.events.now
    summary = json.loads((tmp_path / "four" / "summary.json").read_text())
    assert summary["simulated"]["shards"] == 4 and len(summary["simulated"]["shard_utilisation"]) == 4
    assert set(summary["simulated"]["card_use"]) == {"-1", "-2", "-3", "-4", "-5"}
    assert json.loads((tmp_path / "four" / "server_state.json").read_text())["updates"] == 30
    many = _simulate(cfg, tmp_path / "many", 3, updates=30, shards=2)
    assert min(s.store.version for s in many.shards) >= 30
    assert sum(many.shards[0].staleness.values()) == many.shards[0].store.version
    assert not np.array_equal(many.store.theta, one.store.theta)
    dc = {lam: _simulate(cfg, tmp_path / f"dc{lam}", 3, updates=30, shards=2, dc_lambda=lam) for lam in (0.0, 1.0)}
    again = _simulate(cfg, tmp_path / "dc-again", 3, updates=30, shards=2, dc_lambda=1.0)
    assert np.array_equal(dc[0.0].store.theta, many.store.theta)  # λ 0: off
    assert not np.array_equal(dc[1.0].store.theta, dc[0.0].store.theta)  # each shard compensates its slice
    assert np.array_equal(again.store.theta, dc[1.0].store.theta) and dc[1.0].store.dc_lambda == 1.0
