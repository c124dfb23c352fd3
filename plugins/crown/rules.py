"""Backward (lower-bound) rules of the CROWN domain, one per IR op.

A rule has the signature `rule(node, Lam, ctx) -> (ins, bias)`:
  Lam   [B, m, *node.shape]: coefficients of a lower bound  sum(Lam * node_output) + const,
  ins   one coefficient tensor [B, m, *input_shape] (or None) per node input, such that
        sum(Lam * node_output) >= sum_i sum(ins[i] * input_i) + bias  for all inputs within ctx's bounds,
  bias  [B, m] or None.
ctx.bounds[name] = (lo, hi) [B, *shape] holds the (final) bounds of every node a relaxation needs; ctx.cache is
a per-call dict for relaxations. Linear ops are exact (bias = their constant term); nonlinear ops use the
relaxations of plugins.crown.relax. Plugins may contribute rules with register("crown", op, rule); a contributed
nonlinear op must also set `rule.needs_bounds = True` so the domain computes bounds of its inputs.

Ops without a rule here get one from their traits (`derived_rule`): a linear op its exact adjoint (a
vector-Jacobian product of its forward); an elementwise op with a curvature a chord-and-tangent relaxation; any
other op the interval domain can bound the constant relaxation lo_out <= y <= hi_out (sound, loose).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import relax as rx
from .adjoint import conv_back
from nncert.engine.ops.nonlinear import matmul_operands, mul_operands


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
    if Lam.shape[0] > 1 and Lam.stride(0) == 0:  # rows shared by every box (the unit rows a pass starts from)
        first = Lam[:1] @ W                       # one product, the same values as the batched one
        return [first.expand(Lam.shape[0], *first.shape[1:])], bias
    return [Lam @ W], bias


def _conv_adjoint(node, Lam, ctx, weight, dilation, groups):
    """(coefficients [B, m, *in_shape], rounding allowance [B, m] or None) of node's conv (weight) adjoint applied to
    Lam [B, m, Cout, Ho, Wo] (plugins/crown/adjoint.py)."""
    in_shape = ctx.shape(node.inputs[0])
    x, (r0, c0), allowance = conv_back(node, Lam, ctx, weight, dilation, groups)
    H, W = in_shape[1:]
    if x.shape[-2:] != (H, W):  # input rows/columns the conv never reads: zero coefficients
        x = F.pad(x, (c0, W - c0 - x.shape[-1], r0, H - r0 - x.shape[-2]))
    return x, allowance


def minus(bias, allowance):
    """bias - allowance, either possibly None (zero)."""
    if allowance is None:
        return bias
    return -allowance if bias is None else bias - allowance


def avgpool_weight(node, C, dtype, device):
    kh, kw = node.attrs["kernel"]
    return torch.full((C, 1, kh, kw), 1.0 / (kh * kw), dtype=dtype, device=device)


def _conv2d(node, Lam, ctx):
    a = node.attrs
    x, allowance = _conv_adjoint(node, Lam, ctx, ctx.param(node, "W"), a["dilation"], a["groups"])
    bias = None
    if "b" in node.params:
        bias = (Lam.sum((-1, -2)) * ctx.param(node, "b")).sum(-1)
    return [x], minus(bias, allowance)


def _affine(node, Lam, ctx):
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
    C = ctx.shape(node.inputs[0])[0]
    x, allowance = _conv_adjoint(node, Lam, ctx, avgpool_weight(node, C, Lam.dtype, Lam.device), (1, 1), C)
    return [x], minus(None, allowance)


def relaxed(Lam, al, cl, au, cu, nan_safe=False):
    """([coefficients], bias) of Lam through the elementwise relaxation al z + cl <= y <= au z + cu (each
    broadcastable to Lam); nan_safe: a zero coefficient on an infinite intercept contributes nothing."""
    if not nan_safe and all(v.dim() == Lam.dim() and v.shape[1] == 1 for v in (al, cl, au, cu)):
        split = _two_sided(Lam, al, cl, au, cu)
        if split is not None:
            return split
    pos, neg = Lam.clamp(min=0), Lam.clamp(max=0)
    const = _nan_safe(pos, cl) + _nan_safe(neg, cu) if nan_safe else pos * cl + neg * cu
    return [pos * al + neg * au], _sum_rest(const)


def _two_sided(Lam, al, cl, au, cu):
    """relaxed's result when few positions have two relaxation lines: where al == au and cl == cu == 0 on every box
    (a stable ReLU neuron), y = al z exactly and the coefficient is Lam * au with no constant (the same products as
    the sign split, whose other term is an exact zero); only the other positions are split by sign. None when
    more than a quarter of the positions have two lines (then the plain split is cheaper)."""
    B, m = Lam.shape[:2]
    n = Lam[0, 0].numel()
    two = ((al != au) | (cl != 0) | (cu != 0)).reshape(-1, n).any(0)
    idx = two.nonzero().flatten()
    if idx.numel() > n // 4:
        return None
    ins = Lam * au
    if idx.numel() == 0:
        return [ins], None

    coords = (slice(None), slice(None), *torch.unravel_index(idx, Lam.shape[2:]))  # no copy of a strided Lam
    LU = Lam[coords]
    pos, neg = LU.clamp(min=0), LU.clamp(max=0)
    vals = pos * al[coords] + neg * au[coords]
    const = (pos * cl[coords] + neg * cu[coords]).sum(-1)
    flat = ins.view(ins.shape[0], m, n)
    if ins.requires_grad:
        return [flat.index_copy(2, idx, vals).view(ins.shape)], const
    flat.index_copy_(2, idx, vals)
    return [ins], const


def activation_relax(node, ctx):
    """(al, cl, au, cu) [B, *shape] of a ReLU-like/sigmoid/tanh node over its input's bounds (cached per call)."""
    key = ("relax", node.name)
    if key not in ctx.cache:
        l, u = ctx.bounds[node.inputs[0]]
        ctx.cache[key] = rx.relax(node.op, l, u, node.attrs)
    return ctx.cache[key]


