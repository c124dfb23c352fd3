"""Backward (lower-bound) rules of the CROWN domain, one per IR op.

A rule has the signature `rule(node, Lam, ctx) -> (ins, bias)`:
  Lam   [B, m, *node.shape]: coefficients of a lower bound  sum(Lam * node_output) + const,
  ins   one coefficient tensor [B, m, *input_shape] (or None) per node input, such that
        sum(Lam * node_output) >= sum_i sum(ins[i] * input_i) + bias  for all inputs within ctx's bounds,
  bias  [B, m] or None.
ctx.bounds[name] = (lo, hi) [B, *shape] holds the (final) bounds of every node a relaxation needs; ctx.cache is
a per-call dict for relaxations. Linear ops are exact (bias = their constant term); nonlinear ops use the
relaxations of plugins.crown.relax. Plugins may contribute rules with register("crown", op, rule); a contributed
nonlinear op must also set `rule.needs_bounds = True` so the domain computes bounds of its input.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import relax as rx


def _sum_rest(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], t.shape[1], -1).sum(-1)


def _to_shape(Lam: torch.Tensor, shape) -> torch.Tensor:
    """Sum Lam [B, m, *out] over axes the op broadcast, down to [B, m, *shape]."""
    B, m = Lam.shape[:2]
    out = tuple(Lam.shape[2:])
    if out == tuple(shape):
        return Lam
    pad = (1,) * (len(out) - len(shape)) + tuple(shape)
    return Lam.sum_to_size(B, m, *pad).reshape(B, m, *shape)


def _linear(node, Lam, ctx):
    W = ctx.param(node, "W")
    b = node.params.get("b")
    bias = None if b is None else _sum_rest(Lam @ ctx.param(node, "b"))
    return [Lam @ W], bias


def _flat(Lam):
    B, m = Lam.shape[:2]
    return Lam.reshape(B * m, *Lam.shape[2:])


def _conv_adjoint(Lam, weight, in_shape, stride, pads, dilation, groups):
    """Adjoint of conv2d(pad(x)) applied to Lam [B, m, Cout, Ho, Wo] -> [B, m, *in_shape]."""
    B, m = Lam.shape[:2]
    t, l, bo, r = pads
    C, H, W = in_shape
    Hp, Wp = H + t + bo, W + l + r
    kh, kw = weight.shape[-2:]
    Ho, Wo = Lam.shape[-2:]
    oph = Hp - ((Ho - 1) * stride[0] + dilation[0] * (kh - 1) + 1)
    opw = Wp - ((Wo - 1) * stride[1] + dilation[1] * (kw - 1) + 1)
    x = F.conv_transpose2d(_flat(Lam), weight, None, stride=stride, output_padding=(oph, opw), groups=groups,
                           dilation=dilation)
    x = x[:, :, t:t + H, l:l + W]
    return x.reshape(B, m, C, H, W)


def _conv2d(node, Lam, ctx):
    a = node.attrs
    in_shape = ctx.shape(node.inputs[0])
    x = _conv_adjoint(Lam, ctx.param(node, "W"), in_shape, a["stride"], a["pads"], a["dilation"], a["groups"])
    bias = None
    if "b" in node.params:
        bias = (Lam.sum((-1, -2)) * ctx.param(node, "b")).sum(-1)
    return [x], bias


def _affine(node, Lam, ctx):
    shape = node.shape
    bias = None
    if "shift" in node.params:
        bias = _sum_rest(Lam * ctx.param(node, "shift"))
    x = Lam * ctx.param(node, "scale") if "scale" in node.params else Lam
    return [_to_shape(x, ctx.shape(node.inputs[0]))], bias


def _add(node, Lam, ctx):
    return [_to_shape(Lam, ctx.shape(node.inputs[0])), _to_shape(Lam, ctx.shape(node.inputs[1]))], None


def _sub(node, Lam, ctx):
    return [_to_shape(Lam, ctx.shape(node.inputs[0])), _to_shape(-Lam, ctx.shape(node.inputs[1]))], None


def _reshape(node, Lam, ctx):
    B, m = Lam.shape[:2]
    return [Lam.reshape(B, m, *ctx.shape(node.inputs[0]))], None


def _avgpool(node, Lam, ctx):
    a = node.attrs
    C = ctx.shape(node.inputs[0])[0]
    kh, kw = a["kernel"]
    w = torch.full((C, 1, kh, kw), 1.0 / (kh * kw), dtype=Lam.dtype, device=Lam.device)
    return [_conv_adjoint(Lam, w, ctx.shape(node.inputs[0]), a["stride"], a["pads"], (1, 1), C)], None


def _activation(node, Lam, ctx):
    key = ("relax", node.name)
    if key not in ctx.cache:
        l, u = ctx.bounds[node.inputs[0]]
        ctx.cache[key] = rx.relax(node.op, l, u, node.attrs)
    al, cl, au, cu = ctx.cache[key]
    pos, neg = Lam.clamp(min=0), Lam.clamp(max=0)
    x = pos * al[:, None] + neg * au[:, None]
    bias = _sum_rest(pos * cl[:, None] + neg * cu[:, None])
    return [x], bias


_activation.needs_bounds = True


def _maxpool_relax(node, ctx):
    """Per window: lower y >= x_j* (j* = argmax of the lower bounds); upper y <= x_j* when x_j*'s lower bound
    dominates every other cell's upper bound (then y = x_j* exactly), else y <= max upper bound."""
    l, u = ctx.bounds[node.inputs[0]]
    a = node.attrs
    B, C, H, W = l.shape
    t, le, bo, r = a["pads"]
    kh, kw = a["kernel"]

    def unf(v, fill):
        v = F.pad(v, (le, r, t, bo), value=fill) if (t or le or bo or r) else v
        return F.unfold(v.reshape(-1, 1, *v.shape[-2:]), (kh, kw), stride=a["stride"])  # [N, K, L]

    lw = unf(l, float("-inf")).reshape(B, C, kh * kw, -1)
    uw = unf(u, float("-inf")).reshape(B, C, kh * kw, -1)
    idx = torch.arange(H * W, dtype=l.dtype, device=l.device).reshape(1, 1, H, W)
    iw = unf(idx, -1.0).reshape(1, 1, kh * kw, -1)
    lmax, jstar = lw.max(2)                                          # [B, C, L]
    others = uw.scatter(2, jstar[:, :, None], float("-inf"))
    dom = (lmax >= others.amax(2)).to(l.dtype)
    umax = uw.amax(2)
    src = iw.expand(B, C, -1, -1).gather(2, jstar[:, :, None])[:, :, 0].long()   # input cell of j*, [B, C, L]
    return src, dom, umax


def _maxpool(node, Lam, ctx):
    key = ("relax", node.name)
    if key not in ctx.cache:
        ctx.cache[key] = _maxpool_relax(node, ctx)
    src, dom, umax = ctx.cache[key]
    B, m = Lam.shape[:2]
    C, H, W = ctx.shape(node.inputs[0])
    Lf = Lam.reshape(B, m, C, -1)
    pos, neg = Lf.clamp(min=0), Lf.clamp(max=0)
    coef = pos + neg * dom[:, None]
    bias = (neg * ((1 - dom) * umax)[:, None]).reshape(B, m, -1).sum(-1)
    x = torch.zeros(B, m, C, H * W, dtype=Lam.dtype, device=Lam.device)
    x.scatter_add_(3, src[:, None].expand(B, m, C, -1), coef)
    return [x.reshape(B, m, C, H, W)], bias


_maxpool.needs_bounds = True

RULES = {
    "linear": _linear,
    "conv2d": _conv2d,
    "affine": _affine,
    "add": _add,
    "sub": _sub,
    "reshape": _reshape,
    "avgpool2d": _avgpool,
    "maxpool2d": _maxpool,
    "relu": _activation,
    "leaky_relu": _activation,
    "sigmoid": _activation,
    "tanh": _activation,
}
