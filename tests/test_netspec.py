"""Prototxt validation: the shipped family, Caffe's own shapes, and bad files as one clear line."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PROTOTXT, TINY_DUELING, TINY_NET

from ddqn.errors import ConfigError
from ddqn.net.caffe_env import caffe
from ddqn.net.netspec import blob_shapes, describe_layers, load_netspec, parse_netspec
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


def _duel(old: str, new: str) -> str:
    assert TINY_DUELING.count(old) == 1, old
    return TINY_DUELING.replace(old, new)


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
    "pool pad_w alone": (_replace("pool: MAX kernel_size: 2 stride: 2", "pool: MAX kernel_size: 2 stride: 2 pad_w: 1"),
                         "layer 'pool1': pad_h and pad_w must be set together"),
    "pool kernel twice": (_replace("pool: MAX kernel_size: 2 stride: 2", "pool: MAX kernel_size: 2 kernel_h: 2 "
                                   "kernel_w: 2 stride: 2"), "layer 'pool1': kernel_size or kernel_h and kernel_w, not both"),
    "conv pad twice": (_replace("kernel_size: 3 pad: 1", "kernel_size: 3 pad: 1 pad_h: 1 pad_w: 1"),
                       "layer 'conv1': pad or pad_h and pad_w, not both"),
    "v1 syntax": ('layers { name: "a" type: RELU }', "legacy V1"),
    "no layers": ('name: "empty"', "no layers"),
    # the dueling head's layers (tests/conftest.py's TINY_DUELING): Reduction, Reshape, Tile, Eltwise with coeff
    "reduction axis": (_duel("operation: MEAN axis: 1", "operation: MEAN axis: 2"),
                       "layer 'advantage_mean': axis 2 out of range for the 2-D input (3, 4)"),
    "tiles missing": (_duel("axis: 1 tiles: 4", "axis: 1"), "layer 'value_tiled': tile_param.tiles is required"),
    "tiles zero": (_duel("axis: 1 tiles: 4", "axis: 1 tiles: 0"), "layer 'value_tiled': tiles must be > 0, got 0"),
    "tile axis": (_duel("axis: 1 tiles: 4", "axis: -3 tiles: 4"), "axis -3 out of range for the 2-D input (3, 1)"),
    "tiles not actions": (_duel("axis: 1 tiles: 4", "axis: 1 tiles: 3"),
                          "layer 'q': needs >= 2 bottoms of equal shape, got [(3, 3), (3, 4)]"),
    "reshape two -1": (_duel("dim: 0 dim: 1", "dim: -1 dim: -1"), "shape dims must be > 0, 0 (copy) or a single -1"),
    "reshape dim -2": (_duel("dim: 0 dim: 1", "dim: 0 dim: -2"), "shape dims must be > 0, 0 (copy) or a single -1"),
    "reshape count": (_duel("dim: 0 dim: 1", "dim: 0 dim: 2"), "shape (3, 2) has 6 elements, the input (3,) has 3"),
    "reshape copy": (_duel("dim: 0 dim: 1", "dim: 0 dim: 0"), "shape dim 1 is 0 but the input (3,) has no axis 1"),
    "reshape divisible": (_duel("dim: 0 dim: 1", "dim: 2 dim: -1"), "input count 3 of (3,) is not divisible by"),
    "reshape axis": (_duel("shape { dim: 0 dim: 1 }", "axis: 3 shape { dim: 1 }"), "axis 3 out of range for the 1-D"),
    "reshape num_axes": (_duel("shape { dim: 0 dim: 1 }", "num_axes: -2 shape { dim: 1 }"),
                         "num_axes must be >= 0, or -1 for all, got -2"),
    "reshape end axis": (_duel("shape { dim: 0 dim: 1 }", "num_axes: 2 shape { dim: 1 }"),
                         "axis + num_axes = 2 out of range for the 1-D input (3,)"),
    "reshape fixes N": (_duel("dim: 0 dim: 1", "dim: 3 dim: 1"),
                        "layer 'advantage_mean_col': shape (3, 1) has 3 elements, the input (1,) has 1 (with the "
                        "minibatch N resized from 3 to 1, as acting does)"),
    "reshape in place": (_duel('top: "advantage_mean_col"', 'top: "advantage_mean"')
                         .replace('bottom: "advantage_mean_col"', 'bottom: "advantage_mean"'),
                         "in-place computation (top 'advantage_mean' is its bottom) is not supported for Reshape"),
    "top twice": (_duel('top: "value_tiled"', 'top: "value"').replace('bottom: "value_tiled"', 'bottom: "value"'),
                  "layer 'value_tiled': top blob 'value' is already produced by another layer"),
    "coeff count": (_duel("coeff: 1 coeff: -1", "coeff: 1 coeff: -1 coeff: 2"),
                    "layer 'value_centred': 3 coeff values for 2 bottoms"),
    "coeff with PROD": (_duel("operation: PROD", "operation: PROD coeff: 1 coeff: 1"),
                        "layer 'q_taken': coeff applies only to operation SUM"),
}
# Cases Caffe itself CHECK-fails on (building the net, or reshaping it to N = 1 as acting does): the process aborts.
CAFFE_ABORTS = ["reduction axis", "tiles missing", "tiles zero", "tile axis", "reshape two -1", "reshape dim -2",
                "reshape count", "reshape axis", "reshape num_axes", "reshape copy", "reshape divisible",
                "reshape end axis", "reshape fixes N", "reshape in place", "top twice", "coeff count", "coeff with PROD",
                "pool pad_w alone", "pool kernel twice", "conv pad twice"]
# Not a CHECK in this Caffe build: "tiles not actions" (its Eltwise does not compare shapes and reads out of bounds).


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_prototxt_is_one_clear_error(case: str, tmp_path: Path) -> None:
    text, expected = BAD[case]
    path = tmp_path / "net.prototxt"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_netspec(path)
    msg = str(err.value)
    assert msg.startswith(str(path)) and expected in msg and "\n" not in msg, msg


def test_rejected_files_would_abort_caffe(tmp_path: Path) -> None:
    """Each of these errors stands for a Caffe CHECK: the same file, given to Caffe (net built, then reshaped to
    N = 1 as acting does), kills the process with SIGABRT; the valid tiny dueling net does not. One Python imports
    Caffe and forks a child per file."""
    paths = {}
    for case in [*CAFFE_ABORTS, "valid"]:
        paths[case] = tmp_path / f"{case.replace(' ', '_')}.prototxt"
        paths[case].write_text(BAD[case][0] if case in BAD else TINY_DUELING)
    res = subprocess.run([sys.executable, "-c", ABORT_PROBE, *map(str, paths.values())],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    status = json.loads(res.stdout.splitlines()[-1])
    died = {case: os.WIFSIGNALED(status[str(p)]) and os.WTERMSIG(status[str(p)]) == signal.SIGABRT
            for case, p in paths.items()}
    assert died == {**dict.fromkeys(CAFFE_ABORTS, True), "valid": False}, res.stderr[-2000:]
    assert status[str(paths["valid"])] == 0


ABORT_PROBE = """
import json, os, sys
from ddqn.net.caffe_env import caffe
cf = caffe()
status = {}
for path in sys.argv[1:]:
    pid = os.fork()
    if pid == 0:
        net = cf.Net(path, cf.TRAIN)
        for name in ("data", "action_mask", "target"):
            net.blobs[name].reshape(1, *net.blobs[name].data.shape[1:])
        net.reshape()
        net.forward()
        os._exit(0)
    status[path] = os.waitpid(pid, 0)[1]
