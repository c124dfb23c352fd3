"""Floating-point safety for sound bounds.

Bounds are computed in float64 on verdict paths; `widen` moves the final bounds outward by
REL * |bound| + ABS, which covers the rounding of float64 propagation through the networks we handle by many
orders of magnitude (float64 error per layer is about n * 2^-53 relative; REL is 1e-9 = 2^-30) while staying far
inside the 1e-4 tightness tolerance. A verdict needs a *strict* margin: an atom is refuted only if its widened
upper bound is < 0.
"""
import torch

REL = 1e-9
ABS = 1e-9


def widen(lo: torch.Tensor, hi: torch.Tensor, rel: float = REL, abs_: float = ABS):
    return lo - rel * lo.abs() - abs_, hi + rel * hi.abs() + abs_
