"""Input-splitting branch and bound for low-dimensional inputs (e.g. ACAS Xu's 5).

A sub-box is *closed* when every disjunct of the unsafe set has a row whose sound upper bound of C @ y + d is < 0
there (engine.numerics.refuted); `unsat` requires every sub-box closed. Boxes are bounded in large batches with a
chain of sound domains, cheapest first: each later domain only sees the boxes the earlier ones left open, and a
row's upper bound is the smallest any domain gave on the box or on any box containing it (all are sound; CROWN is
not monotone in the box, so a child can bound worse than its parent).

A box the chain leaves open, when the last domain offers `refute_conjunctions` (CROWN, on any graph), gets its
last backward pass optimised for each open disjunct (plugins.crown.alpha for ReLU MLPs, plugins.crown.conjunctions
otherwise: ReLU slopes and a non-negative combination of the disjunct's rows), which refutes conjunctions that no
single row refutes. The domain gets its state of the boxes (None when it keeps none). Domains may carry
state from a box to its sub-boxes (Domain.bounds_refine; CROWN keeps hidden pre-activation bounds).

Splitting is *strong branching*: each open box is bisected along each of its candidate inputs (all of them when
there are at most SB_DIMS, else the SB_DIMS with the largest smear width_i * sum_rows |d(C_row y)/dx_i| at the
centre), every child is bounded, and the box keeps the split with the smallest sum over its two children of the
open slack (per child, the largest over open disjuncts of the disjunct's bound of C y + d; 0 for a closed
child), ties going to the input that is widest relative to the root box. Gradient- and linear-bound-based scores
alone miss inputs that switch ReLU phases while moving the output little; bounding the children measures the
gain directly, and the chosen children's bounds are kept, so only the rejected children are extra work.

Open boxes are kept on a stack (newest first, so memory stays bounded); the centres of open boxes are tried as
counterexamples, and once the search has run for `attack_after` seconds an optional stronger attack runs once
(every candidate re-checked on the real model before `sat`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from .. import memory
from ..numerics import refuted
from ..progress import report
from ..spec import Spec

SB_DIMS = 8        # inputs tried per split (strong branching)
MAX_ASPECT = 2 ** 10  # an input is split only while at least 1/MAX_ASPECT as wide (relative) as the widest tried


@dataclass
class BabOutcome:
    verdict: str                     # "unsat", "sat", "unknown" or "timeout"
    counterexample: dict | None = None
    boxes: int = 0                   # sub-boxes bounded
    max_depth: int = 0


def _smear(net, lo, hi, C):
    """width_i * sum_rows |d(C_row y)/dx_i| at each box centre, [B, n]."""
    x = ((lo + hi) / 2).requires_grad_(True)
    y = net.forward_flat(x)
    score = torch.zeros_like(lo)
    for r in range(C.shape[0]):
        (g,) = torch.autograd.grad((y @ C[r]).sum(), x, retain_graph=r + 1 < C.shape[0])
        score += g.abs()
    return score.detach() * (hi - lo)


class _Problem:
    """The rows of cases that share them up to their constants (same_rows): C [m, n_out], owner [m] (disjunct of
    each row), d [R, m] (each case's constants); a box carries the index of its case (its root)."""

    def __init__(self, cases):
        self.C = torch.cat([dj.C for dj in cases[0].disjuncts])
        self.d = torch.stack([torch.cat([dj.d for dj in c.disjuncts]) for c in cases])
        self.owner = torch.cat([torch.full((dj.C.shape[0],), k) for k, dj in enumerate(cases[0].disjuncts)])
        self.n_dj = len(cases[0].disjuncts)

    def per_disjunct(self, rows: torch.Tensor, reduce) -> torch.Tensor:
        """[B, m] -> [B, n_dj] by reducing each disjunct's rows."""
        return torch.stack([reduce(rows[:, self.owner == k]) for k in range(self.n_dj)], 1)

    def open_disjuncts(self, ub, d):
        """[B, n_dj] bool: disjuncts that no row's upper bound ub [B, m] of C y refutes (d [B, m])."""
        return ~self.per_disjunct(refuted(ub, d), lambda r: r.any(1))

    def bound(self, domains, net, lo, hi, root, known=None, optimise=True):
        """Bound each box [B, n] of the cases root [B] with the domain chain. known: what an earlier call returned
        for boxes containing them (ub [B, m], states: one per domain, [B, s] or None), or None.

        Returns (closed [B], slack [B], known): closed when every disjunct is refuted; slack the largest, over the
        disjuncts left open, of the disjunct's smallest row bound of C y + d (-inf when closed); known the
        smallest sound upper bound of C y found so far and each domain's state (a domain that did not run on a
        box keeps the state it was given)."""
        B = lo.shape[0]
        if known is None:
            known = (lo.new_full((B, self.C.shape[0]), float("inf")), [None] * len(domains))
        ub, states = known[0].clone(), list(known[1])
        done = torch.zeros(B, self.n_dj, dtype=torch.bool)
        idx = torch.arange(B)
        for i, dom in enumerate(domains):
            if not len(idx):
                break
            st = states[i]
            _, u, new = dom.bounds_refine(net, lo[idx], hi[idx], self.C, None if st is None else st[idx])
            if new is not None:
                if st is None:
                    st = new.new_full((B, new.shape[1]), float("nan"))
                st = st.clone()
                st[idx] = new
            states[i] = st
            ub[idx] = torch.minimum(ub[idx], u)
            done[idx] = ~self.open_disjuncts(ub[idx], self.d[root[idx]])
            idx = idx[~done[idx].all(1)]
        per_dj = self.per_disjunct(ub + self.d[root], lambda r: r.amin(1))
        if optimise:
            self.optimise(domains, net, lo, hi, root, idx, states, done, per_dj)
        slack = per_dj.masked_fill(done, -float("inf")).amax(1)
        return done.all(1), slack, (ub, states)

    def optimise(self, domains, net, lo, hi, root, idx, states, done, per_dj):
        """Where the last domain offers `refute_conjunctions` (CROWN), run it on the boxes idx for their
        open disjuncts (one call per case), updating done and per_dj [B, n_dj] in place."""
        refine = getattr(domains[-1], "refute_conjunctions", None)
        if refine is None or not len(idx):
            return
        for r in root[idx].unique().tolist():
            ids = idx[root[idx] == r]
            state = None if states[-1] is None else states[-1][ids]
            out = refine(net, lo[ids], hi[ids], self.C, self.d[r], self.owner, state, todo=~done[ids])
            if out is not None:
                done[ids] |= out[0]
                per_dj[ids] = torch.minimum(per_dj[ids], out[1])


def _children(lo, hi, dims):
    """Both halves of each box [B, n] along each of its candidate inputs dims [B, k]: lo, hi [B, k, 2, n]."""
    B, n = lo.shape
    k = dims.shape[1]
    clo = lo[:, None, None, :].expand(B, k, 2, n).clone()
    chi = hi[:, None, None, :].expand(B, k, 2, n).clone()
    mid = ((lo.gather(1, dims) + hi.gather(1, dims)) / 2)                       # [B, k]
    b = torch.arange(B)[:, None].expand(B, k)
    j = torch.arange(k)[None, :].expand(B, k)
    chi[b, j, 0, dims] = mid
    clo[b, j, 1, dims] = mid
    return clo, chi


def _bytes(stack) -> int:
    """Memory the open boxes hold (bounds, hidden-bound states): every distinct storage once, whole (the rest of
    a batch is a view that keeps the batch's storage alive)."""
    seen = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for e in stack for t in e
            if t is not None}
    return sum(seen.values())


