"""The Q-network on real pycaffe: flat parameters, loss/gradient, targets and .caffemodel snapshots."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import PROTOTXT, assert_gradient_matches_finite_differences

from ddqn.config import load_config
from ddqn.dqn.loop import ExperienceLoop
from ddqn.errors import ConfigError
from ddqn.game import game_actions
from ddqn.net.caffe_env import caffe
from ddqn.net.netspec import load_netspec
from ddqn.net.qnet import QNetwork, bellman_targets
from ddqn.net.snapshot import load_caffemodel, save_caffemodel
from ddqn.replay import ReplayMemory


def _batch(spec, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    states = rng.integers(0, 256, (n, *spec.state_shape), dtype=np.uint8)
    actions = rng.integers(0, spec.num_actions, n)
    targets = rng.standard_normal(n).astype(np.float32)
    return states, actions, targets


def test_params_round_trip_and_seed(tiny_net_file: Path) -> None:
    spec = load_netspec(tiny_net_file)
    a, b, c = QNetwork(spec, seed=5), QNetwork(spec, seed=5), QNetwork(spec, seed=6)
    theta = a.get_params()
    assert theta.dtype == np.float32 and theta.shape == (spec.num_params,)
    assert np.array_equal(theta, b.get_params()) and not np.array_equal(theta, c.get_params())
    c.set_params(theta)
    assert np.array_equal(c.get_params(), theta)
    conv1 = spec.params[0]
    assert np.array_equal(c.net.params["conv1"][0].data.reshape(-1), theta[conv1.offset:conv1.offset + conv1.size])
    with pytest.raises(ValueError):
        c.set_params(theta[:-1])


def test_q_values_any_batch_size(tiny_net_file: Path) -> None:
    q = QNetwork(load_netspec(tiny_net_file), seed=1)
    states, _, _ = _batch(q.spec, 7)
    all7 = q.q_values(states)
    assert all7.shape == (7, 4) and all7.dtype == np.float32
    one = q.q_values(states[2:3])
    # A batch of 1 and a batch of 7 may take different BLAS kernels (GEMV vs GEMM, CPU-dependent blocking), so
    # the float32 sums run in another order: CI on another CPU differed by 1.4e-6 relative (4e-8 absolute).
    np.testing.assert_allclose(one[0], all7[2], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError):
        q.q_values(states[:, :3])


def test_loss_is_masked_euclidean(tiny_net_file: Path) -> None:
    q = QNetwork(load_netspec(tiny_net_file), seed=1)
    states, actions, targets = _batch(q.spec, 5)
    qs = q.q_values(states)
    loss, grad = q.loss_and_grad(states, actions, targets)
    expected = 0.5 * np.mean((qs[np.arange(5), actions] - targets) ** 2)
    assert loss == pytest.approx(expected, rel=1e-5)
    loss2, grad2 = q.loss_and_grad(states, actions, targets)  # diffs are cleared, not accumulated
    assert loss2 == loss and np.array_equal(grad2, grad) and np.abs(grad).sum() > 0
    # A state whose target equals its Q-value contributes nothing: only the taken action is trained.
    exact = qs[np.arange(5), actions]
    assert q.loss_and_grad(states, actions, exact)[0] == pytest.approx(0, abs=1e-10)


def test_gradient_matches_finite_differences(tiny_net_file: Path) -> None:
    q = QNetwork(load_netspec(tiny_net_file), seed=2)
    states, actions, targets = _batch(q.spec, 3, seed=1)
    assert_gradient_matches_finite_differences(q, states, actions, targets * 3)


def test_bellman_targets(tiny_net_file: Path) -> None:
    spec = load_netspec(tiny_net_file)
    target, online = QNetwork(spec, seed=3), QNetwork(spec, seed=4)
    next_states, _, _ = _batch(spec, 6)
    rewards = np.array([1, 0, -1, 0, 1, 0], np.float32)
    terminals = np.array([0, 0, 1, 0, 1, 0], bool)
    q_hat = target.q_values(next_states)
    y = bellman_targets(target, rewards, next_states, terminals, 0.9)
    expected = rewards + 0.9 * (~terminals) * q_hat.max(axis=1)
    np.testing.assert_allclose(y, expected, rtol=1e-6)
    assert y[2] == -1 and y[4] == 1  # y = r at terminal states
    y2 = bellman_targets(target, rewards, next_states, terminals, 0.9, online_net=online)
    picks = online.q_values(next_states).argmax(axis=1)
    np.testing.assert_allclose(y2, rewards + 0.9 * (~terminals) * q_hat[np.arange(6), picks], rtol=1e-6)
    steps = np.array([1, 3, 2, 1, 3, 2])  # n-step returns: the bootstrap is discounted by γ^steps
    y3 = bellman_targets(target, rewards, next_states, terminals, 0.9, steps=steps)
    np.testing.assert_allclose(y3, rewards + 0.9 ** steps * (~terminals) * q_hat.max(axis=1), rtol=1e-6)
    assert np.array_equal(bellman_targets(target, rewards, next_states, terminals, 0.9, steps=np.ones(6, int)), y)


def test_caffemodel_loads_in_caffe(tmp_path: Path) -> None:
    proto = PROTOTXT / "snake_paper.prototxt"
    spec = load_netspec(proto)
    theta = QNetwork(spec, seed=1).get_params() + np.float32(0.5)
    path = save_caffemodel(tmp_path / "w.caffemodel", spec, theta)
    cf = caffe()
    net = cf.Net(str(proto), str(path), cf.TEST)
    for p in spec.params:
        assert np.array_equal(net.params[p.layer][p.index].data.reshape(-1), theta[p.offset:p.offset + p.size])
    # And Caffe's own net.save output reads back through our validated loader.
    net.save(str(tmp_path / "caffe.caffemodel"))
    assert np.array_equal(load_caffemodel(tmp_path / "caffe.caffemodel", spec), theta)


def test_bad_weights_are_one_clear_error(tmp_path: Path) -> None:
    paper = load_netspec(PROTOTXT / "snake_paper.prototxt")
    small = load_netspec(PROTOTXT / "snake_small.prototxt")
    other = save_caffemodel(tmp_path / "small.caffemodel", small, np.zeros(small.num_params, np.float32))
    with pytest.raises(ConfigError, match="another architecture"):
        load_caffemodel(other, paper)
    good = save_caffemodel(tmp_path / "paper.caffemodel", paper, np.zeros(paper.num_params, np.float32))
    corrupt = tmp_path / "corrupt.caffemodel"
    corrupt.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ConfigError, match="corrupt or truncated"):
        load_caffemodel(corrupt, paper)
    with pytest.raises(ConfigError, match="cannot read"):
        load_caffemodel(tmp_path / "missing.caffemodel", paper)


def test_error_clipping_is_huber(tiny_net_file: Path) -> None:
    q = QNetwork(load_netspec(tiny_net_file), seed=1)
    states, actions, targets = _batch(q.spec, 6)
    loss, grad = q.loss_and_grad(states, actions, targets)
    grad = grad.copy()
    big_loss, big = q.loss_and_grad(states, actions, targets, error_clip=1e6)  # never clips: the plain loss
    assert big_loss == pytest.approx(loss, rel=1e-5)
    np.testing.assert_allclose(big, grad, rtol=1e-4, atol=1e-7)
    # Errors far beyond c: every clipped error is ±c, so the gradient is that of targets moved to Q ∓ c.
    qa = q.q_values(states)[np.arange(6), actions]
    far = qa + np.where(np.arange(6) % 2, 50.0, -50.0).astype(np.float32)
    _, clipped = q.loss_and_grad(states, actions, far, error_clip=0.5)
    clipped = clipped.copy()
    near = qa + np.where(np.arange(6) % 2, 0.5, -0.5).astype(np.float32)
    _, expected = q.loss_and_grad(states, actions, near)
    np.testing.assert_allclose(clipped, expected, rtol=1e-3, atol=1e-6)


def test_the_experience_loop_learns_from_n_step_targets() -> None:
    """With n_step = 3 the loop's minibatch carries multi-step returns, and its loss is the one of targets
    r + γ^steps·max Q̂ on that very minibatch."""
    cfg = load_config("small", ["n_step=3", "gamma=0.9", "double_dqn=false", "error_clip=0"])
    spec = load_netspec(cfg.path("net"), game_actions(cfg))
    q, q_hat = QNetwork(spec, seed=0), QNetwork(spec, seed=1)
    replay = ReplayMemory(2000, spec.state_shape[1:], spec.state_shape[0], seed=0)
    loop = ExperienceLoop(cfg, q, q_hat, replay, np.random.default_rng(0), env_seed=3)
    loop.warm_up(500)
    seen = []
    sample = replay.sample
    replay.sample = lambda *a: seen.append(sample(*a)) or seen[-1]  # keep the batch the loop draws
    loss, _ = loop.gradient()
    (b,) = seen
    assert b.steps.max() == 3 and b.steps.min() >= 1 and (b.steps[~b.terminals] == 3).mean() > 0.5
    y = b.rewards + 0.9 ** b.steps * (~b.terminals) * q_hat.q_values(b.next_states).max(axis=1)
    q_taken = q.q_values(b.states)[np.arange(len(y)), b.actions]
    assert loss == pytest.approx(0.5 * np.mean((y - q_taken) ** 2), rel=1e-4)
