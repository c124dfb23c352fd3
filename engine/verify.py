"""Verification: (Network, Spec, domain) -> Result with a verdict.

* `unsat` only when a sound domain's bounds refute every disjunct of the unsafe set in every input region:
  some row of the disjunct has a (widened, float64) upper bound of C @ y + d strictly below 0.
* `sat` only with a counterexample x that lies in the input region and whose output, re-run on the original model
  (onnxruntime for ONNX models, the float32 IR otherwise), satisfies a disjunct exactly.
* otherwise `unknown` (or `timeout` when the budget ran out first).
"""
from __future__ import annotations

import time

import torch

from .domain import Result, Verdict
from .errors import BadInput
from .numerics import refuted
from .counterexample import recheck
from .deadline import OutOfTime, within
from .progress import report
from .mlp import mlp_chain
from .spec import Box, Case, Spec

# the cheap domains run first under --domain auto
AUTO_ORDER = ("ibp", "crown")
BAB_MAX_INPUTS = 16          # input splitting only pays in low dimension
DEFAULT_BAB_SECONDS = 60.0   # complete-search budget when verify() is given no timeout
# falsification effort per disjunct: restarts for low-dimensional inputs (input splitting adds one 8x stronger run
# later) and for the others (MILP follows), steps, and the largest share of the time budget PGD may take
PGD_RESTARTS, PGD_RESTARTS_HIGH_DIM, PGD_STEPS, PGD_FRACTION = 512, 32, 100, 0.1
# PGD rounds (initial step range in box widths, seed), the second only when the first found nothing and only above
# BAB_MAX_INPUTS free inputs: large steps reach counterexamples near the box's corners (mnist_fc 256x4 prop_6 eps
# 0.05: found at once, missed by the first); in low dimension input splitting's own attack follows (ACAS Xu total,
# paired: 104 s -> 127 s with a second round there)
PGD_ROUNDS = (((0.01, 0.2), 0), ((0.1, 1.0), 1))


def check_compatible(network, spec: Spec) -> None:
    """Raise BadInput when the spec's variables do not fit the network."""
    if spec.n_inputs != network.n_inputs:
        raise BadInput(f"spec declares {spec.n_inputs} inputs X_i but the network has {network.n_inputs}", spec.source)
    if spec.n_outputs > network.n_outputs:
        raise BadInput(f"spec declares {spec.n_outputs} outputs Y_i but the network has {network.n_outputs}",
                       spec.source)


def free_inputs(spec: Spec) -> int:
    """The most inputs any region lets vary (Box.free). Input splitting pays when this is small."""
    return max((int(case.input_set.bounding_box().free().sum()) for case in spec.cases), default=0)


def candidate_points(box: Box, n_random: int, generator: torch.Generator) -> torch.Tensor:
    """Centre, corners (all when n <= 10, else random ones) and uniform random points of a box, [N, n]."""
    lo, hi = box.lower, box.upper
    n = lo.numel()
    pts = [box.center[None]]
    if n <= 10:
        bits = ((torch.arange(2 ** n)[:, None] >> torch.arange(n)) & 1).to(torch.float64)
    else:
        bits = torch.randint(0, 2, (64, n), generator=generator).to(torch.float64)
    pts.append(lo + bits * (hi - lo))
    pts.append(lo + torch.rand(n_random, n, generator=generator, dtype=torch.float64) * (hi - lo))
    return torch.cat(pts)


def falsify(network, spec: Spec, n_random: int = 1000, seed: int = 0, deadline: float = float("inf")) -> dict | None:
    """Cheap search for a counterexample; returns {"x", "y"} re-checked on the real model, or None. Stops at
    `deadline` (time.perf_counter()), checked before each input region."""
    g = torch.Generator().manual_seed(seed)
    for case in spec.cases:
        if time.perf_counter() > deadline:
            return None
        box = case.input_set.bounding_box()
        x = candidate_points(box, n_random, g)
        x = x[case.input_set.contains(x)]
        if not len(x):
            continue
        with torch.no_grad():   # float32 (the real model's arithmetic, and fast on CPUs); recheck decides
            y = network.to(torch.float32).forward_flat(x.float()).double()
        hits = Spec([Case(case.input_set, case.disjuncts)], spec.n_inputs, spec.n_outputs).unsafe(x, y)
        if hits.any():
            cand = x[hits][:16]
            cex = recheck(network, spec, cand)
            if cex is not None:
                return cex
    return None


