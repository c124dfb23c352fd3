"""Data-movement and linear reduction ops, exact in every domain that uses their traits (copies stay copies).

  select            y = x.index_select(axis, index)          attrs axis, index (tuple, repeats allowed)
                    (ONNX Slice, Split, Gather with constant indices and Resize in nearest mode import to it)
  concat            y = cat(inputs, axis)                    attrs axis
  transpose         y = x.permute(perm)                      attrs perm (over the per-sample axes)
  pad               constant padding                         attrs pads ((before, after) per axis, >= 0), value
  conv_transpose2d  ONNX ConvTranspose (2-D)                 params W [Cin, Cout/groups, kh, kw], b; attrs stride,
                                                             pads (t, l, b, r), output_padding, dilation, groups
  reduce_sum, reduce_mean                                    attrs axes, keepdims
Axes count the per-sample axes (0 is the first axis after the batch axis).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .core import param


# -- semantics ---------------------------------------------------------------------------------------------------
def select(node, args):
    x = args[0]
    idx = node.attrs["index"]
    axis = node.attrs["axis"] + 1
    n = x.shape[axis]
    if len(idx) and list(idx) == list(range(idx[0], idx[0] + len(idx))):  # a contiguous range: a view
        return x.narrow(axis, idx[0], len(idx)) if len(idx) != n else x
    return x.index_select(axis, torch.as_tensor(idx, dtype=torch.long, device=x.device))


def concat(node, args):
    return torch.cat(args, node.attrs["axis"] + 1)


def transpose(node, args):
    x = args[0]
    return x.permute(0, *(p + 1 for p in node.attrs["perm"]))


def pad(node, args, value=None):
    x = args[0]
    flat = []
    for before, after in reversed(node.attrs["pads"]):
        flat += [before, after]
    v = node.attrs["value"] if value is None else value
    return F.pad(x, flat, value=v) if any(flat) else x


def pad_abs(node, args):
    return pad(node, args, 0.0)


def conv_transpose2d(node, args, weight=None, bias=True):
    x, a = args[0], node.attrs
    W = param(node, "W", x) if weight is None else weight
    y = F.conv_transpose2d(x, W, None, stride=a["stride"], groups=a["groups"], dilation=a["dilation"])
    oph, opw = a["output_padding"]
    t, l, b, r = a["pads"]
    if oph or opw:
        y = F.pad(y, (0, opw, 0, oph))
    y = y[:, :, t:y.shape[2] - b, l:y.shape[3] - r]
    if bias and "b" in node.params:
        y = y + param(node, "b", x)[:, None, None]
    return y


def conv_transpose2d_abs(node, args):
    return conv_transpose2d(node, args, param(node, "W", args[0]).abs(), bias=False)


def reduce_sum(node, args):
    return args[0].sum(dim=tuple(a + 1 for a in node.attrs["axes"]), keepdim=bool(node.attrs["keepdims"]))


def reduce_mean(node, args):
    return args[0].mean(dim=tuple(a + 1 for a in node.attrs["axes"]), keepdim=bool(node.attrs["keepdims"]))


# -- ONNX importers ------------------------------------------------------------------------------------------------
def _ints(ctx, n, k, attr_value=None):
    """Input k of n as a list of ints (a constant), or attr_value when the input is absent."""
    if len(n.input) > k and n.input[k]:
        return [int(v) for v in np.asarray(ctx.const(n, n.input[k])).reshape(-1)]
    return None if attr_value is None else [int(v) for v in attr_value]


def select_range(ctx, n, x, full_axis, index, base=None):
    """Emit a select of `index` along ONNX axis full_axis of x (nothing when it keeps every element in order)."""
    full = ctx.full(x)
    dim = full[full_axis]
    if list(index) == list(range(dim)):
        return x
    if not index:
        raise ctx.unsupported(n, f"selects nothing along axis {full_axis} (an empty tensor)")
    ax = ctx.axis(n, full_axis, len(full))
    return ctx.emit(n, "select", [x], attrs={"axis": ax, "index": tuple(index)}, base=base)


def import_slice(ctx, n):
    a = ctx.attrs(n, ("starts", "ends", "axes"))
    x = ctx.var(n, n.input[0])
    full = ctx.full(x)
    starts, ends = _ints(ctx, n, 1, a.get("starts")), _ints(ctx, n, 2, a.get("ends"))
    axes = _ints(ctx, n, 3, a.get("axes")) or list(range(len(starts)))
    steps = _ints(ctx, n, 4) or [1] * len(starts)
    if not (len(starts) == len(ends) == len(axes) == len(steps)) or 0 in steps:
        raise ctx.bad(f"Slice {ctx.where(n)}: starts/ends/axes/steps disagree or a step is 0")
    for s, e, ax, st in zip(starts, ends, axes, steps):
        ax = ax + len(full) if ax < 0 else ax
        index = list(range(*slice(s, e, st).indices(full[ax])))
        x = select_range(ctx, n, x, ax, index, base=n.output[0])
    ctx.set(n, x)


def import_split(ctx, n):
    a = ctx.attrs(n, ("axis", "split", "num_outputs"))
    x = ctx.var(n, n.input[0])
    full = ctx.full(x)
    ax = int(a.get("axis", 0))
    ax = ax + len(full) if ax < 0 else ax
    outs = [o for o in n.output]
    sizes = _ints(ctx, n, 1, a.get("split"))
    if sizes is None:
        k = len(outs)
        step = -(-full[ax] // k)
        sizes = [min(step, full[ax] - i * step) for i in range(k)]
    if len(sizes) != len(outs) or sum(sizes) != full[ax] or min(sizes) < 0:
        raise ctx.bad(f"Split {ctx.where(n)}: sizes {sizes} do not split axis {ax} of size {full[ax]}")
    start = 0
    for k, (o, size) in enumerate(zip(outs, sizes)):
        if o and ctx.used(o):
            ctx.set(n, select_range(ctx, n, x, ax, list(range(start, start + size)), base=o), k)
        start += size


def import_gather(ctx, n):
    a = ctx.attrs(n, ("axis",))
    x = ctx.var(n, n.input[0])
    full = ctx.full(x)
    ax = int(a.get("axis", 0))
    ax = ax + len(full) if ax < 0 else ax
    idx = np.asarray(ctx.const(n, n.input[1])).astype(np.int64)
    dim = full[ax]
    if ((idx < -dim) | (idx >= dim)).any():
        raise ctx.bad(f"Gather {ctx.where(n)}: indices out of range for axis {ax} of size {dim}")
    flat = [int(i) + dim if i < 0 else int(i) for i in idx.reshape(-1)]
    y = ctx.emit(n, "select", [x], attrs={"axis": ctx.axis(n, ax, len(full)), "index": tuple(flat)},
                 base=n.output[0] + "/select")
    target = full[:ax] + list(idx.shape) + full[ax + 1:]
    ctx.set(n, ctx.reshape_full(n, y, target))


def import_concat(ctx, n):
    a = ctx.attrs(n, ("axis",))
    xs = [ctx.var(n, i) for i in n.input if i]
    full = ctx.full(xs[0])
    ax = int(a["axis"])
    ax = ax + len(full) if ax < 0 else ax
    if len(xs) == 1:
        return ctx.set(n, xs[0])
    ctx.set(n, ctx.emit(n, "concat", xs, attrs={"axis": ctx.axis(n, ax, len(full))}))


def import_transpose(ctx, n):
    x = ctx.var(n, n.input[0])
    full = ctx.full(x)
    r = len(full)
    perm = [int(p) for p in ctx.attrs(n, ("perm",)).get("perm", range(r - 1, -1, -1))]
    if sorted(perm) != list(range(r)):
        raise ctx.bad(f"Transpose {ctx.where(n)}: perm {perm} is not a permutation of {r} axes")
    target = [full[p] for p in perm]
    moved = [p for p in perm if full[p] > 1]
    if moved == sorted(moved):                 # only size-1 axes move: the data order is kept
        return ctx.set(n, ctx.reshape_full(n, x, target))
    off = 1 - ctx.boff
    if off and perm[0] != 0:
        raise ctx.batch_axis(n, f"with perm {perm} moves the batch axis, which is not supported")
    ctx.set(n, ctx.emit(n, "transpose", [x], attrs={"perm": tuple(p - off for p in perm[off:])}))


def import_pad(ctx, n):
    a = ctx.attrs(n, ("mode", "pads", "value"))
    if a.get("mode", "constant") != "constant":
        raise ctx.unsupported(n, f"with mode={a['mode']!r} is not supported")
    x = ctx.var(n, n.input[0])
    full = ctx.full(x)
    r = len(full)
    pads = _ints(ctx, n, 1, a.get("pads", []))
    value = float(a.get("value", 0.0))
    if len(n.input) > 2 and n.input[2]:
        value = float(np.asarray(ctx.const(n, n.input[2])).reshape(-1)[0])
    if len(n.input) > 3 and n.input[3]:  # opset 18 axes: scatter into a full pads list
        axes = [v + r if v < 0 else v for v in _ints(ctx, n, 3)]
        fullp = [0] * (2 * r)
        for k, ax in enumerate(axes):
            fullp[ax], fullp[r + ax] = pads[k], pads[len(axes) + k]
        pads = fullp
    if len(pads) != 2 * r:
        raise ctx.bad(f"Pad {ctx.where(n)}: {len(pads)} pads for a rank-{r} tensor")
    if min(pads) < 0:
        raise ctx.unsupported(n, f"with negative pads {pads} is not supported")
    off = 1 - ctx.boff
    if off and (pads[0] or pads[r]):
        raise ctx.unsupported(n, "padding the batch axis is not supported")
    pairs = tuple((pads[k], pads[r + k]) for k in range(off, r))
    if not any(any(p) for p in pairs):
        return ctx.set(n, x)
    ctx.set(n, ctx.emit(n, "pad", [x], attrs={"pads": pairs, "value": value}))


def import_conv_transpose(ctx, n):
    a = ctx.attrs(n, ("auto_pad", "dilations", "group", "kernel_shape", "output_padding", "pads", "strides"))
    x = ctx.var(n, n.input[0])
    s = ctx.shape(x)
    W = np.asarray(ctx.const(n, n.input[1]), dtype=np.float64)
    if W.ndim != 4 or len(s) != 3 or ctx.boff:
        raise ctx.unsupported(n, f"with weight shape {list(W.shape)} on {ctx.describe(x)} is not supported "
                                 "(only 2-D transposed convolution of a batched input)")
    if a.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise ctx.unsupported(n, f"with auto_pad={a['auto_pad']!r} is not supported")
    pads = tuple(int(v) for v in a.get("pads", (0, 0, 0, 0)))
    if len(pads) != 4 or min(pads) < 0:
        raise ctx.bad(f"ConvTranspose {ctx.where(n)}: pads {list(pads)} are not 4 non-negative values")
    params = {"W": W}
    if len(n.input) > 2 and n.input[2]:
        params["b"] = np.asarray(ctx.const(n, n.input[2]), dtype=np.float64).reshape(-1)
    attrs = {"stride": tuple(int(v) for v in a.get("strides", (1, 1))),
             "pads": pads, "output_padding": tuple(int(v) for v in a.get("output_padding", (0, 0))),
             "dilation": tuple(int(v) for v in a.get("dilations", (1, 1))), "groups": int(a.get("group", 1))}
    ctx.set(n, ctx.emit(n, "conv_transpose2d", [x], params, attrs))


def _reduce(ctx, n, op):
    a = ctx.attrs(n, ("axes", "keepdims", "noop_with_empty_axes"))
    x = ctx.var(n, n.input[0])
    full = ctx.full(x)
    axes = _ints(ctx, n, 1, a.get("axes"))
    if not axes:
        if a.get("noop_with_empty_axes", 0):
            return ctx.set(n, x)
        axes = list(range(len(full)))
    axes = sorted({v + len(full) if v < 0 else v for v in axes})
    ir_axes = tuple(ctx.axis(n, v, len(full)) for v in axes)
    ctx.set(n, ctx.emit(n, op, [x], attrs={"axes": ir_axes, "keepdims": bool(a.get("keepdims", 1))}))


def import_reduce_sum(ctx, n):
    _reduce(ctx, n, "reduce_sum")


def import_reduce_mean(ctx, n):
    _reduce(ctx, n, "reduce_mean")


def _nearest_index(out: int, size: int, scale: float, mode: str, rounding: str) -> list[int]:
    """ONNX Resize (nearest): the input index each output index reads along one axis."""
    res = []
    for i in range(out):
        if mode == "half_pixel":
            xo = (i + 0.5) / scale - 0.5
        elif mode == "pytorch_half_pixel":
            xo = (i + 0.5) / scale - 0.5 if out > 1 else 0.0
        elif mode == "align_corners":
            xo = i * (size - 1) / (out - 1) if out > 1 else 0.0
        elif mode == "asymmetric":
            xo = i / scale
        elif mode == "tf_half_pixel_for_nn":
            xo = (i + 0.5) / scale
        else:
            raise ValueError(mode)
        frac = xo - math.floor(xo)
        if rounding == "floor":
            k = math.floor(xo)
        elif rounding == "ceil":
            k = math.ceil(xo)
        elif rounding == "round_prefer_ceil":
            k = math.floor(xo) + 1 if frac >= 0.5 else math.floor(xo)
        else:  # round_prefer_floor
            k = math.floor(xo) + 1 if frac > 0.5 else math.floor(xo)
        res.append(min(max(k, 0), size - 1))
    return res


def import_resize(ctx, n):
    a = ctx.attrs(n, ("mode", "coordinate_transformation_mode", "nearest_mode", "cubic_coeff_a", "exclude_outside",
                      "extrapolation_value", "antialias", "keep_aspect_ratio_policy", "axes"))
    if a.get("mode", "nearest") != "nearest":
        raise ctx.unsupported(n, f"with mode={a['mode']!r} is not supported (only nearest)")
    if "axes" in a or a.get("antialias", 0):
        raise ctx.unsupported(n, "with axes or antialias is not supported")
    mode = a.get("coordinate_transformation_mode", "half_pixel")
    if mode not in ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "tf_half_pixel_for_nn"):
        raise ctx.unsupported(n, f"with coordinate_transformation_mode={mode!r} is not supported")
    x = ctx.var(n, n.input[0])
    full = ctx.full(x)
    ins = list(n.input) + [""] * 4
    scales = sizes = None
    if ins[2] and np.asarray(ctx.const(n, ins[2])).size:
        scales = [float(v) for v in np.asarray(ctx.const(n, ins[2])).reshape(-1)]
    if ins[3] and np.asarray(ctx.const(n, ins[3])).size:
        sizes = [int(v) for v in np.asarray(ctx.const(n, ins[3])).reshape(-1)]
    if scales is None and sizes is None or len(scales or sizes) != len(full):
        raise ctx.bad(f"Resize {ctx.where(n)}: needs scales or sizes, one per axis of {ctx.describe(x)}")
    if sizes is not None:
        scales = [o / s for o, s in zip(sizes, full)]
    else:
        sizes = [int(math.floor(s * f)) for s, f in zip(full, scales)]
    for ax, (size, out, sc) in enumerate(zip(full, sizes, scales)):
        index = _nearest_index(out, size, sc, mode, a.get("nearest_mode", "round_prefer_floor"))
        x = select_range(ctx, n, x, ax, index, base=n.output[0])
    ctx.set(n, x)
