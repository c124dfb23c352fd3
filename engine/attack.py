"""Falsification: projected gradient ascent with restarts on every disjunct of the unsafe set at once.

Candidates are only *candidates*: `engine.verify.recheck` re-runs them on the real model and checks the exact
spec before anything is reported as `sat`.
"""
from __future__ import annotations

import time

import torch

from .spec import Case


def pgd_case(network, case: Case, restarts: int = 32, steps: int = 60, seed: int = 0,
             deadline: float | None = None) -> torch.Tensor:
    """Search one case for inputs that satisfy a disjunct: for each disjunct, `restarts` starts ascend
    min_rows(C y + d) by signed gradient steps projected onto the box (step halved every 15 steps).
    Returns the points whose objective reached >= 0 (float64, flat [K, n]), possibly none; stops early."""
    box = case.input_set.bounding_box()
    lo, hi = box.lower, box.upper
    width = hi - lo
    n_dj = len(case.disjuncts)
    g = torch.Generator().manual_seed(seed)
    net = network.to(torch.float64)
    x = lo + torch.rand(n_dj * restarts, lo.numel(), generator=g, dtype=torch.float64) * width
    x[::restarts] = box.center
    step = width / 4

    def objective(x):
        y = net.forward_flat(x).reshape(n_dj, restarts, -1)
        return torch.cat([(y[k] @ dj.C.T + dj.d).min(dim=1).values for k, dj in enumerate(case.disjuncts)])

    for it in range(steps + 1):
        if deadline is not None and time.perf_counter() > deadline:
            break
        x.requires_grad_(True)
        v = objective(x)
        hit = v.detach() >= 0
        if bool(hit.any()) or it == steps:
            return x.detach()[hit]
        (grad,) = torch.autograd.grad(v.sum(), x)
        with torch.no_grad():
            x = torch.max(torch.min(x + step * grad.sign(), hi), lo)
        if it % 15 == 14:
            step = step / 2
    return lo.new_zeros(0, lo.numel())
