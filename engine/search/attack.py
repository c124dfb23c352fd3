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
    u.requires_grad_(True)
    frac = torch.arange(restarts, dtype=torch.float64) / max(restarts - 1, 1)
    lr0 = (lr[0] * (lr[1] / lr[0]) ** frac).repeat(n_dj)[:, None]          # [n_dj * restarts, 1]
    opt = Adam([u], 1.0)

    def objective(x):
        y = net.forward_flat(x).reshape(n_dj, restarts, -1)
        return torch.cat([(y[k] @ dj.C.T + dj.d).min(dim=1).values for k, dj in enumerate(case.disjuncts)])

    for it in range(steps + 1):
        if deadline is not None and time.perf_counter() > deadline:
            break
        x = lo + u * width
        v = objective(x)
        hit = v.detach() >= 0
        if bool(hit.any()) or it == steps:
            return x.detach()[hit]
        opt.step(torch.autograd.grad(-v.sum(), u), lr=lr0 * (1 - it / (steps + 1)))
        with torch.no_grad():
            u.clamp_(0, 1)
    return lo.new_zeros(0, lo.numel())
