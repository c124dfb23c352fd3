"""IBP: interval bound propagation (Gowal et al. 2018; Mirman et al. 2018).

Sound elementwise bounds: each node's output box contains the node's output for every input in the input box,
in exact arithmetic; the final bounds are widened outward for floating-point rounding (engine.numerics.widen).
Callers should pass float64 boxes when the bounds decide a verdict.

Rules have the signature rule(node, boxes) -> (lo, hi), where boxes holds one (lo, hi) pair per node input,
each [B, *shape]. Plugins may teach IBP further ops through `nncert_register_op_rules(register)` with
register("ibp", op, rule).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from nncert.engine import hookimpl
from nncert.engine.domain import Domain
from nncert.engine.kernels import interval
from nncert.engine.numerics import widen

from .fused import fused_bounds


def _monotone(fn):
    """Rule for a monotone non-decreasing elementwise function: bounds map to bounds."""
    def rule(node, boxes):
        lo, hi = boxes[0]
        return fn(node, lo), fn(node, hi)
    return rule


def _linear(node, boxes):
    lo, hi = boxes[0]
    W, b = node.params["W"].to(lo.dtype), node.params.get("b")
    b = None if b is None else b.to(lo.dtype)
    shape = lo.shape
    lo2, hi2 = interval.interval_linear(lo.reshape(-1, shape[-1]), hi.reshape(-1, shape[-1]), W, b)
    return lo2.reshape(*shape[:-1], -1), hi2.reshape(*shape[:-1], -1)


def _conv2d(node, boxes):
    lo, hi = boxes[0]
    a, b = node.attrs, node.params.get("b")
    return interval.interval_conv2d(lo, hi, node.params["W"].to(lo.dtype), None if b is None else b.to(lo.dtype),
                                    a["stride"], a["pads"], a["dilation"], a["groups"])


def _affine(node, boxes):
    lo, hi = boxes[0]
    if "scale" in node.params:
        s = node.params["scale"].to(lo.dtype)
        lo, hi = torch.minimum(lo * s, hi * s), torch.maximum(lo * s, hi * s)
    if "shift" in node.params:
        t = node.params["shift"].to(lo.dtype)
        lo, hi = lo + t, hi + t
    return lo, hi


def _add(node, boxes):
    (l1, h1), (l2, h2) = boxes
    return l1 + l2, h1 + h2


def _sub(node, boxes):
    (l1, h1), (l2, h2) = boxes
    return l1 - h2, h1 - l2


def _reshape(node, boxes):
    lo, hi = boxes[0]
    return lo.reshape(lo.shape[0], *node.attrs["shape"]), hi.reshape(hi.shape[0], *node.attrs["shape"])


def _pad(x, pads, value):
    t, l, b, r = pads
    return F.pad(x, (l, r, t, b), value=value) if (t or l or b or r) else x


def _avgpool(node, boxes):
    # average pooling is linear with non-negative weights: it maps bounds to bounds
    lo, hi = boxes[0]
    a = node.attrs
    return tuple(F.avg_pool2d(_pad(v, a["pads"], 0.0), a["kernel"], a["stride"]) for v in (lo, hi))


def _maxpool(node, boxes):
    # max is monotone in every argument
    lo, hi = boxes[0]
    a = node.attrs
    return tuple(F.max_pool2d(_pad(v, a["pads"], float("-inf")), a["kernel"], a["stride"]) for v in (lo, hi))


RULES = {
    "linear": _linear,
    "conv2d": _conv2d,
    "affine": _affine,
    "add": _add,
    "sub": _sub,
    "reshape": _reshape,
    "avgpool2d": _avgpool,
    "maxpool2d": _maxpool,
    "relu": _monotone(lambda n, v: torch.relu(v)),
    "sigmoid": _monotone(lambda n, v: torch.sigmoid(v)),
    "tanh": _monotone(lambda n, v: torch.tanh(v)),
    "leaky_relu": _monotone(lambda n, v: F.leaky_relu(v, n.attrs["alpha"])),
}


def interval_matmul(C: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor):
    """Bounds of C @ y for y in [lo, hi]; C [m, n] or [B, m, n], lo/hi [B, n]; returns [B, m] each."""
    Cp, Cn = C.clamp(min=0), C.clamp(max=0)
    if C.dim() == 2:
        return lo @ Cp.T + hi @ Cn.T, hi @ Cp.T + lo @ Cn.T
    return (torch.einsum("bmn,bn->bm", Cp, lo) + torch.einsum("bmn,bn->bm", Cn, hi),
            torch.einsum("bmn,bn->bm", Cp, hi) + torch.einsum("bmn,bn->bm", Cn, lo))


class IBP(Domain):
    name = "ibp"
    guarantee = "sound"
    input_sets = ("box", "linf")
    description = "interval bound propagation: fastest, loosest"
    default_rules = RULES

    def node_bounds(self, network, lower: torch.Tensor, upper: torch.Tensor) -> dict:
        """Interval bounds of every node's output: {name: (lo, hi)} with batch axis, unwidened."""
        self.check_network(network)
        B = lower.shape[0]
        boxes = {network.input_name: (lower.reshape(B, *network.input_shape), upper.reshape(B, *network.input_shape))}
        for node in network.nodes:
            boxes[node.name] = self.op_rules[node.op](node, [boxes[i] for i in node.inputs])
        return boxes

    def bounds(self, network, lower, upper, C=None):
        # fused fast path (plugins/ibp/fused.py): plain MLPs in one native interval-chain call; None otherwise
        self.check_network(network)
        fused = fused_bounds(self, network, lower, upper)
        lo, hi = fused if fused is not None else self.node_bounds(network, lower, upper)[network.output]
        lo, hi = lo.reshape(lo.shape[0], -1), hi.reshape(hi.shape[0], -1)
        if C is not None:
            lo, hi = interval_matmul(C.to(lo.dtype), lo, hi)
        return widen(lo, hi)


@hookimpl
def nncert_register_domains(register):
    register(IBP)
