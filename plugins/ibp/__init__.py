"""IBP: interval bound propagation (Gowal et al. 2018; Mirman et al. 2018).

Sound elementwise bounds: each node's output box contains the node's output for every input in the input box,
in exact arithmetic; the final bounds are widened outward for floating-point rounding (engine.numerics.widen).
Callers should pass float64 boxes when the bounds decide a verdict.

Rules (plugins/ibp/rules.py) have the signature rule(node, boxes) -> (lo, hi), where boxes holds one (lo, hi)
pair per node input, each [B, *shape]. Ops without a rule of their own get one from their traits (monotone:
bounds map to bounds; linear with `abs_forward`: centre and radius). Plugins may teach IBP further ops through
`nncert_register_op_rules(register)` with register("ibp", op, rule).
"""
from __future__ import annotations

import torch

from nncert.engine import hookimpl
from nncert.engine.domain import Domain
from nncert.engine.numerics import widen
from nncert.engine.propagate import forward

from .fused import fused_bounds
from .rules import RULES, derived_rule, inf_safe


def _interval_matmul(C, lo, hi):
    Cp, Cn = C.clamp(min=0), C.clamp(max=0)
    if C.dim() == 2:
        return lo @ Cp.T + hi @ Cn.T, hi @ Cp.T + lo @ Cn.T
    return (torch.einsum("bmn,bn->bm", Cp, lo) + torch.einsum("bmn,bn->bm", Cn, hi),
            torch.einsum("bmn,bn->bm", Cp, hi) + torch.einsum("bmn,bn->bm", Cn, lo))


def _C_abs(node, args):
    C, y = node, args[0]
    return y @ C.abs().T if C.dim() == 2 else torch.einsum("bmn,bn->bm", C.abs(), y)


def interval_matmul(C: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor):
    """Bounds of C @ y for y in [lo, hi]; C [m, n] or [B, m, n], lo/hi [B, n]; returns [B, m] each. Rows that
    touch an unbounded element with a nonzero coefficient are unbounded (never NaN)."""
    return inf_safe(lambda C_, boxes: _interval_matmul(C_, *boxes[0]), _C_abs)(C, [(lo, hi)])


class IBP(Domain):
    name = "ibp"
    guarantee = "sound"
    input_sets = ("box", "linf")
    description = "interval bound propagation: fastest, loosest"
    default_rules = RULES

    def derived_rule(self, op):
        return derived_rule(op)

    def node_bounds(self, network, lower: torch.Tensor, upper: torch.Tensor, keep_all: bool = True) -> dict:
        """Interval bounds of every node's output (only the output's when keep_all is False): {name: (lo, hi)}
        with batch axis, unwidened."""
        self.check_network(network)
        B = lower.shape[0]
        box = (lower.reshape(B, *network.input_shape), upper.reshape(B, *network.input_shape))
        return forward(network, box, lambda node: self.rule(node.op), keep_all=keep_all)

    def bounds(self, network, lower, upper, C=None):
        # fused fast path (plugins/ibp/fused.py): plain MLPs in one native interval-chain call; None otherwise
        self.check_network(network)
        fused = fused_bounds(self, network, lower, upper)
        lo, hi = fused if fused is not None else self.node_bounds(network, lower, upper, False)[network.output]
        lo, hi = lo.reshape(lo.shape[0], -1), hi.reshape(hi.shape[0], -1)
        if C is not None:
            lo, hi = interval_matmul(C.to(lo.dtype), lo, hi)
        return widen(lo, hi)


@hookimpl
def nncert_register_domains(register):
    register(IBP)
