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
    roots: dict[int, object] = {}
    # two rounds: first every disjunct gets half its even share of the time (most close at or near the root),
    # then the ones still open share all that is left
    for share in (0.5, 1.0):
        still = []
        for k, (ci, dj) in enumerate(todo):
            now = time.perf_counter()
            if now > deadline:
                return "timeout", None, stats
            until = now + share * (deadline - now) / (len(todo) - k)
            try:
                with within(deadline):
                    if ci not in roots:
                        box = spec.cases[ci].input_set.bounding_box()
                        roots[ci] = next(((d, s) for d in domains
                                          if (s := d.bab_root(net, box.lower[None], box.upper[None])) is not None),
                                         None)
                    if roots[ci] is None:
                        return "unknown", None, {**stats, "reason": "no domain offers branch and bound"}
                    d, state = roots[ci]
                    v, cex, st = d.branch_and_bound(state, dj.C.to(torch.float64), dj.d.to(torch.float64), until,
                                                    lambda x: recheck(network, spec, x))
            except OutOfTime:
                return "timeout", None, stats
            stats["domains"] += st.get("domains", 0)
            if v == "sat":
                return "sat", cex, stats
            if v == "unsat":
                stats["disjuncts"] += 1
            elif v == "unknown":   # the domain cannot decide it (not a matter of time)
                return "unknown", None, {**stats, "reason": st.get("reason")}
            else:
                still.append((ci, dj))
        if not still:
            return "unsat", None, stats
        todo = still
    return "timeout", None, stats