def refutes(domain, network, case: Case, dtype=torch.float64) -> bool:
    """True when the domain's bounds prove no input in the case's region reaches any of its disjuncts."""
    box = case.input_set.bounding_box()
    C = torch.cat([dj.C for dj in case.disjuncts]).to(dtype)
    d = torch.cat([dj.d for dj in case.disjuncts]).to(dtype)
    _, hi = domain.bounds(network.to(dtype), box.lower[None].to(dtype), box.upper[None].to(dtype), C)
    ok = refuted(hi[0], d)
    start = 0
    for dj in case.disjuncts:
        rows = ok[start:start + dj.C.shape[0]]
        start += dj.C.shape[0]
        if not bool(rows.any()):
            return False
    return True


def verify(network, spec: Spec, domain: str = "auto", timeout: float | None = None, registry=None,
           attack: bool = True, bab: bool = True) -> Result:
    """Decide the spec on the network with the named domain (or "auto": cheap sound domains first).

    Stages, each skipped once the time budget is spent: sampling attack; one bounding pass per domain; PGD (above
    BAB_MAX_INPUTS free inputs also from search.attack.flip_points); then
    complete search: input-splitting branch and bound (at most BAB_MAX_INPUTS free inputs) or, above that, MILP
    for ReLU MLPs (engine.search.milp) and ReLU-split branch and bound through the domain for every other network
    (engine.search.splits). Without a timeout the complete search gets DEFAULT_BAB_SECONDS.
    """
    from .registry import get_registry
    reg = registry or get_registry()
    t0 = time.perf_counter()
    deadline = float("inf") if timeout is None else t0 + timeout
    check_compatible(network, spec)
    spec = spec.padded(network.n_outputs)
    names = [n for n in AUTO_ORDER if n in reg.domains] if domain == "auto" else [domain]
    domains = [reg.domain(n) for n in names]
    for d in domains:
        if not d.can_bound():
            raise BadInput(f"domain {d.name!r} computes no bounds; use it with `nncert certify`")
        d.check_network(network)

    def done(verdict, by, cex=None, **evidence):
        report("verdict", verdict=str(verdict), by=by)
        return Result(verdict, domain, time.perf_counter() - t0, cex, evidence={"by": by, **evidence})

    report("verify", regions=len(spec.cases), domains=",".join(names), inputs=network.n_inputs,
           timeout=timeout if timeout is not None else "none")
    if attack:   # sampling: at most PGD_FRACTION of the budget (many input regions make it long)
        report("sampling")
        cex = falsify(network, spec, deadline=t0 + PGD_FRACTION * (deadline - t0))
        if cex is not None:
            return done(Verdict.SAT, "sampling", cex)
    for d in domains:
        if time.perf_counter() > deadline:
            return done(Verdict.TIMEOUT, None)
        report("bounds", domain=d.name)
        try:
            with within(deadline):
                proved = all(refutes(d, network, case) for case in spec.cases)
        except OutOfTime:  # the pass was cut short (only with a timeout): no bound, so no verdict from it
            return done(Verdict.TIMEOUT, None)
        if proved:
            return done(Verdict.UNSAT, d.name)
    low_dim = free_inputs(spec) <= BAB_MAX_INPUTS
    if attack:
        from .search.attack import flip_points, pgd_case
        report("pgd", regions=len(spec.cases))
        now = time.perf_counter()
        stop = min(deadline, now + PGD_FRACTION * (deadline - now)) if timeout is not None else deadline
        for lr, seed in PGD_ROUNDS[:1] if low_dim else PGD_ROUNDS:   # low-dim: input splitting attacks again
            for case in spec.cases:
                if time.perf_counter() > stop:
                    break
                cand = pgd_case(network, case, restarts=PGD_RESTARTS if low_dim else PGD_RESTARTS_HIGH_DIM,
                                steps=PGD_STEPS, seed=seed, deadline=stop, lr=lr)
                if len(cand):
                    cex = recheck(network, spec, cand)
                    if cex is not None:
                        return done(Verdict.SAT, "pgd", cex)
        # starts that switch single ReLU neurons (attack.flip_points); a quarter of the steps, since the starts
        # themselves are mostly the counterexamples (mnist_fc 256x6 eps 0.05: the round takes ~1 s where it fails)
        for case in [] if low_dim else spec.cases:
            if time.perf_counter() > stop:
                break
            cand = pgd_case(network, case, steps=PGD_STEPS // 4, seed=2, deadline=stop,
                            starts=flip_points(network, case, deadline=stop))
            if len(cand):
                cex = recheck(network, spec, cand)
                if cex is not None:
                    return done(Verdict.SAT, "pgd-flip", cex)
    search_end = deadline if timeout is not None else t0 + DEFAULT_BAB_SECONDS
    if bab and not low_dim and time.perf_counter() < deadline and mlp_chain(network) is not None:
        from .search.milp import milp_verify
        report("complete-search", method="alpha, relu-bab, milp (ReLU MLP)")
        v, cex, st = milp_verify(network, spec, search_end, attack=False)
        if v in ("sat", "unsat"):
            return done(Verdict(v), st.get("by", "milp"), cex,
                        **{k: st[k] for k in ("milps", "binaries", "lps", "relu_bab_domains") if k in st})
    elif bab and not low_dim and time.perf_counter() < deadline:
        from .search.separable import separable, separable_search
        parts = separable(network, spec, BAB_MAX_INPUTS)
        if parts is not None:   # y = a +- b on disjoint inputs: input splitting per part (search/separable.py)
            report("complete-search", method="input splitting per output part")
            v, st = separable_search(domains, parts, spec, search_end)
            if v == "unsat":
                return done(Verdict.UNSAT, "bab-parts+" + "+".join(names), **st)
        from .search.splits import split_search
        report("complete-search", method="relu-bab through the domain")
        v, cex, st = split_search(domains, network, spec, search_end, recheck)
        if v in ("sat", "unsat"):
            return done(Verdict(v), "relu-bab", cex, **st)
    if bab and low_dim and time.perf_counter() < deadline:
        from .search.bab import input_split_bab
        report("complete-search", method="input splitting", free_inputs=free_inputs(spec))
        if timeout is None:
            deadline = t0 + DEFAULT_BAB_SECONDS
        from .search.attack import pgd_case

        def strong_attack(case):  # at most PGD_FRACTION of the time left: the search itself must not starve
            now = time.perf_counter()
            cand = pgd_case(network, case, restarts=8 * PGD_RESTARTS, steps=PGD_STEPS, seed=1,
                            deadline=min(deadline, now + PGD_FRACTION * (deadline - now)))
            return recheck(network, spec, cand) if len(cand) else None
        try:
            with within(deadline):  # a bounding pass past the deadline stops inside (engine/deadline.py)
                out = input_split_bab(domains, network, spec, deadline, lambda x: recheck(network, spec, x),
                                      attack=strong_attack if attack else None)
        except OutOfTime:
            return done(Verdict.TIMEOUT if timeout is not None else Verdict.UNKNOWN, "bab+" + "+".join(names))
        if out.verdict in ("sat", "unsat"):
            return done(Verdict(out.verdict), "bab+" + "+".join(names), out.counterexample, boxes=out.boxes,
                        depth=out.max_depth)
        return done(Verdict.TIMEOUT if out.verdict == "timeout" and timeout is not None else Verdict.UNKNOWN,
                    "bab+" + "+".join(names), boxes=out.boxes, depth=out.max_depth)
    return done(Verdict.TIMEOUT if time.perf_counter() > deadline else Verdict.UNKNOWN, None)


def output_bounds(network, spec: Spec, domain: str, registry=None) -> dict:
    """Sound bounds of every network output over each input region; `seconds` covers the bounding alone."""
    from .registry import get_registry
    reg = registry or get_registry()
    check_compatible(network, spec)
    d = reg.domain(domain)
    if not d.can_bound():
        raise BadInput(f"domain {domain!r} computes no bounds")
    d.check_network(network)
    net64 = network.to(torch.float64)
    boxes = [c.input_set.bounding_box() for c in spec.cases]
    lower = torch.stack([b.lower for b in boxes])
    upper = torch.stack([b.upper for b in boxes])
    t0 = time.perf_counter()
    lo, hi = d.bounds(net64, lower, upper)
    seconds = time.perf_counter() - t0
    return {"domain": domain, "regions": [{"lower": lo[i].tolist(), "upper": hi[i].tolist()} for i in range(len(boxes))],
            "seconds": seconds}