def _activation(node, Lam, ctx):
    return relaxed(Lam, *(v[:, None] for v in activation_relax(node, ctx)))


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

def _nan_safe(Lam, c):
    """Lam * c with 0 * inf = 0 (a zero coefficient on an unbounded quantity contributes nothing)."""
    return torch.where(Lam == 0, torch.zeros((), dtype=Lam.dtype, device=Lam.device), Lam * c)


def box_lower(Lam, lo, hi):
    """[B, m]: min of sum(Lam * v) over lo <= v <= hi ([B, *shape]; infinite bounds under zero coefficients are
    ignored)."""
    return _sum_rest(_nan_safe(Lam.clamp(min=0), lo[:, None]) + _nan_safe(Lam.clamp(max=0), hi[:, None]))


def _constant(node, Lam, ctx):
    """lo_out <= y <= hi_out: no coefficient on the inputs, the node's own interval as the constant."""
    return [None] * len(node.inputs), box_lower(Lam, *ctx.bounds[node.name])


_constant.needs_bounds = True


def _vjp(node, Lam, ctx):
    """Exact rule of a linear op: coefficients J^T Lam by autograd through its forward, bias Lam . f(0)."""
    op = ctx.ops[node.op]
    B, m = Lam.shape[:2]
    xs = [torch.zeros((B * m, *ctx.shape(i)), dtype=ctx.dtype, device=ctx.device, requires_grad=True)
          for i in node.inputs]
    with torch.enable_grad():
        y = op.forward(node, xs)
        grads = torch.autograd.grad(y, xs, grad_outputs=Lam.reshape(B * m, *Lam.shape[2:]), allow_unused=True)
    ins = [None if g is None else g.reshape(B, m, *ctx.shape(i)) for g, i in zip(grads, node.inputs)]
    y0 = y[0].detach()
    return ins, _sum_rest(Lam * y0) if bool((y0 != 0).any()) else None


def curved_relax(node, ctx):
    """(al, cl, au, cu) [B, *shape]: chord and tangent (plugins.crown.relax.curved_relax), the node's interval
    where the curvature is unknown or the relaxation is not finite (cached per call)."""
    key = ("relax", node.name)
    if key not in ctx.cache:
        l, u = ctx.bounds[node.inputs[0]]
        ctx.cache[key] = rx.curved_relax(ctx.ops[node.op], node, l, u, *ctx.bounds[node.name])
    return ctx.cache[key]