def _cat(entries):
    """Concatenate stack entries (tuples of [B, ...] tensors or None) field by field."""
    return tuple(None if f[0] is None else torch.cat(f) for f in zip(*entries))


def _take(entry, index):
    return tuple(None if t is None else t[index] for t in entry)


def bab_cases(domains, net, cases, deadline: float, recheck, batch: int = 1024, max_boxes: int = 2_000_000,
              attack=None, attack_after: float = 2.0) -> BabOutcome:
    """Branch and bound over the boxes of `cases`, whose disjuncts have the same rows up to their constants
    (same_rows): their root boxes are searched as one batch, so a spec of many small regions (nn4sys: 500) costs
    a few batched passes rather than a search per region. unsat when every box of every case closes; unknown
    once the open boxes exceed max_boxes or their bounds and states the memory budget (engine.memory.budget)."""
    prob = _Problem(cases)
    roots = [c.input_set.bounding_box() for c in cases]
    out = BabOutcome("unknown")
    lo = torch.stack([b.lower.reshape(-1) for b in roots])
    hi = torch.stack([b.upper.reshape(-1) for b in roots])
    n = lo.shape[1]
    k = min(n, SB_DIMS)
    # relative widths only break ties between splits: the widest root per input is a fair scale for every box
    root_width = (hi - lo).amax(0, keepdim=True).clamp(min=torch.finfo(hi.dtype).tiny)
    root = torch.arange(len(cases))
    closed, slack, (ub, states) = prob.bound(domains, net, lo, hi, root)
    out.boxes = len(roots)
    if bool(closed.all()):
        out.verdict = "unsat"
        return out
    target = cases[int(slack.argmax())]   # the stronger attack goes to the region that looks most violable
    keep = ~closed
    # a stack entry: (lo, hi, depth, root, ub, one state per domain), each [b, ...] or None
    stack = [_take((lo, hi, torch.zeros(len(cases), dtype=torch.long), root, ub, *states), keep)]
    attack_at = time.perf_counter() + attack_after
    while stack:
        if time.perf_counter() > deadline:
            out.verdict = "timeout"
            return out
        entry = _cat(stack)
        stack = [_take(entry, slice(batch, None))] if entry[0].shape[0] > batch else []
        lo, hi, dep, root, ub, *states = _take(entry, slice(0, batch))
        B = lo.shape[0]
        if k < n:
            dims = _smear(net, lo, hi, prob.C).topk(k, 1).indices
        else:
            dims = torch.arange(n).expand(B, n)
        clo, chi = _children(lo, hi, dims)
        parent = torch.arange(B)[:, None, None].expand(B, k, 2).reshape(-1)          # each child's parent
        known = (ub[parent], [None if st is None else st[parent] for st in states])
        clo, chi = clo.reshape(-1, n), chi.reshape(-1, n)
        c_closed, c_slack, (c_ub, c_states) = prob.bound(domains, net, clo, chi, root[parent], known)
        out.boxes += B * k * 2
        score = c_slack.reshape(B, k, 2).clamp(min=0).sum(2)                       # closed children count 0
        rel = ((hi - lo) / root_width).gather(1, dims)                              # relative width of each input
        # inputs far narrower than the widest candidate are not split: re-bounding a box with its parent's hidden
        # bounds tightens it a little even when the split changes nothing (a zero-width input), which would win
        score = torch.where(rel < rel.amax(1, keepdim=True) * MAX_ASPECT ** -1, float("inf"), score)
        tie = score <= score.amin(1, keepdim=True) * (1 + 1e-9)
        best = torch.where(tie, rel, -1.0).argmax(1)                                # ties: the widest input
        chosen = (torch.arange(B) * k + best)[:, None] * 2 + torch.arange(2)        # flat child index [B, 2]
        chosen = chosen.reshape(-1)[~c_closed[chosen.reshape(-1)]]
        if not len(chosen):
            continue
        nlo, nhi = clo[chosen], chi[chosen]
        ndep, nroot = dep[parent[chosen]] + 1, root[parent[chosen]]
        out.max_depth = max(out.max_depth, int(ndep.max()))
        report("input-split", every=1.0, boxes=out.boxes, open=len(chosen) + sum(len(e[0]) for e in stack),
               depth=out.max_depth)
        if attack is not None and time.perf_counter() > attack_at:
            cex, attack = attack(target), None
            if cex is not None:
                out.verdict, out.counterexample = "sat", cex
                return out
        centre = (nlo + nhi) / 2
        with torch.no_grad():   # the centre's own case's disjuncts (recheck decides, input set included)
            rows = net.forward_flat(centre) @ prob.C.T + prob.d[nroot] >= 0
            hits = prob.per_disjunct(rows, lambda r: r.all(1)).any(1)
        if bool(hits.any()):
            cex = recheck(centre[hits][:16])
            if cex is not None:
                out.verdict, out.counterexample = "sat", cex
                return out
        stack.insert(0, (nlo, nhi, ndep, nroot, *_take((c_ub, *c_states), chosen)))
        if sum(t[0].shape[0] for t in stack) > max_boxes or _bytes(stack) > memory.budget():
            return out
    out.verdict = "unsat"
    return out


