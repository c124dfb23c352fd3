"""Fused IBP fast path for plain MLPs: the whole network as one native interval-chain call.

A network qualifies when its nodes form a single path (each node reads only the previous one) made of `linear`
layers, each optionally followed by one elementwise monotone activation (relu, leaky_relu, sigmoid, tanh),
with `reshape` nodes anywhere (they keep element order) and `affine` nodes (constant scale/shift) directly
before a linear layer or directly after one (before its activation). Affines are folded into the adjacent
linear layer in float64; in exact arithmetic the folded layer gives the same box as the node-by-node IBP rules
(s*x+t has mid s*mid+t and radius |s|*rad; |W diag(s)| = |W| diag(|s|)), so soundness is unchanged and the
result differs from node-by-node IBP only by rounding, which the domain's outward widening covers.

The chain is built once per network object and cached (weakly) on it; a network whose parameters are changed
in place after its first use must be copied (Network.to) to refresh the plan.
"""
from __future__ import annotations

import weakref

import torch

from nncert.engine.kernels import use_native
from nncert.engine.kernels.interval import IntervalChain
from nncert.engine.mlp import ACTS as _ACTS, mlp_layers

_cache: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_NONE = object()


def network_chain(network) -> IntervalChain | None:
    """Cached IntervalChain of the network (None when it is not an MLP chain)."""
    try:
        hit = _cache.get(network)
    except TypeError:  # not weak-referenceable
        hit = None
    if hit is not None:
        return None if hit is _NONE else hit
    layers = mlp_layers(network)
    chain = IntervalChain(layers) if layers is not None else None
    try:
        _cache[network] = _NONE if chain is None else chain
    except TypeError:
        pass
    return chain


def fused_bounds(domain, network, lower: torch.Tensor, upper: torch.Tensor):
    """Unwidened output box ([B, n_outputs] each) by the fused chain, or None when the fast path does not apply
    (native kernels off, not an MLP chain, or the domain's rules for the ops involved are not the built-in ones)."""
    from .rules import RULES
    if lower.dtype not in (torch.float32, torch.float64) or not use_native(lower):
        return None
    for op in ("linear", "affine", "reshape", *_ACTS):
        if domain.op_rules.get(op) is not RULES.get(op):
            return None
    chain = network_chain(network)
    if chain is None:
        return None
    B = lower.shape[0]
    lo, hi = lower.reshape(B, -1), upper.reshape(B, -1)
    if lo.shape[1] != chain.in_features:
        return None
    return chain(lo, hi)
