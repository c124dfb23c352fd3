"""IBP rules: rule(node, boxes) -> (lo, hi), boxes one (lo, hi) pair [B, *shape] per node input.

Every rule is sound in exact arithmetic: for all inputs inside their boxes, the op's output (engine/ops) lies in
[lo, hi]. A NaN bound (an op evaluated outside its domain, such as log of a negative bound) becomes -inf / +inf.
Ops with no rule here get one from their traits (`derived_rule`).
"""
from __future__ import annotations

import math

import torch

from nncert.engine.kernels import interval
from nncert.engine.ops import core as ops
from nncert.engine.ops.nonlinear import matmul_operands, mul_operands

INF = float("inf")


def _unnan(lo, hi):
    return torch.nan_to_num(lo, nan=-INF, posinf=INF, neginf=-INF), torch.nan_to_num(hi, nan=INF, posinf=INF,
                                                                                      neginf=-INF)


def monotone_rule(fn):
    """Rule for an op non-decreasing in every input element: the bounds' images are the bounds."""
    def rule(node, boxes):
        return _unnan(fn(node, [b[0] for b in boxes]), fn(node, [b[1] for b in boxes]))
    return rule


def inf_safe(rule, abs_fn):
    """Wrap the rule of a one-input affine op f(x) = A x + c (x -> |A| x given) for unbounded inputs: infinite
    bounds are replaced by 0 (0 * inf would give NaN), and every output that depends on one (|A| applied to the
    mask of unbounded inputs is > 0) becomes (-inf, inf)."""
    def safe(node, boxes):
        lo, hi = boxes[0]
        if bool(torch.isfinite((hi - lo).sum())):  # one reduction: all bounds finite (an overflow only costs time)
            return rule(node, boxes)
        bad = ~(torch.isfinite(lo) & torch.isfinite(hi))
        if not bool(bad.any()):
            return rule(node, boxes)
        z = torch.zeros((), dtype=lo.dtype, device=lo.device)
        out_lo, out_hi = rule(node, [(torch.where(bad, z, lo), torch.where(bad, z, hi))])
        dep = abs_fn(node, [bad.to(lo.dtype)]) > 0
        return out_lo.masked_fill(dep, -INF), out_hi.masked_fill(dep, INF)
    return safe


def centre_radius_rule(fn, abs_fn):
    """Rule for a one-input affine op f(x) = A x + c given x -> |A| x: f(mid) -/+ |A| rad."""
    def rule(node, boxes):
        lo, hi = boxes[0]
        mid, rad = (lo + hi) / 2, (hi - lo) / 2
        y, r = fn(node, [mid]), abs_fn(node, [rad])
        return y - r, y + r
    return inf_safe(rule, abs_fn)


def derived_rule(op):
    if "monotone" in op.traits:
        return monotone_rule(op.forward)
    if "linear" in op.traits and op.abs_forward is not None:
        return centre_radius_rule(op.forward, op.abs_forward)
    return None


def _linear(node, boxes):
    lo, hi = boxes[0]
    W, b = node.params["W"].to(lo.dtype), node.params.get("b")
    b = None if b is None else b.to(lo.dtype)
    shape = lo.shape
    lo2, hi2 = interval.interval_linear(lo.reshape(-1, shape[-1]), hi.reshape(-1, shape[-1]), W, b)
    return lo2.reshape(*shape[:-1], -1), hi2.reshape(*shape[:-1], -1)


def _conv2d(node, boxes):
    lo, hi = boxes[0]
    a, b = node.attrs, node.params.get("b")
    return interval.interval_conv2d(lo, hi, node.params["W"].to(lo.dtype), None if b is None else b.to(lo.dtype),
                                    a["stride"], a["pads"], a["dilation"], a["groups"])


def _affine(node, boxes):
    lo, hi = boxes[0]
    if "scale" in node.params:
        s = node.params["scale"].to(lo.dtype)
        lo, hi = torch.minimum(lo * s, hi * s), torch.maximum(lo * s, hi * s)
    if "shift" in node.params:
        t = node.params["shift"].to(lo.dtype)
        lo, hi = lo + t, hi + t
    return lo, hi


def _sub(node, boxes):
    (l1, h1), (l2, h2) = boxes
    return _unnan(l1 - h2, h1 - l2)


def _products(l1, h1, l2, h2):
    """Elementwise bounds of a * b for a in [l1, h1], b in [l2, h2] (0 * inf counts as 0)."""
    ps = torch.stack(torch.broadcast_tensors(l1 * l2, l1 * h2, h1 * l2, h1 * h2))
    ps = torch.nan_to_num(ps, nan=0.0, posinf=INF, neginf=-INF)
    return ps.amin(0), ps.amax(0)


