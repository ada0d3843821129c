"""Read and validate a Q-network prototxt before Caffe sees it.

A Caffe CHECK failure aborts the whole process, so every shape is inferred here first (Caffe's own
rules) and a bad file becomes one :class:`ConfigError` line naming the file, layer and problem.
The result, :class:`NetSpec`, also records the flat parameter layout the solvers and the parameter
server work with: one float32 vector, blob after blob in Caffe's ``net.params`` order. :func:`describe_layers` gives
its layers as plain data, for an implementation of the same net outside Caffe (bench-caffe's PyTorch twin).

A ddqn Q-network prototxt has one ``Input`` layer with tops ``data`` (N, C, H, W: C stacked frames),
``action_mask`` (N, A) and ``target`` (N, A); a blob ``q`` (N, A) of Q-values; and a loss layer.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from ddqn.errors import ConfigError
from ddqn.net.caffe_env import caffe_pb2
from ddqn.net.shapes import LOSSES, SAME_SHAPE, SUPPORTED_LAYERS, Shape, hw, infer

INPUTS = ("data", "action_mask", "target")
Q_BLOB = "q"
LOSS_BLOB = "loss"


@dataclass(frozen=True)
class ParamBlob:
    """One learnable blob in the flat vector: ``vector[offset:offset+size].reshape(shape)``."""

    layer: str
    index: int  # 0 = weights, 1 = bias
    shape: tuple[int, ...]
    offset: int
    size: int
    lr_mult: float
    decay_mult: float


@dataclass(frozen=True)
class NetSpec:
    """A validated Q-network prototxt: its text, input shapes and flat parameter layout."""

    source: str  # file name (for messages)
    text: str  # the prototxt itself (what the Spark driver broadcasts)
    name: str
    batch_size: int
    state_shape: tuple[int, int, int]  # (C stacked frames, H, W)
    num_actions: int
    params: tuple[ParamBlob, ...]
    q_layer: str  # the layer whose top is the Q-value blob

    @property
    def num_params(self) -> int:
        """Length of the flat float32 parameter vector."""
        last = self.params[-1]
        return last.offset + last.size


def load_netspec(path: str | Path, num_actions: int = 4) -> NetSpec:
    """Read ``path`` and validate it as a ddqn Q-network with ``num_actions`` outputs."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read network prototxt ({exc.strerror})") from exc
    return parse_netspec(text, str(path), num_actions)


def parse_netspec(text: str, source: str, num_actions: int = 4) -> NetSpec:
    """Validate prototxt ``text`` (named ``source`` in errors); see the module docstring."""
    net = _parse(text, source)
    shapes, params, losses, q_layer = _walk(net, source)
    spec = _check_roles(net.name, text, source, shapes, params, losses, num_actions, q_layer)
    _check_any_batch(net, source, spec)
    return spec


def blob_shapes(text: str, source: str) -> dict[str, Shape]:
    """Every blob's shape as Caffe will build it (layer by layer checks only, no ddqn roles)."""
    return _walk(_parse(text, source), source)[0]


def _parse(text: str, source: str):
    """The ``NetParameter`` of ``text``, with the net-level checks."""
    pb2 = caffe_pb2()
    from google.protobuf import text_format  # noqa: PLC0415

    net = pb2.NetParameter()
    try:
        text_format.Merge(text, net)
    except text_format.ParseError as exc:
        raise ConfigError(f"{source}: not a valid Caffe prototxt: {exc}") from exc
    if net.layers:
        raise ConfigError(f"{source}: legacy V1 'layers' syntax is not supported; use 'layer'")
    if net.input or net.input_shape:
        raise ConfigError(f"{source}: net-level 'input' fields are not supported; use an Input layer")
    if not net.layer:
        raise ConfigError(f"{source}: no layers")
    return net


