"""Branch and bound over ReLU phases for one disjunct of a ReLU MLP over a box (beta-CROWN style).

Problem: show max { a . h(x) + c : x in the box } < 0, h the last hidden vector, or find an x where it is >= 0.
A subdomain fixes the phase of some unstable neurons (z_i >= 0 "active" or z_i <= 0 "inactive"). It is bounded by
CROWN with the split neurons relaxed exactly (h = z or h = 0) and their constraints moved into the objective
with multipliers beta >= 0 (Lagrangian relaxation, Wang et al. 2021, "Beta-CROWN"): for every point of the
subdomain, F(x) >= F(x) + sum_i beta_i g_i(x) with g_i <= 0 the split constraints, so any beta >= 0 and any lower
slopes alpha in [0, 1] give a sound bound; both are optimised per subdomain by a few steps of Adam, warm-started
from the parent. Hidden bounds are those of the root (valid on every subdomain), with the split neuron's bound
moved to 0 and interval arithmetic re-run forward from it.

Branching: the unstable neuron whose chord intercept costs the bound most (|coefficient| x intercept, the
"intercept score" of BaBSR, Bunel et al. 2020). The input point where each subdomain's final linear bound is
largest is tried as a counterexample (re-checked by the caller on the real model).

Soundness: the reported bound of each subdomain is the best over all optimisation steps, each a sound bound in
exact arithmetic; it is widened (engine.numerics.widen) before the sign test. `unsat` needs every subdomain
refuted. A subdomain with no unstable neuron left that is not refuted makes the result at best "unknown".
"""
from __future__ import annotations

import time

import torch

from .. import deadline
from ..numerics import widen
from ..progress import report
from .optim import Adam

ITERS, LR = 12, 0.1


class _Domains:
    """A batch of D subdomains: per hidden layer j, bounds l[j], u[j] [D, n_j], split signs s[j] (+1 active,
    -1 inactive, 0 free) and the warm-start slopes alpha[j] and multipliers beta[j]."""

    def __init__(self, l, u, s, alpha, beta):
        self.l, self.u, self.s, self.alpha, self.beta = l, u, s, alpha, beta

    def __len__(self):
        return self.l[0].shape[0]

    def take(self, idx):
        f = lambda ts: [t[idx] for t in ts]  # noqa: E731
        return _Domains(f(self.l), f(self.u), f(self.s), f(self.alpha), f(self.beta))

    @staticmethod
    def cat(parts):
        f = lambda k: [torch.cat(ts) for ts in zip(*(getattr(p, k) for p in parts))]  # noqa: E731
        return _Domains(f("l"), f("u"), f("s"), f("alpha"), f("beta"))


def _lower(dom, alphas, betas, Ws, bs, row, const, mid, rad, scores=False):
    """Lower bound [D] of F = -(row . h + const) over each subdomain (see module docstring); with scores, also the
    per-neuron intercept costs [D, n_j] of each hidden layer and the input point minimising the final bound."""
    D = len(dom)
    Lam = -row.expand(D, -1)
    bias = torch.full((D,), -const, dtype=row.dtype)
    out = []
    for j in range(len(Ws) - 2, -1, -1):
        l, u = dom.l[j], dom.u[j]
        unstable = (l < 0) & (u > 0)
        active = (l >= 0).to(l.dtype)
        au = torch.where(unstable, u / torch.where(unstable, u - l, torch.ones_like(l)), active)
        cu = torch.where(unstable, -l * au, torch.zeros_like(l))
        a = torch.where(unstable, alphas[j].clamp(0, 1), active)
        pos, neg = Lam.clamp(min=0), Lam.clamp(max=0)
        Lz = pos * a + neg * au - dom.s[j] * betas[j].clamp(min=0)
        bias = bias + (neg * cu).sum(1) + Lz @ bs[j]
        if scores:
            out.append(torch.where(unstable, -neg * cu, torch.zeros_like(l)).detach())
        Lam = Lz @ Ws[j]
    lb = Lam @ mid - Lam.abs() @ rad + bias
    if not scores:
        return lb
    x_star = mid - torch.sign(Lam.detach()) * rad          # minimiser of Lam . x over the box
    return lb, out[::-1], x_star


def ascend(bound, params, iters: int = ITERS, lr: float = LR):
    """Maximise a batch of sound lower bounds over their free parameters by Adam.

    bound(final) -> lower bounds [D] (final=False, differentiable in params) or (lower bounds, extra) (final=True,
    the last evaluation, without gradients). params: tensors whose first dimension is the subdomain [D, ...].
    Each subdomain's parameters are left at the step where its bound was best (the warm start its children
    inherit: Adam may overshoot, and a child started from a worse point stays worse). Returns (the best bound of
    each subdomain over all evaluations, extra at the best parameters). Checks the deadline of engine.deadline
    before each step."""
    opt = Adam(params, lr)
    best, kept = None, [p.detach().clone() for p in params]
    with torch.enable_grad():
        for _ in range(iters):
            deadline.check()
            lb = bound(False)
            better = torch.ones_like(lb, dtype=torch.bool) if best is None else lb.detach() > best
            best = lb.detach() if best is None else torch.maximum(best, lb.detach())
            for p, k in zip(params, kept):
                k[better] = p.detach()[better]
            grads = torch.autograd.grad(lb.sum(), params, allow_unused=True)
            opt.step([torch.zeros_like(q) if g is None else -g for q, g in zip(params, grads)])
    with torch.no_grad():
        for p, k in zip(params, kept):
            p.copy_(k)
        lb, *extra = bound(True)
    return (lb if best is None else torch.maximum(best, lb)), extra


