"""Prototxt validation: the shipped family, Caffe's own shapes, and bad files as one clear line."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PROTOTXT, TINY_NET

from ddqn.errors import ConfigError
from ddqn.net.netspec import describe_layers, load_netspec, parse_netspec
from ddqn.net.qnet import QNetwork

FAMILY = {"small": (8, 129_828), "paper": (16, 228_132), "large": (32, 621_348),
          "x64": (64, 2_194_212), "x128": (128, 8_485_668)}


@pytest.mark.parametrize("member", sorted(FAMILY))
def test_family_layout(member: str) -> None:
    size, count = FAMILY[member]
    spec = load_netspec(PROTOTXT / f"snake_{member}.prototxt")
    assert spec.state_shape == (4, size, size)
    assert spec.num_params == count
    assert [p.layer for p in spec.params][::2] == ["conv1", "conv2", "conv3", "ip1", "q"]


@pytest.mark.parametrize("member", ["small", "paper", "large"])
def test_inferred_shapes_are_caffes(member: str) -> None:
    """The shapes inferred before Caffe sees the file are the shapes Caffe builds."""
    spec = load_netspec(PROTOTXT / f"snake_{member}.prototxt")
    net = QNetwork(spec).net  # QNetwork asserts every parameter blob shape
    assert net.blobs["q"].data.shape == (spec.batch_size, 4)
    assert sum(b.data.size for bs in net.params.values() for b in bs) == spec.num_params


def _replace(old: str, new: str) -> str:
    assert old in TINY_NET
    return TINY_NET.replace(old, new)


BAD = {
    "does not parse": ("layer { name: ", "not a valid Caffe prototxt"),
    "unknown field": ("name: 'x' colour: 3", "not a valid Caffe prototxt"),
    "no q blob": (_replace('top: "q"', 'top: "qq"'), "unknown bottom blob 'q'"),
    "missing target": (_replace('top: "target"', "").replace('bottom: "target"', 'bottom: "action_mask"')
                       .replace("shape { dim: 3 dim: 4 } shape { dim: 3 dim: 4 }", "shape { dim: 3 dim: 4 }"),
                       "missing required blob 'target'"),
    "wrong action count": (_replace("num_output: 4 weight_filler", "num_output: 5 weight_filler")
                           .replace("dim: 3 dim: 4 }", "dim: 3 dim: 5 }"), "5 outputs but the game has 4 actions"),
    "unsupported layer": (_replace('type: "ReLU" bottom: "conv1"', 'type: "Swish" bottom: "conv1"'), "unsupported layer type 'Swish'"),
    "kernel too large": (_replace("kernel_size: 3 pad: 1", "kernel_size: 9 pad: 1"), "does not fit input 6x6"),
    "zero outputs": (_replace("num_output: 5", "num_output: 0"), "num_output must be > 0"),
    "mismatched loss": (_replace("shape { dim: 3 dim: 4 } shape { dim: 3 dim: 4 }", "shape { dim: 3 dim: 4 } shape { dim: 3 dim: 2 }"),
                        "layer 'loss': bottoms must match in size"),
    "v1 syntax": ('layers { name: "a" type: RELU }', "legacy V1"),
    "no layers": ('name: "empty"', "no layers"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_prototxt_is_one_clear_error(case: str, tmp_path: Path) -> None:
    text, expected = BAD[case]
    path = tmp_path / "net.prototxt"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_netspec(path)
    msg = str(err.value)
    assert msg.startswith(str(path)) and expected in msg and "\n" not in msg, msg


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read network prototxt"):
        load_netspec(tmp_path / "nope.prototxt")


def test_cli_reports_bad_net_in_one_line(tmp_path: Path) -> None:
    """A file that would make Caffe CHECK-abort is caught first: one line, exit 2, no traceback."""
    path = tmp_path / "net.prototxt"
    path.write_text(BAD["kernel too large"][0])
    res = subprocess.run([sys.executable, "-m", "ddqn.cli", "net-info", "--net", str(path)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"ddqn: error: {path}"), res.stderr
    assert "Traceback" not in res.stderr


def test_cli_prints_layout() -> None:
    res = subprocess.run([sys.executable, "-m", "ddqn.cli", "net-info", "--net", str(PROTOTXT / "snake_paper.prototxt"),
                          "--solver", str(PROTOTXT / "solver_rmsprop.prototxt")], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "228,132 parameters" in res.stdout and "RMSProp" in res.stdout


def test_describe_layers_resolves_caffes_rules() -> None:
    """The layers as plain data for an implementation outside Caffe: kernel/stride/pad as [h, w] pairs (the ``_h``/
    ``_w`` fields win when set), Caffe's defaults filled in, the loss weight 1 unless the prototxt gives one."""
    text = (TINY_NET.replace("num_output: 5 kernel_size: 3 pad: 1", "num_output: 5 kernel_h: 3 kernel_w: 1 pad: 1 "
                             "stride_h: 2")
            .replace('bottom: "target" top: "loss" }', 'bottom: "target" top: "loss" loss_weight: 0.5 }'))
    layers = {d["name"]: d for d in describe_layers(parse_netspec(text, "tiny"))}
    assert list(layers) == ["input", "scale", "conv1", "relu1", "pool1", "ip1", "relu2", "q", "q_taken", "loss"]
    assert layers["conv1"] | {"bottom": 0, "top": 0} == {
        "name": "conv1", "type": "Convolution", "bottom": 0, "top": 0, "num_output": 5, "group": 1, "bias_term": True,
        "kernel": [3, 1], "stride": [2, 1], "pad": [1, 1], "dilation": [1, 1]}
    assert {k: layers["pool1"][k] for k in ("pool", "kernel", "stride", "pad", "ceil_mode")} == {
        "pool": "MAX", "kernel": [2, 2], "stride": [2, 2], "pad": [0, 0], "ceil_mode": True}
    assert layers["scale"]["scale"] == pytest.approx(1 / 255) and layers["scale"]["power"] == 1
    assert layers["q_taken"]["operation"] == "PROD" and layers["loss"]["loss_weight"] == 0.5
    assert layers["ip1"]["axis"] == 1 and layers["ip1"]["transpose"] is False
