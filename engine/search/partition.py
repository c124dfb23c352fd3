"""Split an instance's input boxes into pieces that can be decided independently (work sharing, engine/cluster.py).

Soundness: the pieces of a box cover it exactly (each bisection at the float64 midpoint m gives [lo, m] and
[m, hi], whose union is the parent), and a piece keeps every disjunct of its case, so the instance is unsat iff
every piece is unsat, and a counterexample of a piece lies in the instance's region.
"""
from __future__ import annotations

import torch

from ..spec import Box, Case, Spec


def split_box(box: Box, k: int) -> list[Box]:
    """At least min(k, what the box allows) boxes covering `box`: the widest piece (relative to the box's widths) is
    bisected along its widest relative input until there are k. Inputs of zero width are never split."""
    width = (box.upper - box.lower).clamp(min=0)
    scale = torch.where(width > 0, width, torch.ones_like(width))
    pieces = [(box.lower, box.upper)]
    while len(pieces) < k:
        rel = [((hi - lo) / scale).max() for lo, hi in pieces]
        i = max(range(len(pieces)), key=lambda j: float(rel[j]))
        lo, hi = pieces[i]
        dim = int(((hi - lo) / scale).argmax())
        mid = (lo[dim] + hi[dim]) / 2
        if not lo[dim] < mid < hi[dim]:      # nothing left to split in floating point
            break
        left_hi, right_lo = hi.clone(), lo.clone()
        left_hi[dim], right_lo[dim] = mid, mid
        pieces[i:i + 1] = [(lo, left_hi), (right_lo, hi)]
    return [Box(lo, hi) for lo, hi in pieces]


def split_spec(spec: Spec, k: int) -> list[Spec]:
    """One single-case Spec per piece: each box case split into about k pieces, any other input set kept whole."""
    out = []
    for case in spec.cases:
        boxes = split_box(case.input_set, k) if isinstance(case.input_set, Box) else [case.input_set]
        out += [Spec([Case(b, case.disjuncts)], spec.n_inputs, spec.n_outputs, spec.source) for b in boxes]
    return out
