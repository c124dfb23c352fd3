"""ReLU-split branch and bound on any graph (beta-CROWN style, Wang et al. 2021) for one output row over a box.

Problem: show max { a . f(x) + c : x in the box } < 0, or find an x where it is >= 0.

* Root: CROWN's hidden bounds of every value (plugins.crown.propagate.hidden_bounds); they hold on every
  subdomain.
* A subdomain fixes the phase of some unstable ReLU inputs (z >= 0 "active", z <= 0 "inactive"). Its bounds are
  the root's, with each split neuron's interval cut at 0 and interval arithmetic re-run forward from there
  (intersected with the root's).
* Its bound is one backward pass from the output, batched over subdomains. Two sets of parameters are free:
  each unstable ReLU's lower slope alpha in [0, 1], and each split's multiplier beta >= 0 (on the subdomain
  s z >= 0, so F >= F - beta s z). Any values give a sound bound; a few Adam steps per subdomain optimise them,
  warm-started from the parent.
* Branching: the unstable neuron whose chord intercept costs the bound most, -min(Lam, 0) x intercept (the
  "intercept score" of BaBSR, Bunel et al. 2020).
* Counterexample candidates: each subdomain's box point minimising its final linear bound; the caller re-checks
  them on the real model.

Soundness: a subdomain's reported bound is the best over the steps, each sound in exact arithmetic. It is
widened (engine.numerics.widen) before the sign test, and `unsat` needs every subdomain refuted. Splits are made
on ReLU nodes only; other nonlinear ops keep their fixed relaxations.
"""
from __future__ import annotations

import math
import time

import torch

from nncert.engine import memory
from nncert.engine.progress import report
from nncert.engine.propagate import backward, forward
from nncert.engine.search.relu_bab import ascend, open_subdomains

from . import relax as rx
from .propagate import Ctx
from .rules import _sum_rest
from .window import dense


def _relu_inputs(network):
    """{ReLU node name: its input's name}."""
    return {n.name: n.inputs[0] for n in network.nodes if n.op == "relu"}


def _sub_bounds(network, root, box, splits, interval_rule_for):
    """Bounds {name: (lo, hi) [D, *shape]} of D subdomains: the root's, split inputs cut at 0, intervals re-run."""
    D = next(iter(splits.values())).shape[0] if splits else 1

    def cut(name, lo, hi):
        s = splits.get(name)
        if s is not None:
            lo = torch.where(s > 0, lo.clamp(min=0), lo)
            hi = torch.where(s < 0, hi.clamp(max=0), hi)
        return lo, hi

    def on_node(node, b):
        rl, ru = root[node.name]
        return cut(node.name, torch.maximum(b[0], rl), torch.minimum(b[1], ru))

    def rule(node, boxes):
        r = interval_rule_for(node)
        if r is None:
            return tuple(v.expand(D, *v.shape[1:]) for v in root[node.name])
        return r(node, boxes)

    lo, hi = box   # a ReLU may read the network input itself: its splits cut the input box
    box = cut(network.input_name, lo.expand(D, *lo.shape[1:]), hi.expand(D, *hi.shape[1:]))
    return forward(network, box, lambda node: rule, on_node=on_node)


