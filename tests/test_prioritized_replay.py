"""Prioritized replay (Schaul et al. 2016, proportional): the sum tree against brute force, sampling ∝ p^α, α = 0
is today's uniform sampler bit for bit, no unsampleable transition is ever drawn, RAM ≡ LMDB, importance weights,
priority updates, the weighted loss on real Caffe, the loop, the simulator and the config keys.

The replay scenarios, frames and brute-force reference are test_replay's.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from conftest import PROTOTXT
from test_replay import (
    SCENARIOS,
    SHAPE,
    Scenario,
    apply,
    batches_equal,
    check_batch,
    decode,
    reference,
    script,
)

from ddqn.config import load_config, make_config
from ddqn.replay import make_replay
from ddqn.replay.memory import LMDBReplayMemory, ReplayMemory
from ddqn.replay.sumtree import SumTree

ALPHA = 0.6


# ---------------------------------------------------------------------------- the sum tree
def brute_find(values: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Leaf i with cum[i-1] <= u < cum[i], by a cumulative sum (zero leaves have empty intervals)."""
    return np.searchsorted(np.cumsum(values), u, side="right")


@pytest.mark.parametrize("capacity", [1, 2, 5, 37, 1000])
def test_sum_tree_matches_brute_force(capacity: int) -> None:
    rng = np.random.default_rng(capacity)
    tree = SumTree(capacity)
    ref = np.zeros(capacity)
    for _ in range(20):  # rounds of vectorised updates, some leaves named twice, about a third set to 0
        idx = rng.integers(0, capacity, size=rng.integers(1, 2 * capacity + 2))
        vals = rng.integers(0, 9, size=len(idx)).astype(np.float64) * (rng.random(len(idx)) > 0.3)
        tree.update(idx, vals)
        for i, v in zip(idx, vals):  # the last value named wins
            ref[i] = v
        assert np.array_equal(tree.leaves(), ref)
        assert tree.total == ref.sum()  # integer values: exact
        if ref.sum() == 0:
            with pytest.raises(ValueError, match="total is 0"):
                tree.find(np.zeros(1))
            continue
        cum = np.cumsum(ref)
        # uniform u, and every interval's exact end points below the total (ties go to the next leaf with mass)
        u = np.concatenate([rng.random(500) * ref.sum(), cum[cum < ref.sum()], np.zeros(1), cum[ref > 0] - 0.5])
        got = tree.find(u)
        assert np.array_equal(got, brute_find(ref, u))
        assert (ref[got] > 0).all()
    # real-valued leaves: the interval found holds u up to rounding, and its leaf has mass; u at or past the end
    # lands on the last leaf with mass
    vals = rng.random(capacity) * (rng.random(capacity) > 0.4)
    vals[rng.integers(0, capacity)] = 0.5
    tree.update(np.arange(capacity), vals)
    cum = np.cumsum(vals)
    assert tree.total == pytest.approx(cum[-1], rel=1e-12)
    u = np.concatenate([rng.random(5000) * tree.total, [tree.total, tree.total * (1 + 1e-12)]])
    got = tree.find(u)
    assert (vals[got] > 0).all()
    lo, hi = cum[got] - vals[got], cum[got]
    assert ((lo <= u + 1e-9) & (u < hi + 1e-9)).all()
    assert got[-1] == got[-2] == np.flatnonzero(vals)[-1]


def test_sum_tree_rejects_bad_updates() -> None:
    tree = SumTree(10)
    for idx, vals, words in [([10], [1.0], "leaf indices"), ([-1], [1.0], "leaf indices"),
                             ([0], [-1.0], "finite and >= 0"), ([0], [np.nan], "finite"),
                             ([0, 1], [1.0], "same length")]:
        with pytest.raises(ValueError, match=words):
            tree.update(np.array(idx), np.array(vals))
    assert tree.total == 0
    with pytest.raises(ValueError, match="capacity"):
        SumTree(0)


# ---------------------------------------------------------------------------- scripted memories
def filled(sc: Scenario, alpha: float, seed: int = 0, mem=None):
    mem = mem if mem is not None else ReplayMemory(sc.capacity, SHAPE, sc.history, seed=seed, alpha=alpha)
    ops = script(sc)
    for op in ops:
        apply(mem, op)
    return mem, ops


