"""The op registry: every IR op is declared once, with its exact semantics, traits and ONNX importers.

An op is an `OpDef`; built-in ops and third-party ones are registered the same way, through the hook
`nncert_register_ops(register)` (see `engine/hookspecs.py`; the built-in ones are in `engine/ops/builtin.py`).
`forward` is the oracle: the IR's semantics of the op, which every domain's rule must bound soundly.

Traits tell the domains which generic rules are sound for an op that has no rule of their own:
  elementwise  one input, same shape, y_i = f(x_i)
  monotone     non-decreasing in every input element: interval bounds map to interval bounds (f(lo), f(hi))
  linear       affine in its inputs, y = sum_k A_k x_k + c: CROWN's backward rule is the exact adjoint
               (a vector-Jacobian product of `forward`), and IBP uses `abs_forward` (x -> sum_k |A_k| x_k) when given
Elementwise ops may give `derivative` (f') and `curvature(node, l, u)` (+1 where f is convex on [l, u], -1 where
concave, 0 where neither): CROWN then relaxes them with a chord and a tangent.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch

TRAITS = frozenset({"elementwise", "monotone", "linear"})


@dataclass(frozen=True)
class OpDef:
    """One IR op. `forward(node, args) -> y`: args one tensor [B, *shape] per node input, y [B, *out_shape], in
    the args' dtype (convert params with `node.params[k].to(x.dtype)`); it must treat samples independently.

    `onnx` maps ONNX op types to importers `fn(ctx, onnx_node)` (ctx: engine.io.onnx_import.OnnxContext)."""

    name: str
    forward: Callable[[Any, list], torch.Tensor]
    traits: frozenset = frozenset()
    onnx: Mapping[str, Callable] = field(default_factory=dict)
    abs_forward: Callable | None = None
    derivative: Callable | None = None
    curvature: Callable | int | None = None
    doc: str = ""

    def __post_init__(self):
        object.__setattr__(self, "traits", frozenset(self.traits))


def op_table() -> dict[str, OpDef]:
    """The ops of the process registry (built-ins plus every plugin's)."""
    from ..registry import get_registry
    return get_registry().ops


def apply_op(node, args: list[torch.Tensor]) -> torch.Tensor:
    """Exact semantics of one node (the oracle every domain is tested against)."""
    from ..errors import BadInput
    op = op_table().get(node.op)
    if op is None:
        raise BadInput(f"unknown IR op {node.op!r} in node {node.name!r}")
    return op.forward(node, args)
