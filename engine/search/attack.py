"""Falsification: projected gradient ascent with restarts on every disjunct of the unsafe set at once, and
starting points that switch single ReLU neurons (flip_points) for networks whose objective has no gradient.

Candidates are only *candidates*: `engine.verify.recheck` re-runs them on the real model and checks the exact
spec before anything is reported as `sat`.
"""
from __future__ import annotations

import time

import torch

from .optim import Adam
from ..spec import Case


def pgd_case(network, case: Case, restarts: int = 32, steps: int = 60, seed: int = 0,
             deadline: float | None = None, lr: tuple[float, float] = (0.01, 0.2),
             starts: torch.Tensor | None = None) -> torch.Tensor:
    """Search one case for inputs that satisfy a disjunct: for each disjunct, `restarts` starts (the box centre
    and uniform points) ascend min_rows(C y + d) with Adam on box-normalised coordinates u = (x - lo) / width,
    clamped to [0, 1], the step size decaying linearly to zero from an initial value spread log-uniformly over
    the starts between lr[0] and lr[1] (small steps find narrow regions, large ones escape poor local maxima).
    starts: given points of the box [K, n] (e.g. flip_points) replace the restarts, each one ascending every
    disjunct. Returns the points whose objective reached >= 0 (float64, flat [K, n]), possibly none; the starts
    themselves are checked first; stops early at the first hit or at the deadline."""
    box = case.input_set.bounding_box()
    lo, hi = box.lower, box.upper
    width = hi - lo
    n_dj = len(case.disjuncts)
    g = torch.Generator().manual_seed(seed)
    net = network.to(torch.float64)
    if starts is None:
        u = torch.rand(n_dj * restarts, lo.numel(), generator=g, dtype=torch.float64)
        u[::restarts] = 0.5
    else:
        restarts = len(starts)
        if not restarts:
            return lo.new_zeros(0, lo.numel())
        u = ((starts.to(torch.float64) - lo) / torch.where(width > 0, width, 1.0)).clamp(0, 1).repeat(n_dj, 1)
    owner = torch.arange(n_dj).repeat_interleave(restarts)                     # disjunct of each start
    frac = torch.arange(restarts, dtype=torch.float64) / max(restarts - 1, 1)
    lr0 = (lr[0] * (lr[1] / lr[0]) ** frac).repeat(n_dj)[:, None]          # [n_dj * restarts, 1]
    opt = Adam([u], 1.0)
    step = net.points_per_batch()   # starts per forward/backward pass: memory stays within the budget

    def objective(x, own):
        y = net.forward_flat(x)
        v = torch.empty(len(x), dtype=y.dtype)
        for k in own.unique().tolist():
            m = own == k
            v[m] = (y[m] @ case.disjuncts[k].C.T + case.disjuncts[k].d).min(dim=1).values
        return v

    for it in range(steps + 1):
        if deadline is not None and time.perf_counter() > deadline:
            break
        vs, grads = [], []
        for i in range(0, len(u), step):
            ui = u[i:i + step].detach().requires_grad_(True)
            vi = objective(lo + ui * width, owner[i:i + step])
            grads.append(torch.autograd.grad(-vi.sum(), ui)[0] if it < steps else None)
            vs.append(vi.detach())
        hit = torch.cat(vs) >= 0
        if bool(hit.any()) or it == steps:
            return (lo + u * width)[hit]
        opt.step([torch.cat(grads)], lr=lr0 * (1 - it / (steps + 1)))
        with torch.no_grad():
            u.clamp_(0, 1)
    return lo.new_zeros(0, lo.numel())


def flip_points(network, case: Case, per_layer: int = 16, steps: int = 50, lr: float = 0.05,
                deadline: float | None = None) -> torch.Tensor:
    """Points of the case's box that switch single ReLU neurons, as starts for pgd_case [K, n] (float64).

    In every ReLU layer, the per_layer neurons whose pre-activation at the box centre is nearest to 0 are each
    pushed across it, one start per neuron: sign-gradient steps on that pre-activation (towards > 0 for an
    inactive neuron, < 0 for an active one) from the centre, lr box widths at first, decaying linearly to 0.
    Why: where the network's output is flat around the centre (a layer with one or two active neurons, as in
    mnist_fc 256x6), the disjuncts' gradients vanish and PGD stalls, while the hidden neurons still have
    gradients; switching one on reaches the other pieces of the network (mnist_fc 256x6 prop_1 eps 0.05: 4 of
    96 such points are counterexamples, 0.4 s; PGD with 9,216 starts finds none). Returns no rows for a network
    without ReLU; stops at the deadline with the points reached so far."""
    from ..ops import op_table
    from ..propagate import forward
    box = case.input_set.bounding_box()
    lo, hi = box.lower, box.upper
    net = network.to(torch.float64)
    ops = op_table()
    rule = lambda node: ops[node.op].forward  # noqa: E731
    with torch.no_grad():
        vals = forward(net, box.center.reshape(1, *net.input_shape), rule)
    targets = []                                  # (pre-activation's name, neurons [k], signs [k])
    for node in net.nodes:
        if node.op == "relu":
            z = vals[node.inputs[0]].flatten()
            idx = (-z.abs()).topk(min(per_layer, z.numel())).indices
            targets.append((node.inputs[0], idx, torch.where(z[idx] > 0, -1.0, 1.0).to(z.dtype)))
    del vals
    if not targets:
        return lo.new_zeros(0, lo.numel())
    x = box.center[None].repeat(sum(len(t[1]) for t in targets), 1)
    step = net.points_per_batch()
    for it in range(steps):
        if deadline is not None and time.perf_counter() > deadline:
            break
        grads = []
        for i in range(0, len(x), step):
            if deadline is not None and time.perf_counter() > deadline:   # one chunk of a large CNN takes a while
                return x.detach()
            xi = x[i:i + step].detach().requires_grad_(True)
            vals = forward(net, xi.reshape(len(xi), *net.input_shape), rule)
            obj, first = 0.0, 0
            for name, idx, sign in targets:     # start s pushes neuron idx[s - first] of this layer
                rows = torch.arange(first, first + len(idx))
                keep = (rows >= i) & (rows < i + len(xi))
                if bool(keep.any()):
                    obj = obj + (sign[keep] * vals[name].flatten(1)[rows[keep] - i, idx[keep]]).sum()
                first += len(idx)
            grads.append(torch.autograd.grad(obj, xi)[0])
        with torch.no_grad():
            x = torch.minimum(torch.maximum(x + lr * (1 - it / steps) * (hi - lo) * torch.cat(grads).sign(), lo), hi)
    return x.detach()
