"""Nonlinear IR ops beyond the activations of engine/ops/core.py.

  mul        y = a * b           two inputs, per-sample shapes broadcast as numpy does (a product of two variables)
  matmul     y = a @ b           two inputs, torch.matmul (numpy matmul) of the per-sample tensors
  pow        y = x ** exponent   attrs exponent (float); Sqrt and Reciprocal import to it
  exp, log, sin, cos, sign       elementwise
  clip       y = min(max(x, min), max)   attrs min, max (float or None)
  softmax    along attrs axis
Domains bound these ops where their inputs lie in the op's domain (log and fractional powers: x > 0 or x >= 0;
negative powers: x != 0); outside it the op's value is NaN or infinite and a sound bound may be infinite.
ONNX Div by a variable imports as mul(a, pow(b, -1)); LayerNormalization as its arithmetic.
"""
from __future__ import annotations

import numpy as np
import torch


# -- semantics ---------------------------------------------------------------------------------------------------
def _pad_rank(t: torch.Tensor, rank: int) -> torch.Tensor:
    """Batched t [B, *s] with size-1 dims inserted after the batch axis up to per-sample rank `rank`."""
    k = rank - (t.dim() - 1)
    return t.reshape(t.shape[0], *(1,) * k, *t.shape[1:]) if k > 0 else t


def mul_operands(a: torch.Tensor, b: torch.Tensor):
    """Batched a [B, *s], b [B, *t] aligned so that torch broadcasting acts per sample (numpy rules on s, t)."""
    rank = max(a.dim(), b.dim()) - 1
    return _pad_rank(a, rank), _pad_rank(b, rank)


def matmul_operands(a: torch.Tensor, b: torch.Tensor):
    """Batched operands of a per-sample matmul as equal-rank, at least 2-D per sample tensors, plus which of the
    product's last two axes to squeeze (a per-sample vector a gains axis -2, a vector b axis -1)."""
    squeeze = ()
    if a.dim() == 2:
        a, squeeze = a[:, None, :], squeeze + (-2,)
    if b.dim() == 2:
        b, squeeze = b[:, :, None], squeeze + (-1,)
    a, b = mul_operands(a, b)
    return a, b, squeeze


def mul(node, args):
    a, b = mul_operands(args[0], args[1])
    return a * b


def matmul(node, args):
    a, b, squeeze = matmul_operands(args[0], args[1])
    y = a @ b
    return y.squeeze(squeeze) if squeeze else y


def pow_(node, args):
    return torch.pow(args[0], node.attrs["exponent"])


def pow_derivative(node, x):
    p = node.attrs["exponent"]
    return p * torch.pow(x, p - 1)


def _is_int(p: float) -> bool:
    return float(p).is_integer()


def pow_curvature(node, l, u):
    """+1 where x**p is convex on [l, u], -1 where concave, 0 where neither (or not defined everywhere)."""
    p = node.attrs["exponent"]
    pos, neg = l > 0, u < 0
    zero = torch.zeros_like(l, dtype=torch.int8)
    if p in (0.0, 1.0):
        return zero + 1
    if _is_int(p) and p > 0 and int(p) % 2 == 0:
        return zero + 1
    if _is_int(p) and p > 0:                       # odd: convex for x >= 0, concave for x <= 0
        return torch.where(l >= 0, 1, torch.where(u <= 0, -1, 0)).to(torch.int8)
    if p > 1:                                      # fractional, defined for x >= 0
        return torch.where(l >= 0, 1, 0).to(torch.int8)
    if p > 0:
        return torch.where(l >= 0, -1, 0).to(torch.int8)
    # p < 0: convex on x > 0; on x < 0 concave for odd integers, convex for even ones, undefined otherwise
    on_neg = (-1 if int(p) % 2 else 1) if _is_int(p) else 0
    return torch.where(pos, 1, torch.where(neg, on_neg, 0)).to(torch.int8)


def exp(node, args):
    return torch.exp(args[0])


def exp_derivative(node, x):
    return torch.exp(x)


def log(node, args):
    return torch.log(args[0])


def log_derivative(node, x):
    return 1 / x


def sin(node, args):
    return torch.sin(args[0])


def cos(node, args):
    return torch.cos(args[0])


def sign(node, args):
    return torch.sign(args[0])


def clip(node, args):
    a = node.attrs
    return torch.clamp(args[0], a["min"], a["max"])


def softmax(node, args):
    return torch.softmax(args[0], node.attrs["axis"] + 1)


# -- ONNX importers ------------------------------------------------------------------------------------------------
def _unary(op, attrs=None):
    def importer(ctx, n):
        ctx.attrs(n, ())
        ctx.set(n, ctx.emit(n, op, [ctx.var(n, n.input[0])], attrs=attrs))
    return importer


