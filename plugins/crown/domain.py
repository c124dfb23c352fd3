"""The CROWN domain (Zhang et al. 2018): sound bounds on C @ f(x) by backward linear bound propagation.

Guarantee: for every x in the input set, lo <= C @ f(x) <= hi in exact arithmetic; the returned bounds are then
widened outward (engine.numerics.widen) for floating-point rounding. Pass float64 inputs on verdict paths.
Computes in the dtype of the inputs, except convolution adjoints of float64 passes on the CPU: float32 with a
rigorous rounding allowance subtracted from the bound (plugins/crown/adjoint.py; about 5x faster there).
Input sets: boxes (`bounds`) and l2 balls (`bounds_l2`).

ReLU MLPs given as boxes (engine.mlp: reshapes and elementwise affines folded in, e.g. ACAS Xu's input
normalisation) run through `engine.kernels.linear_bounds.crown_mlp` (one native call for the whole pass, or its
torch reference); every other network through the generic DAG propagation of plugins.crown.propagate. Both compute
the same bounds (same relaxations, same intermediate-bound procedure).
"""
from __future__ import annotations

import math

import torch

from nncert.engine import memory
from nncert.engine.domain import Domain
from nncert.engine.errors import BadInput
from nncert.engine.kernels import linear_bounds as lb
from nncert.engine.mlp import mlp_layers
from .alpha import HIDDEN_ITERS, HIDDEN_LR, ITERS, alpha_hidden_bounds, optimise_conjunctions
from nncert.engine.numerics import refuted_combination, widen

from .propagate import (concretize_box, concretize_l2, crown_bounds, hidden_bounds, kept_names, output_bounds,
                        pack_bounds, unpack_bounds)
from .window import windowed
from .rules import RULES, derived_rule

# largest state (numbers per box) bounds_refine keeps for a graph that is not a ReLU MLP: the search holds one per
# open box (64 KiB each; linearizenn's 4,224, cersyve's 272-800, nn4sys mscn's 16,166 keeps none)
STATE_FLOATS = 8192


def _check_C(C, B, n_out, dtype, device):
    if C is None:
        return torch.eye(n_out, dtype=dtype, device=device).expand(B, n_out, n_out)
    C = torch.as_tensor(C).to(dtype=dtype, device=device)
    if C.dim() == 2:
        C = C.expand(B, *C.shape)
    if C.dim() != 3 or C.shape[0] != B or C.shape[2] != n_out:
        raise BadInput(f"C must be [m, {n_out}] or [{B}, m, {n_out}], got {list(C.shape)}")
    return C


def _check_box(network, lower, upper):
    if lower.dim() != 2 or lower.shape != upper.shape or lower.shape[1] != network.n_inputs:
        raise BadInput(f"input box must be two [B, {network.n_inputs}] tensors, got {list(lower.shape)} and "
                       f"{list(upper.shape)}")
    if lower.numel() == 0:
        return
    span = torch.aminmax(upper - lower)  # every width finite (an infinite or NaN bound makes it not) and >= 0
    if float(span.min) >= 0 and float(span.max) < math.inf:  # NaN propagates and fails both
        return
    if not (torch.isfinite(lower).all() and torch.isfinite(upper).all()):
        raise BadInput("input box bounds must be finite")
    if (lower > upper).any():
        raise BadInput("empty input box: some lower bound exceeds its upper bound")
    # the width overflows float64: every bound would come out NaN (no information), so say why instead
    raise BadInput("input box too wide: upper - lower overflows float64")


