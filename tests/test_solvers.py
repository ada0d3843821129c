"""Flat Caffe-exact solvers vs pycaffe's own solvers fed the same gradient sequence."""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import PROTOTXT

from ddqn.errors import ConfigError
from ddqn.net.caffe_env import caffe, caffe_pb2
from ddqn.net.netspec import load_netspec
from ddqn.net.qnet import QNetwork
from ddqn.net.snapshot import load_solverstate, save_snapshot
from ddqn.solvers.flat import learning_rate, load_solver_spec, make_solver, parse_solver_spec

STEPS = 25
SOLVERS = {
    "sgd-step": 'type: "SGD" base_lr: 0.05 momentum: 0.9 lr_policy: "step" gamma: 0.5 stepsize: 7 weight_decay: 0.01',
    "sgd-l1-clip": 'type: "SGD" base_lr: 0.05 momentum: 0.5 lr_policy: "fixed" weight_decay: 0.02 '
                   'regularization_type: "L1" clip_gradients: 3',
    "adagrad-inv": 'type: "AdaGrad" base_lr: 0.1 lr_policy: "inv" gamma: 0.1 power: 0.75 delta: 1e-6 weight_decay: 0.005',
    "adagrad-fixed": 'type: "AdaGrad" base_lr: 0.02 lr_policy: "fixed" delta: 1e-8',
    "rmsprop-exp": 'type: "RMSProp" base_lr: 0.01 lr_policy: "exp" gamma: 0.97 rms_decay: 0.9 delta: 1e-6 '
                   'weight_decay: 0.001',
    "rmsprop-multistep": 'type: "RMSProp" base_lr: 0.003 lr_policy: "multistep" gamma: 0.3 stepvalue: 5 '
                         'stepvalue: 15 rms_decay: 0.95',
    "adam-fixed": 'type: "Adam" base_lr: 0.01 lr_policy: "fixed" momentum: 0.9',  # Caffe's momentum2/delta defaults
    "adam-step-l2-clip": 'type: "Adam" base_lr: 0.02 lr_policy: "step" gamma: 0.5 stepsize: 8 momentum: 0.8 '
                         'momentum2: 0.99 delta: 1.5e-4 weight_decay: 0.01 clip_gradients: 4',
    "adam-inv-l1": 'type: "Adam" base_lr: 0.005 lr_policy: "inv" gamma: 0.1 power: 0.75 momentum: 0 momentum2: 0.9 '
                   'delta: 1e-6 weight_decay: 0.02 regularization_type: "L1"',
}


def _gradients(n: int, size: int) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [(rng.standard_normal(size) * rng.uniform(0.1, 2.0)).astype(np.float32) for _ in range(n)]