def same_rows(a, b) -> bool:
    """Cases a and b have the same disjuncts' rows C (their constants d may differ)."""
    return len(a.disjuncts) == len(b.disjuncts) and all(
        x.C.shape == y.C.shape and torch.equal(x.C, y.C) for x, y in zip(a.disjuncts, b.disjuncts))


def input_split_bab(domains, network, spec: Spec, deadline: float, recheck, batch: int = 1024,
                    attack=None) -> BabOutcome:
    """Run branch and bound over every case, the cases that share their rows together (bab_cases); unsat
    only if every case closes.

    attack: optional callable(case) -> re-checked counterexample or None, run once per group after a while."""
    net = network.to(torch.float64)
    groups: list[list] = []
    for case in spec.cases:
        for g in groups:
            if same_rows(g[0], case):
                g.append(case)
                break
        else:
            groups.append([case])
    total = BabOutcome("unsat")
    # at most `batch` regions per search: the root pass bounds them all at once (memory like one batch of boxes)
    for cases in (g[i:i + batch] for g in groups for i in range(0, len(g), batch)):
        o = bab_cases(domains, net, cases, deadline, recheck, batch, attack=attack)
        total.boxes += o.boxes
        total.max_depth = max(total.max_depth, o.max_depth)
        if o.verdict != "unsat":
            o.boxes, o.max_depth = total.boxes, total.max_depth
            return o
    return total