class MLPView:
    """A ReLU MLP (linear (relu linear)*, with reshapes and elementwise affines folded in: engine.mlp, the one MLP
    view) as the weights of the native CROWN pass; `of` gives None for any other network. Consecutive linear
    layers become one map composed in float64 (exact for CROWN, whose linear steps are exact; the composition
    changes the weights only by rounding, covered by the final widening like engine.mlp's folds)."""

    def __init__(self, Ws, bs):
        self.Ws, self.bs = Ws, bs
        self._packed = {}

    @classmethod
    def of(cls, network):
        layers = mlp_layers(network)
        if layers is None:
            return None
        Ws, bs = [], []
        for k, (W, b, act, _) in enumerate(layers):
            if Ws and layers[k - 1][2] == "none":   # linear after linear (TLL nets): one map, composed in float64
                W, b = W @ Ws.pop(), W @ bs.pop() + b
            Ws.append(W)
            bs.append(b)
        acts = [act for _, _, act, _ in layers if act != "none"]
        if acts != ["relu"] * (len(Ws) - 1) or layers[-1][2] != "none":
            return None
        return cls(Ws, bs)

    def packed(self, dtype, device):
        """The weights packed for the native CPU kernel (cached per dtype); None on a GPU, which does not use them."""
        if torch.device(device).type != "cpu":
            return None
        key = (dtype, str(device))
        if key not in self._packed:
            self._packed[key] = lb.pack_mlp(self.Ws, self.bs, dtype, device)
        return self._packed[key]


