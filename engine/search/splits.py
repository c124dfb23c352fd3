"""Complete search on any graph by branch and bound, through the domain protocol (Domain.bab_root /
Domain.branch_and_bound): the search owns the order of cases and disjuncts and the time, the domain owns how a
subdomain is bounded and split (CROWN: ReLU splits with optimised slopes and multipliers, plugins/crown/bab.py).

`unsat` needs every disjunct of every case refuted by the domain; `sat` needs a counterexample that the caller's
re-check accepted on the real model. The input region of a case is replaced by its bounding box for bounding
(sound: a superset); candidate points are re-checked against the region itself.
"""
from __future__ import annotations

import time

import torch

from ..deadline import OutOfTime, within


def split_search(domains, network, spec, deadline: float, recheck) -> tuple[str, dict | None, dict]:
    """("unsat" | "sat" | "timeout" | "unknown", counterexample or None, stats) for spec on network within
    `deadline` (time.perf_counter()), with the first of `domains` that offers branch and bound."""
    stats = {"domains": 0, "disjuncts": 0}  # subdomains bounded, disjuncts decided
    net = network.to(torch.float64)
    todo = [(ci, dj) for ci, case in enumerate(spec.cases) for dj in case.disjuncts]
    verdict = "unsat"
    roots: dict[int, object] = {}
    for k, (ci, dj) in enumerate(todo):
        now = time.perf_counter()
        if now > deadline:
            return "timeout", None, stats
        share = now + (deadline - now) / (len(todo) - k)   # the time left, split evenly over what is left
        try:
            with within(deadline):
                if ci not in roots:
                    box = spec.cases[ci].input_set.bounding_box()
                    roots[ci] = next(((d, s) for d in domains
                                      if (s := d.bab_root(net, box.lower[None], box.upper[None])) is not None), None)
                if roots[ci] is None:
                    return "unknown", None, {**stats, "reason": "no domain offers branch and bound"}
                d, state = roots[ci]
                v, cex, st = d.branch_and_bound(state, dj.C.to(torch.float64), dj.d.to(torch.float64), share,
                                                lambda x: recheck(network, spec, x))
        except OutOfTime:
            return "timeout", None, stats
        stats["domains"] += st.get("domains", 0)
        stats["disjuncts"] += 1
        if v == "sat":
            return "sat", cex, stats
        if v != "unsat":
            verdict = "unknown" if v == "unknown" or verdict == "unknown" else "timeout"
    return verdict, None, stats