def _walk(net, source: str, batch: int | None = None):
    """Infer every layer in order: (blob shapes, parameter layout, loss layers, the q layer's name). With
    ``batch``, the Input layer's shapes get that first dim (the minibatch N)."""
    shapes: dict[str, Shape] = {}
    params: list[ParamBlob] = []
    names: set[str] = set()
    losses = 0
    q_layer = ""
    for layer in net.layer:
        where = f"{source}: layer '{layer.name}'"
        if not layer.name or layer.name in names:
            raise ConfigError(f"{where}: layer names must be non-empty and unique")
        names.add(layer.name)
        if layer.type not in SUPPORTED_LAYERS:
            raise ConfigError(f"{where}: unsupported layer type '{layer.type}' "
                              f"(supported: {', '.join(sorted(SUPPORTED_LAYERS))})")
        if layer.include or layer.exclude:
            raise ConfigError(f"{where}: include/exclude phase rules are not supported")
        for b in layer.bottom:
            if b not in shapes:
                raise ConfigError(f"{where}: unknown bottom blob '{b}'")
        _check_tops(layer, shapes, where)
        bottoms = [shapes[b] for b in layer.bottom]
        tops, blobs = infer(layer, bottoms, where)
        if len(tops) != len(layer.top):
            raise ConfigError(f"{where}: expects {len(tops)} top blob(s), has {len(layer.top)}")
        if batch is not None and layer.type == "Input":
            tops = [(batch, *t[1:]) for t in tops]
        for name, shape in zip(layer.top, tops):
            shapes[name] = shape
        if Q_BLOB in layer.top:
            q_layer = layer.name
        if len(layer.param) > len(blobs):
            raise ConfigError(f"{where}: {len(layer.param)} param specs for {len(blobs)} learnable blobs")
        for i, shape in enumerate(blobs):
            spec = layer.param[i] if i < len(layer.param) else None
            if spec is not None and spec.name:
                raise ConfigError(f"{where}: shared parameters ('param {{ name }}') are not supported")
            lr = spec.lr_mult if spec is not None else 1.0
            decay = spec.decay_mult if spec is not None else 1.0
            if lr < 0 or decay < 0:
                raise ConfigError(f"{where}: lr_mult and decay_mult must be >= 0")
            offset = params[-1].offset + params[-1].size if params else 0
            params.append(ParamBlob(layer.name, i, shape, offset, math.prod(shape), lr, decay))
        losses += layer.type in LOSSES
    return shapes, params, losses, q_layer


def _check_tops(layer, shapes: dict[str, Shape], where: str) -> None:
    """Caffe computes in place when top i names bottom i, and aborts when a top names any other existing blob."""
    for i, top in enumerate(layer.top):
        if i < len(layer.bottom) and layer.bottom[i] == top:
            if layer.type not in SAME_SHAPE:
                raise ConfigError(f"{where}: in-place computation (top '{top}' is its bottom) is not supported for "
                                  f"{layer.type} (only for {', '.join(sorted(SAME_SHAPE))})")
        elif top in shapes:
            raise ConfigError(f"{where}: top blob '{top}' is already produced by another layer")


def _check_any_batch(net, source: str, spec: NetSpec) -> None:
    """QNetwork reshapes the net to each call's batch (1 state when acting): every layer must follow N."""
    m = 1 if spec.batch_size > 1 else 2
    try:
        q = _walk(net, source, m)[0][Q_BLOB]
    except ConfigError as exc:
        why = f"with the minibatch N resized from {spec.batch_size} to {m}, as acting does"
        raise ConfigError(f"{exc} ({why})") from exc
    if q != (m, spec.num_actions):
        raise ConfigError(f"{source}: blob '{Q_BLOB}' is {q} when the minibatch N is resized to {m} (acting does): "
                          f"a layer fixes N to {spec.batch_size}")


