"""Falsification: projected gradient ascent with restarts on every disjunct of the unsafe set at once.

Candidates are only *candidates*: `engine.verify.recheck` re-runs them on the real model and checks the exact
spec before anything is reported as `sat`.
"""
from __future__ import annotations

import time

import torch

from .optim import Adam
from ..spec import Case


def pgd_case(network, case: Case, restarts: int = 32, steps: int = 60, seed: int = 0,
             deadline: float | None = None, lr: tuple[float, float] = (0.01, 0.2)) -> torch.Tensor:
    """Search one case for inputs that satisfy a disjunct: for each disjunct, `restarts` starts (the box centre
    and uniform points) ascend min_rows(C y + d) with Adam on box-normalised coordinates u = (x - lo) / width,
    clamped to [0, 1], the step size decaying linearly to zero from an initial value spread log-uniformly over
    the starts between lr[0] and lr[1] (small steps find narrow regions, large ones escape poor local maxima). Returns the points whose objective reached >= 0
    (float64, flat [K, n]), possibly none; stops early at the first hit or at the deadline."""
    box = case.input_set.bounding_box()
    lo, hi = box.lower, box.upper
    width = hi - lo
    n_dj = len(case.disjuncts)
    g = torch.Generator().manual_seed(seed)
    net = network.to(torch.float64)
    u = torch.rand(n_dj * restarts, lo.numel(), generator=g, dtype=torch.float64)
    u[::restarts] = 0.5
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
