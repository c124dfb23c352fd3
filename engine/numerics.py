"""Floating-point safety for sound bounds.

Bounds are computed in float64 on verdict paths; `widen` moves the final bounds outward by
REL * |bound| + ABS, which covers the rounding of float64 propagation through the networks we handle by many
orders of magnitude (float64 error per layer is about n * 2^-53 relative; REL is 1e-9 = 2^-30) while staying far
inside the 1e-4 tightness tolerance. A verdict needs a *strict* margin: an atom is refuted only if `refuted` says
its widened upper bound plus the spec constant is < 0 in exact arithmetic.
"""
import torch

REL = 1e-9
ABS = 1e-9


def widen(lo: torch.Tensor, hi: torch.Tensor, rel: float = REL, abs_: float = ABS):
    """(lo - rel |lo| - abs_, hi + rel |hi| + abs_), new tensors."""
    return torch.add(lo, lo.abs(), alpha=-rel).sub_(abs_), torch.add(hi, hi.abs(), alpha=rel).add_(abs_)


def refuted(upper: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Per row: upper + d < 0 holds in exact arithmetic, where `upper` is a sound (widened) upper bound of C @ y
    and d the row's constant as read from the spec (rounded to nearest float64 from its decimal).

    The float64 sum and the decimal rounding of d each err by at most 2^-53 (|upper| + |d|); the comparison keeps
    four times that as slack, so a row is refuted only when the exact sum is negative.
    """
    return upper + d + 4 * 2.0 ** -53 * (upper.abs() + d.abs()) < 0


def refuted_combination(upper: torch.Tensor, lam: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Per [B, G] entry: upper + sum_r lam_r d_r < 0 in exact arithmetic, where `upper` is a sound (widened) upper
    bound of sum_r lam_r C_r y, lam [B, G, m] >= 0 and d [m] the rows' constants as read from the spec.

    The float64 products and the m-term sum err by at most (m + 1) 2^-53 sum_r lam_r |d_r|, the decimal rounding
    of each d_r by 2^-53 |d_r|; the slack is twice that plus the final addition's error, as in `refuted`."""
    dsum = lam @ d
    mag = lam @ d.abs()
    m = d.shape[0]
    return upper + dsum + 2 * 2.0 ** -53 * (2 * upper.abs() + (m + 2) * mag + dsum.abs()) < 0