def _check_roles(name: str, text: str, source: str, shapes: dict[str, Shape],
                 params: list[ParamBlob], losses: int, num_actions: int, q_layer: str) -> NetSpec:
    """Check the blobs ddqn needs exist with consistent shapes."""
    for blob in (*INPUTS, Q_BLOB, LOSS_BLOB):
        if blob not in shapes:
            raise ConfigError(f"{source}: missing required blob '{blob}' "
                              f"(need inputs {', '.join(INPUTS)}, output '{Q_BLOB}' and '{LOSS_BLOB}')")
    data, q = shapes["data"], shapes[Q_BLOB]
    if len(data) != 4:
        raise ConfigError(f"{source}: blob 'data' must be 4-D (N, frames, H, W), got {data}")
    n = data[0]
    if q != (n, q[-1]) or len(q) != 2:
        raise ConfigError(f"{source}: blob '{Q_BLOB}' must be (N, actions), got {q}")
    if q[1] != num_actions:
        raise ConfigError(f"{source}: blob '{Q_BLOB}' has {q[1]} outputs but the game has {num_actions} actions")
    for blob in INPUTS[1:]:
        if shapes[blob] != q:
            raise ConfigError(f"{source}: blob '{blob}' must have the shape of '{Q_BLOB}' {q}, got {shapes[blob]}")
    if losses == 0:
        raise ConfigError(f"{source}: no loss layer (supported: {', '.join(sorted(LOSSES))})")
    if not params:
        raise ConfigError(f"{source}: no learnable parameters")
    return NetSpec(source, text, name, n, (data[1], data[2], data[3]), num_actions, tuple(params), q_layer)


def describe_layers(spec: NetSpec) -> list[dict]:
    """The layers of ``spec`` as plain data (JSON-able), for an implementation of the same net outside Caffe: each
    layer's ``name``, ``type``, ``bottom``, ``top`` and the fields its computation needs, with Caffe's defaults and
    its ``_h``/``_w`` rules resolved (pairs are [h, w]): Convolution ``num_output, kernel, stride, pad, dilation,
    group, bias_term``; Pooling ``pool`` (MAX, AVE, …), ``kernel, stride, pad, global_pooling, ceil_mode``;
    InnerProduct ``num_output, axis, transpose, bias_term``; Power ``power, scale, shift``; ReLU ``negative_slope``;
    Eltwise ``operation`` (PROD, SUM, MAX), ``coeff``; Flatten ``axis, end_axis``; Dropout ``dropout_ratio``; a loss
    layer ``loss_weight``."""
    pb2 = caffe_pb2()
    from google.protobuf import text_format  # noqa: PLC0415 - protobuf comes with Caffe

    net = text_format.Merge(spec.text, pb2.NetParameter())
    out = []
    for layer in net.layer:
        d: dict = {"name": layer.name, "type": layer.type, "bottom": list(layer.bottom), "top": list(layer.top)}
        where = f"{spec.source}: layer '{layer.name}'"
        if layer.type == "Convolution":
            p = layer.convolution_param
            d |= {"num_output": p.num_output, "group": p.group, "bias_term": p.bias_term,
                  **{k: list(hw(p, f, dft, k, where)) for k, f, dft in
                     (("kernel", "kernel_size", None), ("stride", "stride", 1), ("pad", "pad", 0),
                      ("dilation", "dilation", 1))}}
        elif layer.type == "Pooling":
            p = layer.pooling_param
            d |= {"pool": p.PoolMethod.Name(p.pool), "global_pooling": p.global_pooling, "ceil_mode": p.ceil_mode,
                  **{k: list(hw(p, f, dft, k, where)) for k, f, dft in
                     (("kernel", "kernel_size", 0), ("stride", "stride", 1), ("pad", "pad", 0))}}
        elif layer.type == "InnerProduct":
            p = layer.inner_product_param
            d |= {"num_output": p.num_output, "axis": p.axis, "transpose": p.transpose, "bias_term": p.bias_term}
        elif layer.type == "Power":
            p = layer.power_param
            d |= {"power": p.power, "scale": p.scale, "shift": p.shift}
        elif layer.type == "ReLU":
            d["negative_slope"] = layer.relu_param.negative_slope
        elif layer.type == "Eltwise":
            p = layer.eltwise_param
            d |= {"operation": p.EltwiseOp.Name(p.operation), "coeff": list(p.coeff)}
        elif layer.type == "Flatten":
            d |= {"axis": layer.flatten_param.axis, "end_axis": layer.flatten_param.end_axis}
        elif layer.type == "Dropout":
            d["dropout_ratio"] = layer.dropout_param.dropout_ratio
        elif layer.type in LOSSES:
            d["loss_weight"] = layer.loss_weight[0] if layer.loss_weight else 1.0
        out.append(d)
    return out
