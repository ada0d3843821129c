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

INPUTS = ("data", "action_mask", "target")
Q_BLOB = "q"
LOSS_BLOB = "loss"
_SAME_SHAPE = {"ReLU", "Power", "Sigmoid", "TanH", "Dropout", "AbsVal"}
_LOSSES = {"EuclideanLoss"}
SUPPORTED_LAYERS = {"Input", "Convolution", "Pooling", "InnerProduct", "Eltwise", "Flatten"} | _SAME_SHAPE | _LOSSES


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
    shapes: dict[str, tuple[int, ...]] = {}
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
        bottoms = [shapes[b] for b in layer.bottom]
        tops, blobs = _infer(layer, bottoms, where)
        if len(tops) != len(layer.top):
            raise ConfigError(f"{where}: expects {len(tops)} top blob(s), has {len(layer.top)}")
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
        losses += layer.type in _LOSSES
    return _check_roles(net.name, text, source, shapes, params, losses, num_actions, q_layer)


def _check_roles(name: str, text: str, source: str, shapes: dict[str, tuple[int, ...]],
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
        raise ConfigError(f"{source}: no loss layer (supported: {', '.join(sorted(_LOSSES))})")
    if not params:
        raise ConfigError(f"{source}: no learnable parameters")
    return NetSpec(source, text, name, n, (data[1], data[2], data[3]), num_actions, tuple(params), q_layer)


def _pos(value: int, what: str, where: str) -> int:
    if value <= 0:
        raise ConfigError(f"{where}: {what} must be > 0, got {value}")
    return value


def _hw(p, field: str, default: int | None, what: str, where: str) -> tuple[int, int]:
    """Resolve Caffe's ``kernel_size``/``kernel_h``/``kernel_w``-style fields of message ``p`` to (h, w) as Caffe
    does: the ``_h``/``_w`` pair when either is *set* (Caffe tests ``has_stride_h()``, not the value; this
    caffe.proto defaults the convolution's ``stride_h``/``stride_w`` to 1), else ``field``."""
    base = field.removesuffix("_size")
    names = p.DESCRIPTOR.fields_by_name
    if f"{base}_h" in names and (p.HasField(f"{base}_h") or p.HasField(f"{base}_w")):
        return getattr(p, f"{base}_h"), getattr(p, f"{base}_w")
    repeated = getattr(p, field)
    vals = list(repeated) if not isinstance(repeated, int) else [repeated]
    if len(vals) == 0:
        if default is None:
            raise ConfigError(f"{where}: {what} is required")
        return default, default
    if len(vals) == 1:
        return vals[0], vals[0]
    if len(vals) == 2:
        return vals[0], vals[1]
    raise ConfigError(f"{where}: {what} must have 1 or 2 values for 2-D input")


def _infer(layer, bottoms: list[tuple[int, ...]], where: str):
    """Return (top shapes, learnable blob shapes) for ``layer`` given its bottom shapes."""
    t = layer.type
    if t == "Input":
        specs = [tuple(s.dim) for s in layer.input_param.shape]
        if not specs:
            raise ConfigError(f"{where}: input_param needs a shape")
        if len(specs) == 1:
            specs = specs * len(layer.top)
        if len(specs) != len(layer.top):
            raise ConfigError(f"{where}: {len(specs)} shapes for {len(layer.top)} tops")
        for s in specs:
            if not s or any(d <= 0 for d in s):
                raise ConfigError(f"{where}: input shapes must have positive dims, got {s}")
        return specs, []
    if len(bottoms) < 1:
        raise ConfigError(f"{where}: needs a bottom blob")
    x = bottoms[0]
    if t in _SAME_SHAPE:
        _nbottom(bottoms, 1, where)
        return [x], []
    if t == "Flatten":
        _nbottom(bottoms, 1, where)
        return [(x[0], math.prod(x[1:]))], []
    if t == "Convolution":
        return _conv(layer.convolution_param, x, where, bottoms)
    if t == "Pooling":
        return _pool(layer.pooling_param, x, where, bottoms)
    if t == "InnerProduct":
        _nbottom(bottoms, 1, where)
        p = layer.inner_product_param
        axis = p.axis if p.axis >= 0 else len(x) + p.axis
        if not 0 <= axis < len(x):
            raise ConfigError(f"{where}: axis {p.axis} out of range for input {x}")
        k, o = math.prod(x[axis:]), _pos(p.num_output, "num_output", where)
        blobs = [(k, o) if p.transpose else (o, k)] + ([(o,)] if p.bias_term else [])
        return [(*x[:axis], o)], blobs
    if t == "Eltwise":
        if len(bottoms) < 2 or any(b != x for b in bottoms):
            raise ConfigError(f"{where}: needs >= 2 bottoms of equal shape, got {bottoms}")
        return [x], []
    if t in _LOSSES:
        _nbottom(bottoms, 2, where)
        a, b = bottoms
        if a[0] != b[0] or math.prod(a[1:]) != math.prod(b[1:]):
            raise ConfigError(f"{where}: bottoms must match in size, got {a} and {b}")
        return [()], []
    raise ConfigError(f"{where}: unsupported layer type '{t}'")  # unreachable: type was checked


def _nbottom(bottoms: list, n: int, where: str) -> None:
    if len(bottoms) != n:
        raise ConfigError(f"{where}: needs exactly {n} bottom blob(s), has {len(bottoms)}")


def _conv(p, x: tuple[int, ...], where: str, bottoms: list):
    _nbottom(bottoms, 1, where)
    if len(x) != 4:
        raise ConfigError(f"{where}: needs a 4-D input, got {x}")
    n, c, h, w = x
    kh, kw = _hw(p, "kernel_size", None, "kernel_size", where)
    sh, sw = _hw(p, "stride", 1, "stride", where)
    ph, pw = _hw(p, "pad", 0, "pad", where)
    dh, dw = _hw(p, "dilation", 1, "dilation", where)
    o, g = _pos(p.num_output, "num_output", where), _pos(p.group, "group", where)
    for v, what in ((kh, "kernel"), (kw, "kernel"), (sh, "stride"), (sw, "stride"), (dh, "dilation"), (dw, "dilation")):
        _pos(v, what, where)
    if c % g or o % g:
        raise ConfigError(f"{where}: channels {c} and num_output {o} must be divisible by group {g}")
    ho = (h + 2 * ph - (dh * (kh - 1) + 1)) // sh + 1
    wo = (w + 2 * pw - (dw * (kw - 1) + 1)) // sw + 1
    if ho <= 0 or wo <= 0:
        raise ConfigError(f"{where}: kernel {kh}x{kw} does not fit input {h}x{w} with pad {ph}x{pw}")
    blobs = [(o, c // g, kh, kw)] + ([(o,)] if p.bias_term else [])
    return [(n, o, ho, wo)], blobs


def _pool(p, x: tuple[int, ...], where: str, bottoms: list):
    _nbottom(bottoms, 1, where)
    if len(x) != 4:
        raise ConfigError(f"{where}: needs a 4-D input, got {x}")
    n, c, h, w = x
    if p.global_pooling:
        return [(n, c, 1, 1)], []
    kh, kw = _hw(p, "kernel_size", None, "kernel_size", where)
    sh, sw = _hw(p, "stride", 1, "stride", where)
    ph, pw = _hw(p, "pad", 0, "pad", where)
    for v, what in ((kh, "kernel"), (kw, "kernel"), (sh, "stride"), (sw, "stride")):
        _pos(v, what, where)
    if ph >= kh or pw >= kw:
        raise ConfigError(f"{where}: pad must be smaller than the kernel")
    if h + 2 * ph < kh or w + 2 * pw < kw:
        raise ConfigError(f"{where}: kernel {kh}x{kw} larger than padded input {h}x{w}")
    ho = math.ceil((h + 2 * ph - kh) / sh) + 1  # Caffe rounds pooled sizes up ...
    wo = math.ceil((w + 2 * pw - kw) / sw) + 1
    if ph and (ho - 1) * sh >= h + ph:  # ... but never starts a window in the padding
        ho -= 1
    if pw and (wo - 1) * sw >= w + pw:
        wo -= 1
    return [(n, c, ho, wo)], []


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
                  **{k: list(_hw(p, f, dft, k, where)) for k, f, dft in
                     (("kernel", "kernel_size", None), ("stride", "stride", 1), ("pad", "pad", 0),
                      ("dilation", "dilation", 1))}}
        elif layer.type == "Pooling":
            p = layer.pooling_param
            d |= {"pool": p.PoolMethod.Name(p.pool), "global_pooling": p.global_pooling, "ceil_mode": p.ceil_mode,
                  **{k: list(_hw(p, f, dft, k, where)) for k, f, dft in
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
        elif layer.type in _LOSSES:
            d["loss_weight"] = layer.loss_weight[0] if layer.loss_weight else 1.0
        out.append(d)
    return out