def import_pow(ctx, n):
    ctx.attrs(n, ())
    e = np.asarray(ctx.const(n, n.input[1]), dtype=np.float64)
    if e.size != 1:
        raise ctx.unsupported(n, f"with a non-scalar exponent of shape {list(e.shape)} is not supported")
    x = ctx.var(n, n.input[0])
    p = float(e.reshape(-1)[0])
    ctx.set(n, x if p == 1.0 else ctx.emit(n, "pow", [x], attrs={"exponent": p}))


def import_sqrt(ctx, n):
    ctx.attrs(n, ())
    ctx.set(n, ctx.emit(n, "pow", [ctx.var(n, n.input[0])], attrs={"exponent": 0.5}))


def import_reciprocal(ctx, n):
    ctx.attrs(n, ())
    ctx.set(n, ctx.emit(n, "pow", [ctx.var(n, n.input[0])], attrs={"exponent": -1.0}))


def import_softmax(ctx, n):
    a = ctx.attrs(n, ("axis",))
    x = ctx.var(n, n.input[0])
    full = ctx.full(x)
    default = -1 if ctx.opset(n) >= 13 else 1
    ax = int(a.get("axis", default))
    ax = ax + len(full) if ax < 0 else ax
    if ctx.opset(n) < 13 and ax != len(full) - 1:
        # opset < 13 flattens the axes from `axis` on into one: only the last-axis case is a plain softmax
        raise ctx.unsupported(n, f"with axis={ax} (opset < 13 semantics) is not supported")
    ctx.set(n, ctx.emit(n, "softmax", [x], attrs={"axis": ctx.axis(n, ax, len(full))}))


def import_clip(ctx, n):
    """Clip(min=0, max=none) is relu; other constant ranges are the clip op."""
    a = ctx.attrs(n, ("min", "max"))
    lo, hi = a.get("min"), a.get("max")
    if len(n.input) > 1 and n.input[1]:
        lo = float(np.asarray(ctx.const(n, n.input[1])).reshape(-1)[0])
    if len(n.input) > 2 and n.input[2]:
        hi = float(np.asarray(ctx.const(n, n.input[2])).reshape(-1)[0])
    x = ctx.var(n, n.input[0])
    if lo == 0.0 and (hi is None or hi >= np.finfo(np.float32).max):
        return ctx.set(n, ctx.emit(n, "relu", [x]))
    if lo is not None and hi is not None and lo > hi:
        raise ctx.bad(f"Clip {ctx.where(n)}: min {lo} > max {hi}")
    ctx.set(n, ctx.emit(n, "clip", [x], attrs={"min": None if lo is None else float(lo),
                                               "max": None if hi is None else float(hi)}))


def import_layer_norm(ctx, n):
    """(x - mean) / sqrt(var + epsilon) * scale + bias over the axes from `axis` on, as its arithmetic."""
    a = ctx.attrs(n, ("axis", "epsilon", "stash_type"))
    x = ctx.var(n, n.input[0])
    full = ctx.full(x)
    ax = int(a.get("axis", -1))
    ax = ax + len(full) if ax < 0 else ax
    axes = tuple(ctx.axis(n, k, len(full)) for k in range(ax, len(full)))
    base = n.output[0]
    mean = ctx.emit(n, "reduce_mean", [x], attrs={"axes": axes, "keepdims": True}, base=base + "/mean")
    cen = ctx.emit(n, "sub", [x, mean], base=base + "/centred")
    sq = ctx.emit(n, "pow", [cen], attrs={"exponent": 2.0}, base=base + "/square")
    var = ctx.emit(n, "reduce_mean", [sq], attrs={"axes": axes, "keepdims": True}, base=base + "/var")
    vareps = ctx.emit(n, "affine", [var], {"shift": np.asarray(float(a.get("epsilon", 1e-5)))}, base=base + "/var_eps")
    rstd = ctx.emit(n, "pow", [vareps], attrs={"exponent": -0.5}, base=base + "/rstd")
    y = ctx.emit(n, "mul", [cen, rstd], base=base + "/normed")
    params = {"scale": ctx.per_sample(n, ctx.const(n, n.input[1]), y)}
    if len(n.input) > 2 and n.input[2]:
        params["shift"] = ctx.per_sample(n, ctx.const(n, n.input[2]), y)
    ctx.only_first_output(n)
    ctx.set(n, ctx.emit(n, "affine", [y], params))


import_exp, import_log = _unary("exp"), _unary("log")
import_sin, import_cos, import_sign = _unary("sin"), _unary("cos"), _unary("sign")