def _pycaffe_run(solver_file: Path, spec, grads: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Run pycaffe's solver for len(grads) steps, overwriting its diffs with ``grads``."""
    cf = caffe()
    cf.set_random_seed(3)
    solver = cf.get_solver(str(solver_file))
    blobs = [solver.net.params[p.layer][p.index] for p in spec.params]
    theta0 = np.concatenate([b.data.reshape(-1) for b in blobs]).copy()
    step = iter(grads)

    def feed() -> None:
        g = next(step)
        for p, b in zip(spec.params, blobs):
            b.diff[...] = g[p.offset:p.offset + p.size].reshape(p.shape)

    solver.add_callback(lambda: None, feed)
    solver.step(len(grads))
    return theta0, np.concatenate([b.data.reshape(-1) for b in blobs])


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_matches_pycaffe_solver(name: str, tiny_net_file: Path, tmp_path: Path) -> None:
    spec = load_netspec(tiny_net_file)
    solver_file = tmp_path / "solver.prototxt"
    solver_file.write_text(f'net: "{tiny_net_file}"\n{SOLVERS[name]}\n')
    grads = _gradients(STEPS, spec.num_params)
    theta0, expected = _pycaffe_run(solver_file, spec, grads)

    ours = make_solver(parse_solver_spec(SOLVERS[name], name), spec.params)
    theta = theta0.copy()
    for g in grads:
        ours.apply(theta, g.copy())
    assert ours.iter == STEPS
    assert not np.array_equal(theta, theta0)
    moved = np.abs(expected - theta0).max()
    # Same rule, same float32 ops: agreement to float rounding (OpenBLAS's axpby may fuse multiply-adds).
    np.testing.assert_allclose(theta, expected, rtol=2e-5, atol=2e-6 * moved)


def test_lr_policies_follow_caffe() -> None:
    s = parse_solver_spec('type: "SGD" base_lr: 0.1 lr_policy: "step" gamma: 0.5 stepsize: 10', "s")
    assert [float(learning_rate(s, i)) for i in (0, 9, 10, 25)] == pytest.approx([0.1, 0.1, 0.05, 0.025])
    s = parse_solver_spec('type: "SGD" base_lr: 0.1 lr_policy: "inv" gamma: 0.01 power: 0.75', "s")
    assert float(learning_rate(s, 100)) == pytest.approx(0.1 * 2 ** -0.75, rel=1e-6)
    s = parse_solver_spec('type: "SGD" base_lr: 1 lr_policy: "poly" power: 2 max_iter: 10', "s")
    assert float(learning_rate(s, 5)) == pytest.approx(0.25)


def test_resume_is_bit_identical(tiny_net_file: Path, tmp_path: Path) -> None:
    spec = load_netspec(tiny_net_file)
    theta0 = QNetwork(spec, seed=1).get_params()
    grads = _gradients(2 * STEPS, spec.num_params)
    for text in (SOLVERS["rmsprop-exp"], SOLVERS["sgd-step"], SOLVERS["adagrad-inv"], SOLVERS["adam-step-l2-clip"]):
        full = make_solver(parse_solver_spec(text, "s"), spec.params)
        theta_full = theta0.copy()
        for g in grads:
            full.apply(theta_full, g.copy())

        first = make_solver(parse_solver_spec(text, "s"), spec.params)
        theta = theta0.copy()
        for g in grads[:STEPS]:
            first.apply(theta, g.copy())
        _, state = save_snapshot(tmp_path / "snap", spec, theta, first)
        resumed = make_solver(parse_solver_spec(text, "s"), spec.params)
        theta = load_solverstate(state, resumed, spec)
        assert resumed.iter == STEPS
        for g in grads[STEPS:]:
            resumed.apply(theta, g.copy())
        assert np.array_equal(theta, theta_full)
        assert all(np.array_equal(a, b) for a, b in zip(resumed.history, full.history))


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_threaded_apply_is_bit_identical(name: str, tiny_net_file: Path) -> None:
    """server_threads > 1 splits each run over numba's pool, called from a non-main thread like the server's."""
    spec = load_netspec(tiny_net_file)
    theta0 = QNetwork(spec, seed=1).get_params()
    grads = _gradients(STEPS, spec.num_params)
    one = make_solver(parse_solver_spec(SOLVERS[name], "s"), spec.params)
    two = type(one)(one.spec, spec.params, threads=2, parallel_min=0)  # the tiny net's runs are all short
    theta_one, theta_two = theta0.copy(), theta0.copy()
    for g in grads:
        one.apply(theta_one, g)

    def run_two() -> None:
        for g in grads:
            two.apply(theta_two, g)

    thread = threading.Thread(target=run_two)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive() and two.iter == STEPS
    assert not np.array_equal(theta_two, theta0)
    assert np.array_equal(theta_one, theta_two)
    assert all(np.array_equal(a, b) for a, b in zip(one.history, two.history))


@pytest.mark.parametrize("name", ["adagrad-inv", "adam-step-l2-clip"])
def test_pycaffe_restores_our_solverstate(name: str, tiny_net_file: Path, tmp_path: Path) -> None:
    """Our .solverstate is Caffe's own format: pycaffe's Solver.restore continues from it (Adam: m for every
    blob, then v for every blob, and the iteration that drives the bias correction)."""
    spec = load_netspec(tiny_net_file)
    text = SOLVERS[name]
    grads = _gradients(2 * STEPS, spec.num_params)
    ours = make_solver(parse_solver_spec(text, "s"), spec.params)
    theta = QNetwork(spec, seed=1).get_params()
    for g in grads[:STEPS]:
        ours.apply(theta, g.copy())
    _, state = save_snapshot(tmp_path / "snap", spec, theta, ours)
    assert len(caffe_pb2().SolverState.FromString(state.read_bytes()).history) == len(ours.history) * len(spec.params)
    for g in grads[STEPS:]:
        ours.apply(theta, g.copy())

    solver_file = tmp_path / "solver.prototxt"
    solver_file.write_text(f'net: "{tiny_net_file}"\n{text}\n')
    cf = caffe()
    solver = cf.get_solver(str(solver_file))
    import os
    cwd = os.getcwd()
    os.chdir(tmp_path)  # Caffe resolves learned_net relative to the working directory
    try:
        solver.restore(str(state))
    finally:
        os.chdir(cwd)
    assert solver.iter == STEPS
    blobs = [solver.net.params[p.layer][p.index] for p in spec.params]
    step = iter(grads[STEPS:])

    def feed() -> None:
        g = next(step)
        for p, b in zip(spec.params, blobs):
            b.diff[...] = g[p.offset:p.offset + p.size].reshape(p.shape)

    solver.add_callback(lambda: None, feed)
    solver.step(STEPS)
    theirs = np.concatenate([b.data.reshape(-1) for b in blobs])
    np.testing.assert_allclose(theirs, theta, rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("text, field", [
    ('type: "AdaDelta" base_lr: 0.1', "type"),
    ('type: "Nesterov" base_lr: 0.1', "type"),
    ('type: "SGD"', "base_lr"),
    ('type: "AdaGrad" base_lr: 0.1 lr_policy: "fixed" momentum: 0.9', "momentum"),
    ('type: "SGD" base_lr: 0.1', "lr_policy"),
    ('type: "SGD" base_lr: 0.1 lr_policy: "cosine"', "lr_policy"),
    ('type: "SGD" base_lr: 0.1 lr_policy: "step"', "stepsize"),
    ('type: "RMSProp" base_lr: 0.1 lr_policy: "fixed" rms_decay: 1.5', "rms_decay"),
    ('type: "SGD" base_lr: 0.1 lr_policy: "fixed" iter_size: 2', "iter_size"),
    ('type: "Adam" base_lr: 0.1 lr_policy: "fixed"', "momentum"),
    ('type: "Adam" base_lr: 0.1 lr_policy: "fixed" momentum: 1', "momentum"),
    ('type: "Adam" base_lr: 0.1 lr_policy: "fixed" momentum: -0.1', "momentum"),
    ('type: "Adam" base_lr: 0.1 lr_policy: "fixed" momentum: 0.9 momentum2: 1', "momentum2"),
    ('type: "Adam" base_lr: 0.1 lr_policy: "fixed" momentum: 0.9 momentum2: -0.5', "momentum2"),
    ('type: "Adam" base_lr: 0.1 lr_policy: "fixed" momentum: 0.9 delta: 0', "delta"),
    ('type: "RMSProp" base_lr: 0.1 lr_policy: "fixed" momentum2: 0.99', "momentum2"),
    ('type: "SGD" base_lr: 0.1 lr_policy: "fixed" regularization_type: "L3"', "regularization_type"),
    ('type: "SGD" base_lr: 0.1 bogus_field: 3', "bogus_field"),
])
def test_bad_solver_is_one_clear_error(text: str, field: str, tmp_path: Path) -> None:
    path = tmp_path / "bad_solver.prototxt"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_solver_spec(path)
    msg = str(err.value)
    assert str(path) in msg and field in msg and "\n" not in msg


def test_shipped_solvers_parse() -> None:
    kinds = {load_solver_spec(p).type for p in PROTOTXT.glob("solver_*.prototxt")}
    assert kinds == {"SGD", "AdaGrad", "RMSProp", "Adam"}


def test_adam_history_is_m_then_v(tiny_net_file: Path) -> None:
    """Adam keeps two history vectors ([m, v], as Caffe's history_), bias-corrected as Caffe does; copy() copies both."""
    spec = load_netspec(tiny_net_file)
    solver = make_solver(parse_solver_spec(SOLVERS["adam-fixed"], "s"), spec.params)
    assert len(solver.history) == 2
    # Caffe's β are floats: float32(0.999) = 0.99900001… moves c_1 by ~7e-6 relative from the decimal value
    b1, b2 = float(np.float32(0.9)), float(np.float32(0.999))
    assert float(solver.correction()) == pytest.approx(np.sqrt(1 - b2) / (1 - b1), rel=1e-7)
    assert float(solver.correction()) != pytest.approx(np.sqrt(1 - 0.999) / (1 - 0.9), rel=1e-6)
    g = _gradients(1, spec.num_params)[0]
    theta0 = QNetwork(spec, seed=1).get_params()
    theta = theta0.copy()
    solver.apply(theta, g)
    m, v = solver.history
    f32 = np.float32
    assert np.array_equal(m, (f32(1) - f32(0.9)) * g)  # 1 − β1 in float, as Caffe computes it
    assert np.array_equal(v, (f32(1) - f32(0.999)) * (g * g))
    lr = np.concatenate([np.full(p.size, 0.01 * p.lr_mult) for p in spec.params])
    step = (theta0 - theta).astype(np.float64)
    c1 = np.sqrt(1 - b2) / (1 - b1)
    np.testing.assert_allclose(step, lr * c1 * m / (np.sqrt(v.astype(np.float64)) + 1e-8), rtol=2e-6,
                               atol=float(np.spacing(np.abs(theta0).max())))  # θ0 − θ is exact to an ulp of θ
    # the first step is lr·lr_mult·sign(g) up to delta: the correction undoes the zero initialisation
    np.testing.assert_allclose(step, lr * np.sign(g), rtol=1e-2)
    twin = solver.copy()
    twin.history[1][:] = 0
    assert v.any()
