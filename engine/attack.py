"""Falsification: projected gradient ascent with restarts on each disjunct of the unsafe set.

Candidates are only *candidates*: `engine.verify.recheck` re-runs them on the real model and checks the exact
spec before anything is reported as `sat`.
"""
from __future__ import annotations

import torch

from .spec import Case


def pgd_case(network, case: Case, restarts: int = 64, steps: int = 50, seed: int = 0,
             deadline: float | None = None) -> torch.Tensor:
    """Search each disjunct of one case for inputs maximising min_rows(C y + d). Returns candidate flat inputs
    [K, n] (the best point of every restart whose objective reached >= 0), possibly empty."""
    import time

    box = case.input_set.bounding_box()
    lo, hi = box.lower, box.upper
    width = (hi - lo).clamp(min=0)
    g = torch.Generator().manual_seed(seed)
    net = network.to(torch.float64)
    found = []
    for dj in case.disjuncts:
        x = lo + torch.rand(restarts, lo.numel(), generator=g, dtype=torch.float64) * width
        x[0] = box.center
        step = width / 4
        best_x, best_v = x.clone(), torch.full((restarts,), -float("inf"), dtype=torch.float64)
        for it in range(steps):
            if deadline is not None and time.perf_counter() > deadline:
                break
            x.requires_grad_(True)
            v = (net.forward_flat(x) @ dj.C.T + dj.d).min(dim=1).values
            (grad,) = torch.autograd.grad(v.sum(), x)
            with torch.no_grad():
                better = v > best_v
                best_v = torch.where(better, v, best_v)
                best_x[better] = x[better]
                x = x + step * grad.sign()
                x = torch.max(torch.min(x, hi), lo)
                if it % 10 == 9:
                    step = step / 2
        with torch.no_grad():
            v = (net.forward_flat(x) @ dj.C.T + dj.d).min(dim=1).values
            better = v > best_v
            best_v = torch.where(better, v, best_v)
            best_x[better] = x[better]
        found.append(best_x[best_v >= 0])
        if found[-1].numel():
            break
    return torch.cat(found) if found else lo.new_zeros(0, lo.numel())