class Crown(Domain):
    name = "crown"
    guarantee = "sound"
    input_sets = ("box", "linf", "l2")
    description = "CROWN backward linear bounds (Zhang et al. 2018): tighter than IBP"
    default_rules = RULES

    def __init__(self, op_rules=None):
        super().__init__(op_rules)
        self._mlp: dict[int, tuple] = {}
        self._interval = None
        self._last_hidden = None

    @property
    def interval_domain(self):
        """The domain whose rules give the intervals CROWN starts from: the registry's "ibp" (its own rules,
        plugins' and trait-derived ones), or None when it is not loaded (then no intervals: CROWN bounds only)."""
        if self._interval is None:
            from nncert.engine.registry import get_registry
            reg = self.registry or get_registry()
            self._interval = reg.domain("ibp") if "ibp" in reg.domains else False
        return self._interval or None

    def derived_rule(self, op):
        return derived_rule(op, self.interval_domain)

    def _crown(self, network, lower, upper, concretize, C):
        return crown_bounds(network, *self._rule_tables(), self.ops, lower, upper, concretize, C)

    def _hidden_box(self, network, lower, upper):
        """CROWN's hidden bounds over boxes (propagate.hidden_bounds), the last single box's kept for the next call
        on the same network and box: verify bounds an instance and then starts branch and bound from the same
        hidden bounds (TinyYOLO's pass takes a minute). Batches are not kept (their bounds would stay resident)."""
        last = self._last_hidden
        if (last is not None and last[0] is network and last[1].shape == lower.shape and torch.equal(last[1], lower)
                and torch.equal(last[2], upper)):
            return last[3]
        rule_for, interval_for = self._rule_tables()
        ctx = hidden_bounds(network, rule_for, interval_for, self.ops, lower, upper, concretize_box(lower, upper))
        self._last_hidden = (network, lower.clone(), upper.clone(), ctx) if lower.shape[0] == 1 else None
        return ctx

    def _mlp_view(self, network):
        if any(self.op_rules.get(op) is not RULES.get(op) for op in network.ops()):
            return None  # a plugin overrode a rule: take the generic path, which uses it
        hit = self._mlp.get(id(network))
        if hit is None or hit[0] is not network:
            hit = (network, MLPView.of(network))
            if len(self._mlp) > 16:
                self._mlp.clear()
            self._mlp[id(network)] = hit
        return hit[1]

    def bounds(self, network, lower, upper, C=None, mlp_fast_path: bool = True):
        """Sound (widened) bounds [B, m] of C @ f(x) over each box [lower[b], upper[b]] (see Domain.bounds)."""
        self.check_network(network)
        _check_box(network, lower, upper)
        B, dt, dev = lower.shape[0], lower.dtype, lower.device
        upper = upper.to(dt)
        view = self._mlp_view(network) if mlp_fast_path else None
        if view is not None:
            Cm = None if C is None else _check_C(C, B, network.n_outputs, dt, dev)
            out = lb.crown_mlp(lower, upper, view.Ws, view.bs, Cm, packed=view.packed(dt, dev))
        else:
            Cm = None if C is None else _check_C(C, B, network.n_outputs, dt, dev)
            ctx = self._hidden_box(network, lower, upper)
            out = output_bounds(network, ctx, windowed(self._rule_tables()[0]), concretize_box(lower, upper), Cm)
        return widen(*out)

    def bounds_refine(self, network, lower, upper, C=None, state=None):
        """Bounds with state (see Domain.bounds_refine): the boxes' hidden bounds, intersected with those of the
        next call on sub-boxes (CROWN is not monotone in the box, so a sub-box alone can bound looser than its
        parent). ReLU MLPs keep their pre-activation bounds; other graphs the bounds of the values their
        relaxations read (propagate.kept_names), when those are at most STATE_FLOATS numbers per box (the search
        keeps a state per open box), else no state."""
        view = self._mlp_view(network)
        if view is None:
            return self._refine_graph(network, lower, upper, C, state)
        self.check_network(network)
        _check_box(network, lower, upper)
        B, dt, dev = lower.shape[0], lower.dtype, lower.device
        Cm = None if C is None else _check_C(C, B, network.n_outputs, dt, dev)
        lo, hi = lower, upper.to(dt)
        lo_out, hi_out, inter = lb.crown_mlp(lo, hi, view.Ws, view.bs, Cm, packed=view.packed(dt, dev), prior=state,
                                             keep_inter=True)
        return (*widen(lo_out, hi_out), inter)

    def _kept(self, network):
        """kept_names of the network under this domain's rules, or None when their bounds exceed STATE_FLOATS."""
        names = kept_names(network, self._rule_tables()[0])
        shapes = {n.name: n.shape for n in network.nodes}
        return names if names and 2 * sum(math.prod(shapes[n]) for n in names) <= STATE_FLOATS else None

    def _refine_graph(self, network, lower, upper, C, state):
        self.check_network(network)
        _check_box(network, lower, upper)
        names = self._kept(network)
        if names is None:
            return (*self.bounds(network, lower, upper, C), None)
        B, dt = lower.shape[0], lower.dtype
        upper = upper.to(dt)
        Cm = None if C is None else _check_C(C, B, network.n_outputs, dt, lower.device)
        rule_for, interval_for = self._rule_tables()
        prior = None if state is None else unpack_bounds(state.to(dt), network, names)
        ctx = hidden_bounds(network, rule_for, interval_for, self.ops, lower, upper, concretize_box(lower, upper),
                            prior)
        out = output_bounds(network, ctx, windowed(rule_for), concretize_box(lower, upper), Cm)
        return (*widen(*out), pack_bounds(ctx.bounds, names))

    def refute_conjunctions(self, network, lower, upper, C, d, owner, state, todo=None, iters: int = ITERS):
        """Per box and disjunct {C_r y + d_r >= 0 for the rows r with owner[r] = k}, (refuted [B, G] bool, value [B, G]) where refuted means
        the disjunct is proven empty on the box and value is the bound of sum_r lam_r (C_r y + d_r) found
        (plugins/crown/alpha.py; its lam optimised, < 0 when refuted up to rounding; +inf off `todo` [B, G], the
        pairs to work on, default all). The hidden bounds are `state` from bounds_refine on these boxes; ReLU
        MLPs need it (None without), other graphs recompute CROWN's hidden bounds over the boxes when it is None
        (plugins/crown/conjunctions.py).

        The combined row sum_r lam_r C_r W_L is formed in float64 like every CROWN row; the domain's widening
        covers its rounding as it does the kernels' (engine.numerics)."""
        view = self._mlp_view(network)
        if view is None:
            return self._refute_graph(network, lower, upper, C, d, owner, todo, state)
        if state is None:
            return None
        dt = lower.dtype
        lo, hi = lower, upper.to(dt)
        Ws = [W.to(dt) for W in view.Ws]
        bs = [None if b is None else b.to(dt) for b in view.bs]
        with torch.enable_grad():
            u, lam = optimise_conjunctions(Ws, bs, lo, hi, state, C.to(dt), d.to(dt), owner, todo, iters)
        u = widen(u, u)[1]
        return refuted_combination(u, lam, d.to(dt)), u + lam @ d.to(dt)

    def _refute_graph(self, network, lower, upper, C, d, owner, todo, state=None):
        """refute_conjunctions on any graph, for disjuncts of two or more rows: CROWN hidden bounds over the boxes,
        then plugins.crown.conjunctions (combined rows with optimised ReLU slopes). Single-row disjuncts are left
        to the bounds already computed (slope optimisation alone cost more than it closed: nn4sys mscn 10.2 s ->
        14 s)."""
        from .conjunctions import optimise_conjunctions_graph
        self.check_network(network)
        _check_box(network, lower, upper)
        dt = lower.dtype
        B, G = lower.shape[0], int(owner.max()) + 1
        todo = torch.ones(B, G, dtype=torch.bool) if todo is None else todo
        todo = todo & (torch.bincount(owner, minlength=G) >= 2)[None]   # one row: CROWN's own bound already ran
        refuted = torch.zeros(B, G, dtype=torch.bool)
        value = torch.full((B, G), float("inf"), dtype=dt)
        keep = todo.any(1).nonzero().flatten()
        if not len(keep):
            return refuted, value
        rule_for, interval_for = self._rule_tables()
        # memory (engine/memory.py): a pass over P pairs holds every value's bounds and a few working copies per
        # pair, and the starting pass has one pair per row: boxes go in chunks that fit the budget
        values = network.n_inputs + sum(math.prod(n.shape) for n in network.nodes)
        chunk = max(1, memory.budget() // (16 * lower.element_size() * values * (C.shape[0] + 1)))
        names = None if state is None else self._kept(network)
        for s in range(0, len(keep), chunk):
            ids = keep[s:s + chunk]
            lo, hi = lower[ids], upper[ids].to(dt)
            if names is None:
                bounds = hidden_bounds(network, rule_for, interval_for, self.ops, lo, hi, concretize_box(lo, hi)).bounds
            else:   # bounds_refine's state on these boxes: every value a relaxation reads, and the box itself
                bounds = unpack_bounds(state[ids].to(dt), network, names)
                bounds[network.input_name] = (lo.reshape(len(ids), *network.input_shape),
                                              hi.reshape(len(ids), *network.input_shape))
            with torch.enable_grad():
                u, lam = optimise_conjunctions_graph(network, bounds, C.to(dt), d.to(dt), owner, todo[ids],
                                                     self.ops, windowed(rule_for))
            u = widen(u, u)[1]
            refuted[ids] = refuted_combination(u, lam, d.to(dt))
            value[ids] = u + lam @ d.to(dt)
        return refuted, value

    def _rule_tables(self):
        iv = self.interval_domain
        return (lambda n: self.rule(n.op)), ((lambda n: iv.rule(n.op)) if iv else (lambda n: None))

    def bab_root(self, network, lower, upper):
        """State for branch_and_bound on the box [lower, upper] ([1, n_inputs], float64): CROWN's hidden bounds."""
        self.check_network(network)
        _check_box(network, lower, upper)
        ctx = self._hidden_box(network, lower, upper)
        return {"network": network, "ctx": ctx, "box": (lower.reshape(1, *network.input_shape),
                                                        upper.reshape(1, *network.input_shape))}

    def branch_and_bound(self, state, C, d, deadline, is_cex):
        """Refute the disjunct {C y + d >= 0} (C [r, n_out], d [r]) on the box of `state` (bab_root) by ReLU-split
        branch and bound on its row with the lowest CROWN upper bound (plugins/crown/bab.py): ("unsat" | "sat" |
        "timeout" | "unknown", counterexample or None, stats)."""
        from .bab import relu_split_bab
        network, ctx = state["network"], state["ctx"]
        rule_for, interval_for = self._rule_tables()
        C = C.to(ctx.dtype)
        lo, hi = output_bounds(network, ctx, windowed(rule_for), concretize_box(*(v.reshape(1, -1)
                                                                                  for v in state["box"])), C[None])
        r = int((hi[0] + d.to(ctx.dtype)).argmin())
        return relu_split_bab(network, ctx.bounds, state["box"], C[r], float(d[r]), deadline, is_cex, self.ops,
                              windowed(rule_for), interval_for)

    def bounds_l2(self, network, center, eps, C=None):
        """Sound (widened) bounds [B, m] of C @ f(x) over each l2 ball ||x - center[b]||_2 <= eps[b].

        center [B, n_inputs]; eps a float or [B] tensor (>= 0)."""
        self.check_network(network)
        if center.dim() != 2 or center.shape[1] != network.n_inputs:
            raise BadInput(f"l2 ball centres must be [B, {network.n_inputs}], got {list(center.shape)}")
        B, dt, dev = center.shape[0], center.dtype, center.device
        eps = torch.as_tensor(eps, dtype=dt, device=dev).expand(B).contiguous()
        if not (eps >= 0).all() or not torch.isfinite(eps).all():
            raise BadInput("l2 radius eps must be finite and >= 0")
        Cm = None if C is None else _check_C(C, B, network.n_outputs, dt, dev)
        lo, hi = center - eps[:, None], center + eps[:, None]
        out = self._crown(network, lo, hi, concretize_l2(center, eps), Cm)
        return widen(*out)


class AlphaCrown(Crown):
    """alpha-CROWN (Xu et al. 2021): CROWN with the lower ReLU slopes optimised per bound, for ReLU MLPs on boxes.

    Hidden bounds are tightened layer by layer and every output row gets slopes of its own
    (plugins/crown/alpha.py, HIDDEN_ITERS / ITERS Adam steps); the result is intersected with plain CROWN, so it is
    never looser. Cost: about (number of steps) plain CROWN passes, in torch. Other networks and l2 balls get
    plain CROWN."""

    name = "alpha-crown"
    description = "alpha-CROWN: CROWN with optimised ReLU slopes (ReLU MLPs; plain CROWN elsewhere)"

    def bounds(self, network, lower, upper, C=None, mlp_fast_path: bool = True):
        view = self._mlp_view(network) if mlp_fast_path else None
        if view is None:
            return super().bounds(network, lower, upper, C, mlp_fast_path)
        lo_c, hi_c, state = self.bounds_refine(network, lower, upper, C)
        B, dt = lower.shape[0], lower.dtype
        Cm = _check_C(C, B, network.n_outputs, dt, lower.device)
        lo, hi = lower, upper.to(dt)
        Ws = [W.to(dt) for W in view.Ws]
        bs = [None if b is None else b.to(dt) for b in view.bs]
        with torch.enable_grad():
            state = alpha_hidden_bounds(lo, hi, Ws, bs, state)
        out_lo, out_hi = [], []
        for b in range(B):      # rows C_b and -C_b, each its own disjunct: upper bounds of both signs
            Cb = Cm[b]
            m = Cb.shape[0]
            with torch.enable_grad():
                u, _ = optimise_conjunctions(Ws, bs, lo[b:b + 1], hi[b:b + 1], state[b:b + 1], torch.cat([Cb, -Cb]),
                                             torch.zeros(2 * m, dtype=dt), torch.arange(2 * m), iters=HIDDEN_ITERS,
                                             lr=HIDDEN_LR)
            out_hi.append(u[0, :m])
            out_lo.append(-u[0, m:])
        lo_a, hi_a = widen(torch.stack(out_lo), torch.stack(out_hi))
        return torch.maximum(lo_c, lo_a), torch.minimum(hi_c, hi_a)
