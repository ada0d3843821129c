"""Caffe's shape rules for the layer types a ddqn prototxt may use, checked the way Caffe CHECKs them.

:func:`infer` returns a layer's top shapes and learnable blob shapes from its bottom shapes; a parameter that
would make Caffe CHECK-fail (and abort the process) is a :class:`ConfigError` naming the layer instead. The rules
follow Caffe's ``src/caffe/layers/*_layer.cpp`` (``Reshape``/``LayerSetUp``) of the pinned build.
"""
from __future__ import annotations

import math

from ddqn.errors import ConfigError

Shape = tuple[int, ...]
SAME_SHAPE = {"ReLU", "Power", "Sigmoid", "TanH", "Dropout", "AbsVal"}  # also the only in-place layers
LOSSES = {"EuclideanLoss"}
SUPPORTED_LAYERS = ({"Input", "Convolution", "Pooling", "InnerProduct", "Eltwise", "Flatten", "Reduction", "Reshape",
                     "Tile"} | SAME_SHAPE | LOSSES)


def _pos(value: int, what: str, where: str) -> int:
    if value <= 0:
        raise ConfigError(f"{where}: {what} must be > 0, got {value}")
    return value


def hw(p, field: str, default: int | None, what: str, where: str) -> tuple[int, int]:
    """Resolve Caffe's ``kernel_size``/``kernel_h``/``kernel_w``-style fields of message ``p`` to (h, w) as Caffe
    does: the ``_h``/``_w`` pair when either is *set* (Caffe tests ``has_stride_h()``, not the value; this
    caffe.proto defaults the convolution's ``stride_h``/``stride_w`` to 1), else ``field``."""
    base = field.removesuffix("_size")
    names = p.DESCRIPTOR.fields_by_name
    plain = getattr(p, field)  # repeated in ConvolutionParameter, one optional value in PoolingParameter
    if f"{base}_h" in names and (p.HasField(f"{base}_h") or p.HasField(f"{base}_w")):
        if (len(plain) if not isinstance(plain, int) else p.HasField(field)):
            raise ConfigError(f"{where}: {field} or {base}_h and {base}_w, not both")
        if p.DESCRIPTOR.name == "PoolingParameter" and not (p.HasField(f"{base}_h") and p.HasField(f"{base}_w")):
            raise ConfigError(f"{where}: {base}_h and {base}_w must be set together")  # Caffe's pooling CHECKs it
        return getattr(p, f"{base}_h"), getattr(p, f"{base}_w")
    vals = list(plain) if not isinstance(plain, int) else [plain]
    if len(vals) == 0:
        if default is None:
            raise ConfigError(f"{where}: {what} is required")
        return default, default
    if len(vals) == 1:
        return vals[0], vals[0]
    if len(vals) == 2:
        return vals[0], vals[1]
    raise ConfigError(f"{where}: {what} must have 1 or 2 values for 2-D input")


def infer(layer, bottoms: list[Shape], where: str) -> tuple[list[Shape], list[Shape]]:
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
    if t in SAME_SHAPE:
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
        axis = _axis(p.axis, x, where)
        k, o = math.prod(x[axis:]), _pos(p.num_output, "num_output", where)
        blobs = [(k, o) if p.transpose else (o, k)] + ([(o,)] if p.bias_term else [])
        return [(*x[:axis], o)], blobs
    if t == "Eltwise":
        return _eltwise(layer.eltwise_param, bottoms, where)
    if t == "Reduction":  # one number per index of the axes before `axis`: the axes from `axis` on are reduced
        _nbottom(bottoms, 1, where)
        return [x[:_axis(layer.reduction_param.axis, x, where)]], []
    if t == "Tile":
        return _tile(layer.tile_param, x, where, bottoms)
    if t == "Reshape":
        return _reshape(layer.reshape_param, x, where, bottoms)
    if t in LOSSES:
        _nbottom(bottoms, 2, where)
        a, b = bottoms
        if a[0] != b[0] or math.prod(a[1:]) != math.prod(b[1:]):
            raise ConfigError(f"{where}: bottoms must match in size, got {a} and {b}")
        return [()], []
    raise ConfigError(f"{where}: unsupported layer type '{t}'")  # unreachable: type was checked


def _axis(axis: int, x: Shape, where: str) -> int:
    """Caffe's ``CanonicalAxisIndex``: ``axis`` in [-n, n) for an n-D input, negative counting from the end."""
    if not -len(x) <= axis < len(x):
        raise ConfigError(f"{where}: axis {axis} out of range for the {len(x)}-D input {x}")
    return axis % len(x)