def live_slots(mem) -> set[int]:
    """Slots whose leaf in the sum tree has mass."""
    return set(np.flatnonzero(mem._tree.leaves()).tolist())


def td_of(index: np.ndarray) -> np.ndarray:
    """A deterministic TD error per start index: wide spread, some exactly 0."""
    return ((index * 7919) % 13 - 4).astype(np.float32) * 0.3


# ---------------------------------------------------------------------------- α = 0: today's sampler
def uniform_reference(rng: np.random.Generator, valid: list[int], lo: int, hi: int, b: int) -> np.ndarray:
    """The uniform draw as it was before priorities: the explicit list when sparse, else rejection sampling."""
    if 4 * len(valid) < hi - lo:
        cand = np.array(sorted(valid))
        return cand[rng.integers(0, len(cand), size=b)]
    g = rng.integers(lo, hi, size=b)
    bad = ~np.isin(g, valid)
    while bad.any():
        g[bad] = rng.integers(lo, hi, size=int(bad.sum()))
        bad[bad] = ~np.isin(g[bad], valid)
    return g


SPARSE = Scenario("sparse", 200, 4, 0, 0, 0.0)  # many empty episodes: the uniform draw takes its explicit list
SPARSE_OPS = [("start", g) for g in range(151)] + [("add", g, False) for g in range(151, 181)]


@pytest.mark.parametrize("sc", SCENARIOS + [SPARSE], ids=lambda s: s.name)
def test_alpha_0_is_the_uniform_sampler_bit_for_bit(sc: Scenario) -> None:
    ops = SPARSE_OPS if sc is SPARSE else script(sc)
    mem = ReplayMemory(sc.capacity, SHAPE, sc.history, seed=21, alpha=0.0)
    plain = ReplayMemory(sc.capacity, SHAPE, sc.history, seed=21)  # no priority argument at all
    for op in ops:
        apply(mem, op)
        apply(plain, op)
    ref = reference(ops, sc.capacity, sc.history)
    lo, hi = max(0, mem._total - sc.capacity), mem._total - 1
    assert (4 * len(ref) < hi - lo) == (sc is SPARSE)
    rng = np.random.default_rng(21)  # the same seed, the same calls
    for k in (1, 7, 32, len(ref)):
        k = min(k, len(ref))
        b = mem.sample(k) if k % 2 else mem.sample(k, n_step=3, gamma=0.9, beta=0.3)
        want = uniform_reference(rng, list(ref), lo, hi, k)
        assert np.array_equal(b.index, want) and np.array_equal(decode(b.states)[:, -1], want)
        assert b.weights.dtype == np.float32 and (b.weights == 1).all()
        mem.update_priorities(b.index, td_of(b.index))  # nothing to update: sampling stays uniform
    plain.sample(1), plain.sample(min(7, len(ref))), plain.sample(min(32, len(ref))), plain.sample(len(ref))
    assert batches_equal(plain.sample(min(16, len(ref))), mem.sample(min(16, len(ref))))
    assert mem._tree is None


# ---------------------------------------------------------------------------- never an unsampleable transition
@pytest.mark.parametrize("sc", SCENARIOS[1:], ids=lambda s: s.name)
def test_unsampleable_transitions_have_no_priority_and_are_never_drawn(sc: Scenario) -> None:
    """Step by step through a script that wraps the ring: the sum tree's leaves with mass are exactly the
    sampleable transitions' slots, even when the oldest ones (the next to lose their history) hold by far the
    largest priorities, and every batch matches the brute-force reference."""
    ops = script(sc)
    mem = ReplayMemory(sc.capacity, SHAPE, sc.history, seed=3, alpha=ALPHA)
    drawn = 0
    for i, op in enumerate(ops):
        apply(mem, op)
        ref = reference(ops[:i + 1], sc.capacity, sc.history)
        assert live_slots(mem) == {g % sc.capacity for g in ref}, i
        if len(ref) and i % 3 == 0:
            g = np.array(sorted(ref))
            td = np.where(g < g.min() + 2 * sc.history, 1e3, 0.05)  # the oldest ones dominate
            stale = g - sc.capacity  # long overwritten, in the same slots: must not touch them
            mem.update_priorities(np.concatenate([g, stale]), np.concatenate([td, np.where(td > 1, 0.05, 1e3)]))
            assert live_slots(mem) == {g % sc.capacity for g in ref}, i
            np.testing.assert_allclose(mem._tree.leaves(g % sc.capacity), (td + mem.priority_eps) ** ALPHA)
            b = mem.sample(min(16, len(ref)))
            starts = check_batch(b, ref, sc.history)
            assert np.array_equal(b.index, starts)
            drawn += len(starts)
    assert drawn > 100 and mem._total > 2 * sc.capacity