def _curved(node, Lam, ctx):
    """Elementwise op with a declared curvature (see curved_relax)."""
    return relaxed(Lam, *(v[:, None] for v in curved_relax(node, ctx)), nan_safe=True)


_curved.needs_bounds = True


def _mul(node, Lam, ctx):
    """McCormick: (x - lx)(y - ly) >= 0 gives xy >= ly x + lx y - lx ly; (x - lx)(uy - y) >= 0 gives
    xy <= uy x + lx y - lx uy. Elements with an unbounded input keep the constant relaxation."""
    (lx, ux), (ly, uy) = ctx.bounds[node.inputs[0]], ctx.bounds[node.inputs[1]]
    (lx, ly), (ux, uy) = mul_operands(lx, ly), mul_operands(ux, uy)
    out = Lam.shape[2:]
    lx, ux, ly, uy = (v.expand(v.shape[0], *out)[:, None] for v in (lx, ux, ly, uy))
    ok = torch.isfinite(lx) & torch.isfinite(ux) & torch.isfinite(ly) & torch.isfinite(uy)
    z = torch.zeros((), dtype=Lam.dtype, device=Lam.device)
    lx, ly, uy = (torch.where(ok, v, z) for v in (lx, ly, uy))
    pos, neg = Lam.clamp(min=0), Lam.clamp(max=0)
    lo, hi = ctx.bounds[node.name]
    const = _nan_safe(torch.where(ok, z, pos), lo[:, None]) + _nan_safe(torch.where(ok, z, neg), hi[:, None])
    pos, neg = torch.where(ok, pos, z), torch.where(ok, neg, z)
    cx = pos * ly + neg * uy
    cy = (pos + neg) * lx
    bias = _sum_rest(const - pos * lx * ly - neg * lx * uy)
    return [_to_shape(cx, ctx.shape(node.inputs[0])), _to_shape(cy, ctx.shape(node.inputs[1]))], bias


_mul.needs_bounds = True


def _matmul(node, Lam, ctx):
    """McCormick on every product term of X @ Y (as `_mul`), summed: coefficients Lam+ ly^T + Lam- uy^T on X and
    lx^T Lam on Y. Networks with unbounded operands keep the constant relaxation."""
    (lx, ux), (ly, uy) = ctx.bounds[node.inputs[0]], ctx.bounds[node.inputs[1]]
    if not all(bool(torch.isfinite(v).all()) for v in (lx, ux, ly, uy)):
        return _constant(node, Lam, ctx)
    lx, ly, squeeze = matmul_operands(lx, ly)
    _, uy, _ = matmul_operands(ux, uy)
    if -1 in squeeze:
        Lam = Lam.unsqueeze(-1)
    if -2 in squeeze:
        Lam = Lam.unsqueeze(-2)
    lx, ly, uy = lx[:, None], ly[:, None], uy[:, None]
    pos, neg = Lam.clamp(min=0), Lam.clamp(max=0)
    cx = pos @ ly.transpose(-1, -2) + neg @ uy.transpose(-1, -2)
    cy = lx.transpose(-1, -2) @ Lam
    bias = _sum_rest(pos * (lx @ ly) + neg * (lx @ uy))
    B, m = Lam.shape[:2]
    coeffs = [_to_shape(c, v.shape[1:]).reshape(B, m, *ctx.shape(name))
              for c, v, name in ((cx, lx[:, 0], node.inputs[0]), (cy, ly[:, 0], node.inputs[1]))]
    return coeffs, -bias


_matmul.needs_bounds = True


def derived_rule(op, interval_domain):
    if "linear" in op.traits:
        return _vjp
    if "elementwise" in op.traits and op.curvature is not None and op.derivative is not None:
        return _curved
    if interval_domain is not None and interval_domain.rule(op.name) is not None:
        return _constant
    return None


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
    "mul": _mul,
    "matmul": _matmul,
}