def _mul(node, boxes):
    (l1, h1), (l2, h2) = boxes
    l1, l2 = mul_operands(l1, l2)
    h1, h2 = mul_operands(h1, h2)
    return _products(l1, h1, l2, h2)


def _matmul(node, boxes):
    """Centre-radius interval product: |XY - Xc Yc| <= |Xc| Yr + Xr |Yc| + Xr Yr."""
    (l1, h1), (l2, h2) = boxes
    c1, c2, squeeze = matmul_operands((l1 + h1) / 2, (l2 + h2) / 2)
    r1, r2, _ = matmul_operands((h1 - l1) / 2, (h2 - l2) / 2)
    mid = c1 @ c2
    rad = c1.abs() @ r2 + r1 @ c2.abs() + r1 @ r2
    lo, hi = _unnan(mid - rad, mid + rad)
    return (lo.squeeze(squeeze), hi.squeeze(squeeze)) if squeeze else (lo, hi)


def _pow(node, boxes):
    """x**p: monotone on each side of 0, so the extremes are at the ends and at 0 (0 ** p for p > 0, a pole for
    p < 0); fractional powers are bounded over x >= 0, where they are defined."""
    lo, hi = boxes[0]
    p = node.attrs["exponent"]
    if p == 0:
        return torch.ones_like(lo), torch.ones_like(hi)
    integer = float(p).is_integer()
    if not integer:
        lo, hi = lo.clamp(min=0), hi.clamp(min=0)
    a, b = torch.pow(lo, p), torch.pow(hi, p)
    out_lo, out_hi = torch.minimum(a, b), torch.maximum(a, b)
    straddle = (lo < 0) & (hi > 0)
    if p > 0:
        out_lo = torch.where(straddle, torch.minimum(out_lo, torch.zeros_like(out_lo)), out_lo)
    else:
        pole = (lo <= 0) & (hi >= 0)
        even = integer and int(p) % 2 == 0
        out_lo = torch.where(pole, torch.zeros_like(out_lo) if even else torch.full_like(out_lo, -INF), out_lo)
        out_hi = torch.where(pole, torch.full_like(out_hi, INF), out_hi)
    return _unnan(out_lo, out_hi)


def _periodic(fn, peak):
    """Bounds of sin / cos: the ends, plus +1 / -1 where a maximum (peak + 2k pi) / minimum lies inside."""
    def rule(node, boxes):
        lo, hi = boxes[0]
        a, b = fn(lo), fn(hi)
        out_lo, out_hi = torch.minimum(a, b), torch.maximum(a, b)
        two_pi = 2 * math.pi

        tol = 1e-9 * (1 + lo.abs() + hi.abs())

        def hits(t):  # some t + 2k pi in [lo, hi] (the test errs towards yes: rounding only loosens)
            k = torch.ceil((lo - tol - t) / two_pi)
            return (t + k * two_pi <= hi + tol) | ~torch.isfinite(hi - lo) | (hi - lo >= two_pi)
        out_hi = torch.where(hits(peak), torch.ones_like(out_hi), out_hi)
        out_lo = torch.where(hits(peak + math.pi), -torch.ones_like(out_lo), out_lo)
        return out_lo, out_hi
    return rule


def _softmax(node, boxes):
    """softmax_i = 1 / (1 + sum_{j != i} exp(x_j - x_i)): lowest at x_i = l_i, x_j = u_j; highest the other way."""
    lo, hi = boxes[0]
    ax = node.attrs["axis"] + 1
    lo, hi = lo.movedim(ax, -1), hi.movedim(ax, -1)
    n = lo.shape[-1]
    off = ~torch.eye(n, dtype=torch.bool, device=lo.device)
    zero = torch.zeros((), dtype=lo.dtype, device=lo.device)

    def bound(own, others):  # 1 / (1 + sum_{j != i} exp(others_j - own_i)), as [..., i]
        d = torch.exp(others[..., None, :] - own[..., :, None])
        return 1 / (1 + torch.where(off, d, zero).sum(-1))
    return bound(lo, hi).movedim(-1, ax), bound(hi, lo).movedim(-1, ax)


RULES = {
    "linear": inf_safe(_linear, ops.linear_abs),
    "conv2d": inf_safe(_conv2d, ops.conv2d_abs),
    "affine": inf_safe(_affine, ops.affine_abs),
    "sub": _sub,
    "mul": _mul,
    "matmul": _matmul,
    "pow": _pow,
    "sin": _periodic(torch.sin, math.pi / 2),
    "cos": _periodic(torch.cos, 0.0),
    "softmax": _softmax,
}