# ---------------------------------------------------------------------------- probabilities and weights
def set_random_priorities(mem, ref: dict, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random |δ| (some 0) for every sampleable transition; returns (start indices, priorities p = |δ| + eps)."""
    rng = np.random.default_rng(seed)
    g = np.array(sorted(ref))
    td = rng.exponential(1.0, len(g)) * (rng.random(len(g)) > 0.2) * np.where(rng.random(len(g)) < 0.5, -1, 1)
    mem.update_priorities(g, td)
    return g, np.abs(td) + mem.priority_eps


def test_sampling_frequencies_are_proportional_to_p_alpha() -> None:
    sc = Scenario("prio", 150, 4, 400, 12, 0.5)
    mem, ops = filled(sc, alpha=ALPHA, seed=8)
    ref = reference(ops, sc.capacity, sc.history)
    g, p = set_random_priorities(mem, ref, seed=1)
    prob = p ** ALPHA / (p ** ALPHA).sum()
    draws = 200_000
    got = np.concatenate([mem.sample(len(ref)).index for _ in range(draws // len(ref) + 1)])[:draws]
    counts = np.array([np.count_nonzero(got == x) for x in g])
    assert counts.sum() == draws  # nothing outside the sampleable set
    expected = draws * prob
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    df = len(g) - 1
    assert chi2 < df + 6 * np.sqrt(2 * df), (chi2, df)
    uniform = draws / len(g)  # and the test can tell: the uniform hypothesis is far off
    assert float(((counts - uniform) ** 2 / uniform).sum()) > 10 * (df + 6 * np.sqrt(2 * df))


def test_importance_weights_follow_the_formula() -> None:
    sc = SCENARIOS[1]
    mem, ops = filled(sc, alpha=ALPHA, seed=4)
    ref = reference(ops, sc.capacity, sc.history)
    g, p = set_random_priorities(mem, ref, seed=2)
    prio = dict(zip(g.tolist(), p.tolist()))
    mass = sum(v ** ALPHA for v in prio.values())
    for beta in (0.0, 0.4, 1.0):
        b = mem.sample(32, beta=beta)
        prob = np.array([prio[i] ** ALPHA / mass for i in b.index.tolist()])
        w = (len(ref) * prob) ** -beta
        assert b.weights.dtype == np.float32 and b.weights.shape == (32,)
        np.testing.assert_allclose(b.weights, w / w.max(), rtol=1e-6)
        assert b.weights.max() == 1.0
        assert (b.weights == 1).all() if beta == 0 else (b.weights < 1).any()
    with pytest.raises(ValueError, match="beta must be"):
        mem.sample(4, beta=1.5)


def test_update_priorities_changes_what_is_drawn_and_new_transitions_get_the_max() -> None:
    sc = SCENARIOS[1]
    mem, ops = filled(sc, alpha=ALPHA, seed=5)
    ref = sorted(reference(ops, sc.capacity, sc.history))
    assert len(set(mem.sample(len(ref)).index.tolist())) > len(ref) // 3  # all at priority 1: spread out
    for star in (ref[3], ref[-5]):
        td = np.where(np.array(ref) == star, 1e4, 0.0)
        mem.update_priorities(np.array(ref), td)
        got = np.concatenate([mem.sample(len(ref)).index for _ in range(5)])
        # P(star) = 1e4^0.6 / (1e4^0.6 + (n − 1)·0.01^0.6) ≈ 0.99 for n ≈ 50
        assert np.mean(got == star) > 0.95, star
    assert mem._max_priority == pytest.approx(1e4 + mem.priority_eps)
    mem.start_episode(np.zeros(SHAPE, np.uint8))
    mem.add(1, 0.0, np.zeros(SHAPE, np.uint8), False)  # a new transition: the largest priority so far
    new = (mem._total - 2) % sc.capacity
    assert mem._tree.leaves(np.array([new]))[0] == pytest.approx((1e4 + mem.priority_eps) ** ALPHA)
    with pytest.raises(ValueError, match="td_abs must be"):
        mem.update_priorities(np.array(ref[:2]), np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="index must be"):
        mem.update_priorities(np.array([1.5]), np.array([1.0]))


# ---------------------------------------------------------------------------- RAM ≡ LMDB
@pytest.mark.parametrize("sc", SCENARIOS, ids=lambda s: s.name)
def test_ram_and_lmdb_give_identical_prioritized_batches(sc: Scenario, tmp_path: Path) -> None:
    ram = ReplayMemory(sc.capacity, SHAPE, sc.history, seed=7, alpha=ALPHA)
    with LMDBReplayMemory(tmp_path / "db", sc.capacity, SHAPE, sc.history, seed=7, alpha=ALPHA,
                          flush_every=13) as disk:
        compared = 0
        for i, op in enumerate(script(sc)):
            apply(ram, op)
            apply(disk, op)
            if i % 11 == 0 and len(ram) >= 8:
                a, b = ram.sample(8, n_step=2, gamma=0.9, beta=0.5), disk.sample(8, n_step=2, gamma=0.9, beta=0.5)
                assert batches_equal(a, b) and (a.weights < 1).any() == (b.weights < 1).any()
                ram.update_priorities(a.index, td_of(a.index))
                disk.update_priorities(b.index, td_of(b.index))
                compared += 1
        assert compared > 5
        assert np.array_equal(ram._tree.tree, disk._tree.tree)


def test_lmdb_reopened_restarts_priorities_at_1(tmp_path: Path) -> None:
    sc = SCENARIOS[1]
    path = tmp_path / "db"
    with LMDBReplayMemory(path, sc.capacity, SHAPE, sc.history, seed=1, alpha=ALPHA) as disk:
        _, ops = filled(sc, ALPHA, mem=disk)
        b = disk.sample(32)
        disk.update_priorities(b.index, td_of(b.index) + 5)
        assert disk._max_priority > 1
    fresh, _ = filled(sc, alpha=ALPHA, seed=9)  # no priority ever set: every sampleable one at 1
    with LMDBReplayMemory(path, sc.capacity, SHAPE, sc.history, seed=9, alpha=ALPHA) as disk:
        assert disk._max_priority == 1.0
        assert np.array_equal(disk._tree.tree, fresh._tree.tree)
        assert live_slots(disk) == {g % sc.capacity for g in reference(ops, sc.capacity, sc.history)}
        for _ in range(4):
            assert batches_equal(fresh.sample(32, beta=0.7), disk.sample(32, beta=0.7))


def test_memory_arguments_and_make_replay(tmp_path: Path) -> None:
    for kwargs, words in [({"alpha": 1.5}, "alpha must be"), ({"alpha": -0.1}, "alpha must be"),
                          ({"alpha": True}, "alpha must be"), ({"priority_eps": 0.0}, "priority_eps must be"),
                          ({"priority_eps": float("inf")}, "priority_eps must be")]:
        with pytest.raises(ValueError, match=f"^{words}"):
            ReplayMemory(10, SHAPE, 4, **kwargs)
    cfg = load_config("small", ["replay_alpha=0.5", "replay_priority_eps=0.001"])
    ram = make_replay(cfg, SHAPE, 4, 0, tmp_path)
    disk = make_replay(dataclasses.replace(cfg, replay_backend="lmdb"), SHAPE, 4, 0, tmp_path / "db")
    with disk:
        assert (ram.alpha, ram.priority_eps) == (disk.alpha, disk.priority_eps) == (0.5, 0.001)
    assert make_replay(load_config("small"), SHAPE, 4, 0, tmp_path)._tree is None


# ---------------------------------------------------------------------------- the config keys
def test_prioritized_replay_defaults_are_off() -> None:
    cfg = load_config()
    assert (cfg.replay_alpha, cfg.replay_beta, cfg.replay_beta_steps, cfg.replay_priority_eps) == (
        0.0, 0.4, 250_000, 0.01)
    assert make_config({"replay_alpha": 1, "replay_beta": 0}, "test").replay_alpha == 1.0


# ---------------------------------------------------------------------------- the weighted loss (real Caffe)
@pytest.fixture(scope="module")
def small_net():
    from ddqn.net.netspec import load_netspec
    from ddqn.net.qnet import QNetwork

    spec = load_netspec(PROTOTXT / "snake_small.prototxt")
    return QNetwork(spec, seed=3)


def _inputs(q, seed: int = 0):
    rng = np.random.default_rng(seed)
    b = q.spec.batch_size
    states = rng.integers(0, 256, (b, *q.spec.state_shape), dtype=np.uint8)
    actions = rng.integers(0, q.spec.num_actions, b)
    qa = q.q_values(states)[np.arange(b), actions]
    targets = (qa + rng.normal(0, 1.5, b)).astype(np.float32)  # errors on both sides of a clip of 1
    weights = rng.uniform(0, 1, b).astype(np.float32)
    weights[rng.integers(0, b)] = 0.0
    return states, actions, targets, weights, qa


@pytest.mark.parametrize("clip", [0.0, 1.0])
def test_all_ones_weights_are_the_unweighted_loss_bit_for_bit(small_net, clip: float) -> None:
    states, actions, targets, _, qa = _inputs(small_net, seed=1)
    loss, grad = small_net.loss_and_grad(states, actions, targets, error_clip=clip)
    grad, td = grad.copy(), small_net.td_errors.copy()
    ones = np.ones(len(targets), np.float32)
    loss1, grad1 = small_net.loss_and_grad(states, actions, targets, error_clip=clip, weights=ones)
    assert loss1 == loss and np.array_equal(grad1, grad)
    assert np.array_equal(small_net.td_errors, td)
    np.testing.assert_allclose(td, targets - qa, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("clip", [0.0, 1.0])
def test_weighted_loss_and_gradient_match_a_numpy_reference(small_net, clip: float) -> None:
    """Loss Σ w_j ℓ_j / B against numpy; gradient against the unweighted gradient of shifted targets
    y′ = Q − w·clip(Q − y) (same dL/dQ, so the same ∇θ), and against central differences along the gradient."""
    q = small_net
    states, actions, targets, weights, qa = _inputs(q, seed=2)
    loss, grad = q.loss_and_grad(states, actions, targets, error_clip=clip, weights=weights)
    grad = grad.copy()
    err = qa - targets
    if clip:
        ell = np.where(np.abs(err) <= clip, 0.5 * err ** 2, clip * (np.abs(err) - 0.5 * clip))
        assert (np.abs(err) > clip).any() and (np.abs(err) <= clip).any()
    else:
        ell = 0.5 * err ** 2
    assert loss == pytest.approx(float((weights * ell).mean()), rel=1e-4)
    np.testing.assert_allclose(q.td_errors, -err, rtol=1e-5, atol=1e-6)
    dq = weights * (np.clip(err, -clip, clip) if clip else err)
    _, shifted = q.loss_and_grad(states, actions, (qa - dq).astype(np.float32))
    np.testing.assert_allclose(grad, shifted, rtol=1e-3, atol=1e-4 * np.abs(grad).max())
    unweighted = q.loss_and_grad(states, actions, targets, error_clip=clip)[1].copy()
    assert np.linalg.norm(unweighted - grad) > 0.05 * np.linalg.norm(grad)  # the weights matter
    theta = q.get_params()
    h = 1e-3 / np.linalg.norm(grad)  # a step of 1e-3 in θ: well inside float32's precision and the kinks
    lw = []
    for sign in (1, -1):
        q.set_params(theta + np.float32(sign * h) * grad)
        lw.append(q.loss_and_grad(states, actions, targets, error_clip=clip, weights=weights)[0])
    q.set_params(theta)
    assert (lw[0] - lw[1]) / (2 * h) == pytest.approx(float(grad.astype(np.float64) @ grad), rel=1e-2)


def test_bad_weights_are_refused_before_caffe(small_net) -> None:
    states, actions, targets, weights, _ = _inputs(small_net, seed=3)
    b = len(targets)
    for bad, words in [(weights[:-1], "weights must be"), (np.full(b, np.nan, np.float32), "finite"),
                       (np.full(b, np.inf, np.float32), "finite"), (-weights - 1, ">= 0"),
                       (weights.astype(bool), "real numbers"), (weights[:, None], "weights must be")]:
        with pytest.raises(ValueError, match=words):
            small_net.loss_and_grad(states, actions, targets, weights=bad)


# ---------------------------------------------------------------------------- the loop and the simulator
def test_the_loop_samples_by_priority_weights_the_loss_and_updates_priorities() -> None:
    from ddqn.dqn.loop import ExperienceLoop
    from ddqn.game import game_actions
    from ddqn.net.netspec import load_netspec
    from ddqn.net.qnet import QNetwork

    cfg = load_config("small", ["replay_alpha=0.6", "replay_beta=0.4", "replay_beta_steps=1000", "error_clip=1"])
    spec = load_netspec(cfg.path("net"), game_actions(cfg))
    q, q_hat = QNetwork(spec, seed=0), QNetwork(spec, seed=1)
    replay = make_replay(cfg, spec.state_shape[1:], spec.state_shape[0], 0, Path())
    loop = ExperienceLoop(cfg, q, q_hat, replay, np.random.default_rng(0), env_seed=3)
    loop.warm_up(500)
    assert loop.current_beta == 0.4
    loop.env_steps = 500
    assert loop.current_beta == pytest.approx(0.7)
    loop.env_steps = 5000
    assert loop.current_beta == 1.0
    loop.env_steps = 250
    g = np.arange(replay._total - 1)  # the memory has not wrapped: every transition, priorities spread out
    g = g[replay._valid(g)]
    replay.update_priorities(g, np.random.default_rng(0).exponential(1.0, len(g)))
    seen, betas = [], []
    sample = replay.sample

    def keep(*a, **kw):
        betas.append(kw.get("beta"))
        seen.append(sample(*a, **kw))
        return seen[-1]

    replay.sample = keep
    loss, _ = loop.gradient()
    (b,) = seen
    assert betas == [pytest.approx(0.55)] and (b.weights < 1).any()
    y = b.rewards + cfg.gamma ** b.steps * (~b.terminals) * q_hat.q_values(b.next_states).max(axis=1)
    err = q.q_values(b.states)[np.arange(len(y)), b.actions] - y
    huber = np.where(np.abs(err) <= 1, 0.5 * err ** 2, np.abs(err) - 0.5)
    assert loss == pytest.approx(float((b.weights * huber).mean()), rel=1e-4)
    last = {g: i for i, g in enumerate(b.index.tolist())}  # a transition drawn twice keeps its last δ
    slots = np.array(list(last)) % replay.capacity
    want = (np.abs(-err[list(last.values())]) + cfg.replay_priority_eps) ** 0.6
    np.testing.assert_allclose(replay._tree.leaves(slots), want, rtol=1e-5)


def test_the_simulator_runs_prioritized_replay(tiny_net_file: Path, tmp_path: Path) -> None:
    """Simulated workers build their replay from the config, so the same keys apply: a run with α > 0 is
    deterministic, differs from the uniform one, and its workers' priorities were updated."""
    from ddqn.sim.run import SimOptions, Simulation
    from ddqn.sim.timing import FIXED_SERVICE, FixedCycle

    values = {"board_size": 6, "starve_steps": 30, "net": str(tiny_net_file),
              "solver": "prototxt/solver_rmsprop.prototxt", "replay_capacity": 400, "replay_warmup": 60,
              "eps_decay_steps": 500, "target_update": 25, "eval_every": 400, "eval_episodes": 2, "log_every": 50,
              "seed": 3}

    def run(name: str, **kw) -> Simulation:
        sim = Simulation(make_config({**values, **kw}, "test"), tmp_path / name, FIXED_SERVICE,
                         SimOptions(2, fixed=FixedCycle(), updates=30))
        sim.run()
        return sim

    a, again, uniform = run("a", replay_alpha=0.6), run("b", replay_alpha=0.6), run("u")
    assert a.store.version == again.store.version == uniform.store.version == 30
    assert np.array_equal(a.store.theta, again.store.theta)
    assert not np.array_equal(a.store.theta, uniform.store.theta)
    for w in a.workers:
        assert w.replay.alpha == 0.6
        leaves = w.replay._tree.leaves()
        assert len(set(leaves[leaves > 0].tolist())) > 10  # updated priorities, not only the initial 1
    assert all(w.replay._tree is None for w in uniform.workers)
