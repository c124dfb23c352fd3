"""Input splitting on a network whose output is the sum or difference of two parts, y = a + s b (s = +1 or -1).

For any output row c and box X,  max_X c y <= max_X c a + max_X s c b  whatever inputs a and b read, so the
disjunct {c y + d >= 0} is empty on X once targets T_a, T_b with T_a + T_b + d <= 0 (checked in exact rational
arithmetic) bound the two maxima strictly: each part is searched on its own by input splitting
(engine.search.bab) for the property {c a - T_a >= 0} (resp. {s c b - T_b >= 0}) being empty on X. When the parts
read disjoint inputs (VNN-COMP nn4sys pensieve_parallel: two copies of one model on two halves of the input) the
bound is exact and each search splits only its own inputs, so the work is the sum of the parts' instead of their
product. Which inputs a part reads is estimated from gradients and only decides whether this search is tried; it
never affects soundness.

The targets share the gap between the parts' attacked maxima (m_a + m_b + d < 0), evenly unless one part's root
bound already lies within its share (then that part gets its root bound). A part search that meets
a point at or above its target, or runs out of its time, ends the attempt: `unknown` (sat comes only from attacks
on the whole network, re-checked there).
"""
from __future__ import annotations

import math
import time
from fractions import Fraction

import torch

from ..deadline import OutOfTime, within
from ..ir import Network
from ..spec import Case, Disjunct, Spec
from .bab import input_split_bab

ESTIMATE_POINTS, ESTIMATE_STEPS = 64, 30   # sign-gradient ascent for the parts' maxima (targets only)
READS_REGIONS = 16                          # regions whose inputs are probed before the path is tried


def output_parts(network: Network):
    """(a, b, s) with network output = a + s b (`add` or `sub` of two values of the output's shape) as
    sub-networks over the same input, or None."""
    out = next((n for n in network.nodes if n.name == network.output), None)
    if out is None or out.op not in ("add", "sub") or len(out.inputs) != 2 or out.params:
        return None
    by_name = {n.name: n for n in network.nodes}
    shapes = {network.input_name: network.input_shape, **{n.name: n.shape for n in network.nodes}}
    if any(tuple(shapes[i]) != tuple(out.shape) for i in out.inputs) or network.input_name in out.inputs:
        return None

    def upto(name):
        need, todo = set(), [name]
        while todo:
            v = todo.pop()
            if v in need or v not in by_name:
                continue
            need.add(v)
            todo.extend(by_name[v].inputs)
        return Network(network.input_name, network.input_shape, [n for n in network.nodes if n.name in need],
                       output=name, source=network.source, input_dtype=network.input_dtype)

    return upto(out.inputs[0]), upto(out.inputs[1]), (1.0 if out.op == "add" else -1.0)


def reads(network: Network, lo: torch.Tensor, hi: torch.Tensor, points: int = 8, seed: int = 0) -> torch.Tensor:
    """Inputs [n] (flat) on which some output had a nonzero gradient at random points of the box: an estimate."""
    g = torch.Generator().manual_seed(seed)
    net = network.to(torch.float64)
    x = (lo + torch.rand(points, lo.numel(), generator=g, dtype=torch.float64) * (hi - lo)).requires_grad_(True)
    (grad,) = torch.autograd.grad(net.forward_flat(x).sum(), x)
    return (grad != 0).any(0)


def separable(network: Network, spec: Spec, max_inputs: int):
    """The parts (output_parts) when every disjunct of spec has one row and, in the first READS_REGIONS regions,
    the parts appear to read disjoint sets of at most max_inputs free inputs each; else None."""
    parts = output_parts(network)
    if parts is None or any(dj.C.shape[0] != 1 for c in spec.cases for dj in c.disjuncts):
        return None
    for case in spec.cases[:READS_REGIONS]:
        box = case.input_set.bounding_box()
        lo, hi = box.lower.reshape(-1).double(), box.upper.reshape(-1).double()
        free = box.free()
        ra, rb = reads(parts[0], lo, hi) & free, reads(parts[1], lo, hi) & free
        if bool((ra & rb).any()) or int(ra.sum()) > max_inputs or int(rb.sum()) > max_inputs:
            return None
    return parts


