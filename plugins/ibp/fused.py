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

_ACTS = ("relu", "leaky_relu", "sigmoid", "tanh")
_cache: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_NONE = object()


def _flat_param(p: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    return p.to(torch.float64).expand(shape).reshape(-1)


def chain_layers(network) -> list | None:
    """The (W, b, act, alpha) layers of an MLP-shaped network (float64, affines folded), or None if it is not one."""
    prev = network.input_name
    shape = tuple(network.input_shape)
    layers: list[list] = []          # [W, b, act, alpha]
    pre_s = pre_t = None             # affine waiting for the next linear (flattened input features)
    consumers = network.consumers()
    for node in network.nodes:
        if node.inputs != [prev] or len(consumers.get(prev, [])) != 1:
            return None
        op = node.op
        if op == "reshape":
            pass
        elif op == "affine":
            n = int(torch.Size(shape).numel())
            s = _flat_param(node.params["scale"], shape) if "scale" in node.params else torch.ones(n, dtype=torch.float64)
            t = _flat_param(node.params["shift"], shape) if "shift" in node.params else torch.zeros(n, dtype=torch.float64)
            if layers and layers[-1][2] == "none" and pre_s is None:   # right after a linear: y -> s*y + t
                W, b = layers[-1][0], layers[-1][1]
                layers[-1][0] = s[:, None] * W
                layers[-1][1] = s * b + t
            else:                                                     # before the next linear: compose
                pre_s, pre_t = (s, t) if pre_s is None else (s * pre_s, s * pre_t + t)
        elif op == "linear":
            if len(shape) != 1:
                return None
            W = node.params["W"].to(torch.float64)
            b = node.params["b"].to(torch.float64) if "b" in node.params else torch.zeros(W.shape[0], dtype=torch.float64)
            if pre_s is not None:
                b = b + W @ pre_t
                W = W * pre_s[None, :]
                pre_s = pre_t = None
            layers.append([W, b, "none", 0.0])
        elif op in _ACTS:
            if not layers or layers[-1][2] != "none" or pre_s is not None:
                return None
            layers[-1][2] = op
            layers[-1][3] = float(node.attrs.get("alpha", 0.0)) if op == "leaky_relu" else 0.0
        else:
            return None
        prev = node.name
        shape = tuple(node.shape)
    if not layers or pre_s is not None or prev != network.output:
        return None
    return [tuple(layer) for layer in layers]


def network_chain(network) -> IntervalChain | None:
    """Cached IntervalChain of the network (None when it is not an MLP chain)."""
    try:
        hit = _cache.get(network)
    except TypeError:  # not weak-referenceable
        hit = None
    if hit is not None:
        return None if hit is _NONE else hit
    layers = chain_layers(network)
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