class _Pass:
    """One backward pass from the row for D subdomains with ReLU slopes alpha and split multipliers beta."""

    def __init__(self, network, bounds, splits, alpha, beta, ops, rule_for, dtype):
        self.network, self.splits, self.alpha, self.beta = network, splits, alpha, beta
        D = next(iter(bounds.values()))[0].shape[0]
        self.ctx = Ctx(network, D, dtype, bounds[network.input_name][0].device, ops)
        self.ctx.bounds = bounds
        self.base = rule_for
        self.scores: dict[str, torch.Tensor] = {}
        self.fixed = {}

    def rule_for(self, node):
        return self._relu if node.op == "relu" else self.base(node)

    def _relu(self, node, Lam, ctx):
        z = node.inputs[0]
        if z not in self.fixed:
            l, u = ctx.bounds[z]
            al, _, au, cu = rx.leaky_relu_relax(l, u)
            self.fixed[z] = (al, au, cu, (l < 0) & (u > 0))
        al, au, cu, unstable = self.fixed[z]
        Lam = dense(Lam)
        a = torch.where(unstable, self.alpha[z].clamp(0, 1), al)
        pos, neg = Lam.clamp(min=0), Lam.clamp(max=0)
        x = pos * a[:, None] + neg * au[:, None]
        if z in self.splits:
            x = x - (self.splits[z] * self.beta[z].clamp(min=0))[:, None]
        self.scores[z] = torch.where(unstable[:, None], -neg * cu[:, None], torch.zeros_like(neg))[:, 0].detach()
        return [x], _sum_rest(neg * cu[:, None])

    def lower(self, row, const, point: bool = True):
        """Lower bound [D] of -(row . f(x) + const) over each subdomain's input box, and with `point` the input
        point [D, n] minimising its final linear bound. row [n_out] or one per subdomain [D, n_out]; const a
        float or [D]."""
        D = self.ctx.batch
        lo, hi = (v.reshape(D, -1) for v in self.ctx.bounds[self.network.input_name])
        A = -row.reshape(-1, 1, *self.network.output_shape).expand(D, 1, *self.network.output_shape)
        L, bias = backward(self.network, self.network.output, A, self.rule_for, self.ctx)
        if L is None:
            lb, x = bias[:, 0] - const, lo.expand(D, -1)
        else:
            L = dense(L).reshape(D, -1)
            x = torch.where(L > 0, lo, hi)
            lb = (L * x).sum(1) + bias[:, 0] - const
        return (lb, x.detach()) if point else lb


