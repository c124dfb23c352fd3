"""Linear relaxations of the IR's nonlinear elementwise ops over a pre-activation interval [l, u].

Each function returns (al, cl, au, cu), tensors shaped like l, such that for every z in [l, u]:
    al * z + cl <= f(z) <= au * z + cu
in exact arithmetic. ReLU / LeakyReLU use the chord above and the adaptive lower slope of auto_LiRPA
(slope 1 if u >= -l, else the negative-side slope; Zhang et al. 2018). Sigmoid / tanh pick slopes (chord or
tangent at the midpoint, by the curvature on [l, u]) and then compute the *exact* best intercepts for those slopes:
the extremes of g(z) = f(z) - a z over [l, u] lie at l, u or where f'(z) = a, which is solved in closed form
(f' is even and decreasing in |z|). So the bounds hold for any l <= u, including l = u and very wide ranges; a
margin of a few ulps covers the rounding of that evaluation.
"""
from __future__ import annotations

import torch


def leaky_relu_relax(l: torch.Tensor, u: torch.Tensor, alpha: float = 0.0):
    """y = max(z, alpha z), 0 <= alpha <= 1 (alpha = 0 is ReLU); other slopes make y concave: refused."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"leaky_relu relaxation needs 0 <= alpha <= 1, got {alpha}")
    dt = l.dtype
    unstable = (l < 0) & (u > 0)
    active = (l >= 0).to(dt)
    neg_slope = alpha + (1 - alpha) * active                     # 1 if active, alpha if inactive
    denom = torch.where(unstable, u - l, torch.ones_like(l))
    au = torch.where(unstable, (u - alpha * l) / denom, neg_slope)
    cu = torch.where(unstable, (alpha - au) * l, torch.zeros_like(l))   # chord through (l, alpha l) and (u, u)
    al = torch.where(unstable, torch.where(u >= -l, torch.ones_like(l), torch.full_like(l, alpha)), neg_slope)
    return al, torch.zeros_like(l), au, cu


def _sigmoid_crit(a):
    """z >= 0 with sigmoid'(z) = a (a clipped to [0, 1/4]); +inf for a = 0."""
    a = a.clamp(0, 0.25)
    sq = torch.sqrt((1 - 4 * a).clamp(min=0))
    # s = (1 + sq) / 2 and 1 - s = 2a / (1 + sq), written to avoid cancellation
    return torch.log((1 + sq) / 2) - torch.log(2 * a / (1 + sq))


def _tanh_crit(a):
    """z >= 0 with tanh'(z) = 1 - tanh(z)^2 = a (a clipped to [0, 1]); +inf for a = 0."""
    a = a.clamp(0, 1)
    s = torch.sqrt((1 - a).clamp(min=0))
    # atanh(s) = log((1 + s) / (1 - s)) / 2 and (1 - s) = a / (1 + s): no cancellation when a is tiny
    return torch.log((1 + s) / torch.sqrt(a))


def _s_shaped(l, u, f, df, crit):
    """Relaxation of an increasing S-shaped f (convex for z < 0, concave for z > 0, f' even)."""
    eps = torch.finfo(l.dtype).eps
    fl, fu = f(l), f(u)
    w = u - l
    mid = (l + u) / 2
    tiny = w <= 4 * eps * (1 + torch.maximum(l.abs(), u.abs()))
    chord = torch.where(tiny, df(mid), (fu - fl) / torch.where(tiny, torch.ones_like(w), w))
    tangent = df(mid)
    convex, concave = u <= 0, l >= 0
    a_up = torch.where(convex, chord, torch.where(concave, tangent, chord))
    a_lo = torch.where(convex, tangent, torch.where(concave, chord, chord))
    out = []
    for a in (a_lo, a_up):
        zs = crit(a)
        clip = lambda z: torch.minimum(torch.maximum(z, l), u)  # noqa: E731
        cands = [l, u, clip(zs), clip(-zs), clip(torch.zeros_like(l))]
        g = torch.stack([f(z) - a * z for z in cands])
        out.append((a, g.amin(0), g.amax(0)))
    (al, gl_min, _), (au, _, gu_max) = out
    margin = 8 * eps * (1 + torch.maximum(al.abs(), au.abs()) * torch.maximum(l.abs(), u.abs()))
    return al, gl_min - margin, au, gu_max + margin


def sigmoid_relax(l, u):
    return _s_shaped(l, u, torch.sigmoid, lambda z: torch.sigmoid(z) * torch.sigmoid(-z), _sigmoid_crit)


def tanh_relax(l, u):
    return _s_shaped(l, u, torch.tanh, lambda z: 1 - torch.tanh(z) ** 2, _tanh_crit)


def curved_relax(op, node, l, u, out_lo, out_hi):
    """(al, cl, au, cu) for an elementwise op with a declared curvature (engine/ops: `derivative`, `curvature`).

    Where f is convex on [l, u]: the tangent at the midpoint below (exact: f(z) >= f(m) + f'(m)(z - m)) and, above,
    the chord slope a with intercept max(f(l) - a l, f(u) - a u) (exact for any slope, since f - a z is convex);
    mirrored where concave. Elsewhere, or where any value is not finite, the constant bounds out_lo / out_hi
    (the op's interval). A margin of a few ulps of the magnitudes involved covers the rounding."""
    eps = torch.finfo(l.dtype).eps
    curv = op.curvature(node, l, u) if callable(op.curvature) else torch.full_like(l, op.curvature, dtype=torch.int8)
    f = lambda z: op.forward(node, [z])  # noqa: E731
    m = (l + u) / 2
    fl, fu, fm, dm = f(l), f(u), f(m), op.derivative(node, m)
    w = u - l
    tiny = w <= 4 * eps * (1 + torch.maximum(l.abs(), u.abs()))
    chord = torch.where(tiny, dm, (fu - fl) / torch.where(tiny, torch.ones_like(w), w))
    end_max = torch.maximum(fl - chord * l, fu - chord * u)
    end_min = torch.minimum(fl - chord * l, fu - chord * u)
    tangent = fm - dm * m
    convex = curv > 0
    al = torch.where(convex, dm, chord)
    cl = torch.where(convex, tangent, end_min)
    au = torch.where(convex, chord, dm)
    cu = torch.where(convex, end_max, tangent)
    scale = fl.abs() + fu.abs() + fm.abs() + (dm.abs() + chord.abs()) * (l.abs() + u.abs())
    margin = 16 * eps * scale
    cl, cu = cl - margin, cu + margin
    ok = (curv != 0) & torch.isfinite(al) & torch.isfinite(cl) & torch.isfinite(au) & torch.isfinite(cu)
    zero = torch.zeros_like(l)
    return (torch.where(ok, al, zero), torch.where(ok, cl, out_lo), torch.where(ok, au, zero),
            torch.where(ok, cu, out_hi))


def relax(op: str, l: torch.Tensor, u: torch.Tensor, attrs: dict):
    if op == "relu":
        return leaky_relu_relax(l, u, 0.0)
    if op == "leaky_relu":
        return leaky_relu_relax(l, u, float(attrs["alpha"]))
    if op == "sigmoid":
        return sigmoid_relax(l, u)
    if op == "tanh":
        return tanh_relax(l, u)
    raise KeyError(op)