print(json.dumps(status))
"""


def test_new_layer_shapes_are_caffes(tmp_path: Path) -> None:
    """Reduction, Reshape, Tile, Eltwise with coeff and Pooling: every shape netspec infers is the shape pycaffe
    builds."""
    cases = {
        "red0": 'type: "Reduction" reduction_param { axis: 0 }',
        "red1": 'type: "Reduction" reduction_param { operation: MEAN axis: 1 }',
        "red2": 'type: "Reduction" reduction_param { operation: SUMSQ axis: 2 }',
        "red_1": 'type: "Reduction" reduction_param { operation: ASUM axis: -1 }',
        "rs_flat": 'type: "Reshape" reshape_param { shape { dim: 0 dim: -1 } }',
        "rs_all": 'type: "Reshape" reshape_param { shape { dim: -1 } }',
        "rs_copy": 'type: "Reshape" reshape_param { shape { dim: 0 dim: 0 dim: -1 dim: 1 } }',
        "rs_mid": 'type: "Reshape" reshape_param { shape { dim: 2 dim: -1 dim: 5 } }',
        "rs_part": 'type: "Reshape" reshape_param { axis: 1 num_axes: 1 shape { dim: 3 dim: 1 } }',
        "rs_tail": 'type: "Reshape" reshape_param { axis: -2 num_axes: 1 shape { dim: 5 dim: 1 } }',
        "rs_end": 'type: "Reshape" reshape_param { axis: -1 shape { dim: 1 } }',
        "rs_ins": 'type: "Reshape" reshape_param { axis: 2 num_axes: 0 shape { dim: 1 } }',
        "rs_same": 'type: "Reshape" reshape_param { num_axes: 0 }',
        "tile0": 'type: "Tile" tile_param { axis: 0 tiles: 3 }',
        "tile1": 'type: "Tile" tile_param { tiles: 2 }',
        "tile_1": 'type: "Tile" tile_param { axis: -1 tiles: 4 }',
        # pooled sizes round up, and with padding on either axis drop a last window that starts in the padding
        "pool_k3s2p1": 'type: "Pooling" pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 }',
        "pool_rect": 'type: "Pooling" pooling_param { pool: MAX kernel_h: 2 kernel_w: 3 stride_h: 1 stride_w: 2 '
                     'pad_h: 0 pad_w: 1 }',
        "pool_clip_h": 'type: "Pooling" pooling_param { pool: MAX kernel_h: 1 kernel_w: 2 stride_h: 4 stride_w: 1 '
                       'pad_h: 0 pad_w: 1 }',
    }
    text = 'name: "shapes" layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 dim: 4 dim: 5 } } }\n'
    text += "".join(f'layer {{ name: "{n}" bottom: "x" top: "{n}" {body} }}\n' for n, body in cases.items())
    text += ('layer { name: "sum" type: "Eltwise" bottom: "x" bottom: "x" bottom: "x" top: "sum" '
             "eltwise_param { operation: SUM coeff: 1 coeff: -0.5 coeff: 2 } }\n"
             'layer { name: "col" type: "Reshape" bottom: "red1" top: "col" reshape_param { shape { dim: 0 dim: 1 } } }\n'
             'layer { name: "wide" type: "Tile" bottom: "col" top: "wide" tile_param { axis: 1 tiles: 7 } }\n')
    inferred = blob_shapes(text, "shapes")
    path = tmp_path / "shapes.prototxt"
    path.write_text(text)
    net = caffe().Net(str(path), caffe().TEST)
    built = {name: tuple(net.blobs[name].data.shape) for name in inferred}
    assert inferred == built
    assert inferred["red1"] == (2,) and inferred["rs_mid"] == (2, 12, 5) and inferred["wide"] == (2, 7)


def test_dueling_shapes_are_caffes() -> None:
    """Every blob of the dueling paper net as pycaffe builds it; q keeps the paper net's (N, 4)."""
    path = PROTOTXT / "snake_paper_dueling.prototxt"
    spec = load_netspec(path)
    inferred = blob_shapes(spec.text, str(path))
    net = QNetwork(spec).net  # QNetwork asserts every parameter blob shape
    assert inferred == {name: tuple(net.blobs[name].data.shape) for name in inferred}
    assert inferred["advantage_mean"] == (32,) and inferred["value_tiled"] == inferred["q"] == (32, 4)


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