def relu_split_bab(network, root, box, row, const, deadline: float, is_cex, ops, rule_for, interval_rule_for,
                   batch: int = 64, max_domains: int = 20_000):
    """Decide max over the box of row . f(x) + const < 0 (see module docstring).

    root: hidden bounds {name: (lo, hi) [1, *shape]} valid over the box (CROWN's); box: (lo, hi) [1, *input_shape];
    row [n_out] float64, const a float; rule_for/interval_rule_for: the CROWN and interval rule tables;
    is_cex(x [K, n]) -> counterexample or None (the caller's re-check on the real model).
    Returns ("unsat" | "sat" | "timeout" | "unknown", counterexample or None, stats)."""
    dt = row.dtype
    order = {network.input_name: -1} | {n.name: k for k, n in enumerate(network.nodes)}
    relus = sorted(set(_relu_inputs(network).values()), key=order.__getitem__)
    stats = {"domains": 0, "max_depth": 0, "closed": 0.0}   # closed: share of the tree refuted (sum 2^-depth)
    if not relus:
        return "unknown", None, {**stats, "reason": "no ReLU to split"}
    shapes = {z: root[z][0].shape[1:] for z in relus}
    # memory (engine/memory.py): a batch holds every value's bounds for each subdomain (two float64 tensors, a
    # few working copies); a waiting subdomain holds its splits (int8), slopes and multipliers (float64)
    values = network.n_inputs + sum(math.prod(n.shape) for n in network.nodes)
    batch = max(1, min(batch, memory.budget() // (4 * 16 * values)))
    per_domain = 17 * sum(math.prod(v) for v in shapes.values())
    max_domains = min(max_domains, max(2 * batch, memory.budget() // per_domain))
    zeros = {z: torch.zeros(1, *shapes[z], dtype=dt) for z in relus}
    start = {"s": {z: torch.zeros(1, *shapes[z], dtype=torch.int8) for z in relus},
             "alpha": {z: (root[z][1] >= -root[z][0]).to(dt) for z in relus},
             "beta": zeros}
    stack, depth = [start], [torch.zeros(1, dtype=torch.long)]

    def cat(parts, key):
        return {z: torch.cat([p[key][z] for p in parts]) for z in relus}

    while stack:
        if time.perf_counter() > deadline:
            return "timeout", None, stats
        s, alpha, beta, dep = cat(stack, "s"), cat(stack, "alpha"), cat(stack, "beta"), torch.cat(depth)
        D = dep.numel()
        take = slice(0, min(batch, D))
        rest = {"s": {z: v[batch:] for z, v in s.items()}, "alpha": {z: v[batch:] for z, v in alpha.items()},
                "beta": {z: v[batch:] for z, v in beta.items()}}
        stack, depth = ([rest], [dep[batch:]]) if D > batch else ([], [])
        s = {z: v[take] for z, v in s.items()}
        dep = dep[take]
        D = dep.numel()
        stats["domains"] += D
        splits = {z: s[z].to(dt) for z in relus}
        bounds = _sub_bounds(network, root, box, splits, interval_rule_for)
        a = {z: alpha[z][take].clone().requires_grad_(True) for z in relus}
        b = {z: beta[z][take].clone().requires_grad_(True) for z in relus}
        p = _Pass(network, bounds, {z: v for z, v in splits.items() if bool(v.any())}, a, b, ops, rule_for, dt)
        params = [a[z] for z in relus] + [b[z] for z in p.splits]
        best, (x_star,) = ascend(lambda final: p.lower(row, const, final), params)
        open_, cex = open_subdomains(best, x_star, is_cex)
        if cex is not None:
            return "sat", cex, stats
        stats["closed"] += float((0.5 ** dep[~open_].to(torch.float64)).sum())
        report("relu-bab", every=1.0, domains=stats["domains"], open=int(open_.sum()) + sum(len(d) for d in depth),
               closed=f"{100 * stats['closed']:.2f}%", worst_bound=-float(best.min()))
        if not bool(open_.any()):
            continue
        keep = open_.nonzero().flatten()
        flat_scores = torch.cat([p.scores[z][keep].reshape(len(keep), -1) for z in relus], 1)
        unstable = torch.cat([((bounds[z][0] < 0) & (bounds[z][1] > 0))[keep].reshape(len(keep), -1)
                              for z in relus], 1)
        if not bool(unstable.any(1).all()):          # an open subdomain with every phase fixed
            return "unknown", None, {**stats, "reason": "open subdomain with no unstable ReLU"}
        widths = torch.cat([(bounds[z][1] - bounds[z][0])[keep].reshape(len(keep), -1) for z in relus], 1)
        pick = torch.where(unstable, flat_scores + 1e-12 * widths, torch.full_like(widths, -1.0)).argmax(1)
        sizes = torch.tensor([math.prod(shapes[z]) for z in relus])
        which = torch.bucketize(pick, sizes.cumsum(0), right=True)
        offs = torch.cat([torch.zeros(1, dtype=torch.long), sizes.cumsum(0)])
        neuron = pick - offs[which]
        kids = []
        for sign in (1, -1):
            ks = {z: s[z][keep].clone() for z in relus}
            for j, z in enumerate(relus):
                rows = (which == j).nonzero().flatten()
                if len(rows):
                    ks[z].view(len(keep), -1)[rows, neuron[rows]] = sign
            kids.append({"s": ks, "alpha": {z: a[z].detach()[keep] for z in relus},
                         "beta": {z: b[z].detach()[keep] for z in relus}})
        stack.insert(0, {k: {z: torch.cat([kids[0][k][z], kids[1][k][z]]) for z in relus}
                         for k in ("s", "alpha", "beta")})
        depth.insert(0, torch.cat([dep[keep] + 1, dep[keep] + 1]))
        stats["max_depth"] = max(stats["max_depth"], int(dep.max()) + 1)
        if sum(len(d) for d in depth) > max_domains:
            return "unknown", None, {**stats, "reason": "too many subdomains"}
    return "unsat", None, stats