def open_subdomains(best, x_star, is_cex):
    """(open [D] bool, counterexample or None): subdomains whose widened bound (of -(objective)) does not refute
    them, and the caller's re-check of their bound-minimising points x_star [D, n]."""
    open_ = widen(-best, -best)[1] >= 0       # sound upper bound of the objective per subdomain
    return open_, (is_cex(x_star[open_]) if bool(open_.any()) else None)


def _interval_forward(dom, Ws, bs, first):
    """Re-tighten hidden bounds of layers > first by interval arithmetic from layer `first` (intersected)."""
    for j in range(first + 1, len(Ws) - 1):
        hl, hu = dom.l[j - 1].clamp(min=0), dom.u[j - 1].clamp(min=0)
        W, b = Ws[j], bs[j]
        mid, rad = (hu + hl) / 2, (hu - hl) / 2
        c = mid @ W.T + b
        r = rad @ W.abs().T
        dom.l[j] = torch.maximum(dom.l[j], c - r)
        dom.u[j] = torch.minimum(dom.u[j], c + r)


def relu_split_bab(Ws, bs, lo, hi, pre, row, const, deadline: float, is_cex, batch: int = 256,
                   max_domains: int = 200_000):
    """Decide max over the box of row . h(x) + const < 0 (see module docstring).

    Ws, bs: torch float64 layers (ReLU between consecutive ones); lo, hi [n0]; pre: sound bounds [(l_j, u_j)] of
    every hidden pre-activation over the box; row [n_{L-1}] on the last hidden vector, const a float.
    is_cex(x [K, n0]) -> counterexample or None (the caller's re-check on the real model).
    Returns ("unsat" | "sat" | "timeout" | "unknown", counterexample or None, stats dict)."""
    dt = torch.float64
    mid, rad = (hi + lo) / 2, (hi - lo) / 2
    nh = len(Ws) - 1
    root = _Domains([pre[j][0][None].clone() for j in range(nh)], [pre[j][1][None].clone() for j in range(nh)],
                    [torch.zeros(1, len(pre[j][0]), dtype=dt) for j in range(nh)],
                    [(pre[j][1] >= -pre[j][0]).to(dt)[None] for j in range(nh)],
                    [torch.zeros(1, len(pre[j][0]), dtype=dt) for j in range(nh)])
    stats = {"domains": 0, "max_depth": 0, "closed": 0.0}   # closed: share of the search tree refuted (sum 2^-depth)
    stack, depth = [root], [torch.zeros(1, dtype=torch.long)]
    while stack:
        if time.perf_counter() > deadline:
            return "timeout", None, stats
        dom = _Domains.cat(stack)
        dep = torch.cat(depth)
        if len(dom) > batch:
            stack, depth = [dom.take(slice(batch, None))], [dep[batch:]]
            dom, dep = dom.take(slice(0, batch)), dep[:batch]
        else:
            stack, depth = [], []
        stats["domains"] += len(dom)
        alphas = [a.clone().requires_grad_(True) for a in dom.alpha]
        betas = [b.clone().requires_grad_(True) for b in dom.beta]
        best, (scores, x_star) = ascend(
            lambda final: _lower(dom, alphas, betas, Ws, bs, row, const, mid, rad, scores=final), alphas + betas)
        open_, cex = open_subdomains(best, x_star, is_cex)
        if cex is not None:
            return "sat", cex, stats
        stats["closed"] += float((0.5 ** dep[~open_].to(torch.float64)).sum())
        report("relu-bab", every=1.0, domains=stats["domains"], open=int(open_.sum()) + sum(len(d) for d in stack),
               closed=f"{100 * stats['closed']:.2f}%", worst_bound=-float(best.min()))
        if not bool(open_.any()):
            continue
        dom, dep, scores = dom.take(open_), dep[open_], [s[open_] for s in scores]
        dom.alpha = [a.detach()[open_] for a in alphas]
        dom.beta = [b.detach()[open_] for b in betas]
        flat = torch.cat(scores, 1)                        # [D, sum n_j]
        unstable = torch.cat([(l < 0) & (u > 0) for l, u in zip(dom.l, dom.u)], 1)
        if not bool(unstable.any(1).all()):                # an open subdomain with every phase fixed
            return "unknown", None, {**stats, "reason": "open subdomain with no unstable neuron"}
        # intercept score; neurons whose score is 0 still rank by width so that every unstable one can be chosen
        widths = torch.cat([u - l for l, u in zip(dom.l, dom.u)], 1)
        key = torch.where(unstable, flat + 1e-12 * widths, torch.full_like(flat, -1.0))
        pick = key.argmax(1)
        sizes = [l.shape[1] for l in dom.l]
        layer = torch.bucketize(pick, torch.tensor(sizes).cumsum(0), right=True)
        offs = torch.tensor([0] + sizes).cumsum(0)
        neuron = pick - offs[layer]
        kids = []
        for sign in (1.0, -1.0):
            k = _Domains([t.clone() for t in dom.l], [t.clone() for t in dom.u], [t.clone() for t in dom.s],
                         dom.alpha, dom.beta)
            for j in range(nh):
                rows = (layer == j).nonzero().flatten()
                if not len(rows):
                    continue
                cols = neuron[rows]
                k.s[j][rows, cols] = sign
                if sign > 0:
                    k.l[j][rows, cols] = 0.0
                else:
                    k.u[j][rows, cols] = 0.0
            _interval_forward(k, Ws, bs, int(layer.min()))
            kids.append(k)
        stack.insert(0, _Domains.cat(kids))
        depth.insert(0, torch.cat([dep + 1, dep + 1]))
        stats["max_depth"] = max(stats["max_depth"], int(dep.max()) + 1)
        if sum(len(d) for d in stack) > max_domains:
            return "unknown", None, {**stats, "reason": "too many subdomains"}
    return "unsat", None, stats