def attacked_max(network: Network, row: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, seed: int = 0,
                 deadline: float = math.inf) -> float:
    """The largest row . f(x) found by sign-gradient ascent from random points of the box (a lower estimate of
    the maximum; it only places the targets), stopping early at the deadline (time.perf_counter())."""
    g = torch.Generator().manual_seed(seed)
    net = network.to(torch.float64)
    x = lo + torch.rand(ESTIMATE_POINTS, lo.numel(), generator=g, dtype=torch.float64) * (hi - lo)
    x[0] = (lo + hi) / 2
    best = -math.inf
    for it in range(ESTIMATE_STEPS + 1):
        x.requires_grad_(True)
        v = net.forward_flat(x) @ row
        best = max(best, float(v.detach().max()))
        if it == ESTIMATE_STEPS or time.perf_counter() > deadline:
            break
        (grad,) = torch.autograd.grad(v.sum(), x)
        with torch.no_grad():
            step = 0.2 * (1 - it / ESTIMATE_STEPS) * (hi - lo)
            x = torch.minimum(torch.maximum(x + step * grad.sign(), lo), hi)
    return best


def targets(m_a: float, m_b: float, u_a: float, u_b: float, d: float) -> tuple[float, float] | None:
    """(T_a, T_b) with T_a + T_b + d <= 0 exactly, or None when the attacked maxima m_a + m_b + d >= 0 leave no
    gap. The gap is shared evenly, except that a part whose sound root bound u already lies below its share
    gets a target just above u (its search closes at the root) and the other part the rest."""
    gap = -(m_a + m_b + d)
    if not gap > 0:
        return None

    def above(u):
        return u + 1e-9 * (1.0 + abs(u))

    if above(u_a) < m_a + gap / 2:
        t_a = above(u_a)
    elif above(u_b) < m_b + gap / 2:
        t_a = -d - above(u_b)
    else:
        t_a = m_a + gap / 2
    t_b = -d - t_a
    while Fraction(t_a) + Fraction(t_b) + Fraction(d) > 0:     # float rounding: step T_b down until it holds
        t_b = math.nextafter(t_b, -math.inf)
    return t_a, t_b


def root_upper(domains, network: Network, row: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> float:
    """The smallest sound upper bound of row . f(x) over the box that the domains give."""
    net = network.to(torch.float64)
    return min(float(d.bounds(net, lo[None], hi[None], row[None, None])[1]) for d in domains)


def separable_search(domains, parts, spec: Spec, deadline: float) -> tuple[str, dict]:
    """("unsat" | "unknown" | "timeout", stats): unsat when every disjunct of every region is refuted through the
    parts (module docstring). Time is shared evenly among the part searches still to run."""
    net_a, net_b, s = parts
    stats = {"part_searches": 0, "boxes": 0}
    jobs = [(case, dj) for case in spec.cases for dj in case.disjuncts]
    for k, (case, dj) in enumerate(jobs):
        box = case.input_set.bounding_box()
        lo, hi = box.lower.reshape(-1).double(), box.upper.reshape(-1).double()
        row, d = dj.C[0].double(), float(dj.d[0])
        try:
            with within(deadline):   # the parts' root bounds: each a full bounding pass
                t = targets(attacked_max(net_a, row, lo, hi, deadline=deadline),
                            attacked_max(net_b, s * row, lo, hi, deadline=deadline),
                            root_upper(domains, net_a, row, lo, hi), root_upper(domains, net_b, s * row, lo, hi), d)
        except OutOfTime:
            return "timeout", stats
        if t is None:
            return "unknown", {**stats, "reason": "the parts' attacked maxima leave no gap"}
        for p, (net, r, target) in enumerate(((net_a, row, t[0]), (net_b, s * row, t[1]))):
            now = time.perf_counter()
            if now > deadline:
                return "timeout", stats
            until = now + (deadline - now) / (2 * (len(jobs) - k) - p)
            part = Spec([Case(case.input_set, [Disjunct(r[None], torch.tensor([-target], dtype=torch.float64))])],
                        spec.n_inputs, net.n_outputs)
            try:
                with within(until):   # a bounding pass past the part's time stops inside (engine/deadline.py)
                    out = input_split_bab(domains, net, part, until, lambda x: {"reached_target": True})
            except OutOfTime:
                return ("timeout" if time.perf_counter() > deadline else "unknown"), stats
            stats["part_searches"] += 1
            stats["boxes"] += out.boxes
            if out.verdict != "unsat":
                return ("timeout" if time.perf_counter() > deadline else "unknown"), stats
    return "unsat", stats
