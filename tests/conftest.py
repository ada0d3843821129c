"""Shared fixtures: the prototxt directory and a tiny member of the Q-network family."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import zmq

from ddqn.config import PROTOTXT_DIR
from ddqn.distributed import protocol as P
from ddqn.distributed.server import ParameterServer, ServerOptions
from ddqn.distributed.zap import plain_client
from ddqn.net.netspec import load_netspec

PROTOTXT = PROTOTXT_DIR  # the shipped nets and solvers

# A tiny net of the same family (conv → ReLU → pool → ip → ReLU → q, masked Euclidean loss), with
# bias lr_mult 2 / decay_mult 0 so solver tests exercise the per-blob multipliers.
TINY_NET = """
name: "tiny"
layer { name: "input" type: "Input" top: "data" top: "action_mask" top: "target"
  input_param { shape { dim: 3 dim: 4 dim: 6 dim: 6 } shape { dim: 3 dim: 4 } shape { dim: 3 dim: 4 } } }
layer { name: "scale" type: "Power" bottom: "data" top: "scaled" power_param { scale: 0.003921568627 } }
layer { name: "conv1" type: "Convolution" bottom: "scaled" top: "conv1"
  param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
  convolution_param { num_output: 5 kernel_size: 3 pad: 1
    weight_filler { type: "xavier" } bias_filler { type: "constant" value: 0.1 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip1" type: "InnerProduct" bottom: "pool1" top: "ip1"
  param { lr_mult: 0.5 decay_mult: 2 } param { lr_mult: 2 decay_mult: 0 }
  inner_product_param { num_output: 8 weight_filler { type: "xavier" } bias_filler { type: "constant" value: 0.1 } } }
layer { name: "relu2" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "q" type: "InnerProduct" bottom: "ip1" top: "q"
  inner_product_param { num_output: 4 weight_filler { type: "xavier" } bias_filler { type: "constant" value: 0 } } }
layer { name: "q_taken" type: "Eltwise" bottom: "q" bottom: "action_mask" top: "q_taken" eltwise_param { operation: PROD } }
layer { name: "loss" type: "EuclideanLoss" bottom: "q_taken" bottom: "target" top: "loss" }
"""


# The tiny net's trunk with a dueling head (ddqn/prototxt/snake_paper_dueling.prototxt's layers, tiny streams):
# q = value + advantage − mean(advantage).
TINY_DUELING = TINY_NET[:TINY_NET.index('layer { name: "ip1"')].replace('name: "tiny"', 'name: "tiny_dueling"') + """
layer { name: "value_fc" type: "InnerProduct" bottom: "pool1" top: "value_fc"
  inner_product_param { num_output: 6 weight_filler { type: "xavier" } bias_filler { type: "constant" value: 0.1 } } }
layer { name: "value_relu" type: "ReLU" bottom: "value_fc" top: "value_fc" }
layer { name: "value" type: "InnerProduct" bottom: "value_fc" top: "value"
  inner_product_param { num_output: 1 weight_filler { type: "xavier" } bias_filler { type: "constant" value: 0.2 } } }
layer { name: "advantage_fc" type: "InnerProduct" bottom: "pool1" top: "advantage_fc"
  inner_product_param { num_output: 6 weight_filler { type: "xavier" } bias_filler { type: "constant" value: 0.1 } } }
layer { name: "advantage_relu" type: "ReLU" bottom: "advantage_fc" top: "advantage_fc" }
layer { name: "advantage" type: "InnerProduct" bottom: "advantage_fc" top: "advantage"
  inner_product_param { num_output: 4 weight_filler { type: "xavier" } bias_filler { type: "constant" value: 0.3 } } }
layer { name: "advantage_mean" type: "Reduction" bottom: "advantage" top: "advantage_mean"
  reduction_param { operation: MEAN axis: 1 } }
layer { name: "advantage_mean_col" type: "Reshape" bottom: "advantage_mean" top: "advantage_mean_col"
  reshape_param { shape { dim: 0 dim: 1 } } }
layer { name: "value_centred" type: "Eltwise" bottom: "value" bottom: "advantage_mean_col" top: "value_centred"
  eltwise_param { operation: SUM coeff: 1 coeff: -1 } }
layer { name: "value_tiled" type: "Tile" bottom: "value_centred" top: "value_tiled" tile_param { axis: 1 tiles: 4 } }
layer { name: "q" type: "Eltwise" bottom: "value_tiled" bottom: "advantage" top: "q" eltwise_param { operation: SUM } }
layer { name: "q_taken" type: "Eltwise" bottom: "q" bottom: "action_mask" top: "q_taken" eltwise_param { operation: PROD } }
layer { name: "loss" type: "EuclideanLoss" bottom: "q_taken" bottom: "target" top: "loss" }
"""

@pytest.fixture
def tiny_net_file(tmp_path: Path) -> Path:
    """The tiny network prototxt written to a file."""
    path = tmp_path / "tiny.prototxt"
    path.write_text(TINY_NET)
    return path


@pytest.fixture(scope="session", autouse=True)
def _close_shared_zmq_context():
    """After the session, close whatever sockets a failed test left on ZeroMQ's shared context: its
    termination at interpreter exit would otherwise wait for them forever."""
    yield
    import zmq

    zmq.Context.instance().destroy(linger=0)


def assert_action_twins(base: Path, twin: Path, actions: int, twin_actions: int) -> None:
    """``twin`` is the prototxt ``base`` but for the action dims: Input's action_mask/target shapes and q's
    num_output are ``twin_actions`` where ``base`` has ``actions``; everything else is equal."""
    from google.protobuf import text_format

    from ddqn.net.caffe_env import caffe_pb2

    pb2 = caffe_pb2()
    a, b = pb2.NetParameter(), pb2.NetParameter()
    text_format.Merge(base.read_text(), a)
    text_format.Merge(twin.read_text(), b)
    b.name = a.name
    for layer in b.layer:
        if layer.type == "Input":
            for shape in layer.input_param.shape[1:]:
                assert shape.dim[1] == twin_actions
                shape.dim[1] = actions
        if layer.name == "q":
            assert layer.inner_product_param.num_output == twin_actions
            layer.inner_product_param.num_output = actions
    assert a == b


def assert_gradient_matches_finite_differences(q, states, actions, targets) -> None:
    """``q.loss_and_grad``'s flat gradient (num_params) against central differences of its loss, coordinate by
    coordinate: ``q`` a QNetwork; states (B, C, H, W) uint8, actions (B,) int, targets (B,) float32."""
    import numpy as np

    _, grad = q.loss_and_grad(states, actions, targets)
    grad = grad.copy()
    theta = q.get_params()
    eps = 1e-3
    numeric = np.empty_like(grad)
    for i in range(len(theta)):
        t = theta.copy()
        t[i] += eps
        q.set_params(t)
        up = q.loss_and_grad(states, actions, targets)[0]
        t[i] -= 2 * eps
        q.set_params(t)
        down = q.loss_and_grad(states, actions, targets)[0]
        numeric[i] = (up - down) / (2 * eps)
    q.set_params(theta)
    err = np.abs(numeric - grad)
    scale = np.maximum(np.abs(numeric), np.abs(grad)).max()
    # Piecewise-linear nets (ReLU, max-pool) may cross a kink for a few coordinates; nearly all must agree.
    close = err <= 2e-2 * np.maximum(np.abs(grad), 0.05 * scale)
    assert close.mean() > 0.95, f"{(~close).sum()} of {len(grad)} coordinates disagree"
    assert np.linalg.norm(numeric - grad) < 2e-2 * np.linalg.norm(grad)
    # and it really is a check: a wrong gradient (one blob's sign flipped) fails it
    wrong = grad.copy()
    wrong[:40] *= -1
    assert np.linalg.norm(numeric - wrong) > 5e-2 * np.linalg.norm(grad)


def pytest_report_header(config) -> str:
    """Which interpreter runs the suite (on Debian, `make test` picks Debian's /usr/bin/python3)."""
    return f"interpreter: {os.path.realpath(sys._base_executable)} {sys.version.split()[0]} (venv {sys.prefix})"


@pytest.fixture(params=["message", "connection"])
def two_partition_server(request, tiny_net_file: Path):
    """A parameter server of the tiny net for two partitions, in each auth mode (its store as test_hostile's
    ``_store``, which its replay check rebuilds); ``.spec`` is the net's."""
    from test_hostile import _store

    spec = load_netspec(tiny_net_file)
    srv = ParameterServer(_store(spec), P.new_secret(), ServerOptions(auth=request.param, partitions=2,
                                                                      session_timeout=60)).start()
    srv.spec = spec
    yield srv
    srv.close()


def raw_socket(server, token: bool = True) -> zmq.Socket:
    """A raw DEALER to a parameter server; with the connection token (what a worker derives from the secret)
    or without it."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if token:
        plain_client(sock, P.connection_token(server.secret))
    sock.connect(server.address)
    return sock


def session_socket(server, server_nonce: bytes, key: bytes) -> zmq.Socket:
    """A raw DEALER to a parameter server's session port, logged in as the session a WELCOME opened (the server's
    nonce names it, the session key gives its ticket): what a worker opens after its WELCOME."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RECONNECT_IVL, -1)  # the ticket admits one connection
    plain_client(sock, P.session_ticket(key), server_nonce.hex().encode())
    sock.connect(f"{server.address.rsplit(':', 1)[0]}:{server.session_port}")
    return sock


# -- multi-host tests (tests/test_hosts.py): network namespaces need root and iproute2 -----------------------
HOSTS_MARK = "hosts"
_hosts_deselected: list[str] = []  # "deselected N multi-host tests: <reason>", printed at the end of the run


# -- the compose cluster for real (tests/test_compose_cluster.py): only with `-m compose` (`make test-compose`) ---
COMPOSE_MARK = "compose"


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", f"{HOSTS_MARK}: runs on network-namespace hosts (needs root and iproute2)")
    config.addinivalue_line("markers", f"{COMPOSE_MARK}: builds the Docker image and runs the compose cluster "
                                       "(root; only with -m compose: `make test-compose`)")


def compose_deselection(markexpr: str, refusal: str | None) -> str | None:
    """Why the compose-cluster tests are left out of this run (None: they run): unless ``-m`` names them, since
    they build the image (Caffe compiled inside) and train for minutes; and where the engine cannot run."""
    if COMPOSE_MARK not in re.findall(r"[\w-]+", markexpr or ""):
        return "they run only with -m compose (`make test-compose` builds the image)"
    return refusal


def pytest_collection_modifyitems(config, items) -> None:
    """Deselect the compose-cluster tests unless asked for, and the multi-host tests where network namespaces
    cannot be made (not root, no iproute2, a chroot or container that forbids them), each with a one-line reason
    printed at the end; never a silent skip."""
    compose = [item for item in items if item.get_closest_marker(COMPOSE_MARK)]
    if compose:
        from ddqn.distributed.docker_engine import refusal

        markexpr = config.getoption("markexpr", "")
        reason = compose_deselection(markexpr, refusal() if COMPOSE_MARK in markexpr else None)
        if reason is not None:
            items[:] = [item for item in items if not item.get_closest_marker(COMPOSE_MARK)]
            config.hook.pytest_deselected(items=compose)
            _hosts_deselected.append(f"deselected {len(compose)} compose-cluster tests: {reason}")
    hosts = [item for item in items if item.get_closest_marker(HOSTS_MARK)]
    if not hosts:
        return
    from ddqn.distributed.hosts import unavailable

    reason = unavailable()
    if reason is None:
        return
    items[:] = [item for item in items if not item.get_closest_marker(HOSTS_MARK)]
    config.hook.pytest_deselected(items=hosts)
    _hosts_deselected.append(f"deselected {len(hosts)} multi-host tests: {reason}")


def pytest_terminal_summary(terminalreporter) -> None:
    for line in _hosts_deselected:
        terminalreporter.write_line(line, yellow=True, bold=True)


# -- processes a test starts: their output read as it comes, bounded waits (test_hosts, test_compose_cluster) -------
class Output:
    """A process's output lines (stdout, with stderr joined to it by the caller), read as they come."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc, self.lines = proc, []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    def text(self, tail: int | None = None) -> str:
        return "".join(self.lines[-tail:] if tail else self.lines)

    def wait(self, timeout: float) -> int:
        """Its exit code; killed and the test failed (with its last lines) after ``timeout`` seconds."""
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            pytest.fail(f"{self.proc.args[0]} still running after {timeout:g} s:\n{self.text(60)}")
        self._reader.join(timeout=10)
        return rc


def wait_until(ready: Callable[[], object], timeout: float, step: float = 0.25) -> float | None:
    """Seconds until ``ready()`` was true, or None after ``timeout``."""
    start = time.monotonic()
    while not ready():
        if time.monotonic() - start > timeout:
            return None
        time.sleep(step)
    return time.monotonic() - start


def measured(what: str) -> None:
    """A figure a test measured, on its own line of the test's output (``pytest -s``)."""
    print(f"measured: {what}", flush=True)
