"""Input-splitting branch and bound for low-dimensional inputs (e.g. ACAS Xu's 5).

Sub-boxes are bounded in large batches with a chain of sound domains, cheapest first (each later domain only sees
the boxes the earlier ones left open); a sub-box is closed when every disjunct of the unsafe set has a row whose
upper bound of C @ y + d is < 0 there. Open sub-boxes are split in half along the
input with the largest "smear" width_i * sum_rows |d(C_row y)/dx_i| at the sub-box centre, and their centres are
tried as counterexamples (re-checked on the real model before `sat`). `unsat` requires every sub-box closed.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from .numerics import refuted
from .spec import Case, Spec


@dataclass
class BabOutcome:
    verdict: str                     # "unsat", "sat", "unknown" or "timeout"
    counterexample: dict | None = None
    boxes: int = 0                   # sub-boxes bounded
    max_depth: int = 0


def _smear_split(net, lo, hi, C, open_rows):
    """Index of the input to split for each box [B]: argmax width * sum over open rows of |gradient|."""
    x = ((lo + hi) / 2).requires_grad_(True)
    y = net.forward_flat(x)
    score = torch.zeros_like(lo)
    for r in range(C.shape[0]):
        mask = open_rows[:, r]
        if not bool(mask.any()):
            continue
        (g,) = torch.autograd.grad((y @ C[r]).sum(), x, retain_graph=True)
        score += g.abs() * mask[:, None]
    score = score.detach() * (hi - lo)
    # a box whose gradients vanish still needs splitting: fall back to the widest input
    flat = score.sum(1) <= 0
    score[flat] = (hi - lo)[flat]
    return score.argmax(1)


def _refuted(domains, net, lo, hi, C, d, owner, n_dj):
    """[B, n_dj] bool: disjunct proven empty on each box, trying the domains in order on the still-open boxes."""
    closed = torch.zeros(lo.shape[0], n_dj, dtype=torch.bool)
    idx = torch.arange(lo.shape[0])
    for dom in domains:
        if not len(idx):
            break
        _, ub = dom.bounds(net, lo[idx], hi[idx], C)
        rows = refuted(ub, d)                                                        # [b, m]
        closed[idx] |= torch.stack([rows[:, owner == k].any(1) for k in range(n_dj)], 1)
        idx = idx[~closed[idx].all(1)]
    return closed


def bab_case(domains, net, spec: Spec, case: Case, deadline: float, recheck, batch: int = 2048,
             max_boxes: int = 2_000_000) -> BabOutcome:
    box = case.input_set.bounding_box()
    C = torch.cat([dj.C for dj in case.disjuncts])
    d = torch.cat([dj.d for dj in case.disjuncts])
    owner = torch.cat([torch.full((dj.C.shape[0],), k) for k, dj in enumerate(case.disjuncts)])
    n_dj = len(case.disjuncts)
    los, his, depths = [box.lower[None]], [box.upper[None]], [torch.zeros(1, dtype=torch.long)]
    out = BabOutcome("unknown")
    single = Spec([case], spec.n_inputs, spec.n_outputs)
    while los:
        if time.perf_counter() > deadline:
            out.verdict = "timeout"
            return out
        lo, hi, dep = torch.cat(los), torch.cat(his), torch.cat(depths)
        los, his, depths = [lo[batch:]], [hi[batch:]], [dep[batch:]]
        lo, hi, dep = lo[:batch], hi[:batch], dep[:batch]
        if los[0].shape[0] == 0:
            los, his, depths = [], [], []
        out.boxes += lo.shape[0]
        out.max_depth = max(out.max_depth, int(dep.max()))
        refuted_dj = _refuted(domains, net, lo, hi, C, d, owner, n_dj)
        open_box = ~refuted_dj.all(1)
        if not bool(open_box.any()):
            continue
        lo, hi, dep, refuted_dj = lo[open_box], hi[open_box], dep[open_box], refuted_dj[open_box]
        # try the centres of open boxes as counterexamples
        centre = (lo + hi) / 2
        with torch.no_grad():
            hits = single.unsafe(centre, net.forward_flat(centre))
        if bool(hits.any()):
            cex = recheck(centre[hits][:16])
            if cex is not None:
                out.verdict, out.counterexample = "sat", cex
                return out
        open_rows = ~refuted_dj[:, owner]
        dim = _smear_split(net, lo, hi, C, open_rows)
        mid = centre.gather(1, dim[:, None])[:, 0]
        rows = torch.arange(lo.shape[0])
        hi_left, lo_right = hi.clone(), lo.clone()
        hi_left[rows, dim] = mid
        lo_right[rows, dim] = mid
        los.insert(0, torch.cat([lo, lo_right]))
        his.insert(0, torch.cat([hi_left, hi]))
        depths.insert(0, torch.cat([dep + 1, dep + 1]))
        if sum(t.shape[0] for t in los) > max_boxes:
            return out
    out.verdict = "unsat"
    return out


def input_split_bab(domains, network, spec: Spec, deadline: float, recheck, batch: int = 2048) -> BabOutcome:
    """Run branch and bound over every case; unsat only if every case closes."""
    net = network.to(torch.float64)
    total = BabOutcome("unsat")
    for case in spec.cases:
        o = bab_case(domains, net, spec, case, deadline, recheck, batch)
        total.boxes += o.boxes
        total.max_depth = max(total.max_depth, o.max_depth)
        if o.verdict != "unsat":
            o.boxes, o.max_depth = total.boxes, total.max_depth
            return o
    return total