def _eltwise(p, bottoms: list[Shape], where: str):
    """Equal shapes (this Caffe build does not check them: it would read out of bounds); one coeff per bottom."""
    if len(bottoms) < 2 or any(b != bottoms[0] for b in bottoms):
        raise ConfigError(f"{where}: needs >= 2 bottoms of equal shape, got {bottoms}")
    if p.coeff and len(p.coeff) != len(bottoms):
        raise ConfigError(f"{where}: {len(p.coeff)} coeff values for {len(bottoms)} bottoms (one per bottom)")
    if p.coeff and p.operation != p.SUM:
        raise ConfigError(f"{where}: coeff applies only to operation SUM")
    return [bottoms[0]], []


def _tile(p, x: Shape, where: str, bottoms: list):
    """``tiles`` copies of the input along ``axis``: that dim times ``tiles``."""
    _nbottom(bottoms, 1, where)
    axis = _axis(p.axis, x, where)
    if not p.HasField("tiles"):
        raise ConfigError(f"{where}: tile_param.tiles is required")
    return [(*x[:axis], x[axis] * _pos(p.tiles, "tiles", where), *x[axis + 1:])], []


def _reshape(p, x: Shape, where: str, bottoms: list):
    """Input axes [axis, axis + num_axes) replaced by ``shape``'s dims: 0 copies the input's dim at that index,
    one -1 is inferred from the count, which must not change."""
    _nbottom(bottoms, 1, where)
    n, count = len(x), math.prod(x)
    start = p.axis if p.axis >= 0 else n + p.axis + 1
    if not 0 <= start <= n:
        raise ConfigError(f"{where}: axis {p.axis} out of range for the {n}-D input {x}")
    if p.num_axes < -1:
        raise ConfigError(f"{where}: num_axes must be >= 0, or -1 for all, got {p.num_axes}")
    end = n if p.num_axes == -1 else start + p.num_axes
    if end > n:
        raise ConfigError(f"{where}: axis + num_axes = {end} out of range for the {n}-D input {x}")
    dims = list(p.shape.dim)
    if dims.count(-1) > 1 or any(d < -1 for d in dims):
        raise ConfigError(f"{where}: shape dims must be > 0, 0 (copy) or a single -1 (infer), got {dims}")
    top = [*x[:start], *dims, *x[end:]]
    for i, d in enumerate(dims):
        if d == 0:
            if start + i >= n:
                raise ConfigError(f"{where}: shape dim {i} is 0 but the input {x} has no axis {start + i} to copy")
            top[start + i] = x[start + i]
    if -1 in dims:
        i = start + dims.index(-1)
        known = math.prod(top[:i] + top[i + 1:])
        if count % known:
            raise ConfigError(f"{where}: input count {count} of {x} is not divisible by the given dims' {known}")
        top[i] = count // known
    if math.prod(top) != count:
        raise ConfigError(f"{where}: shape {tuple(top)} has {math.prod(top)} elements, the input {x} has {count}")
    return [tuple(top)], []


def _nbottom(bottoms: list, n: int, where: str) -> None:
    if len(bottoms) != n:
        raise ConfigError(f"{where}: needs exactly {n} bottom blob(s), has {len(bottoms)}")


def _conv(p, x: tuple[int, ...], where: str, bottoms: list):
    _nbottom(bottoms, 1, where)
    if len(x) != 4:
        raise ConfigError(f"{where}: needs a 4-D input, got {x}")
    n, c, h, w = x
    kh, kw = hw(p, "kernel_size", None, "kernel_size", where)
    sh, sw = hw(p, "stride", 1, "stride", where)
    ph, pw = hw(p, "pad", 0, "pad", where)
    dh, dw = hw(p, "dilation", 1, "dilation", where)
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
    kh, kw = hw(p, "kernel_size", None, "kernel_size", where)
    sh, sw = hw(p, "stride", 1, "stride", where)
    ph, pw = hw(p, "pad", 0, "pad", where)
    for v, what in ((kh, "kernel"), (kw, "kernel"), (sh, "stride"), (sw, "stride")):
        _pos(v, what, where)
    if ph >= kh or pw >= kw:
        raise ConfigError(f"{where}: pad must be smaller than the kernel")
    if h + 2 * ph < kh or w + 2 * pw < kw:
        raise ConfigError(f"{where}: kernel {kh}x{kw} larger than padded input {h}x{w}")
    ho = math.ceil((h + 2 * ph - kh) / sh) + 1  # Caffe rounds pooled sizes up ...
    wo = math.ceil((w + 2 * pw - kw) / sw) + 1
    if (ph or pw) and (ho - 1) * sh >= h + ph:  # ... but, with any padding, never starts a window in it (in
        ho -= 1                                  # either axis, even the one without padding, as Caffe does)
    if (ph or pw) and (wo - 1) * sw >= w + pw:
        wo -= 1
    return [(n, c, ho, wo)], []
