"""The dueling Q-head on real pycaffe: q = V + A − mean_a A from the net's own blobs, and its gradient."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import PROTOTXT, TINY_DUELING, assert_gradient_matches_finite_differences

from ddqn.net.caffe_env import caffe_pb2
from ddqn.net.netspec import load_netspec, parse_netspec
from ddqn.net.qnet import QNetwork

DUELING = PROTOTXT / "snake_paper_dueling.prototxt"
PAPER = PROTOTXT / "snake_paper.prototxt"


def _states(spec, n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *spec.state_shape), dtype=np.uint8)


def _layers(path) -> dict[str, object]:
    from google.protobuf import text_format

    net = caffe_pb2().NetParameter()
    text_format.Merge(path.read_text(), net)
    return {layer.name: layer for layer in net.layer}


def test_dueling_net_is_the_paper_trunk_with_two_streams() -> None:
    """Input, trunk (to pool3) and loss are the paper net's layers; two streams replace ip1 → q, with about as
    many parameters."""
    paper, dueling = _layers(PAPER), _layers(DUELING)
    shared = ["input", "scale", "conv1", "relu1", "pool1", "conv2", "relu2", "pool2", "conv3", "relu3", "pool3",
              "q_taken", "loss"]
    assert all(paper[name] == dueling[name] for name in shared)
    assert {"value", "advantage"} <= dueling.keys() and "ip1" not in dueling
    a, b = load_netspec(PAPER), load_netspec(DUELING)
    assert b.num_params == 227_365 and abs(b.num_params - a.num_params) < 0.01 * a.num_params
    assert (b.batch_size, b.state_shape, b.num_actions, b.q_layer) == (a.batch_size, a.state_shape, 4, "q")


@pytest.mark.parametrize("batch", [1, 5, 32])
def test_dueling_q_is_value_plus_centred_advantage(batch: int) -> None:
    q = QNetwork(load_netspec(DUELING), seed=3)
    theta = q.get_params()
    q.set_params(theta + np.random.default_rng(1).normal(0, 0.05, theta.shape).astype(np.float32))  # biases ≠ 0
    qs = q.q_values(_states(q.spec, batch))
    value, advantage = q.net.blobs["value"].data, q.net.blobs["advantage"].data
    assert qs.shape == (batch, 4) and value.shape == (batch, 1) and advantage.shape == (batch, 4)
    expected = value + advantage - advantage.mean(axis=1, keepdims=True)
    np.testing.assert_allclose(qs, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(qs.mean(axis=1), value[:, 0], rtol=1e-5, atol=1e-6)  # V is the mean of Q
    assert np.abs(advantage.mean(axis=1)).max() > 1e-3  # the centring really does something


def test_dueling_loss_is_the_masked_euclidean() -> None:
    q = QNetwork(parse_netspec(TINY_DUELING, "tiny_dueling"), seed=1)
    states = _states(q.spec, 5)
    actions, targets = np.array([0, 3, 1, 2, 3]), np.linspace(-1, 1, 5).astype(np.float32)
    qs = q.q_values(states)
    loss, _ = q.loss_and_grad(states, actions, targets)
    assert loss == pytest.approx(0.5 * np.mean((qs[np.arange(5), actions] - targets) ** 2), rel=1e-5)


def test_dueling_gradient_matches_finite_differences() -> None:
    q = QNetwork(parse_netspec(TINY_DUELING, "tiny_dueling"), seed=2)
    states = _states(q.spec, 3, seed=1)
    actions, targets = np.array([1, 0, 3]), np.array([2.0, -3.0, 1.5], np.float32)
    assert_gradient_matches_finite_differences(q, states, actions, targets)
    # The same gradient when it enters at q (error clipping that never clips), from the head's last Eltwise down.
    _, grad = q.loss_and_grad(states, actions, targets)
    grad = grad.copy()
    _, clipped = q.loss_and_grad(states, actions, targets, error_clip=1e6)
    np.testing.assert_allclose(clipped, grad, rtol=1e-4, atol=1e-7)
    assert np.abs(grad[-4:]).sum() > 0  # the advantage biases get gradient through both paths
